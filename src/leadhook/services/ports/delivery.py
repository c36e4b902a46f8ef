"""The delivery ports: a claimed job, what one attempt of it led to, the queue, the sender."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from leadhook import __version__
from leadhook.domain.attempts import SendResult
from leadhook.domain.signing import RotatingSecret
from leadhook.services.ports.storage import Attempt, DeliveryStatus

USER_AGENT = f"leadhook/{__version__}"
"""What every webhook POST names itself with."""


@dataclass(frozen=True)
class Job(RotatingSecret):
    """A claimed delivery with everything needed to send it, so no lookup follows the claim."""

    seq: int
    id: str
    mid: str
    subscription_id: str
    event_id: str
    entity_id: str
    entity_version: int
    attempt_count: int
    body: bytes
    url: str
    secret: str
    max_in_flight: int
    rate_limit_per_s: float | None
    lease_until: float
    previous_secret: str | None = None
    previous_secret_expires_at: float | None = None
    first_failure_at: float | None = None
    circuit_open_until: float | None = None
    """Set when the claim found the endpoint's circuit open (until then): the job is not sent
    but turned away, one attempt spent on the schedule (domain/circuit.py)."""
    probe: bool = False
    """The claim took this job as the probe of the endpoint's half-open circuit."""


@dataclass(frozen=True)
class Disable:
    """Disable the subscription; with `failing_before`, only if still failing since before it."""

    reason: str
    failing_before: float | None = None


@dataclass(frozen=True)
class Verdict:
    """What one attempt of a job led to: the attempt row and the delivery's new state."""

    job: Job
    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at: float | None
    last_error: str | None
    disable: Disable | None = None
    sent: bool = True
    """False for an attempt the circuit turned away: it says nothing of the endpoint."""


class Sender(Protocol):
    """Carry webhook bodies to a URL; never raises for a failed attempt.

    It answers what came of the attempt, whatever the transport (domain/attempts.py); which
    sender carries a URL is chosen by its scheme (services/senders.py).
    """

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult: ...
    async def aclose(self) -> None: ...


SenderFactory = Callable[[], Sender]


class DeliveryQueue(Protocol):
    """Due deliveries, claimed with a lease and finished in batches (blocking calls)."""

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]: ...
    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None: ...
    def release(self, *, worker_id: str, seqs: Sequence[int], now: float) -> None: ...
    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]: ...
    def stopped(self, *, subscription_ids: Sequence[str]) -> set[str]: ...
    def recover(self, *, worker_id: str, now: float) -> int: ...


@runtime_checkable
class SettlingQueue(Protocol):
    """A queue that can also record, release and claim in one transaction (the SQL queue).

    The dispatcher then lets a claim carry what finished since the last one: one commit per
    round instead of two. A queue without it is recorded through `record` and `release`.
    """

    def settle_and_claim(
        self,
        *,
        worker_id: str,
        verdicts: Sequence[Verdict],
        releases: Sequence[int],
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]: ...


@runtime_checkable
class InlineQueue(Protocol):
    """A queue whose calls take microseconds when nobody else is writing (SQLite's): an event
    loop may run them itself rather than hand them to a thread."""

    def try_now(self, call: str, /, **kwargs: Any) -> tuple[bool, Any]:
        """Run the queue's method `call` with `kwargs` at once if that cannot wait on anyone
        (the write gate is free this instant): (True, its answer); else (False, None)."""
        ...

    def stop_waiting(self) -> None:
        """Give up every wait for the database's write lock from now on (the caller is
        stopping): a call waiting for it fails at once instead of when it is let go."""
        ...


OUTCOMES: tuple[str, ...] = ("delivered", "failed", "turned_away", "dead", "circuit_opened")
"""What the delivery counters count (`tally`, /metrics): an attempt answered 2xx, an attempt
that failed (an error status, no answer, a refused target), an attempt the open circuit
turned away (nothing sent), a delivery that went dead (its last attempt failed or a 410), and
an endpoint's circuit that opened (or opened again after a failed probe)."""


OUTCOME_SLOTS = 16
"""Rows each outcome is counted in (`outcome_slot`)."""


def outcome_slot(worker_id: str) -> int:
    """The row of `delivery_outcomes` a worker adds its counts to, one of `OUTCOME_SLOTS`: a
    new worker id adds no row. Two workers may share one (likely from about four on): they
    then take turns at its update, the last statement of each record (a COMMIT's wait)."""
    return zlib.crc32(worker_id.encode()) % OUTCOME_SLOTS


def tally(
    verdicts: Sequence[Verdict], circuits_opened: int = 0, dead: int | None = None
) -> dict[str, int]:
    """Count what a record of `verdicts` stores, by `OUTCOMES` (only those above zero).

    `dead`: how many deliveries the record actually ended dead, where the store knows (a
    verdict whose lease another worker took over ends nothing); else each dead verdict."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for o in verdicts:
        if not o.sent:
            counts["turned_away"] += 1
        elif o.status == DeliveryStatus.DELIVERED:
            counts["delivered"] += 1
        else:
            counts["failed"] += 1
        if o.status == DeliveryStatus.DEAD:
            counts["dead"] += 1
    counts["circuit_opened"] += circuits_opened
    if dead is not None:
        counts["dead"] = dead
    return {name: n for name, n in counts.items() if n}


def log_circuit_closed(log: logging.Logger, sub_id: str, open_for: float, by: str) -> None:
    """Say that a subscription's circuit closed, `open_for` seconds after it last opened:
    the one line for every way it closes (a delivery's answer in the queue; a test event or a
    new URL in the subscription service)."""
    log.info(
        "circuit closed: the endpoint answers again",
        extra={"subscription_id": sub_id, "open_for_s": round(open_for, 1), "by": by},
    )
