"""What every command shares: the consoles, the common options, settings, errors, the container.

The heavy modules (database, API, servers) are imported by the commands that need them, so
that `leadhook --help` and `leadhook tenants ...` start quickly: nothing in `leadhook.cli`
imports them at module level (tests/unit/test_cli_package.py checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from leadhook.domain.errors import LeadhookError, ValidationError

if TYPE_CHECKING:
    from leadhook.bootstrap import Container
    from leadhook.settings import Settings

console = Console(soft_wrap=True, highlight=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False)


def print_table(table: Table) -> None:
    """Print a listing; one with no rows says so in a line ("Deliveries of acme: none")
    rather than draw an empty box."""
    if table.row_count == 0:
        console.print(f"{table.title or 'Rows'}: none", markup=False)
    else:
        console.print(table)


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: $LEADHOOK_DATABASE_URL or sqlite:///./leadhook.db).",
        show_default=False,
    ),
]
MAX_CONCURRENCY = 10_000
"""A connection each at most: more than an open-files limit holds (1,024 by default)."""
Concurrency = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        max=MAX_CONCURRENCY,
        help=f"Deliveries in flight at once in this process, 1 to {MAX_CONCURRENCY:,}"
        " (default: 64).",
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
    from leadhook.adapters.db.engine import url_problem
    from leadhook.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(**overrides)
    except SettingsError as exc:
        fail(str(exc), 2)
    problem = url_problem(settings.database_url)
    if problem is not None:
        fail(problem, 2)
    return settings


def existing_database(settings: Settings) -> Settings:
    """Exit 2 when the settings name a SQLite file that does not exist, or a PostgreSQL
    database without leadhook's tables.

    A command that reads or changes what a database holds (a tenant's keys, the secret key's
    recovery) must not make a new, empty one, and its key file, from a mistyped path: it then
    said the tenant was not found, and left the stray files behind. On PostgreSQL it made
    every table and a `./leadhook.key` in whatever directory it ran from, which the services
    then refused as not the database's key.
    """
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql" and not _has_tables(settings.database_url):
        fail(
            f"no leadhook database at {display_url(settings.database_url)}: it has none of"
            " leadhook's tables; check --database-url or LEADHOOK_DATABASE_URL"
            " (`leadhook serve` or `leadhook tenants create` makes them)",
            2,
        )
    path = url.database
    if path and path.startswith("file:"):  # a URI filename (sqlite:///file:PATH?uri=true)
        path = urlsplit(path).path
    if url.get_backend_name() == "sqlite" and path and not Path(path).expanduser().exists():
        fail(
            f"no database at {path}: check --database-url or LEADHOOK_DATABASE_URL"
            " (`leadhook serve` or `leadhook tenants create` makes a new one)",
            2,
        )
    return settings


# What an operator does about the driver's terse reasons.
_HINTS = {
    "database is locked": "another process holds its write lock (`fuser` on the file names it);"
    " try again once it is free",
    "unable to open database file": "the file or its folder cannot be opened for writing (a"
    " read-only filesystem or folder, a directory, missing permissions)",
    "attempt to write a readonly database": "the file is read-only to this user",
    "file is not a database": "the file is not a SQLite database",
}


def _driver_reason(exc: BaseException) -> str:
    """The driver's own reason in one line, without SQLAlchemy's wrapping (its class, the
    statement, the "Background on this error" link), and what to do about it."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    reason = lines[0] if lines else orig.__class__.__name__
    hint = _HINTS.get(reason)
    return f"{reason}: {hint}" if hint else reason


def _has_tables(database_url: str) -> bool:
    """Whether the database holds leadhook's tables (a read; nothing is made)."""
    from sqlalchemy import create_engine, inspect

    from leadhook.adapters.db.engine import normalize_url

    with database_errors(database_url):
        engine = create_engine(normalize_url(database_url))
        try:
            return inspect(engine).has_table("tenants")
        finally:
            engine.dispose()


def display_url(url: str) -> str:
    """Return a database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn a database that cannot be opened into one line and exit 1, and a key or schema
    the operator must set right, or a SQLite path whose folder cannot be made, into one line
    and exit 2."""
    import sqlite3

    from sqlalchemy.exc import SQLAlchemyError

    from leadhook.adapters.db.migrate import SchemaMismatchError
    from leadhook.adapters.secretbox import SecretKeyError

    try:
        yield
    except (SQLAlchemyError, sqlite3.Error) as exc:
        fail(f"cannot open {display_url(url)}: {_driver_reason(exc)}")
    except OSError as exc:  # the SQLite file's folder cannot be made: a bad path, exit 2
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"cannot open {display_url(url)}: {exc.strerror or exc}{where}", 2)
    except (SecretKeyError, SchemaMismatchError) as exc:
        fail(str(exc), 2)


