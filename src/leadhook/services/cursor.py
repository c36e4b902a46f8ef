"""Opaque page cursors: a position in a listing, encoded so clients do not build them."""

from __future__ import annotations

import base64
import binascii

from leadhook.domain.errors import BadRequestError


def encode(position: int) -> str:
    """Encode a listing position (a row sequence number) as a cursor."""
    return base64.urlsafe_b64encode(f"p{position}".encode()).decode().rstrip("=")


def decode(cursor: str | None) -> int | None:
    """Decode a cursor from `encode`; a malformed cursor is a 400."""
    if cursor is None or cursor == "":
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("p"):
            raise ValueError(raw)
        return int(raw[1:])
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequestError(f"malformed cursor {cursor!r}") from exc
