"""Sign and verify webhooks per the Standard Webhooks spec (HMAC-SHA256, ``v1`` scheme).

Hand-written on the stdlib so the domain has no third-party dependency; the tests
check byte-for-byte agreement with the ``standardwebhooks`` package.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64
DEFAULT_TOLERANCE = 300

# Unix seconds: 19 digits at most. Longer is no timestamp, and past 4,300 digits Python's int()
# would refuse it with a ValueError instead of this module's MalformedHeaderError.
_TIMESTAMP = re.compile(r"\d{1,19}", re.ASCII)


class SignatureError(Exception):
    """Base class for every webhook verification failure."""


class MissingHeaderError(SignatureError):
    """A required ``webhook-*`` header is absent or empty."""


class MalformedHeaderError(SignatureError):
    """A ``webhook-*`` header is present but cannot be parsed."""


class StaleTimestampError(SignatureError):
    """The ``webhook-timestamp`` is further from now than the tolerance, past or future."""


class BadSignatureError(SignatureError):
    """No ``v1`` signature in ``webhook-signature`` matches the message."""


def generate_secret(random_bytes: bytes) -> str:
    """Return a ``whsec_``-prefixed secret encoding ``random_bytes`` (24 to 64 bytes)."""
    if not MIN_SECRET_BYTES <= len(random_bytes) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"secret needs {MIN_SECRET_BYTES}-{MAX_SECRET_BYTES} random bytes, "
            f"got {len(random_bytes)}"
        )
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a secret, with or without the ``whsec_`` prefix.

    Missing base64 padding is tolerated, as in ``standardwebhooks``.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    encoded += "=" * (-len(encoded) % 4)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not valid base64") from None
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def subscriber_key(secret: str) -> bytes:
    """Return the HMAC key of a secret a subscriber configured: a leadhook secret, prefix and all.

    `secret_key` takes bare base64 too, as the Standard Webhooks libraries do; a receiver
    configured with text that merely happens to be base64 (`nope`) would then fail every
    delivery's signature, so what a subscriber gives is held to the form leadhook shows.
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise ValueError(
            "a webhook secret is the subscription's secret as leadhook shows it:"
            f" {SECRET_PREFIX} followed by base64"
        )
    return secret_key(secret)


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.digest(key, signed, "sha256")  # one call into OpenSSL, no HMAC object


@functools.lru_cache(maxsize=1024)
def _key_of(secret: str) -> bytes:
    # Every delivery to a subscription signs with the same secret: decode it once.
    return secret_key(secret)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1,<base64 HMAC-SHA256>`` over ``{msg_id}.{timestamp}.{body}``."""
    digest = _digest(_key_of(secret), msg_id, timestamp, body)
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one space-separated signature per secret.

    Passing the old and the new secret during rotation lets receivers verify with either.
    """
    if not secrets:
        raise ValueError("at least one webhook secret is required")
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def webhook_headers(
    secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes, user_agent: str
) -> dict[str, str]:
    """Return the full header set to send with a webhook body."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": user_agent,
    }


def verify(
    secret: str,
    body: bytes,
    headers: Mapping[str, str],
    now: int,
    tolerance: int = DEFAULT_TOLERANCE,
) -> None:
    """Check a received webhook, raising a ``SignatureError`` subclass if it is not authentic.

    Header names match case-insensitively. ``now`` and the timestamp are unix seconds;
    ``tolerance`` applies both to the past and the future. Signatures other than ``v1``
    are ignored; any matching ``v1`` signature is enough.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = _required(lowered, "webhook-id")
    try:
        msg_id.encode()
    except UnicodeEncodeError:
        # A byte no text has, as a server that keeps undecodable header bytes (aiohttp's
        # surrogate escapes) hands it over: no signature can be over it.
        raise MalformedHeaderError("webhook-id must be UTF-8 text") from None
    raw_timestamp = _required(lowered, "webhook-timestamp").strip()
    raw_signatures = _required(lowered, "webhook-signature")

    if not _TIMESTAMP.fullmatch(raw_timestamp):
        raise MalformedHeaderError("webhook-timestamp must be integer unix seconds")
    timestamp = int(raw_timestamp)
    if timestamp < now - tolerance:
        raise StaleTimestampError(f"webhook-timestamp is more than {tolerance}s in the past")
    if timestamp > now + tolerance:
        raise StaleTimestampError(f"webhook-timestamp is more than {tolerance}s in the future")

    candidates: list[bytes] = []
    well_formed = False
    for entry in raw_signatures.split():
        version, sep, encoded = entry.partition(",")
        if not sep or not version:
            continue  # not a signature: beside a matching v1 one it changes nothing
        well_formed = True
        if version != "v1":
            continue
        try:
            candidates.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue  # an undecodable signature simply does not match
    if not well_formed:
        raise MalformedHeaderError("webhook-signature entries must look like 'v1,<base64>'")
    if not candidates:
        raise BadSignatureError("webhook-signature has no v1 signature")

    expected = _digest(secret_key(secret), msg_id, timestamp, body)
    matched = False
    for candidate in candidates:  # no early exit: time does not depend on which one matched
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise BadSignatureError("no v1 signature matches")


def _required(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value or not value.strip():
        raise MissingHeaderError(f"missing {name} header")
    return value


def active_secrets(
    secret: str, previous: str | None, previous_expires_at: float | None, now: float
) -> tuple[str, ...]:
    """Return the secrets that sign at `now`: the current one, plus the previous one while
    a rotation's overlap (until `previous_expires_at`) lasts."""
    if previous and previous_expires_at is not None and now < previous_expires_at:
        return (secret, previous)
    return (secret,)


class RotatingSecret:
    """What signs for something whose secret can be mid-rotation: a subscription, and the job
    that carries its secrets. The dataclass that mixes this in declares the three fields."""

    secret: str
    previous_secret: str | None
    previous_secret_expires_at: float | None

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """Return the secrets that sign now: the current one, and the previous during rotation."""
        return active_secrets(
            self.secret, self.previous_secret, self.previous_secret_expires_at, now
        )
