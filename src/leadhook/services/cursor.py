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


def encode(position: int) -> str:
    """Encode a listing position (a row sequence number) as a cursor."""
    return base64.urlsafe_b64encode(f"p{position}".encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int | None:
    """Decode a cursor from `encode`; a malformed cursor is a 400."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        match = _POSITION.fullmatch(raw)
        if match is None or int(match.group(1)) > MAX_POSITION:
            raise ValueError(raw)
        return int(match.group(1))
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed cursor {cursor!r}") from exc
