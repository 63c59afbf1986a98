"""``python manage.py ensure_admin``: the first admin, with a generated password kept in var/.

Idempotent: the first run creates the user and writes its password to
``var/admin-password`` (mode 0600); later runs print the same login. A password is never
reset here: if the file is gone or no longer matches, the command says how to set one.
"""

import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from devices.access import ADMIN
from localhub.files import private_dir, write_private


@dataclass
class AdminLogin:
    username: str
    password: str  # "" when it is not known (see ``problem``)
    password_file: Path
    created: bool = False
    problem: str = ""


def password_file() -> Path:
    return Path(settings.VAR_DIR) / "admin-password"


def _write_secret(path: Path, text: str) -> None:
    private_dir(path.parent)
    write_private(path, f"{text}\n".encode())


def ensure_admin(username: str = "admin") -> AdminLogin:
    """The admin user (in the admin group; staff and superuser for the Django admin)."""
    path = password_file()
    User = get_user_model()
    with transaction.atomic():
        user = User.objects.filter(username=username).first()
        created = user is None
        if created:
            password = secrets.token_urlsafe(15)
            _write_secret(path, password)
            user = User.objects.create_user(username=username, password=password)
        user.is_staff = user.is_superuser = user.is_active = True
        user.save(update_fields=["is_staff", "is_superuser", "is_active"])
        user.groups.add(Group.objects.get(name=ADMIN))
    if created:
        return AdminLogin(username, password, path, created=True)

    if not path.exists():
        return AdminLogin(
            username, "", path, problem=f"{path} is missing, so its password is not known here."
        )
    path.chmod(0o600)
    password = path.read_text().strip()
    if not user.check_password(password):
        return AdminLogin(
            username, "", path, problem=f"its password was changed since {path} was written."
        )
    return AdminLogin(username, password, path)


class Command(BaseCommand):
    help = "Create the first admin user with a generated password (kept in var/), or print it."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username, **options):
        login = ensure_admin(username)
        if login.problem:
            self.stdout.write(
                f"User {login.username} exists, but {login.problem}\n"
                f"Set a new one with: python manage.py changepassword {login.username}"
            )
            return
        if login.created:
            self.stdout.write(self.style.SUCCESS(f"Created the admin user {login.username}."))
        self.stdout.write(
            f"Log in as {login.username} with password {login.password}\n"
            f"(kept in {login.password_file})"
        )
