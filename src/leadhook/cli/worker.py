"""`leadhook worker`: delivery and the pool rules without the API (also serve's delivery child)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from leadhook.cli.common import (
    Concurrency,
    DatabaseUrl,
    LogLevel,
    console,
    display_url,
    load_settings,
    opened,
)
from leadhook.cli.logs import configure_logging


def worker(
    database_url: DatabaseUrl = None,
    concurrency: Concurrency = None,
    log_level: LogLevel = "info",
    wake_fd: Annotated[
        int | None,
        typer.Option(
            "--wake-fd",
            hidden=True,
            help="Used by `serve`: a pipe whose bytes wake the delivery loop; EOF stops it.",
        ),
    ] = None,
) -> None:
    """Deliver webhooks and run the due pool rules, without the API.

    Run several against PostgreSQL to share the work."""
    from leadhook.cli.runtime import run_async, run_service, watch_wake_fd

    configure_logging(log_level)
    settings = load_settings(database_url=database_url, concurrency=concurrency)
    supervised = wake_fd is not None
    # A worker of its own waits for a database not there yet; serve's delivery process exits
    # and serve starts it again (it must hear serve's stop on its pipe, which it reads later).
    with opened(settings, service=True, wait=not supervised) as container:

        def started() -> None:
            if supervised:
                return  # serve's own banner speaks for both processes
            console.print(
                f"[bold green]leadhook worker[/] delivering from"
                f" {display_url(settings.database_url)} with concurrency"
                f" {concurrency or settings.concurrency}. Press Ctrl-C to stop."
            )

        async def deliver() -> None:
            shutdown = asyncio.Event()
            if wake_fd is not None:
                wakeup = container.wakeup
                watch_wake_fd(wake_fd, wakeup.notify, shutdown.set, stopped=wakeup.notify_stopped)
            await run_service(
                container,
                sock=None,
                concurrency=concurrency,
                on_started=started,
                shutdown=shutdown,
                freeze_heap=True,
            )

        run_async(deliver())
    if not supervised:
        console.print("leadhook worker stopped.")
