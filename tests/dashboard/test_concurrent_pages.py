"""50 people using the dashboard at once on the default SQLite database, against daphne as
`make run` serves it: pages read while others reveal keys and edit twins (audit entries,
sessions, mirror rows written meanwhile), and not one request fails."""

import asyncio
import html as html_lib
import re
import threading
from collections import Counter

import aiohttp
from django.conf import settings
from django.test import Client
from support import create_identities

USERS = 50
WRITERS = 10  # of them, operators who also write
ROUNDS = 2  # requests per user, each a page read or a write


def cookie_of(user) -> dict:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return {name: client.cookies[name].value}


async def use_the_dashboard(base: str, cookies: dict, writer: bool, n: int) -> Counter:
    statuses = Counter()
    # unsafe: keep cookies (csrftoken) from an IP address host, as a browser does.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(base, cookies=cookies, cookie_jar=jar) as http:
        for round_ in range(ROUNDS):
            if writer and round_ % 2:
                own = f"/devices/w{n}"  # an edit of its own: no real conflict with others
                async with http.get(f"{own}/twin/desired/") as page:
                    html = await page.text()
                    statuses[page.status] += 1
                form = {
                    "csrfmiddlewaretoken": re.search(
                        r'name="csrfmiddlewaretoken" value="([^"]*)"', html
                    )[1],
                    "etag": re.search(r'name="etag" value="([^"]*)"', html)[1],
                    "base": html_lib.unescape(re.search(r'name="base" value="([^"]*)"', html)[1]),
                    "rows-TOTAL_FORMS": "1",
                    "rows-INITIAL_FORMS": "0",
                    "rows-0-key": "interval",
                    "rows-0-type": "number",
                    "rows-0-value": str(round_),
                }
                headers = {"Origin": base}
                async with http.post(
                    f"{own}/twin/desired/", data=form, headers=headers, allow_redirects=False
                ) as answer:
                    statuses[answer.status] += 1
                async with http.post(
                    f"{own}/connection-string/primary/",
                    data={"csrfmiddlewaretoken": form["csrfmiddlewaretoken"]},
                    headers=headers,
                ) as answer:
                    statuses[answer.status] += 1
            else:
                for path in ("/", "/devices/d1/", "/devices/d1/modules/m1/"):
                    async with http.get(path) as page:
                        await page.read()
                        statuses[page.status] += 1
    return statuses


async def crowd(base: str, people: list[tuple[dict, bool]]) -> Counter:
    results = await asyncio.gather(
        *(use_the_dashboard(base, c, w, n) for n, (c, w) in enumerate(people))
    )
    return sum(results, Counter())


def user(django_user_model, role: str, name: str):
    """A user with a role and no password: signed in with force_login, so the set-up does
    not spend 50 password hashes."""
    from django.contrib.auth.models import Group

    made = django_user_model.objects.create(username=name)
    made.groups.add(Group.objects.get(name=role))
    return made


def test_fifty_concurrent_users_get_no_error(live_dashboard, registry, django_user_model):
    """On SQLite (`make test`), which locked before, and on Postgres (`make test-postgres`)."""
    create_identities(registry, "d1", "m1")
    for n in range(WRITERS):
        create_identities(registry, f"w{n}")
    people = [
        (
            cookie_of(user(django_user_model, "operator" if n < WRITERS else "viewer", f"u{n}")),
            n < WRITERS,
        )
        for n in range(USERS)
    ]

    statuses = asyncio.run(crowd(live_dashboard.url, people))

    assert sum(statuses.values()) >= USERS * ROUNDS * 2
    assert set(statuses) <= {200, 302}, statuses
    assert statuses[302] >= WRITERS * (ROUNDS // 2)  # every twin edit landed


def test_writers_that_read_first_wait_their_turn_instead_of_failing(transactional_db):
    """What page views do (a read, then a write, in one transaction) from many threads at
    once: SQLite's deferred transactions fail such an upgrade at once with "database is
    locked"; IMMEDIATE ones queue for the write lock."""
    from django.db import connection, transaction

    from devices.models import Device

    failures = []

    def work(n: int):
        try:
            for i in range(30):
                with transaction.atomic():
                    Device.objects.filter(device_id__startswith=f"t{n}-").count()
                    Device.objects.create(device_id=f"t{n}-{i}")
        except Exception as e:  # what a page would have shown as a 500
            failures.append(repr(e))
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert failures == []
    assert Device.objects.count() == 8 * 30
