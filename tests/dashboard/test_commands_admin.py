"""``manage.py ensure_admin``: the first admin and its generated password, once."""

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from devices import access


@pytest.fixture(autouse=True)
def fast_hashing(settings):
    # Django's default PBKDF2 costs ~0.5 s a hash; what is tested here is not the hasher.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def ensure_admin(*args) -> str:
    out = io.StringIO()
    call_command("ensure_admin", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_first_run_creates_an_admin_and_prints_its_generated_password(var_dir):
    output = ensure_admin()

    password = (var_dir / "admin-password").read_text().strip()
    assert len(password) >= 16
    assert f"Log in as admin with password {password}" in output
    assert str(var_dir / "admin-password") in output
    admin = get_user_model().objects.get(username="admin")
    assert admin.check_password(password)
    assert admin.is_staff and admin.is_superuser
    assert access.role_of(admin) == access.ADMIN


@pytest.mark.django_db
def test_the_password_file_is_readable_by_its_owner_only(var_dir):
    ensure_admin()
    path = var_dir / "admin-password"
    path.chmod(0o644)

    ensure_admin()

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.django_db
def test_a_second_run_prints_the_same_login_and_creates_nothing(var_dir):
    first = ensure_admin()
    password = (var_dir / "admin-password").read_text().strip()

    second = ensure_admin()

    assert "Created" in first and "Created" not in second
    assert f"Log in as admin with password {password}" in second
    assert get_user_model().objects.filter(username="admin").count() == 1


@pytest.mark.django_db
def test_each_install_gets_its_own_password(settings, tmp_path):
    passwords = []
    for name in ("one", "two"):
        settings.VAR_DIR = tmp_path / name
        ensure_admin("--username", name)
        passwords.append((tmp_path / name / "admin-password").read_text().strip())

    assert passwords[0] != passwords[1]


@pytest.mark.django_db
def test_a_changed_password_is_not_reset_or_printed(var_dir):
    ensure_admin()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("chosen by the operator")
    admin.save()

    output = ensure_admin()

    assert "password was changed" in output
    assert "changepassword admin" in output
    assert get_user_model().objects.get(username="admin").check_password("chosen by the operator")


@pytest.mark.django_db
def test_an_existing_admin_without_the_file_keeps_its_password(var_dir, django_user_model):
    django_user_model.objects.create_user("admin", password="made by hand")

    output = ensure_admin()

    assert "is missing" in output and "changepassword admin" in output
    assert not (var_dir / "admin-password").exists()
    admin = django_user_model.objects.get(username="admin")
    assert admin.check_password("made by hand")
    assert access.role_of(admin) == access.ADMIN
