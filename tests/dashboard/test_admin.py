"""The Django admin shows the mirror and the audit log, read-only."""

import pytest

from devices.models import AuditEntry, Device, Module

pytestmark = pytest.mark.django_db

MODELS = ["device", "module", "auditentry"]


@pytest.fixture
def superuser_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 20))
    return client


@pytest.fixture
def rows(django_user_model):
    device = Device.objects.create(device_id="sensor-1", status="disabled", status_reason="lab")
    module = Module.objects.create(device=device, module_id="thermo", managed_by="edge")
    user = django_user_model.objects.create_user("alice")
    entry = AuditEntry.record(user, AuditEntry.Action.DEVICE_DISABLED, "sensor-1", reason="lab")
    return {"device": device, "module": module, "auditentry": entry}


def test_the_index_lists_the_three_models_without_add_links(superuser_client, rows):
    page = superuser_client.get("/admin/").content.decode()

    for model in MODELS:
        assert f"/admin/devices/{model}/" in page
        assert f"/admin/devices/{model}/add/" not in page


@pytest.mark.parametrize("model", MODELS)
def test_lists_load_with_search_and_filters_but_no_add_or_delete(superuser_client, rows, model):
    response = superuser_client.get(f"/admin/devices/{model}/", {"q": "sensor"})

    page = response.content.decode()
    assert response.status_code == 200
    assert "sensor-1" in page
    assert 'id="changelist-search"' in page and 'id="changelist-filter"' in page
    assert f"/admin/devices/{model}/add/" not in page
    assert "delete_selected" not in page


@pytest.mark.parametrize("model", MODELS)
def test_an_object_can_be_viewed_but_not_changed_or_deleted(superuser_client, rows, model):
    obj = rows[model]
    base = f"/admin/devices/{model}/{obj.pk}"

    response = superuser_client.get(f"{base}/change/")

    page = response.content.decode()
    assert response.status_code == 200
    assert 'name="_save"' not in page and f"{base}/delete/" not in page
    assert superuser_client.get(f"/admin/devices/{model}/add/").status_code == 403
    assert superuser_client.get(f"{base}/delete/").status_code == 403
    assert superuser_client.post(f"{base}/change/", {}).status_code == 403
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_the_audit_entry_shows_its_detail(superuser_client, rows):
    entry = rows["auditentry"]

    page = superuser_client.get(f"/admin/devices/auditentry/{entry.pk}/change/").content.decode()

    assert "alice" in page and "device.disabled" in page and "lab" in page
