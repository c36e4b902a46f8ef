"""`leadhook serve`: the HTTP API and webhook delivery, and the banner that says where they are."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from leadhook import __version__
from leadhook.cli.common import (
    Concurrency,
    DatabaseUrl,
    LogLevel,
    console,
    display_url,
    fail,
    load_settings,
    opened,
)
from leadhook.cli.logs import configure_logging

if TYPE_CHECKING:
    from leadhook.bootstrap import Container
    from leadhook.settings import Settings


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    concurrency: Concurrency = None,
    log_level: LogLevel = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log", help="Log every HTTP request.")
    ] = False,
) -> None:
    """Serve the HTTP API, and deliver webhooks from a child process it supervises.

    Migrates the database first."""
    from leadhook.cli.runtime import base_url, bind, run_async, run_service

    configure_logging(log_level)
    settings = load_settings(database_url=database_url, concurrency=concurrency)
    generated = settings.admin_token is None
    if generated:
        settings = replace(settings, admin_token=secrets.token_urlsafe(24))
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    with opened(settings, service=True) as container:
        url = base_url(sock)

        mid = free_mid(container, "acme")

        def banner() -> None:
            print_serve_banner(url, settings, generated=generated, mid=mid)

        run_async(
            run_service(
                container,
                sock=sock,
                deliver="process",
                concurrency=concurrency,
                on_started=banner,
                log_level=log_level,
                access_log=access_log,
                freeze_heap=True,
            )
        )
    console.print("leadhook stopped.")


def print_serve_banner(url: str, settings: Settings, *, generated: bool, mid: str = "acme") -> None:
    """Tell where the API, its docs and metrics are and how to create a first tenant.

    The commands it prints run as printed: the executable as it was invoked, the database
    of this process, the admin token of this run (or, one the operator set, by its variable:
    it is not printed), and a tenant id not taken yet (`mid`).
    """
    console.print(f"[bold green]leadhook {__version__}[/] is serving and delivering webhooks.")
    console.print(f"  API      {url}")
    console.print(f"  Docs     {url}/docs")
    console.print(f"  Console  {url}/console (sign in with a tenant API key)")
    console.print(f"  Metrics  {url}/metrics")
    console.print(f"  Database {display_url(settings.database_url)} (migrated)")
    if generated:
        console.print(
            "[bold yellow]LEADHOOK_ADMIN_TOKEN is not set, so this admin token was generated"
            " for this run only (set the variable to keep one):[/]"
        )
        console.print(f"  Admin token: {settings.admin_token}", markup=False)
        auth = f"'Authorization: Bearer {settings.admin_token}'"
    else:
        # The operator's own token is not printed: a start's output goes to logs (journald,
        # a container's log store), and the token can issue keys for every tenant.
        console.print("  Admin token: the one in LEADHOOK_ADMIN_TOKEN (not printed)")
        auth = '"Authorization: Bearer $LEADHOOK_ADMIN_TOKEN"'
    console.print(f"Create a tenant (prints its API key) in another terminal, from {Path.cwd()}:")
    console.print(f"  {invoked_as()} tenants create {mid}{database_flag(settings)}", markup=False)
    if password_withheld(settings):
        # The command reads the URL from the environment, and this shell did not give it
        # there (a --database-url flag): say what the other shell needs first.
        console.print(
            "  (with LEADHOOK_DATABASE_URL exported there: the URL holds a password, so it is"
            f" not printed: {display_url(settings.database_url)})",
            markup=False,
        )
    # The operator's token is named, not printed: the curl works in a shell that has it (a
    # token set on serve's own command line is not in another terminal's environment).
    where = "" if generated else ", with LEADHOOK_ADMIN_TOKEN exported in that shell"
    console.print(
        f"  or{where}: curl -X POST {url}/v1/tenants -H {auth}"
        f" -H 'content-type: application/json' -d '{{\"mid\": \"{mid}\"}}'",
        markup=False,
    )
    console.print("Press Ctrl-C to stop.")


def invoked_as() -> str:
    """Return how to run this same `leadhook` again from the current directory.

    `leadhook` when that name finds this executable on PATH; otherwise its path, relative to
    the current directory when it is inside it (`.venv/bin/leadhook`), else absolute.
    """
    argv0 = Path(sys.argv[0])
    if argv0.name != "leadhook":
        return "leadhook"  # run some other way (tests, python -c): the installed name
    here = argv0.resolve()
    found = shutil.which("leadhook")
    if found is not None and Path(found).resolve() == here:
        return "leadhook"
    try:
        return str(here.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(here)


def database_flag(settings: Settings) -> str:
    """Return the `--database-url` option that names this process's database ("" if default).

    A URL with a password is not printed: the option then reads the environment variable.
    """
    from sqlalchemy.engine import make_url

    from leadhook.settings import Settings

    if settings.database_url == Settings().database_url:
        return ""
    if make_url(settings.database_url).password is not None:
        return ' --database-url "$LEADHOOK_DATABASE_URL"'
    return f" --database-url '{settings.database_url}'"


def password_withheld(settings: Settings) -> bool:
    """Whether the printed commands read a URL with a password from LEADHOOK_DATABASE_URL
    while this process was given it otherwise (by flag): the other shell must export it."""
    from sqlalchemy.engine import make_url

    has_password = make_url(settings.database_url).password is not None
    return has_password and os.environ.get("LEADHOOK_DATABASE_URL") != settings.database_url


def free_mid(container: Container, wanted: str) -> str:
    """Return `wanted`, or `wanted-2`, `wanted-3`, ... : the first tenant id not taken yet."""
    from leadhook.domain.errors import NotFoundError

    for n in range(1, 1000):
        mid = wanted if n == 1 else f"{wanted}-{n}"
        try:
            container.tenants.get(mid)
        except NotFoundError:
            return mid
    return f"{wanted}-{secrets.token_hex(3)}"
