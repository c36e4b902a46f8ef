"""Opaque page cursors: a position in a listing, encoded so clients do not build them."""

from __future__ import annotations

import base64
import binascii
import re

from leadhook.domain.errors import BadRequestError

# What `encode` makes: "p" and a canonical non-negative integer that fits a signed 64-bit
# column; anything else would reach the database as a value it cannot take (a 500, not a 400).
_POSITION = re.compile(r"p(0|[1-9][0-9]{0,18})", re.ASCII)
MAX_POSITION = 2**63 - 1

# A keyed listing (subscriptions, oldest first) resumes after its last item's (created_at,
# id): an offset would skip an item whenever one before it is deleted between two pages. The
# time is written as repr writes it, so it comes back as the very float the row holds.
_KEYED = re.compile(
    r"k([0-9]{1,17}(?:\.[0-9]{1,24})?(?:e[+-][0-9]{1,3})?):([A-Za-z0-9_-]{1,64})", re.ASCII
)


def _opaque(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _text(cursor: str) -> str:
    """The text a cursor encodes ("" when it is no base64 of UTF-8)."""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return ""


def _malformed(cursor: str) -> BadRequestError:
    """The 400 of a cursor no listing made, naming it by its first 100 characters (one may
    be megabytes)."""
    shown = repr(cursor) if len(cursor) <= 100 else f"{cursor[:100]!r}... ({len(cursor)} chars)"
    return BadRequestError(f"malformed cursor {shown}")


def encode(position: int) -> str:
    """Encode a listing position (a row sequence number) as a cursor."""
    return _opaque(f"p{position}")


def decode(cursor: str | None) -> int | None:
    """Decode a cursor from `encode`; a malformed cursor is a 400."""
    if cursor is None or cursor == "":
        return None
    match = _POSITION.fullmatch(_text(cursor))
    if match is None or int(match.group(1)) > MAX_POSITION:
        raise _malformed(cursor)
    return int(match.group(1))


def encode_keyed(created_at: float, key: str) -> str:
    """Encode the last item of a page ordered by (created_at, key) as a cursor."""
    return _opaque(f"k{float(created_at)!r}:{key}")


def decode_keyed(cursor: str | None) -> tuple[float, str] | None:
    """Decode a cursor from `encode_keyed`; a malformed cursor is a 400."""
    if cursor is None or cursor == "":
        return None
    match = _KEYED.fullmatch(_text(cursor))
    if match is None:
        raise _malformed(cursor)
    return float(match.group(1)), match.group(2)


# An event id: a ULID, 26 characters of Crockford's base32, its first ten the millisecond it
# was minted in (adapters/system.py).
_EVENT_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", re.ASCII)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford's base32, in which event ids (ULIDs) are written (adapters/system.py)."""
# How much earlier than a purged event's own millisecond a listing resumes: an event is logged
# (takes its seq) when its transaction commits, after its id was minted, so the events logged
# after it may have been minted before it: by a behaviour that waited for a row lock, or on a
# process whose clock is behind. Events minted in those ten seconds before it come again (a
# consumer deduplicates by `event_id`); one minted earlier still and committed after it would
# be missed.
RESUME_MARGIN_MS = 10_000


def event_millisecond(event_id: str) -> int | None:
    """The unix millisecond an event id was minted in; None if it is no event id."""
    if not _EVENT_ID.fullmatch(event_id):
        return None
    ms = 0
    for ch in event_id[:10]:
        ms = ms * 32 + CROCKFORD.index(ch)
    return ms


def event_id_floor(ms: int) -> str:
    """The least event id minted in millisecond `ms` (or later): a bound ids compare with."""
    digits = []
    for _ in range(10):
        ms, digit = divmod(max(ms, 0), 32)
        digits.append(CROCKFORD[digit])
    return "".join(reversed(digits)) + "0" * 16


def purged_event_floor(after: str, purged_before: float | None) -> str | None:
    """For `after`, an event id the log does not hold: the bound of the event ids a listing
    resumes from when retention may have purged it (`purged_before`: the unix time events
    older than are purged, None when none are), else None (it names nothing: a 400).

    A consumer that had read up to an event retention then purged got a 400 and could not
    go on (a review); it now reads on from about where that event was."""
    minted = event_millisecond(after)
    if minted is None or purged_before is None or minted >= purged_before * 1000:
        return None
    return event_id_floor(minted - RESUME_MARGIN_MS)
