"""What one delivery attempt came to, whatever carried it: Delivered, Retry, Gone or Failed.

A sender (the port in `services/ports/delivery.py`) answers one of these; the transport's own
vocabulary (HTTP status codes, `Retry-After`, timeouts) stays in its adapter, which maps it
here (`adapters/http/sender.py`). `retry.decide` works on these alone.

Each also carries what the attempt row records, whatever came of it (`Attempt`): the sink's
answer code (an HTTP status; None when no answer came, which is what the circuit breaker
counts), the latency, the first KB of the answer and the error text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """The part of every attempt's result that is recorded as it is."""

    latency_ms: float
    status_code: int | None = None
    body: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivered(Answer):
    """The sink took the delivery (HTTP: a 2xx answer)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry(Answer):
    """The sink asked to be tried again later (HTTP: 429 or 503).

    `after`: the seconds it asked to wait (HTTP: a valid `Retry-After`), or None to follow
    the retry schedule. `why` names the answer in the delivery's `last_error`.
    """

    why: str
    after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Gone(Answer):
    """The sink is gone for good (HTTP: 410): the subscription is disabled."""

    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Failed(Answer):
    """Any other failure, answered or not (an HTTP error status, a timeout, a refused target):
    retried on the schedule. `why` names it in the delivery's `last_error`."""

    why: str


SendResult = Delivered | Retry | Gone | Failed
"""What a sender answers for one attempt."""


NO_RESPONSE = "no response"
"""How the `last_error` of a delivery whose last attempt got no answer at all begins."""


def no_answer(latency_ms: float, error: str | None) -> Failed:
    """Return the result of an attempt that got no answer at all; `error` says why."""
    why = f"{NO_RESPONSE}: {error}" if error else NO_RESPONSE
    return Failed(latency_ms=latency_ms, error=error, why=why)


TURNED_AWAY = "not sent: circuit open"
"""The error of an attempt the circuit breaker turned away (domain/circuit.py): it spends one
of the delivery's attempts on the schedule, but nothing went to the endpoint. A failed
delivery's `last_error` starts with it while that was its last attempt."""

UNANSWERED = (TURNED_AWAY, NO_RESPONSE)
"""How the `last_error` of a failed delivery whose last attempt got no answer begins (turned
away, or sent without an answer): what a circuit that closes makes due at once."""


def turned_away() -> Failed:
    """Return the result of an attempt not made: the endpoint's circuit is open."""
    return Failed(latency_ms=0.0, error=TURNED_AWAY, why=TURNED_AWAY)
