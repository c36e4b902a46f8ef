"""Browser fixtures: `leadhook serve` on loopback with two tenants, a receiver, Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import (
    ADMIN,
    CHROMIUM,
    CHROMIUM_ARGS,
    ConsoleLog,
    Server,
    Tenant,
    make_tenant,
    unavailable,
)
from delivery_support import Receiver

from leadhook.domain.retry import RetryPolicy
from leadhook.settings import Settings


@pytest.fixture(scope="module")
def chromium_path() -> str:
    """Debian's Chromium, or a skip (a failure in CI) saying why there is none."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[Server]:
    """A served database with two tenants; retries are far apart, so only a retry resends."""
    path = tmp_path_factory.mktemp("console") / "console.db"
    settings = Settings(
        database_url=f"sqlite:///{path}",
        admin_token=ADMIN,
        allow_private_targets=True,
        retry_policy=RetryPolicy.from_env_value("3600"),
        delivery_timeout=3.0,
        console_secret="browser-tests",
    )
    s = Server(settings).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def acme(server: Server) -> Tenant:
    return make_tenant(server, "acme")


@pytest.fixture(scope="module")
def other(server: Server) -> Tenant:
    return make_tenant(server, "other")


@pytest.fixture(scope="module")
def browser(chromium_path: str, server: Server) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def console_log() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(browser: Any, console_log: ConsoleLog) -> Iterator[Any]:
    """A fresh browser context (no cookies) and page, in English, laptop-sized."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    p = context.new_page()
    p.on("console", console_log.on_console)
    p.on("pageerror", console_log.on_page_error)
    yield p
    context.close()
    assert console_log.errors == [], console_log.errors
