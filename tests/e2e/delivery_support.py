"""What the delivery e2e tests share: a receiver on 127.0.0.1, the API, dispatcher threads."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from leadhook.api.app import create_app
from leadhook.bootstrap import Container, build
from leadhook.domain.retry import RetryPolicy
from leadhook.services.dispatcher import Dispatcher
from leadhook.settings import Settings

ADMIN_TOKEN = "e2e-admin"

# Run a test that takes the `stack` fixture on SQLite and on PostgreSQL.
ON_EVERY_BACKEND = pytest.mark.parametrize(
    "stack", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


@dataclass
class Received:
    """One request the receiver got, and what it answered."""

    at: float
    headers: dict[str, str]
    body: bytes
    status: int = 200
    verified_with: list[str] = field(default_factory=list)

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]


# (request, how many times this webhook-id came before) -> (status, extra headers, delay)
Behaviour = Callable[[Received, int], tuple[int, dict[str, str], float]]


class Receiver:
    """A webhook endpoint in a thread of its own, verifying signatures with `standardwebhooks`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.secrets: list[str] = []
        self.behaviour: Behaviour = lambda r, n: (200, {}, 0.0)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = Received(time.monotonic(), {k.lower(): v for k, v in request.headers.items()}, body)
        for secret in list(self.secrets):
            try:
                Webhook(secret).verify(body, rec.headers)
                rec.verified_with.append(secret)
            except WebhookVerificationError:
                pass
        with self._lock:
            seen = sum(r.msg_id == rec.msg_id for r in self.received)
            rec.status, headers, delay = self.behaviour(rec, seen)
            self.received.append(rec)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=rec.status, text=f"answer {rec.status}", headers=headers)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=512)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def acked(self) -> list[Received]:
        """Return the requests answered 2xx, in arrival order."""
        with self._lock:
            return [r for r in self.received if 200 <= r.status < 300]

    def all(self) -> list[Received]:
        with self._lock:
            return list(self.received)


class DispatcherThread:
    """Run `dispatcher.run(stop)` on an event loop in a thread; `stop()` drains it."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.dispatcher.run(self._stop)

        try:
            asyncio.run(run())
        except BaseException as exc:  # pragma: no cover - surfaced by stop()
            self.error = exc

    def start(self) -> DispatcherThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive(), "the dispatcher did not stop"
        assert self.error is None, self.error


@dataclass
class Stack:
    """The API over a real database, one tenant, a receiver, and a way to run dispatchers."""

    container: Container
    client: TestClient
    receiver: Receiver
    key: str
    threads: list[DispatcherThread] = field(default_factory=list)
    extra: list[Container] = field(default_factory=list)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        resp: httpx.Response = self.client.request(method, path, headers=headers, **kwargs)
        return resp

    def subscribe(self, **body: Any) -> dict[str, Any]:
        """Create a subscription to the receiver; the receiver learns its secret."""
        body = {"url": self.receiver.url(), "event_types": ["*"], **body}
        resp = self.call("POST", "/v1/subscriptions", json=body)
        assert resp.status_code == 201, resp.text
        sub: dict[str, Any] = resp.json()
        self.receiver.secrets.append(sub["secret"])
        return sub

    def lead(self, notes: int = 0) -> str:
        resp = self.call("POST", "/v1/leads", json={"fields": {"name": "张三"}})
        assert resp.status_code == 201, resp.text
        lead_id: str = resp.json()["lead"]["id"]
        for i in range(notes):
            r = self.call("POST", f"/v1/leads/{lead_id}/notes", json={"notes": f"n{i}"})
            assert r.status_code == 200, r.text
        return lead_id

    def deliveries(self, sub_id: str, status: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200}
            if status:
                params["status"] = status
            if cursor:
                params["cursor"] = cursor
            resp = self.call("GET", f"/v1/subscriptions/{sub_id}/deliveries", params=params)
            assert resp.status_code == 200, resp.text
            out.extend(resp.json()["data"])
            cursor = resp.json()["next_cursor"]
            if cursor is None:
                return out

    def dispatch(self, settings: Settings | None = None, concurrency: int = 16) -> Dispatcher:
        """Start a dispatcher (over this container, or a new one built with `settings`)."""
        c = self.container
        if settings is not None:
            c = build(settings, run_migrations=False)
            self.extra.append(c)
        thread = DispatcherThread(c.make_dispatcher(concurrency=concurrency)).start()
        self.threads.append(thread)
        return thread.dispatcher

    def stop_dispatchers(self) -> None:
        while self.threads:
            self.threads.pop().stop()
        while self.extra:
            self.extra.pop().close()


def wait_for(check: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll `check` until it is true, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def e2e_settings(url: str, **overrides: Any) -> Settings:
    """Settings for tests: loopback targets allowed, tiny retry schedule, short timeouts."""
    base: dict[str, Any] = {
        "database_url": url,
        "admin_token": ADMIN_TOKEN,
        "allow_private_targets": True,
        "retry_policy": RetryPolicy.from_env_value("0.05,0.05"),
        "delivery_timeout": 2.0,
        "lease_seconds": 10.0,
    }
    return Settings(**{**base, **overrides})


def make_stack(url: str, receiver: Receiver, **overrides: Any) -> Stack:
    """Build a container and API over `url` with a tenant `acme`."""
    container = build(e2e_settings(url, **overrides))
    client = TestClient(create_app(container))
    resp = client.post(
        "/v1/tenants", json={"mid": "acme"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert resp.status_code == 201, resp.text
    return Stack(container, client, receiver, resp.json()["api_key"])
