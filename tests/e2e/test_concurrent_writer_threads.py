"""Several writer threads on PostgreSQL (`LEADHOOK_WRITER_THREADS`), many clients on few leads.

Each writer thread commits a group of behaviours in one transaction and holds the row lock of
every lead a unit of its group touched until that commit. Two groups that lock the same leads
in different orders wait for each other: PostgreSQL finds the deadlock only after
`deadlock_timeout` (1 s by default) and aborts one of them, whose units then run again (three
times at most, then 503). Concurrent clients on a handful of leads made that the rule, not the
exception: 300 behaviours on 4 leads from 64 clients took 62.7 s with four threads (0.4 s with
one), some of them answered 503. The writer now runs each group's units in the order of the
lead they lock, so every group takes its leads' locks in one global order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp
import httpx
import pytest
from test_cli import ADMIN_TOKEN, Running, free_port, post
from test_cli import start as start  # the fixture

from leadhook.adapters.secretbox import generate_key

pytestmark = pytest.mark.postgres

CLIENTS = 64
BEHAVIOURS = 256
LEADS = 4


def _four_writer_threads(
    start: Callable[..., Running], postgres_url: str
) -> tuple[Running, str, str]:
    """Start serve with four writer threads; return it, its address and a tenant's key."""
    port = free_port()
    serve = start(
        "serve", "--port", str(port), "--database-url", postgres_url,
        name="serve", LEADHOOK_ADMIN_TOKEN=ADMIN_TOKEN, LEADHOOK_RATE_LIMIT="off",
        LEADHOOK_WRITER_THREADS="4", LEADHOOK_SECRET_KEY=generate_key(),
    )  # fmt: skip
    serve.wait_for("Press Ctrl-C")
    api = f"http://127.0.0.1:{port}"
    return serve, api, post(f"{api}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]


async def _hammer(api: str, key: str, leads: list[str]) -> list[tuple[int, str]]:
    auth = {"Authorization": f"Bearer {key}"}
    # aiohttp: httpx's client spends enough CPU a request that the server's groups came one
    # after the other and seldom overlapped.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def one(i: int) -> tuple[int, str]:
            # Each lead's behaviours spread over every group in flight.
            body = {"fields": {"title": f"t{i}"}}
            async with session.patch(
                f"{api}/v1/leads/{leads[i % LEADS]}", json=body, headers=auth
            ) as r:
                return r.status, await r.text()

        return await asyncio.gather(*(one(i) for i in range(BEHAVIOURS)))


def test_groups_of_several_writer_threads_on_the_same_leads_do_not_deadlock(
    start: Callable[..., Running], postgres_url: str
) -> None:
    serve, api, key = _four_writer_threads(start, postgres_url)
    leads = [post(f"{api}/v1/leads", {"fields": {"name": f"L{i}"}}, key) for i in range(LEADS)]
    ids = [created["lead"]["id"] for created in leads]

    for round_ in range(3):  # a fresh server's first round happened to come through whole
        began = time.monotonic()
        answers = asyncio.run(_hammer(api, key, ids))
        took = time.monotonic() - began
        refused = [(status, text[:200]) for status, text in answers if status != 200]
        assert refused == [], (round_, refused)
        # One thread does these 256 behaviours in well under a second; a deadlock costs one.
        assert took < 10, f"round {round_}: {len(answers)} behaviours took {took:.1f} s"
    for lead in ids:
        timeline = httpx.get(
            f"{api}/v1/leads/{lead}/timeline",
            params={"limit": 500},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["data"]
        seen = sorted(event["entity_version"] for event in timeline)
        assert seen == list(range(1, 2 + 3 * BEHAVIOURS // LEADS)), lead  # gapless, none twice
    assert "deadlock" not in serve.output()


async def _pool_traffic(api: str, key: str, leads: list[str]) -> list[tuple[int, str]]:
    auth = {"Authorization": f"Bearer {key}"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CLIENTS)) as session:

        async def one(i: int) -> tuple[int, str]:
            # Creates into a pool that assigns owners (the pool's turn lock, no lead's), returns
            # into it (a lead's lock, then the pool's) and plain updates, all at once.
            if i % 3 == 0:
                method, path = "POST", "/v1/leads"
                body: dict[str, object] = {"fields": {"name": f"n{i}"}, "lead_pool": "east"}
            elif i % 3 == 1:
                method, path, body = (
                    "POST",
                    f"/v1/leads/{leads[i % LEADS]}/return",
                    {"lead_pool": "east"},
                )
            else:
                method, path = "PATCH", f"/v1/leads/{leads[(i + 1) % LEADS]}"
                body = {"fields": {"title": f"t{i}"}}
            async with session.request(method, api + path, json=body, headers=auth) as r:
                return r.status, await r.text()

        return await asyncio.gather(*(one(i) for i in range(240)))


def test_one_tenants_pool_behaviours_on_several_writer_threads_do_not_deadlock(
    start: Callable[..., Running], postgres_url: str
) -> None:
    serve, api, key = _four_writer_threads(start, postgres_url)
    auth = {"Authorization": f"Bearer {key}"}
    for member in ("a", "b", "c"):
        put = httpx.put(f"{api}/v1/catalog/members/{member}", json={"name": member}, headers=auth)
        assert put.status_code == 200, put.text
    pool = {"name": "east", "assignment": {"mode": "round_robin", "members": ["a", "b", "c"]}}
    put = httpx.put(f"{api}/v1/catalog/lead_pools/east", json=pool, headers=auth)
    assert put.status_code == 200, put.text
    body = {"fields": {"name": "L"}, "lead_pool": "east"}
    ids = [post(f"{api}/v1/leads", body, key)["lead"]["id"] for _ in range(LEADS)]
    for round_ in range(3):
        began = time.monotonic()
        answers = asyncio.run(_pool_traffic(api, key, ids))
        took = time.monotonic() - began
        failed = [(status, text[:200]) for status, text in answers if status >= 500]
        assert failed == [], (round_, failed)
        assert took < 10, f"round {round_}: {len(answers)} behaviours took {took:.1f} s"
    assert "deadlock" not in serve.output()
