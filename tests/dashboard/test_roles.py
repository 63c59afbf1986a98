import pytest
from django.contrib.auth.models import Group
from support import create_identities

from devices import access


@pytest.mark.django_db
def test_the_roles_migration_gives_each_role_its_permissions(make_user):
    viewer, operator, admin = (make_user(r) for r in ("viewer", "operator", "admin"))

    assert access.role_of(viewer) == "viewer"
    assert access.role_of(operator) == "operator"
    assert access.role_of(admin) == "admin"
    assert not viewer.has_perm(access.REVEAL_KEYS)
    assert operator.has_perm(access.REVEAL_KEYS) and operator.has_perm(access.EDIT_TWIN)
    assert not operator.has_perm(access.MANAGE_IDENTITIES)
    assert admin.has_perm(access.MANAGE_IDENTITIES)
    assert set(Group.objects.values_list("name", flat=True)) >= {"viewer", "operator", "admin"}


@pytest.mark.django_db
def test_pages_need_a_login(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response.url.startswith("/login/")


@pytest.mark.django_db
def test_the_login_page_renders_without_a_hub(client, settings, tmp_path):
    settings.IOTHUB_CONNECTION_STRING = ""
    settings.LOCALHUB_DIR = str(tmp_path / "nothing-here")

    response = client.get("/login/")

    assert response.status_code == 200
    assert b"no hub configured" in response.content


@pytest.mark.django_db
def test_an_account_without_a_role_is_told_to_ask_for_one(
    client, django_user_model, dashboard_hub, registry
):
    """As the live events websocket refuses it too (test_consumers.py)."""
    create_identities(registry, "sensor-1", "thermo")
    client.force_login(django_user_model.objects.create_user("newcomer"))

    for page in ("/", "/devices/sensor-1/", "/devices/sensor-1/modules/thermo/"):
        response = client.get(page)
        assert response.status_code == 403, page
        assert "Your account has no role yet" in response.content.decode()
