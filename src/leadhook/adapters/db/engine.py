"""Engines for SQLite (WAL, one writer at a time) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite:///./leadhook.db"

# The WAL is copied into the database file by a thread beside delivery (checkpoint.py), off
# the writers' commits. A writer still checkpoints itself once the WAL passes this many pages
# (SQLite's default is 1,000: every ~30 behaviours, in a request's commit): the bound for when
# that thread falls behind or does not run, ~40 MB of WAL.
WAL_AUTOCHECKPOINT = 10_000
# How long a SQLite write waits for another's write lock before "database is locked" (503).
BUSY_TIMEOUT = 30.0
# The application name of every leadhook connection to PostgreSQL (pg_stat_activity).
APP_NAME = "leadhook"
SQLITE_BUSY, SQLITE_LOCKED = 5, 6  # SQLite's primary result codes of a lock held elsewhere


def locked_error() -> sqlite3.OperationalError:
    """SQLite's "database is locked", for a write that waited out `BUSY_TIMEOUT` elsewhere
    than in SQLite's own busy handler (the API's loop, waiting for the write gate)."""
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorcode = SQLITE_BUSY  # the API answers 503 with Retry-After
    exc.sqlite_errorname = "SQLITE_BUSY"
    return exc


def is_locked(exc: BaseException) -> bool:
    """Whether `exc` (or what it wraps) is SQLite's "database is locked" or "table is locked":
    a write lock held elsewhere."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, sqlite3.OperationalError):
            code = (getattr(cause, "sqlite_errorcode", 0) or 0) & 0xFF
            return code in (SQLITE_BUSY, SQLITE_LOCKED)
        cause = getattr(cause, "orig", None) or cause.__cause__
    return False


def normalize_url(url: str) -> str:
    """Use psycopg 3 for a plain `postgresql://` URL."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def url_problem(url: str) -> str | None:
    """Say what makes `url` unusable as leadhook's database URL (None: nothing). Checked
    before anything connects, so a typo is one clear line (the CLI exits 2), not a traceback
    from the driver loader; the URL itself is not repeated (it may hold a password)."""
    try:
        parsed = make_url(normalize_url(url))
    except (ArgumentError, ValueError):
        return (
            "the database URL cannot be read: use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DATABASE"
        )
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        # Each connection would be a database of its own: leadhook's threads and its delivery
        # process would not see what the API wrote.
        return (
            "the database URL names an in-memory SQLite database, which leadhook's threads and"
            " processes cannot share: name a file, sqlite:///PATH"
        )
    if backend == "sqlite" and driver == "pysqlite":
        # The driver reads no option but `uri=true` (then SQLite reads those of a `file:`
        # name), and leadhook sets its own timeout and transactions: `?mode=ro` was dropped
        # with a library warning, and the file opened for writing all the same.
        ignored = sorted(set(parsed.query) - {"uri"})
        if ignored and str(parsed.query.get("uri", "")).lower() != "true":
            return (
                f"the database URL's options ({', '.join(ignored)}) would be ignored: a"
                " sqlite:///PATH URL takes none (SQLite's own, such as mode, only with a"
                " file: name and uri=true)"
            )
        return None
    if backend == "postgresql" and driver == "psycopg":
        return None
    return (
        f"the database URL names {parsed.drivername!r}: leadhook runs on sqlite:///PATH "
        "or postgresql://... (psycopg 3, also written postgresql+psycopg://)"
    )


def is_sqlite(engine: Engine) -> bool:
    """Tell whether the engine talks to SQLite."""
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, pool_size: int = 16) -> Engine:
    """Create the engine for `url`, with SQLite tuned for a single-writer outbox."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    # No overflow: the API's thread pool is larger than the pool, and overflow connections are
    # opened and closed per checkout under load (milliseconds each). A thread waits instead.
    # hide_parameters: a failed statement's error text must never carry its bound values
    # (webhook secrets, lead data) into a log line or a traceback.
    # Named in pg_stat_activity, so that a command can tell whether leadhook processes still
    # use the database (`others_using`); a name the URL gives wins.
    connect_args = {} if "application_name" in parsed.query else {"application_name": APP_NAME}
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=30,
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args=connect_args,
    )


def others_using(engine: Engine) -> list[str]:
    """Other processes that use this database now, each described in a few words.

    SQLite: the processes of this machine with the file (or its `-wal`, `-shm`) open, read
    from /proc (a `sqlite3` shell counts: it may hold a transaction). PostgreSQL: the other
    sessions named `APP_NAME` (every leadhook connection is). Asked by commands that must not
    run beside a service (`forget-secret-key`).
    """
    if is_sqlite(engine):
        return [f"pid {pid} {_name_of(pid)}" for pid in _pids_with_open(engine.url.database or "")]
    engine.dispose()  # this process's other pooled sessions are not "others"
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid, coalesce(host(client_addr), 'local') FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = :name"
                " AND pid <> pg_backend_pid() ORDER BY pid"
            ),
            {"name": APP_NAME},
        ).all()
    return [f"session {pid} from {where}" for pid, where in rows]


