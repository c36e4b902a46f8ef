"""SQLite's WAL checkpoints on a thread beside delivery (adapters/db/checkpoint.py), real files."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from leadhook.adapters.db.checkpoint import WalCheckpointer
from leadhook.adapters.db.engine import WAL_AUTOCHECKPOINT, configure_sqlite
from leadhook.bootstrap import Container, build
from leadhook.cli.runtime import run_service
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest
from leadhook.settings import Settings

FIELDS = {"name": "Ada", "mobile": "13800000000"}


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    c = build(Settings(database_url=f"sqlite:///{tmp_path / 'ckpt.db'}"))
    try:
        yield c
    finally:
        c.close()


def _db_path(c: Container) -> Path:
    assert c.engine.url.database
    return Path(c.engine.url.database)


def _write_leads(c: Container, n: int) -> str:
    mid = c.tenants.create("ckpt", "ckpt").tenant.mid
    request = BehaviourRequest(mid=mid, operator=Operator())
    for _ in range(n):
        c.leads.create(request, {"fields": FIELDS})
    return mid


def _leads_in_file_alone(path: Path, tmp: Path) -> int:
    """Leads the database file holds without its WAL: what checkpoints have copied into it."""
    alone = tmp / "alone.db"
    alone.unlink(missing_ok=True)
    shutil.copyfile(path, alone)
    db = sqlite3.connect(alone)
    try:
        return int(db.execute("SELECT count(*) FROM leads").fetchone()[0])
    except sqlite3.OperationalError:  # the table itself is still only in the WAL
        return 0
    finally:
        db.close()


def _until(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_the_engines_connections_checkpoint_only_past_the_raised_bound(
    container: Container,
) -> None:
    with container.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == WAL_AUTOCHECKPOINT > 1000


def test_the_engines_connections_read_pages_without_a_memory_map(container: Container) -> None:
    # Another process's commit makes a connection drop its page cache; through a memory map
    # that was an munmap, an mmap and a page fault per page read again (docs/write-path.md).
    with container.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0


_SETTINGS = (
    "busy_timeout",
    "journal_mode",
    "synchronous",
    "mmap_size",
    "foreign_keys",
    "wal_autocheckpoint",
)


def test_a_plain_connection_set_up_like_the_engines_has_all_their_settings(
    container: Container,
) -> None:
    # `bench.sql_floor` measures leadhook's SQL on a plain sqlite3 connection set up with
    # `configure_sqlite`; a setting the engine's connections had and it lacked (a copied list
    # of PRAGMAs drifted once) would make it measure something else.
    with container.engine.connect() as conn:
        engine_has = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in _SETTINGS}
    plain = sqlite3.connect(_db_path(container), isolation_level=None)
    try:
        bare = {p: plain.execute(f"PRAGMA {p}").fetchone()[0] for p in _SETTINGS}
        configure_sqlite(plain)
        configured = {p: plain.execute(f"PRAGMA {p}").fetchone()[0] for p in _SETTINGS}
    finally:
        plain.close()
    assert configured == engine_has
    # Not a test of SQLite's defaults: these are settings the set-up itself changes.
    assert {p for p in _SETTINGS if bare[p] != configured[p]} >= {
        "busy_timeout",
        "foreign_keys",
        "wal_autocheckpoint",
    }


def test_commits_leave_their_pages_in_the_wal_until_the_thread_copies_them(
    container: Container, tmp_path: Path
) -> None:
    path = _db_path(container)
    _write_leads(container, 20)
    # Twenty behaviours are far below the writers' own bound: nothing reached the file.
    assert _leads_in_file_alone(path, tmp_path) == 0

    checkpointer = WalCheckpointer.for_engine(container.engine)
    assert checkpointer is not None
    checkpointer.busy_interval = checkpointer.idle_interval = 0.005
    checkpointer.start()
    try:
        _until(lambda: checkpointer.counts.pages > 0)
    finally:
        checkpointer.stop()
    assert checkpointer.counts.checkpoints >= 1 and checkpointer.counts.failures == 0
    assert _leads_in_file_alone(path, tmp_path) == 20


def test_once_copied_the_wal_starts_again_from_its_beginning(
    container: Container, tmp_path: Path
) -> None:
    path = _db_path(container)
    mid = _write_leads(container, 20)
    checkpointer = WalCheckpointer(path)
    probe = sqlite3.connect(path, isolation_level=None)
    try:
        frames, copied = checkpointer.checkpoint_once(probe)
        assert frames == copied > 0  # everything copied; the WAL still holds its frames
        container.leads.create(BehaviourRequest(mid=mid, operator=Operator()), {"fields": FIELDS})
        after, _ = checkpointer.checkpoint_once(probe)
    finally:
        probe.close()
    # The next commit wrote from the WAL's first frame on: a file that does not grow.
    assert 0 < after < frames


def test_a_checkpoint_that_fails_is_counted_and_tried_again(tmp_path: Path) -> None:
    checkpointer = WalCheckpointer(tmp_path / "missing" / "x.db", idle_interval=0.005)
    checkpointer.start()
    try:
        _until(lambda: checkpointer.counts.failures >= 2)
        assert checkpointer._thread is not None and checkpointer._thread.is_alive()
    finally:
        checkpointer.stop()
    assert checkpointer.counts.failures >= 2 and checkpointer.counts.pages == 0


def test_only_a_sqlite_file_gets_a_checkpointer(tmp_path: Path) -> None:
    assert WalCheckpointer.for_engine(create_engine("sqlite://")) is None
    assert WalCheckpointer.for_engine(create_engine("postgresql+psycopg://u@127.0.0.1/x")) is None
    found = WalCheckpointer.for_engine(create_engine(f"sqlite:///{tmp_path / 'a.db'}"))
    assert found is not None and found.path == tmp_path / "a.db"


def test_the_delivery_loop_runs_the_checkpointer_and_stops_it(container: Container) -> None:
    seen: dict[str, bool] = {}
    shutdown = asyncio.Event()

    def look() -> None:
        seen["running"] = any(t.name == "wal-checkpoint" for t in threading.enumerate())
        shutdown.set()

    def started() -> None:  # the tasks have just been made: look once they have run a little
        asyncio.get_running_loop().call_later(0.2, look)

    asyncio.run(
        run_service(
            container,
            sock=None,
            deliver="inline",
            shutdown=shutdown,
            on_started=started,
            handle_signals=False,
        )
    )
    assert seen == {"running": True}
    assert not any(t.name == "wal-checkpoint" for t in threading.enumerate())
