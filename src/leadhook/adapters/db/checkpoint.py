"""SQLite's WAL copied into the database file on a thread of its own, off the writers' commits.

In WAL mode every commit appends the pages it changed to the `-wal` file; a *checkpoint* copies
them back into the database file and syncs it. SQLite runs one by default inside the commit that
takes the WAL past 1,000 pages: that request then pays for copying every page the last ~30
behaviours wrote, and for two `fsync`s, while its client waits. Here a thread of the process
that delivers (serve's delivery process, `leadhook worker`) runs a PASSIVE checkpoint every 50
ms while there is something to copy: it takes no write lock and never waits for
one, so the writers keep appending while it copies, and their commits only append. Once the
WAL is copied up to date, the next writer starts it again from its beginning (SQLite does that
itself), so the file stays the size of a fraction of a second of writes.

The writers keep SQLite's own checkpoint as the bound for when this thread falls behind or does
not run (a process that writes and delivers nothing, e.g. the app embedded in tests):
`engine.WAL_AUTOCHECKPOINT` pages.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from leadhook.adapters.db.engine import is_sqlite

log = logging.getLogger("leadhook.checkpoint")

# Seconds between checkpoints while the WAL keeps growing: at a busy writer's ~20,000 pages a
# second, about the 1,000 pages SQLite's own checkpoints copy at a time, so no more syncs than
# before, and none of them in a commit (10 ms measured the same within this machine's noise).
BUSY_INTERVAL = 0.05
IDLE_INTERVAL = 0.1  # … and while nothing was written since the last one


@dataclass
class CheckpointCounts:
    """What the thread did since it started."""

    checkpoints: int = 0  # checkpoints that copied at least one page
    pages: int = 0  # WAL frames copied into the database file
    failures: int = 0  # checkpoints that raised (logged; the next one tries again)


class WalCheckpointer:
    """Run `PRAGMA wal_checkpoint(PASSIVE)` on a thread while the WAL has frames to copy."""

    def __init__(
        self,
        path: Path,
        *,
        busy_interval: float = BUSY_INTERVAL,
        idle_interval: float = IDLE_INTERVAL,
    ) -> None:
        self.path = path
        self.busy_interval = busy_interval
        self.idle_interval = idle_interval
        self.counts = CheckpointCounts()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_engine(cls, engine: Engine) -> WalCheckpointer | None:
        """A checkpointer for the engine's database file; None unless a SQLite file."""
        if not is_sqlite(engine):
            return None
        database = engine.url.database
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        return cls(Path(database).expanduser())

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it; its last checkpoint finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def run(self, stop: asyncio.Event) -> None:
        """Checkpoint until `stop` is set (a task beside the delivery loop)."""
        self.start()
        try:
            await stop.wait()
        finally:
            await asyncio.to_thread(self.stop)

    def checkpoint_once(self, db: sqlite3.Connection) -> tuple[int, int]:
        """One PASSIVE checkpoint: (frames in the WAL, frames copied so far)."""
        _busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(frames), int(copied)

    def _loop(self) -> None:
        db: sqlite3.Connection | None = None
        last = (-1, -1)
        interval = self.idle_interval
        while not self._stop.wait(interval):
            try:
                if db is None:
                    # A connection of its own: never one a writer might be holding.
                    db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                now = self.checkpoint_once(db)
            except sqlite3.Error as exc:
                self.counts.failures += 1
                log.warning("WAL checkpoint failed (%s); trying again", exc)
                if db is not None:
                    db.close()
                    db = None
                interval = self.idle_interval
                continue
            copied = now[1]
            if now != last:
                if copied > 0 and copied != last[1]:
                    self.counts.checkpoints += 1
                    # A WAL started again from its beginning counts again from 0.
                    self.counts.pages += copied - (last[1] if 0 <= last[1] <= copied else 0)
                interval = self.busy_interval
            else:
                interval = self.idle_interval
            last = now
        if db is not None:
            db.close()
