"""Delivery values and ports: a claimed job, its outcome, the queue, the sender, a lane."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from leadhook import __version__
from leadhook.domain.signing import active_secrets
from leadhook.services.ports import Attempt, DeliveryStatus

USER_AGENT = f"leadhook/{__version__}"
LANE_DEPTH = 4
"""A worker holds up to this many times a subscription's `max_in_flight` (in flight + waiting)."""
MAX_IN_FLIGHT = 256
"""The most attempts one subscription may have in flight in one worker (the API refuses more)."""


@dataclass(frozen=True)
class Job:
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

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """Return the secrets that sign now: the current one, and the previous during rotation."""
        return active_secrets(
            self.secret, self.previous_secret, self.previous_secret_expires_at, now
        )


@dataclass(frozen=True)
class Disable:
    """Disable the subscription; with `failing_before`, only if still failing since before it."""

    reason: str
    failing_before: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a job led to: the attempt row and the delivery's new state."""

    job: Job
    attempt: Attempt
    status: DeliveryStatus
    next_attempt_at: float | None
    last_error: str | None
    disable: Disable | None = None


@dataclass(frozen=True)
class SendResult:
    """The answer to one POST; `status_code` is None when no HTTP response came back."""

    status_code: int | None
    latency_ms: float
    error: str | None = None
    body: str = ""
    retry_after: str | None = None


class Sender(Protocol):
    """POST webhook bodies over a pooled client; never raises for a failed attempt."""

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
    def record(self, *, worker_id: str, outcomes: Sequence[Outcome], now: float) -> None: ...
    def release(self, *, worker_id: str, seqs: Sequence[int]) -> None: ...
    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]: ...
    def recover(self, *, worker_id: str) -> int: ...


@dataclass
class DispatcherStats:
    """Counters since start, for metrics; the delivery counters count recorded outcomes."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    disabled: int = 0
    renewed: int = 0
    recovered: int = 0
    tripped: int = 0


@dataclass
class Lane:
    """One subscription's jobs in this worker: the waiting ones, the in-flight count, the bucket."""

    max_in_flight: int
    rate: float | None
    tokens: float
    stamp: float
    mid: str = ""
    waiting: deque[Job] = field(default_factory=deque)
    in_flight: int = 0
    queued: bool = False
    gone: bool = False
    timer: asyncio.TimerHandle | None = None
    ready: int = 0  # waiting jobs that only wait for a global slot (counted in Dispatcher._ready)
    silent: int = 0  # attempts in a row that got no answer (the circuit breaker's count)
    tripped_until: float = 0.0  # monotonic: no new attempt before (the circuit opened)

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last refill (monotonic seconds)."""
        if self.rate is not None:
            self.tokens = min(burst(self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def saturated(self, now: float) -> bool:
        """Tell whether a claim should skip this subscription for now."""
        held = self.in_flight + len(self.waiting)
        if self.tripped_until > now:
            return True
        if self.rate is None:
            return self.gone or held >= self.max_in_flight * LANE_DEPTH
        self.refill(now)
        return self.gone or held >= self.max_in_flight or bool(self.waiting) or self.tokens < 1

    def idle(self, now: float) -> bool:
        """Tell whether forgetting this lane would change nothing (nothing held, bucket full)."""
        self.refill(now)
        full = self.rate is None or self.tokens >= burst(self.rate)
        busy = bool(self.waiting) or self.in_flight > 0 or self.timer is not None or self.gone
        busy = busy or self.tripped_until > now
        return full and not busy


def burst(rate: float) -> float:
    """Return the token bucket size of a rate limit: a tenth of a second's worth, at least 1."""
    return max(1.0, rate / 10)
