"""A key read that stalls (a database server stopped, a network cut without a reset) must not
hold the API's event loop: it held every request, `/healthz` included, for as long."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.settings import Settings


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/leads"), ("GET", "/v1/leads/nosuch")])
async def test_a_stalled_key_read_leaves_the_loop_serving(
    tmp_path: Path, method: str, path: str
) -> None:
    container = build(Settings(database_url=f"sqlite:///{tmp_path}/s.db"))
    key = container.tenants.create("acme").api_key
    tenants: Any = container.tenants
    stalled, go_on = threading.Event(), threading.Event()
    read = tenants._read

    @contextlib.contextmanager
    def stalling() -> Iterator[Any]:
        stalled.set()
        go_on.wait(10)  # the database answers when the test lets it
        with read() as uow:
            yield uow

    tenants._read = stalling
    app = create_app(container)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            auth = {"Authorization": f"Bearer {key}"}
            # A key the service has not read lately: its read stalls (the short way hands a
            # create to the app, whose dependency reads it on a thread).
            body = {"json": {}} if method == "POST" else {}
            waiting = asyncio.create_task(client.request(method, path, headers=auth, **body))
            deadline = time.monotonic() + 5
            while not stalled.is_set():
                assert time.monotonic() < deadline and not waiting.done(), "no key read"
                await asyncio.sleep(0.01)
            started = time.monotonic()
            health = await asyncio.wait_for(client.get("/healthz"), 2)
            assert health.status_code == 200 and time.monotonic() - started < 1
            go_on.set()
            answer = await asyncio.wait_for(waiting, 10)
            assert answer.status_code == (201 if path == "/v1/leads" else 404), answer.text
            # Read now: the next one comes from the cache, the short way's included.
            tenants._read = None  # any read would fail
            again = await client.post("/v1/leads", json={}, headers=auth)
            assert again.status_code == 201, again.text
    finally:
        go_on.set()
        tenants._read = read
        container.close()
