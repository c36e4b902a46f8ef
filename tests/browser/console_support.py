"""What the browser tests share: `leadhook serve` on loopback, a receiver, headless Chromium.

Chromium is Debian's (`apt-get install chromium`; .ci/run installs it), driven by Playwright
for Python; Playwright's own browser download is never used. Without Chromium the tests skip
with the reason on a developer's machine, and fail in CI (`CI` set), so CI cannot pass
without having run them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

# The webhook receiver of the delivery e2e tests (tests/e2e/delivery_support.py) is reused.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from leadhook.bootstrap import Container, build
from leadhook.cli.runtime import base_url, bind, run_service
from leadhook.settings import Settings

CHROMIUM = os.environ.get("LEADHOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADMIN = "browser-admin"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the browser tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


class Server:
    """`leadhook serve` in a thread: the API, the console and the delivery loop, one process."""

    def __init__(self, settings: Settings) -> None:
        self.container: Container = build(settings)
        self.sock = bind("127.0.0.1", 0)
        self.url = base_url(self.sock)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self._loop = asyncio.get_running_loop()
            self._shutdown = asyncio.Event()
            await run_service(
                self.container,
                sock=self.sock,
                shutdown=self._shutdown,
                on_started=self._ready.set,
                log_level="warning",
                handle_signals=False,
            )

        try:
            asyncio.run(run())
        except BaseException as exc:  # surfaced by start() / stop()
            self.error = exc
            self._ready.set()

    def start(self) -> Server:
        self._thread.start()
        assert self._ready.wait(30), "the server did not start"
        assert self.error is None, self.error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._shutdown is not None:
            self._loop.call_soon_threadsafe(self._shutdown.set)
        self._thread.join(30)
        self.container.close()
        assert not self._thread.is_alive(), "the server did not stop"


@dataclass
class Tenant:
    """A tenant of the running server and its API key."""

    mid: str
    key: str
    server: Server
    leads: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        resp = httpx.request(method, self.server.url + path, headers=headers, timeout=10, **kwargs)
        assert resp.status_code < 300, resp.text
        return resp

    def lead(self, name: str, mobile: str) -> str:
        lead_id: str = self.call(
            "POST", "/v1/leads", json={"fields": {"name": name, "mobile": mobile}}
        ).json()["lead"]["id"]
        self.leads.append(lead_id)
        return lead_id


def make_tenant(server: Server, mid: str) -> Tenant:
    resp = httpx.post(
        server.url + "/v1/tenants",
        json={"mid": mid, "name": mid.title()},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
    tenant = Tenant(mid, resp.json()["api_key"], server)
    tenant.call("PUT", "/v1/catalog/members/wang_fang", json={"name": "王芳"})
    tenant.call("PUT", "/v1/catalog/lead_statuses/contacted", json={"name": "已联系"})
    return tenant


class ConsoleLog:
    """What the page logged to its console, and uncaught errors; a test must leave none."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.http_errors_expected = False

    def on_console(self, message: Any) -> None:
        if message.type != "error":
            return
        expected = ("Failed to load resource", "Response Status Error Code")  # and htmx's
        if self.http_errors_expected and any(text in message.text for text in expected):
            return  # a 4xx page the test asked for
        self.errors.append(f"console: {message.text}")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")


def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Take a full-page screenshot; LEADHOOK_UPDATE_SCREENSHOTS=1 also stores it in docs/console."""
    target = tmp_path / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    if os.environ.get("LEADHOOK_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, SCREENSHOTS / f"{name}.png")
    return target
