"""Settings from the environment, and the check that refuses production with development parts.

Settings are read once at import, so each case runs in a fresh process with its own env.
"""

import ast
import json
import os
import re
import subprocess
import sys

import pytest
from support import REPO

# What the parent process may carry (CI sets DATABASE_URL) must not leak into a case.
VARIABLES = re.findall(r"^# ([A-Z_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE)


def run(args: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={
            **clean,
            "IOTADMIN_VAR_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "iotadmin.settings",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def check(tmp_path, *options, **env) -> subprocess.CompletedProcess:
    return run(["manage.py", "check", *options], tmp_path, **env)


def settings_in(tmp_path, **env) -> dict:
    """The database and channel layer settings a process with this environment gets."""
    code = (
        "import json; from iotadmin import settings as s; "
        "print(json.dumps({'db': s.DATABASES['default'], 'layer': s.CHANNEL_LAYERS['default'],"
        " 'debug': s.DEBUG}, default=str))"
    )
    done = run(["-c", code], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    "env, refused, hint",
    [
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "iotadmin.E001", "Set SECRET_KEY"),
        ({"SECRET_KEY": "x" * 50}, "iotadmin.E002", "Set REDIS_URL"),
    ],
    ids=["without-secret-key", "with-the-in-memory-channel-layer"],
)
def test_production_with_a_development_part_fails_the_deploy_check(tmp_path, env, refused, hint):
    done = check(tmp_path, "--deploy", DEBUG="False", **env)

    assert done.returncode != 0
    assert re.findall(r"iotadmin\.E\d+", done.stderr) == [refused]
    assert hint in done.stderr


def test_production_with_secret_key_and_redis_passes_the_deploy_check(tmp_path):
    done = check(
        tmp_path, "--deploy", DEBUG="False", SECRET_KEY="x" * 50, REDIS_URL="redis://127.0.0.1/0"
    )

    assert done.returncode == 0, done.stderr
    assert not re.findall(r"iotadmin\.E\d+", done.stderr + done.stdout)


def test_the_defaults_pass_the_check_with_debug_off(tmp_path):
    got = settings_in(tmp_path, DEBUG="")  # as a bare `daphne iotadmin.asgi:application`
    done = check(tmp_path)

    assert got["debug"] is False
    assert done.returncode == 0, done.stderr
    assert "no issues" in done.stdout


def test_debug_for_hosts_other_than_loopback_fails_the_check(tmp_path):
    done = check(tmp_path, DEBUG="True", ALLOWED_HOSTS="localhost,iotadmin.example.com")

    assert done.returncode != 0
    assert re.findall(r"iotadmin\.E\d+", done.stderr) == ["iotadmin.E003"]
    assert "iotadmin.example.com" in done.stderr
    assert check(tmp_path, DEBUG="True", ALLOWED_HOSTS="localhost,127.0.0.1").returncode == 0


def test_the_defaults_are_sqlite_under_var_and_the_in_memory_layer(tmp_path):
    got = settings_in(tmp_path)

    assert (tmp_path / "secret-key").exists()  # the development key, generated once
    assert got["db"]["ENGINE"] == "django.db.backends.sqlite3"
    assert got["db"]["NAME"] == str(tmp_path / "iotadmin.sqlite3")
    assert got["layer"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_database_url_switches_the_database(tmp_path):
    got = settings_in(tmp_path, DATABASE_URL="postgres://iot:pw@db.example:5433/iotadmin")

    assert got["db"]["ENGINE"] == "django.db.backends.postgresql"
    assert (got["db"]["HOST"], got["db"]["PORT"], got["db"]["NAME"]) == (
        "db.example",
        5433,
        "iotadmin",
    )
    assert (got["db"]["USER"], got["db"]["PASSWORD"]) == ("iot", "pw")


def test_redis_url_switches_the_channel_layer(tmp_path):
    got = settings_in(tmp_path, REDIS_URL="redis://cache.example:6380/2")

    assert got["layer"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    assert got["layer"]["CONFIG"]["hosts"] == ["redis://cache.example:6380/2"]


# A production environment as `make check-deploy` (and CI) gives it.
PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "check-deploy-only-never-a-real-key-0123456789abcdefghij",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "ALLOWED_HOSTS": "iotadmin.example.com",
    "SECURE_COOKIES": "True",
}


def test_a_production_environment_passes_the_deploy_checks(tmp_path):
    done = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **PRODUCTION
    )

    assert done.returncode == 0, done.stderr


def security_in(tmp_path, **env) -> dict:
    code = (
        "import json; from iotadmin import settings as s; print(json.dumps({n: getattr(s, n)"
        " for n in ['SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_PROXY_SSL_HEADER']}))"
    )
    done = run(["-c", code], tmp_path, **env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_https_is_required_in_production_unless_turned_off(tmp_path):
    production = security_in(tmp_path, **PRODUCTION)
    development = security_in(tmp_path, DEBUG="True")
    behind_a_proxy = security_in(
        tmp_path,
        **PRODUCTION,
        SECURE_SSL_REDIRECT="False",
        SECURE_HSTS_SECONDS="60",
        SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO",
    )

    assert production == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "SECURE_PROXY_SSL_HEADER": None,
    }
    assert development["SECURE_SSL_REDIRECT"] is False
    assert development["SECURE_HSTS_SECONDS"] == 0
    assert behind_a_proxy == {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 60,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_env_example_lists_every_variable_the_settings_read():
    source = (REPO / "iotadmin" / "settings.py").read_text()
    read = set(re.findall(r"""(?:env|envbool|environ\.get)\(\s*["']([A-Z_]+)["']""", source))

    assert read == set(VARIABLES)


def django_code(tmp_path, code: str, **env) -> subprocess.CompletedProcess:
    return run(["-c", f"import django; django.setup(); {code}"], tmp_path, **env)


def test_the_var_dir_and_its_secrets_are_private_from_creation(tmp_path):
    """Under the usual umask (022) too: the key and the sessions' database are 0600 from the
    start, and SQLite's -wal/-shm files take the database's mode (listed while a connection
    holds them open: the last one to close removes them)."""
    var = tmp_path / "var"
    listing = (
        "from django.db import connection; from pathlib import Path; "
        "from django.contrib.sessions.backends.db import SessionStore; SessionStore().save(); "
        "print({p.name: oct(p.stat().st_mode & 0o777) for p in Path(connection.settings_dict"
        "['NAME']).parent.iterdir() if p.is_file()})"
    )
    old = os.umask(0o022)
    try:
        done = run(["manage.py", "migrate", "--no-input"], tmp_path, IOTADMIN_VAR_DIR=str(var))
        assert done.returncode == 0, done.stderr
        done = django_code(tmp_path, listing, IOTADMIN_VAR_DIR=str(var))
        assert done.returncode == 0, done.stderr
    finally:
        os.umask(old)

    modes = ast.literal_eval(done.stdout)
    assert var.stat().st_mode & 0o777 == 0o700
    assert {"secret-key", "iotadmin.sqlite3", "iotadmin.sqlite3-wal"} <= set(modes)
    assert set(modes.values()) == {"0o600"}, modes


def test_the_dashboard_database_uses_wal_and_waits_for_a_busy_writer(tmp_path):
    code = (
        "from django.db import connection as c; c.ensure_connection(); "
        "print(c.cursor().execute('PRAGMA journal_mode').fetchone()[0], "
        "c.cursor().execute('PRAGMA busy_timeout').fetchone()[0])"
    )
    done = django_code(tmp_path, code)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["wal", "20000"]
