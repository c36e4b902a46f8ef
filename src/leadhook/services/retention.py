"""Retention: purge what has outlived its use, in small batches, beside the delivery loop.

What grows without end: idempotency keys (one per keyed request), deliveries and their
attempts (one per event and subscription, one per try), and the event log itself. Each gets a
horizon (`RetentionPolicy`); a worker purges past it in batches of `batch` rows, each its own
short transaction with a pause between, so purging never holds the write lock for long
(SQLite has one writer) nor builds a long transaction (PostgreSQL's vacuum and replicas).

The log is the product: events are kept by default. When a horizon is set for them, an event
is purged only once every one of its deliveries is finished (delivered or dead), together with
those deliveries and their attempts.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal, Protocol

from leadhook.services.ports import Clock

log = logging.getLogger("leadhook.retention")

Kind = Literal["idempotency_keys", "deliveries", "events"]
KINDS: tuple[Kind, ...] = ("idempotency_keys", "deliveries", "events")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each kind of row is kept (seconds; None keeps it forever) and how to purge."""

    idempotency_ttl: float | None = 86400.0
    delivery_retention: float | None = 30 * 86400.0
    event_retention: float | None = None
    batch: int = 1000
    pause: float = 0.2  # between batches: other writers get the (SQLite) write lock in between
    interval: float = 60.0

    def horizon(self, kind: Kind) -> float | None:
        """Return how old a row of `kind` may get before it is purged."""
        if kind == "idempotency_keys":
            return self.idempotency_ttl
        if kind == "deliveries":
            return self.delivery_retention
        return self.event_retention


class RetentionStore(Protocol):
    """Delete old rows in bounded batches and count them (blocking calls)."""

    def purge(self, kind: Kind, *, before: float, limit: int, now: float) -> dict[str, int]:
        """Delete up to `limit` rows of `kind` older than `before` (with what hangs on them);
        return the rows deleted per table, and add them to the purge counters."""
        ...

    def counts(self) -> dict[str, int]:
        """Return the rows purged per table since the database was created."""
        ...


class Retention:
    """Purge past each horizon: a round every `interval` seconds, batch after batch."""

    def __init__(
        self,
        store: RetentionStore,
        policy: RetentionPolicy,
        clock: Clock,
    ) -> None:
        self._store, self._policy, self._clock = store, policy, clock
        self.purged: dict[str, int] = {}  # by this process, per table (the store counts all)

    @property
    def enabled(self) -> bool:
        """Tell whether anything is ever purged."""
        return any(self._policy.horizon(k) is not None for k in KINDS)

    def purge_kind(self, kind: Kind, *, max_batches: int | None = None) -> dict[str, int]:
        """Purge every row of `kind` past its horizon now, batch after batch (blocking)."""
        total: dict[str, int] = {}
        horizon = self._policy.horizon(kind)
        batches = 0
        while horizon is not None and (max_batches is None or batches < max_batches):
            now = self._clock()
            done = self._store.purge(kind, before=now - horizon, limit=self._policy.batch, now=now)
            self._add(total, done)
            batches += 1
            if done.get(kind, 0) < self._policy.batch:
                break
        return total

    def purge_all(self) -> dict[str, int]:
        """Purge every kind past its horizon now (blocking; for tests and benchmarks)."""
        total: dict[str, int] = {}
        for kind in KINDS:
            for table, rows in self.purge_kind(kind).items():
                total[table] = total.get(table, 0) + rows
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Purge a round every `interval` seconds until `stop` is set."""
        if not self.enabled:
            return
        while not stop.is_set():
            for kind in KINDS:
                await self._round(kind, stop)
            await _wait(stop, self._policy.interval)

    async def _round(self, kind: Kind, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                done = await asyncio.to_thread(self.purge_kind, kind, max_batches=1)
            except Exception:
                log.exception("purging old rows failed; trying again next round")
                return
            if done:
                log.info("purged old rows", extra={"purged": done})
            if done.get(kind, 0) < self._policy.batch:
                return
            await _wait(stop, self._policy.pause)  # let other writers in between batches

    def _add(self, total: dict[str, int], done: dict[str, int]) -> None:
        for table, rows in done.items():
            if rows:
                total[table] = total.get(table, 0) + rows
                self.purged[table] = self.purged.get(table, 0) + rows


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
