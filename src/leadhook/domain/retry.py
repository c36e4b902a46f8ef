"""Decide what happens after a webhook delivery attempt: delivered, retry, dead or disable.

Works on the transport-neutral results of domain/attempts.py (an adapter maps its transport
onto them). Pure: the clock (``now``) and the random source (``rand``) are passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from leadhook.domain.attempts import Delivered, Gone, Retry, SendResult

DecisionKind = Literal["delivered", "retry", "dead", "disable"]

DEFAULT_DELIVERY_TIMEOUT: float = 10.0
"""Seconds one delivery attempt may take before it counts as failed
(`LEADHOOK_DELIVERY_TIMEOUT`)."""

DEFAULT_DISABLE_AFTER: float = 5 * 86400.0
"""Seconds of continuous failure after which an endpoint is auto-disabled
(`LEADHOOK_AUTO_DISABLE_AFTER`)."""

JITTER_SPREAD: float = 0.25
"""Jitter draws each wait from ``[(1 - JITTER_SPREAD) * base, base]``."""

_DEFAULT_SCHEDULE: tuple[float, ...] = (
    5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 86400,
)  # fmt: skip
_PLAIN_DECIMAL = re.compile(r"\d+(?:\.\d*)?|\.\d+", re.ASCII)


@dataclass(frozen=True)
class RetryPolicy:
    """Hold the retry schedule: ``schedule[i]`` is the base wait before retry ``i + 1``."""

    schedule: tuple[float, ...]
    jitter: bool = True
    max_retry_after: float = 86400.0

    def __post_init__(self) -> None:
        for i, value in enumerate(self.schedule, start=1):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"retry schedule entry {i} must be finite and >= 0, got {value!r}")
        if not math.isfinite(self.max_retry_after) or self.max_retry_after < 0:
            raise ValueError(
                f"max_retry_after must be finite and >= 0, got {self.max_retry_after!r}"
            )

    @property
    def max_retries(self) -> int:
        """Return how many retries follow the first attempt."""
        return len(self.schedule)

    @classmethod
    def default(cls) -> RetryPolicy:
        """Return the default policy: 12 jittered retries whose base waits sum to about 3 days."""
        return cls(schedule=_DEFAULT_SCHEDULE)

    @classmethod
    def from_env_value(cls, text: str) -> RetryPolicy:
        """Parse ``LEADHOOK_RETRY_SCHEDULE``: comma-separated seconds, e.g. ``"1,2,4"``.

        An empty (or blank) string means no retries. Jitter stays on.

        Raises:
            ValueError: an entry is empty, not a plain decimal number, negative or not finite.
        """
        if not text.strip():
            return cls(schedule=())
        values: list[float] = []
        for i, raw in enumerate(text.split(","), start=1):
            item = raw.strip()
            where = f"LEADHOOK_RETRY_SCHEDULE entry {i} ({raw!r})"
            if not item:
                raise ValueError(f"{where} is empty; expected comma-separated seconds like '1,2,4'")
            try:
                value = float(item)
            except ValueError:
                raise ValueError(f"{where} is not a number of seconds") from None
            if not math.isfinite(value):
                raise ValueError(f"{where} must be finite")
            if value < 0:
                raise ValueError(f"{where} must not be negative")
            if not _PLAIN_DECIMAL.fullmatch(item):
                raise ValueError(f"{where} must be plain decimal seconds like '30' or '0.5'")
            values.append(value)
        return cls(schedule=tuple(values))


@dataclass(frozen=True)
class Decision:
    """State the outcome of an attempt; ``next_attempt_at`` (unix seconds) is set only for retry."""

    kind: DecisionKind
    next_attempt_at: float | None
    reason: str


def jittered_wait(policy: RetryPolicy, base: float, rand: Callable[[], float]) -> float:
    """Return the wait for a schedule entry, jittered within its last quarter.

    The result is within ``[0.75 * base, base]``: retries of many deliveries that failed
    together spread out, yet a wait never exceeds what the schedule names, and the whole
    schedule keeps its span (the default: about three days, never more than 3.2). ``rand``
    is expected in ``[0, 1)`` and is clamped to ``[0, 1]``.
    """
    if not policy.jitter:
        return base
    r = min(1.0, max(0.0, rand()))
    return base * (1.0 - JITTER_SPREAD * r)


def decide(
    policy: RetryPolicy,
    result: SendResult,
    attempt_number: int,
    now: float,
    rand: Callable[[], float],
) -> Decision:
    """Decide the fate of attempt ``attempt_number`` (1 = first attempt).

    Delivered delivers; Gone disables the subscription (this delivery is then dead); Retry
    with ``after`` retries after that delay, clamped to ``[0, max_retry_after]`` and without
    jitter; Failed, Retry without ``after``, or Retry asking for no wait at all, follows the
    schedule. Once the schedule is exhausted the delivery is dead.

    ``Retry-After: 0``, or a date already past (a receiver's clock running fast), asks for no
    wait: taken as said, the twelve default retries would be spent within milliseconds and
    the delivery be dead, where the schedule gives it about three days. Any wait asked for is
    honoured as asked, shorter or longer than the schedule's.
    """
    if attempt_number < 1:
        raise ValueError(f"attempt_number must be >= 1, got {attempt_number}")
    if isinstance(result, Delivered):
        return Decision("delivered", None, "delivered")
    if isinstance(result, Gone):
        return Decision(
            "disable", None, f"{result.why}: subscription disabled; this delivery is dead"
        )

    what = result.why
    if attempt_number > policy.max_retries:
        return Decision("dead", None, f"{what}; retries exhausted after {attempt_number} attempts")
    asked = (
        result.after
        if isinstance(result, Retry) and result.after is not None and not math.isnan(result.after)
        else None
    )
    if asked is not None and asked > 0:
        delay = min(asked, policy.max_retry_after)
        return Decision("retry", now + delay, f"{what}; Retry-After {_secs(delay)}s")
    wait = jittered_wait(policy, policy.schedule[attempt_number - 1], rand)
    if asked is not None:
        return Decision(
            "retry",
            now + wait,
            f"{what}; Retry-After asked for no wait: retry {attempt_number} in {_secs(wait)}s,"
            " the schedule's",
        )
    return Decision("retry", now + wait, f"{what}; retry {attempt_number} in {_secs(wait)}s")


def _secs(seconds: float) -> str:
    """Seconds for a reason's text, to the hundredth: `4.72`, not the jitter's `4.71899`."""
    return f"{seconds:.2f}".rstrip("0").rstrip(".")


def should_auto_disable(
    first_failure_at: float | None, now: float, disable_after: float = DEFAULT_DISABLE_AFTER
) -> bool:
    """Return True when an endpoint has failed without success for ``disable_after`` seconds.

    ``first_failure_at`` is the start of the current failure streak, None if it is not failing.
    """
    if first_failure_at is None:
        return False
    return now - first_failure_at >= disable_after
