"""Logins are throttled: after 20 failures for an account, or from an address, logging in is
locked for a while without checking (hashing) the password; an admin can unlock it."""

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.hashers import MD5PasswordHasher

pytestmark = pytest.mark.django_db

LIMIT = 20
PASSWORD = "correct horse battery staple"  # conftest's make_user gives every user this one
LOCKED = "Logging in is locked"


class CountingHasher(MD5PasswordHasher):
    """MD5 (fast), counting the passwords it hashes: a login that checks one hashes one."""

    hashed = 0

    def encode(self, password, salt, *args, **kwargs):
        CountingHasher.hashed += 1
        return super().encode(password, salt, *args, **kwargs)


@pytest.fixture(autouse=True)
def counting_hasher(settings):
    settings.PASSWORD_HASHERS = [f"{__name__}.CountingHasher"]
    CountingHasher.hashed = 0


def log_in(client, username, password=PASSWORD, address="10.0.0.1", path="/login/", **headers):
    return client.post(
        path, {"username": username, "password": password}, REMOTE_ADDR=address, **headers
    )


def fail(client, username, times=LIMIT, **kwargs):
    """``times`` wrong passwords; the one reaching the limit is answered with the lock."""
    for _ in range(times):
        log_in(client, username, "wrong password", **kwargs)


def logged_in(response) -> bool:
    return response.status_code == 302 and response.wsgi_request.user.is_authenticated


def test_twenty_wrong_passwords_lock_the_account_without_hashing_passwords(client, viewer):
    fail(client, viewer.username)
    CountingHasher.hashed = 0

    response = log_in(client, viewer.username)

    assert response.status_code == 429
    assert LOCKED in response.content.decode()
    assert "in 15 minutes" in response.content.decode()
    assert not response.wsgi_request.user.is_authenticated
    assert CountingHasher.hashed == 0


def test_a_success_starts_the_count_again(client, viewer):
    for _ in range(2):
        fail(client, viewer.username, LIMIT - 1)
        assert logged_in(log_in(client, viewer.username))
        client.logout()

    fail(client, viewer.username)
    assert log_in(client, viewer.username).status_code == 429


@pytest.mark.parametrize(
    "who, address, locked",
    [
        ("viewer-user", "10.0.0.2", True),  # the account, from anywhere
        ("operator-user", "10.0.0.1", True),  # the address, for any account
        ("operator-user", "10.0.0.2", False),
    ],
)
def test_the_lock_is_per_account_and_per_address(client, viewer, operator, who, address, locked):
    fail(client, viewer.username, address="10.0.0.1")

    response = log_in(client, who, address=address)

    assert (response.status_code == 429) is locked
    assert logged_in(response) is not locked


def test_behind_a_proxy_the_address_is_the_one_the_proxy_adds(client, settings, viewer, operator):
    settings.CLIENT_IP_HEADER = "HTTP_X_FORWARDED_FOR"
    proxy = "10.9.9.9"
    # What the client claims comes first; the proxy appends the address it saw.
    fail(client, viewer.username, address=proxy, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.5")

    assert AccessAttempt.objects.get().ip_address == "203.0.113.5"
    other = log_in(client, operator.username, address=proxy, HTTP_X_FORWARDED_FOR="203.0.113.6")
    assert logged_in(other)


def test_the_admin_login_is_locked_too(client, django_user_model):
    staff = django_user_model.objects.create_user("staff", password=PASSWORD, is_staff=True)
    fail(client, staff.username, path="/admin/login/")

    response = log_in(client, staff.username, path="/admin/login/")

    assert response.status_code == 429
    assert LOCKED in response.content.decode()


def test_an_admin_sees_the_lockout_and_deleting_it_unlocks(client, viewer, django_user_model):
    fail(client, viewer.username)
    root = django_user_model.objects.create_superuser("root", password=PASSWORD)
    admin_client = type(client)()
    admin_client.force_login(root)

    listed = admin_client.get("/admin/axes/accessattempt/")
    assert listed.status_code == 200 and viewer.username in listed.content.decode()
    attempt = AccessAttempt.objects.get(username=viewer.username)
    deleted = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert deleted.status_code == 302

    assert logged_in(log_in(client, viewer.username))
