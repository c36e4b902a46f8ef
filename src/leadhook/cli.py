"""The `leadhook` command: serve, worker, tenants, demo and listen."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table
from rich.text import Text

from leadhook import __version__
from leadhook.domain.errors import LeadhookError

if TYPE_CHECKING:
    from leadhook.bootstrap import Container
    from leadhook.settings import Settings

# The heavy modules (database, API, servers) are imported by the commands that need them, so
# that `leadhook --help` and `leadhook tenants ...` start quickly.

console = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(
    name="leadhook",
    help="CRM lead events, recorded in a fixed contract and delivered to signed webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tenants_app = typer.Typer(help="Create tenants and manage their API keys, without HTTP calls.")
keys_app = typer.Typer(help="List, issue and revoke a tenant's API keys.")
tenants_app.add_typer(keys_app, name="keys", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants", no_args_is_help=True)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: $LEADHOOK_DATABASE_URL or sqlite:///./leadhook.db).",
        show_default=False,
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option(
        "--concurrency", min=1, help="Deliveries in flight at once in this process (default: 64)."
    ),
]
LOG_LEVELS = ("debug", "info", "warning", "error")
LogLevel = Annotated[
    str,
    typer.Option("--log-level", help="debug, info, warning or error."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error on stderr and exit with `code`."""
    errors.print(Text.assemble(("error: ", "bold red"), message))
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment, with command-line flags winning; exit 2 on a bad value."""
    from leadhook.settings import Settings, SettingsError

    try:
        return Settings.from_env(**overrides)
    except SettingsError as exc:
        fail(str(exc), 2)


def display_url(url: str) -> str:
    """Return a database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def opened(settings: Settings) -> Iterator[Container]:
    """Build the container (migrating the database) and close it after; fail on errors."""
    from sqlalchemy.exc import SQLAlchemyError

    from leadhook.adapters.secretbox import SecretKeyError
    from leadhook.bootstrap import build

    try:
        container = build(settings)
    except SQLAlchemyError as exc:
        fail(f"cannot open {display_url(settings.database_url)}: {exc.__class__.__name__}: {exc}")
    except SecretKeyError as exc:
        fail(str(exc), 2)
    try:
        yield container
    except LeadhookError as exc:
        fail(exc.detail.removeprefix("body."))
    finally:
        container.close()


class KeyValueFormatter(logging.Formatter):
    """Append a record's structured fields (`extra=`) to its message as `key=value`.

    The whole line, traceback included, is redacted: a webhook secret or an API key quoted
    by any library's error text never reaches the log.
    """

    STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        """Format the message, then its extra fields, with secrets redacted."""
        from leadhook.services.redaction import redact

        fields = {k: v for k, v in vars(record).items() if k not in self.STANDARD}
        line = super().format(record) + "".join(f" {k}={v}" for k, v in fields.items())
        return _clip_lines(redact(line))  # redacted whole first: no secret cut in two


MAX_LOG_LINE = 2000
"""Characters kept of one line of a log record: an error quoting a 100 KB input stays short."""


def _clip_lines(text: str) -> str:
    if len(text) <= MAX_LOG_LINE:
        return text
    return "\n".join(
        line if len(line) <= MAX_LOG_LINE else f"{line[:MAX_LOG_LINE]}… ({len(line)} characters)"
        for line in text.split("\n")
    )