def all_pages(page_of: Callable[[str | None], Any]) -> list[dict[str, Any]]:
    """Every item of a paged listing (an API body with `data` and `next_cursor`), as dicts;
    `page_of(cursor)` answers one page."""
    found: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = page_of(cursor)
        found += [item.model_dump() for item in page.data]
        cursor = page.next_cursor
        if cursor is None:
            return found


def _option_detail(detail: str) -> str:
    # The services name a value where the API reads it (`body.url`, `query.status`); on the
    # command line it is an option's value, named alone.
    return detail.removeprefix("body.").removeprefix("query.")


# The pauses of a worker waiting for its PostgreSQL server at start (`opened`), then the last.
DATABASE_WAITS = (1.0, 2.0, 5.0, 10.0)


def server_not_there_yet(exc: BaseException) -> bool:
    """Whether `exc` says the PostgreSQL server cannot be reached *now* (refused, starting,
    shutting down, out of connections), not that it was set up wrong (a password, a database
    that does not exist: those do not pass by waiting). SQLite is a file: never."""
    import psycopg

    orig = getattr(exc, "orig", None) or exc
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state: str | None = getattr(orig, "sqlstate", None)
    if state:
        return state.startswith("08") or state.startswith("57P") or state == "53300"
    # A refused connection (or none at all) carries no state, and neither does the server's
    # own refusal at connect time: that one's reason says whether it passes by waiting.
    text = str(orig)
    return "FATAL:" not in text or any(passing in text for passing in _PASSING_REFUSALS)


# What a PostgreSQL server answers at connect time while it cannot take one *yet*.
_PASSING_REFUSALS = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
)


def _built(settings: Settings, *, service: bool, wait: bool, listing: bool = False) -> Container:
    """`build`, and with `wait` again and again while the server is not there yet: a worker
    started before its database (a machine booting, a deploy) exited 1, with nothing to start
    it again outside serve. SIGTERM or Ctrl-C meanwhile ends it (exit 0)."""
    import logging
    import signal
    import time

    from leadhook.bootstrap import build
    from leadhook.services.dispatcher import failure_logged

    waits = 0
    while True:
        try:
            return build(settings, rewrite_secrets=service, upgrade=not listing)
        except Exception as exc:
            if not wait or not server_not_there_yet(exc):
                raise
            pause = DATABASE_WAITS[min(waits, len(DATABASE_WAITS) - 1)]
            waits += 1
            if failure_logged(waits):  # fewer lines as it goes on, as a failing claim's
                logging.getLogger("leadhook.worker").warning(
                    "cannot open %s yet: %s; trying again in %g s (%d tries so far)",
                    display_url(settings.database_url),
                    _driver_reason(exc),
                    pause,
                    waits,
                )
            previous = signal.signal(signal.SIGTERM, _stop_waiting)
            try:
                time.sleep(pause)
            except (KeyboardInterrupt, _StopWaiting):
                raise typer.Exit(0) from None
            finally:
                signal.signal(signal.SIGTERM, previous)


class _StopWaiting(Exception):
    """SIGTERM while a worker waits for its database."""


def _stop_waiting(_signum: int, _frame: Any) -> None:
    raise _StopWaiting


@contextmanager
def opened(
    settings: Settings, *, service: bool = False, wait: bool = False, listing: bool = False
) -> Iterator[Container]:
    """Build the container (migrating the database) and close it after; fail on errors.

    `listing`: a command that only reads (the `list` ones) does not migrate: on a database
    an older leadhook still runs on, looking before switching over would commit the upgrade
    (and the older processes refuse the database once they restart). It exits 2 saying so.

    `service`: a service starts (serve, worker): stored webhook secrets are re-encrypted
    under the first key (a key rotation's step 2). A command-line job only checks the key:
    run with the keys in another order, it must not re-encrypt what running services read.
    `wait`: a PostgreSQL server not there yet is waited for (`_built`), not an error.
    """
    with database_errors(settings.database_url):
        container = _built(settings, service=service, wait=wait, listing=listing)
    try:
        yield container
    except ValidationError as exc:  # a bad option value (a time zone, an id): exit 2
        fail(_option_detail(exc.detail), 2)
    except LeadhookError as exc:
        fail(_option_detail(exc.detail))
    finally:
        container.close()
