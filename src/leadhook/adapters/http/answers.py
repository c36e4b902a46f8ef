"""Map what an HTTP attempt got back onto the transport-neutral results (domain/attempts.py).

2xx delivers; 410 is gone (the subscription gets disabled); 429 and 503 ask to retry, after
their `Retry-After` when it is valid; any other status, and no answer at all (a timeout, a
refused connection or target), is a failure retried on the schedule. Pure: `now` is passed in.
"""

from __future__ import annotations

import re
from datetime import UTC
from email.utils import parsedate_to_datetime

from leadhook.domain.attempts import Delivered, Failed, Gone, Retry, SendResult, no_answer

__all__ = ["http_answer", "no_answer", "retry_after_seconds"]

_DELTA_SECONDS = re.compile(r"\d+", re.ASCII)


def http_answer(
    status: int, latency_ms: float, body: str, retry_after: str | None, now: float
) -> SendResult:
    """Return the result of an attempt that got an HTTP answer (`now`: for a `Retry-After`
    date). A NUL in the body reads as U+FFFD, as the stored attempt keeps it (PostgreSQL's
    text holds no NUL): a test event's answer showed it raw where its delivery did not."""
    if "\x00" in body:
        body = body.replace("\x00", "\ufffd")
    if 200 <= status <= 299:
        return Delivered(latency_ms=latency_ms, status_code=status, body=body)
    if status == 410:
        return Gone(latency_ms=latency_ms, status_code=status, body=body, why="HTTP 410 Gone")
    why = f"HTTP {status}"
    if status in (429, 503):
        after = retry_after_seconds(retry_after, now)
        return Retry(latency_ms=latency_ms, status_code=status, body=body, why=why, after=after)
    return Failed(latency_ms=latency_ms, status_code=status, body=body, why=why)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Return the delay a ``Retry-After`` header asks for, or None if absent or unparsable.

    Accepts delta-seconds (digits only, RFC 9110) or an HTTP-date; a date in the past
    gives 0.0. A date without a zone is taken as UTC.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
