"""The one representation of time in API answers: RFC 3339 in UTC, with a `Z`.

leadhook stores times as unix seconds; every answer of the API (leads, subscriptions,
deliveries, attempts, tenants, keys) shows them as `2026-12-01T08:30:00.250Z`: always UTC,
always milliseconds, so the strings sort as the instants do. The event contract keeps its own
fields exactly as it defines them (`create_time` in unix seconds, `created_timestamp` and
`to_<stage>_timestamp` in the tenant's time zone).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re

# RFC 3339 section 5.6 `date-time`: a full date, a full time, and an offset that is required.
_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
)
EXAMPLE = "2026-12-01T08:30:00Z"


def rfc3339(seconds: float) -> str:
    """Format unix seconds as RFC 3339 in UTC with milliseconds, e.g. `...T08:30:00.250Z`."""
    if type(seconds) is int:  # a lead's times: whole seconds
        return _second(seconds) + ".000Z"
    # Cut to the millisecond exactly, from the float's own ratio: never rounded up, so the
    # time shown, read back, is never later than the stored one (a filter given an item's
    # own `created_at` finds that item). Rounding to microseconds first, as datetime does,
    # showed the next millisecond for an instant within half a microsecond of it.
    num, den = float(seconds).as_integer_ratio()
    whole, millis = divmod(num * 1000 // den, 1000)
    return _second(whole) + f".{millis:03d}Z"


@functools.lru_cache(maxsize=256)
def _second(whole: int) -> str:
    # A busy second formats its date and time once, not once per answer.
    return dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339_or_none(seconds: float | None) -> str | None:
    """Format unix seconds as `rfc3339` does; None stays None."""
    return None if seconds is None else rfc3339(seconds)


def parse_rfc3339(text: str, *, in_query: bool = True) -> float:
    """Parse an RFC 3339 date-time with its offset into unix seconds; ValueError otherwise.

    `in_query`: the text came in a query string, where a `+` reads as a space (the error
    says so); False for a value of a JSON body."""
    if not _DATE_TIME.fullmatch(text):
        hint = " (send a `+` offset as %2B in a query string)" if in_query else ""
        raise ValueError(f"must be an RFC 3339 date-time with a time zone, e.g. {EXAMPLE}{hint}")
    normal = text.upper().replace(" ", "T", 1)
    # fromisoformat takes at most 6 fractional digits: finer ones cannot matter here.
    normal = re.sub(r"(\.\d{6})\d+", r"\1", normal)
    try:
        instant = dt.datetime.fromisoformat(normal)
        seconds = instant.timestamp()
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a valid date-time: {exc}") from None
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is out of range")
    return seconds
