"""A subscription's lane in a worker, and the limits that the claims and the lanes share.

One place for the numbers both sides of a claim must agree on: the dispatcher holds up to
`LANE_DEPTH` times a subscription's `max_in_flight` (`Lane.saturated`), and a claim takes no
more than that for one subscription (`claim_cap`, used by every queue: SQL and in memory).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from leadhook.services.ports.delivery import Job

LANE_DEPTH = 4
"""A worker holds up to this many times a subscription's `max_in_flight` (in flight + waiting)."""
MAX_IN_FLIGHT = 256
"""The most attempts one subscription may have in flight in one worker (the API refuses more)."""


def burst(rate: float) -> float:
    """Return the token bucket size of a rate limit: a tenth of a second's worth, at least 1."""
    return max(1.0, rate / 10)


def claim_cap(
    max_in_flight: int, rate_limit_per_s: float | None, circuit_retry_at: float | None = None
) -> int:
    """Return how many deliveries of one subscription a single claim may take.

    A half-open circuit gives one, its probe (`circuit_retry_at` given: the probe's); an
    open circuit's deliveries, turned away unsent, take the usual share. The PostgreSQL claim
    computes the same in SQL (`adapters/db/queue.py`, the `cap` column), from `LANE_DEPTH` and
    `MAX_IN_FLIGHT` passed as parameters.
    """
    if circuit_retry_at is not None:
        return 1
    max_in_flight = min(max_in_flight, MAX_IN_FLIGHT)
    if rate_limit_per_s is None:
        return max_in_flight * LANE_DEPTH
    return max(1, min(max_in_flight, int(rate_limit_per_s)))


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
