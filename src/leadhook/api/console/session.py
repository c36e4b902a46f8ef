"""The console's session cookie: signed (HMAC-SHA256), HttpOnly, SameSite=Strict, with a CSRF token.

The cookie holds who signed in (tenant and key id), a random CSRF token and when the session
began, as base64url JSON followed by its HMAC. It is signed, not encrypted: it holds no secret.
A visitor who has not signed in gets a session too (no tenant), so that the sign-in form
carries a CSRF token like every other form.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import json
import secrets
import threading
from dataclasses import dataclass, replace
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "leadhook_console"
LANG_COOKIE = "leadhook_console_lang"
MAX_AGE = 12 * 3600
"""Seconds a session lasts from sign-in; then the console asks for the key again."""
REVEAL_COOKIE = "leadhook_console_reveal"
REVEAL_SECONDS = 300
"""How long a new secret waits, sealed in its cookie, for the page that shows it once."""


@dataclass(frozen=True)
class Session:
    """One browser's session; `mid` is None until it signs in."""

    csrf: str
    issued_at: float
    mid: str | None = None
    key_id: str | None = None

    @classmethod
    def new(cls, now: float) -> Session:
        """Start an anonymous session with a fresh CSRF token."""
        return cls(csrf=secrets.token_urlsafe(32), issued_at=now)

    def signed_in(self, mid: str, key_id: str, now: float) -> Session:
        """Return the session of a tenant that just signed in (a new CSRF token with it)."""
        return replace(Session.new(now), mid=mid, key_id=key_id)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Encode and verify session cookies with a server secret."""

    def __init__(self, secret: str | None) -> None:
        raw = secret.encode() if secret else secrets.token_bytes(32)
        # A key of its own for this purpose, whatever else the configured secret is used for.
        self._key = hashlib.sha256(b"leadhook console session\x00" + raw).digest()
        # A new webhook secret crosses the redirect after its form in a cookie of its own,
        # encrypted (it is a secret, unlike the session) with another key of its own.
        reveal_key = hashlib.sha256(b"leadhook console reveal\x00" + raw).digest()
        self._reveal = Fernet(base64.urlsafe_b64encode(reveal_key))
        # Signed-in sessions signed out, by CSRF token (one per session), until they would
        # have expired: a copy of a signed-out cookie must not open the console again. Only a
        # session of a valid key gets here (an anonymous one has nothing to end), and the
        # heap lets the expired ones go oldest first.
        self._ended: set[str] = set()
        self._expiries: list[tuple[float, str]] = []
        self._ended_lock = threading.Lock()

    def end(self, session: Session, now: float) -> None:
        """Sign a session out: from now on its cookie is refused, wherever a copy of it is."""
        if session.mid is None:
            return
        with self._ended_lock:
            while self._expiries and self._expiries[0][0] < now:
                self._ended.discard(heapq.heappop(self._expiries)[1])
            if session.csrf not in self._ended:
                self._ended.add(session.csrf)
                heapq.heappush(self._expiries, (session.issued_at + MAX_AGE, session.csrf))

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def dumps(self, session: Session) -> str:
        """Return the cookie value of a session."""
        data: dict[str, Any] = {"c": session.csrf, "t": int(session.issued_at)}
        if session.mid is not None:
            data["m"], data["k"] = session.mid, session.key_id
        payload = _b64(json.dumps(data, separators=(",", ":")).encode())
        return f"{payload}.{self._mac(payload)}"

    def loads(self, value: str | None, now: float) -> Session | None:
        """Return the session of a cookie value, or None if it is forged, malformed or expired."""
        # A cookie this signer made is ASCII: anything else is forged (and compare_digest
        # raises TypeError on non-ASCII text, which answered 500).
        if not value or value.count(".") != 1 or len(value) > 4096 or not value.isascii():
            return None
        payload, mac = value.split(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return None
        try:
            data = json.loads(_unb64(payload))
            session = Session(
                csrf=str(data["c"]),
                issued_at=float(data["t"]),
                mid=None if data.get("m") is None else str(data["m"]),
                key_id=None if data.get("k") is None else str(data["k"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if not 0 <= now - session.issued_at <= MAX_AGE:
            return None
        if session.csrf in self._ended:
            return None
        return session

    def seal_reveal(
        self, session: Session, sub_id: str, secret: str, rotated: bool, now: float
    ) -> str:
        """Seal a subscription's new secret for the page the browser is sent to next."""
        data = {"c": session.csrf, "s": sub_id, "v": secret, "r": rotated}
        token = self._reveal.encrypt_at_time(json.dumps(data).encode(), int(now))
        return token.decode()

    def open_reveal(
        self, value: str | None, session: Session, sub_id: str, now: float
    ) -> tuple[str, bool] | None:
        """The (secret, rotated) a cookie sealed for this session and subscription, if fresh."""
        if not value or len(value) > 4096 or not value.isascii():
            return None
        try:
            plain = self._reveal.decrypt_at_time(value.encode(), REVEAL_SECONDS, int(now))
            data = json.loads(plain)
            secret, rotated = str(data["v"]), bool(data["r"])
            mine = data["c"] == session.csrf and data["s"] == sub_id
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None
        return (secret, rotated) if mine else None


def csrf_ok(session: Session, given: str | None) -> bool:
    """Tell whether a form's (or header's) CSRF token is this session's."""
    return bool(given) and hmac.compare_digest(session.csrf.encode(), (given or "").encode())