def configure_logging(level: str) -> None:
    """Send leadhook's and uvicorn's logs to stderr through Rich."""
    if level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {level!r}", 2)
    handler = RichHandler(console=errors, show_path=False, rich_tracebacks=False, markup=False)
    handler.setFormatter(KeyValueFormatter())
    for name in ("leadhook", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


def _version(value: bool) -> None:
    if value:
        console.print(f"leadhook {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """leadhook: every behaviour on a CRM lead becomes an event, delivered to signed webhooks."""


# ---- serve and worker ---------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    database_url: DatabaseUrl = None,
    concurrency: Concurrency = None,
    log_level: LogLevel = "info",
    access_log: Annotated[bool, typer.Option(help="Log every HTTP request.")] = False,
) -> None:
    """Serve the HTTP API and deliver webhooks in one process (migrates the database first)."""
    from leadhook.cli_runtime import base_url, bind, run_async, run_service

    configure_logging(log_level)
    settings = load_settings(database_url=database_url, concurrency=concurrency)
    generated = settings.admin_token is None
    if generated:
        settings = replace(settings, admin_token=secrets.token_urlsafe(24))
    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    with opened(settings) as container:
        url = base_url(sock)

        mid = free_mid(container, "acme")

        def banner() -> None:
            print_serve_banner(url, settings, generated=generated, mid=mid)

        run_async(
            run_service(
                container,
                sock=sock,
                deliver=delivery_mode(settings.database_url),
                concurrency=concurrency,
                on_started=banner,
                log_level=log_level,
                access_log=access_log,
            )
        )
    console.print("leadhook stopped.")


def delivery_mode(database_url: str) -> Literal["inline", "process"]:
    """Deliver from a child process, unless the database lives only in this process's memory."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return "inline"
    return "process"


def print_serve_banner(url: str, settings: Settings, *, generated: bool, mid: str = "acme") -> None:
    """Tell where the API, its docs and metrics are and how to create a first tenant.

    The commands it prints run as printed: the executable as it was invoked, the database
    of this process, the admin token of this run, and a tenant id not taken yet (`mid`).
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
    console.print(f"Create a tenant (prints its API key) in another terminal, from {Path.cwd()}:")
    console.print(f"  {invoked_as()} tenants create {mid}{database_flag(settings)}", markup=False)
    console.print(
        f"  or: curl -X POST {url}/v1/tenants -H 'Authorization: Bearer {settings.admin_token}'"
        f" -H 'content-type: application/json' -d '{{\"mid\": \"{mid}\"}}'",
        markup=False,
    )
    console.print("Press Ctrl-C to stop.")


@app.command("secret-key")
def secret_key() -> None:
    """Print a new key for LEADHOOK_SECRET_KEY (to rotate: new key first, a comma, the old)."""
    from leadhook.adapters.secretbox import generate_key

    console.print(generate_key())


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


@app.command()
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
    """Deliver webhooks and run the due pool rules, without the API; run several against
    PostgreSQL to share the work."""
    from leadhook.cli_runtime import run_async, run_service, watch_wake_fd

    configure_logging(log_level)
    settings = load_settings(database_url=database_url, concurrency=concurrency)
    supervised = wake_fd is not None
    with opened(settings) as container:

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
                watch_wake_fd(wake_fd, container.wakeup.notify, shutdown.set)
            await run_service(
                container,
                sock=None,
                concurrency=concurrency,
                on_started=started,
                shutdown=shutdown,
            )

        run_async(deliver())
    if not supervised:
        console.print("leadhook worker stopped.")


# ---- tenants ------------------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(
    mid: Annotated[str, typer.Argument(help="The tenant id (1-64 letters, digits, _ or -).")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the mid).")] = None,
    timezone: Annotated[
        str | None, typer.Option(help="IANA time zone (default: Asia/Shanghai).")
    ] = None,
    object_id: Annotated[
        str | None, typer.Option(help="The lead object's id in events (default: 56).")
    ] = None,
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Create a tenant with the default catalog and print its first API key (shown once)."""
    with opened(load_settings(database_url=database_url)) as container:
        tenant = container.tenants.create(mid, name, timezone, object_id)
    if as_json:
        console.print_json(json.dumps(tenant))
        return
    console.print(
        f"Tenant {tenant['mid']} created: name {tenant['name']!r}, time zone"
        f" {tenant['timezone']}, object id {tenant['object_id']}.",
        markup=False,
    )
    _print_new_key(tenant["api_key"], tenant["key_id"])


def _print_new_key(api_key: str, key_id: str) -> None:
    console.print("API key ([bold]shown once[/]: store it now; only its hash is kept):")
    console.print(f"  {api_key}")
    console.print(f"Key id: {key_id}")
    console.print(
        f"Use it as: curl -H 'Authorization: Bearer {api_key}' http://127.0.0.1:8000/v1/catalog"
        " (or the address `leadhook serve` printed)",
        markup=False,
    )


@keys_app.command("list")
def keys_list(
    mid: Annotated[str, typer.Argument(help="The tenant id.")],
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """List a tenant's keys: id, prefix, created, revoked (never the keys themselves)."""
    with opened(load_settings(database_url=database_url)) as container:
        keys = container.tenants.list_keys(mid)
    if as_json:
        console.print_json(json.dumps({"data": keys}))
        return
    table = Table("key id", "prefix", "created (UTC)", "revoked (UTC)", title=f"API keys of {mid}")
    for key in keys:
        table.add_row(
            key["id"], key["prefix"] + "…", _when(key["created_at"]), _when(key["revoked_at"])
        )
    console.print(table)


def _when(ts: str | None) -> str:
    # The services answer RFC 3339 in UTC (`2026-12-01T08:30:00.250Z`): show it to the minute.
    if ts is None:
        return "-"
    return ts[:16].replace("T", " ")


@keys_app.command("issue")
def keys_issue(
    mid: Annotated[str, typer.Argument(help="The tenant id.")],
    database_url: DatabaseUrl = None,
    as_json: AsJson = False,
) -> None:
    """Issue another API key for a tenant (shown once)."""
    with opened(load_settings(database_url=database_url)) as container:
        key = container.tenants.issue_key(mid)
    if as_json:
        console.print_json(json.dumps(key))
        return
    _print_new_key(key["api_key"], key["id"])


@keys_app.command("revoke")
def keys_revoke(
    mid: Annotated[str, typer.Argument(help="The tenant id.")],
    key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    with opened(load_settings(database_url=database_url)) as container:
        container.tenants.revoke_key(mid, key_id)
    console.print(f"Key {key_id} of {mid} revoked.")


# ---- demo and listen ----------------------------------------------------------------------


@app.command()
def demo(
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for every event to arrive.")
    ] = 30.0,
) -> None:
    """Run a self-contained tour: every behaviour, every event delivered, verified and shown."""
    from leadhook.cli_demo import run_demo
    from leadhook.cli_runtime import run_async

    raise typer.Exit(run_async(run_demo(console, timeout=timeout)))


@app.command()
def listen(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8787,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            envvar="LEADHOOK_LISTEN_SECRET",
            help="The subscription's whsec_ secret; repeat it during a rotation.",
        ),
    ] = None,
    forward_to: Annotated[
        str | None,
        typer.Option("--forward-to", help="Also POST each delivery, as received, to this URL."),
    ] = None,
) -> None:
    """Receive deliveries locally: verify their signature and pretty-print each event."""
    from leadhook.cli_listen import run_listener
    from leadhook.cli_runtime import bind, run_async

    try:
        sock = bind(host, port)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    try:
        run_async(run_listener(console, sock, secrets=secret or [], forward_to=forward_to))
    except ValueError as exc:
        fail(str(exc), 2)


def main() -> None:
    """Run the command line (the `leadhook` console script)."""
    app()
