"""The circuit breaker of a webhook endpoint: stop sending to an endpoint that never answers.

An attempt that got no HTTP answer at all (a timeout, a refused or reset connection) holds a
sending slot for up to the whole timeout and tells the subscriber nothing; an endpoint that
answers, even with an error, costs a round trip. So only attempts without an answer count:
after `THRESHOLD` of them in a row the circuit **opens** and nothing is sent to the endpoint for
a cooldown; then it is **half open**: one probe is sent. An answer closes the circuit; no
answer opens it again for twice the cooldown (up to `MAX_COOLDOWN`).

While the circuit is open, a delivery that comes due is **turned away**: nothing is sent, and
the attempt is recorded (`attempts.TURNED_AWAY`) and spends one of the delivery's attempts,
so the retry schedule keeps its time ("retried over about three days, then dead") whether the
endpoint is down or answers errors. A turned-away attempt says nothing of the endpoint: it
neither counts towards the circuit nor extends it. When the circuit closes, the deliveries
whose last attempt got no answer (turned away, or sent without an answer) are due at once:
the endpoint answers again, and what it missed need not wait for its next retry.

The probe is the first of the endpoint's deliveries to come due once the circuit is half
open (its retry on the schedule, or a new event); a test event that gets an answer closes
the circuit at once.

The state lives in the subscription's row, so every worker and the API see the same circuit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]

THRESHOLD = 5
"""Consecutive attempts without an answer that open the circuit."""
BASE_COOLDOWN = 3.0
"""Seconds the circuit stays open the first time. Shorter than the default schedule's first
retry (5 s, jittered down to 3.75 s): the first retries of the attempts that opened it find the
circuit half open, and the first of them goes as the probe. With 5 s every one of them was
turned away, and an endpoint back after a blip waited for the second retry (~30 s)."""
MAX_COOLDOWN = 600.0
"""The longest cooldown, however often the probe fails."""


@dataclass(frozen=True)
class Circuit:
    """A subscription's circuit as stored: all None / 0 when closed."""

    failures: int = 0
    opened_at: float | None = None
    retry_at: float | None = None
    cooldown: float | None = None

    def state(self, now: float) -> CircuitState:
        """Return closed, open (until `retry_at`) or half_open (a probe may go, or is going)."""
        if self.retry_at is None:
            return "closed"
        return "open" if now < self.retry_at else "half_open"


CLOSED = Circuit()


def after_no_answer(
    circuit: Circuit, started: Iterable[float], now: float, probed: bool | None = None
) -> Circuit:
    """Return the circuit after attempts started at `started` all ended without an answer.

    A straggler of the burst that opened the circuit only counts; the probe of a half-open
    circuit reopens it for a longer time. `probed` says whether one of them was the probe
    (the queue knows: the claim took it as one); without it, an attempt started after the
    circuit opened is taken for the probe, which another worker's straggler, started before
    the opening committed, is not.
    """
    starts = list(started)
    failures = circuit.failures + len(starts)
    if circuit.opened_at is not None:
        if probed is None:
            probed = any(s >= circuit.opened_at for s in starts)
        if not probed:
            return Circuit(failures, circuit.opened_at, circuit.retry_at, circuit.cooldown)
        cooldown = min(MAX_COOLDOWN, 2 * (circuit.cooldown or BASE_COOLDOWN))
        return Circuit(failures, now, now + cooldown, cooldown)
    if failures >= THRESHOLD:
        return Circuit(failures, now, now + BASE_COOLDOWN, BASE_COOLDOWN)
    return Circuit(failures)