def _name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _pids_with_open(database: str) -> list[int]:
    if not database or database == ":memory:":
        return []
    target = Path(database).expanduser().resolve()
    names = {str(target), f"{target}-wal", f"{target}-shm"}
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            links = list((proc / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for link in links:
            try:
                if os.readlink(link) in names:
                    found.add(int(proc.name))
                    break
            except OSError:
                continue
    return sorted(found)


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        if not parsed.database.startswith("file:"):  # a URI filename is SQLite's to open
            _private_file(path)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT},
        # Enough for every thread of the API's pool and the dispatcher: an overflow connection
        # would be opened (PRAGMAs, schema read) and closed again on every checkout.
        pool_size=48,
        max_overflow=0,
        pool_timeout=30,
        hide_parameters=True,  # see make_engine
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when a transaction begins (see "begin" below).
        dbapi_conn.isolation_level = None
        configure_sqlite(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A write transaction takes the write lock up front, so it never fails half-way with
        # "database is locked" when it upgrades from reading to writing.
        readonly = conn.get_execution_options().get("leadhook_readonly", False)
        # On the driver directly: this runs for every transaction, and SQLAlchemy's execution
        # path cost more than the statement.
        conn.connection.driver_connection.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def _private_file(path: Path) -> None:
    """Make a new database file readable by its owner only (0600), as the key file is.

    It holds leads' personal data and the API keys' hashes; SQLite makes a file with the
    process's umask (0644: anyone on the machine could read it), and its `-wal` and `-shm`
    with the database file's own permissions. An empty file is an empty database to SQLite;
    a file that exists keeps the permissions it has."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def configure_sqlite(dbapi_conn: sqlite3.Connection) -> None:
    """Set up a new connection to a SQLite file as every leadhook connection is set up.

    The engine's connections get this; so does anything that measures or checks what
    leadhook's own connections do (`bench.sql_floor`), so that the two cannot drift apart.
    """
    cur = dbapi_conn.cursor()
    try:
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
        _enable_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        # Pages are read with read(), not through a memory map. The API and the delivery
        # process write the same file, and a transaction that finds the other's commits in the
        # WAL drops its page cache, and with it the whole map: an munmap (a TLB shootdown
        # across the process's threads), an mmap and a page fault per page touched again.
        # SQLite's own default, said explicitly: a build may map by default
        # (docs/write-path.md, "SQLite with two processes").
        cur.execute("PRAGMA mmap_size=0")
        cur.execute("PRAGMA foreign_keys=ON")
        # Checkpoint every WAL_AUTOCHECKPOINT pages rather than SQLite's 1,000 (see there).
        cur.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT}")
    finally:
        cur.close()


def _enable_wal(cur: Any, attempts: int = 200) -> None:
    """Switch a database file to WAL once; another process doing the same may hold it."""
    # Changing the journal mode needs the file to itself and SQLite answers "database is
    # locked" at once rather than waiting: two processes opening a new file together (serve
    # and worker) must take turns. Once the file is in WAL mode, this reads and returns.
    for attempt in range(attempts):
        if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
            return
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class WriteGate:
    """Serialise write transactions where the database has a single writer (SQLite).

    In this process, a thread lock. Across processes (serve and its delivery process, or a
    worker beside serve), an exclusive `flock` on a file beside the database: SQLite's own
    busy handler waits by sleeping and polling (1, 2, 5 … 100 ms), so two processes taking
    turns at short transactions stalled each other for whole sleeps, while a waiter on the
    kernel's lock wakes the moment the holder lets go. PostgreSQL needs neither.
    """

    def __init__(self, engine: Engine) -> None:
        self._lock: threading.Lock | None = threading.Lock() if is_sqlite(engine) else None
        self._file: int | None = None
        database = engine.url.database if self._lock is not None else None
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser()
            self._path: Path | None = path.with_name(path.name + "-writer.lock")
        else:
            self._path = None

    def hold(self) -> AbstractContextManager[Any]:
        """Return a context manager held for one write transaction."""
        if self._lock is None:
            return nullcontext()
        if self._path is None:
            return self._lock
        return self._both()

    @contextmanager
    def _both(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def try_acquire(self) -> bool:
        """Take the gate if it is free right now, without waiting; tell whether it was taken.

        For an event loop, which must not block: when this answers False the loop tries again
        a moment later and carries on serving meanwhile (see `writer.GroupWriter._flush`).
        """
        return self._take(blocking=False)

    def acquire(self) -> None:
        """Take the gate, waiting as long as it takes."""
        self._take(blocking=True)

    def _take(self, *, blocking: bool) -> bool:
        if self._lock is None:
            return True
        if not self._lock.acquire(blocking=blocking):
            return False
        if self._path is None:
            return True
        try:
            fcntl.flock(
                self._descriptor(), fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB
            )
        except BlockingIOError:
            self._lock.release()
            return False
        except BaseException:
            self._lock.release()
            raise
        return True

    def release(self) -> None:
        """Give the gate back."""
        if self._lock is None:
            return
        try:
            if self._path is not None and self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _descriptor(self) -> int:
        # Only ever called with the thread lock held: one descriptor per gate.
        assert self._path is not None
        if self._file is None:
            self._file = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._file
