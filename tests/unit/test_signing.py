"""Unit tests for Standard Webhooks signing, cross-checked against ``standardwebhooks``."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from leadhook.domain.signing import (
    BadSignatureError,
    MalformedHeaderError,
    MissingHeaderError,
    SignatureError,
    StaleTimestampError,
    generate_secret,
    secret_key,
    sign,
    signature_header,
    verify,
    webhook_headers,
)

SECRET = generate_secret(bytes(range(32)))
OLD_SECRET = generate_secret(b"\xaa" * 24)
OTHER_SECRET = generate_secret(b"\x01" * 40)
BODY = json.dumps({"type": "lead.created", "data": {"lead_id": "L1", "name": "Zoë"}}).encode()
MSG_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"
TS = 1_700_000_000
UA = "leadhook/0.1"


def headers_for(secrets: list[str], body: bytes = BODY, ts: int = TS) -> dict[str, str]:
    return webhook_headers(secrets, MSG_ID, ts, body, UA)


# --- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [24, 32, 64])
def test_generate_secret_roundtrips(size: int) -> None:
    raw = bytes(range(size))
    secret = generate_secret(raw)
    assert secret.startswith("whsec_")
    assert secret_key(secret) == raw
    assert secret_key(secret.removeprefix("whsec_")) == raw


@pytest.mark.parametrize("size", [0, 23, 65])
def test_generate_secret_rejects_bad_size(size: int) -> None:
    with pytest.raises(ValueError, match="24-64"):
        generate_secret(b"x" * size)


def test_secret_key_tolerates_missing_padding() -> None:
    raw = b"\x07" * 25  # base64 needs padding
    padded = base64.b64encode(raw).decode()
    assert padded.endswith("=")
    assert secret_key("whsec_" + padded.rstrip("=")) == raw


@pytest.mark.parametrize("secret", ["whsec_not base64!", "whsec_@@@@", "whsec_", "", "whsec_abcde"])
def test_secret_key_rejects_bad_base64(secret: str) -> None:
    with pytest.raises(ValueError):
        secret_key(secret)


# --- signing ---------------------------------------------------------------------------


def test_sign_matches_standardwebhooks() -> None:
    theirs = Webhook(SECRET).sign(MSG_ID, datetime.fromtimestamp(TS, tz=UTC), BODY.decode())
    assert sign(SECRET, MSG_ID, TS, BODY) == theirs


def test_sign_known_vector() -> None:
    # Test vector from the Standard Webhooks specification.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected


def test_webhook_headers_exact_keys() -> None:
    headers = headers_for([SECRET])
    assert headers == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TS),
        "webhook-signature": sign(SECRET, MSG_ID, TS, BODY),
        "content-type": "application/json",
        "user-agent": UA,
    }


def test_signature_header_one_per_secret() -> None:
    header = signature_header([OLD_SECRET, SECRET], MSG_ID, TS, BODY)
    assert header.split(" ") == [sign(OLD_SECRET, MSG_ID, TS, BODY), sign(SECRET, MSG_ID, TS, BODY)]


def test_signature_header_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        signature_header([], MSG_ID, TS, BODY)


# --- interoperability with standardwebhooks ---------------------------------------------


def test_our_headers_verify_with_standardwebhooks() -> None:
    now = int(time.time())
    headers = webhook_headers([SECRET], MSG_ID, now, BODY, UA)
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


@pytest.mark.parametrize("receiver", [OLD_SECRET, SECRET])
def test_rotation_header_verifies_with_either_secret(receiver: str) -> None:
    now = int(time.time())
    headers = webhook_headers([OLD_SECRET, SECRET], MSG_ID, now, BODY, UA)
    Webhook(receiver).verify(BODY, headers)
    verify(receiver, BODY, headers, now)


def test_rotation_header_rejects_third_secret() -> None:
    now = int(time.time())
    headers = webhook_headers([OLD_SECRET, SECRET], MSG_ID, now, BODY, UA)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(BODY, headers)
    with pytest.raises(BadSignatureError):
        verify(OTHER_SECRET, BODY, headers, now)


def test_standardwebhooks_signed_message_verifies_with_ours() -> None:
    now = int(time.time())
    signature = Webhook(SECRET).sign(MSG_ID, datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    headers = {"Webhook-Id": MSG_ID, "Webhook-Timestamp": str(now), "Webhook-Signature": signature}
    verify(SECRET, BODY, headers, now)


# --- verify: success cases ---------------------------------------------------------------


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_verify_within_tolerance(skew: int) -> None:
    verify(SECRET, BODY, headers_for([SECRET]), TS + skew)


def test_verify_header_names_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in headers_for([SECRET]).items()}
    verify(SECRET, BODY, headers, TS)


def test_verify_ignores_other_versions() -> None:
    headers = headers_for([SECRET])
    headers["webhook-signature"] = "v1a,AAAA v2,zzz " + headers["webhook-signature"]
    verify(SECRET, BODY, headers, TS)


def test_verify_skips_undecodable_v1_signature() -> None:
    headers = headers_for([SECRET])
    headers["webhook-signature"] = "v1,@@not-base64@@  " + headers["webhook-signature"]
    verify(SECRET, BODY, headers, TS)


# --- verify: every error ---------------------------------------------------------------


def _without(name: str) -> dict[str, str]:
    headers = headers_for([SECRET])
    del headers[name]
    return headers


def _with(name: str, value: str) -> dict[str, str]:
    return {**headers_for([SECRET]), name: value}


@pytest.mark.parametrize(
    ("headers", "now", "body", "error"),
    [
        (_without("webhook-id"), TS, BODY, MissingHeaderError),
        (_without("webhook-timestamp"), TS, BODY, MissingHeaderError),
        (_without("webhook-signature"), TS, BODY, MissingHeaderError),
        (_with("webhook-id", ""), TS, BODY, MissingHeaderError),
        (_with("webhook-signature", "  "), TS, BODY, MissingHeaderError),
        ({}, TS, BODY, MissingHeaderError),
        (_with("webhook-timestamp", "abc"), TS, BODY, MalformedHeaderError),
        (_with("webhook-timestamp", "1700000000.5"), TS, BODY, MalformedHeaderError),
        (_with("webhook-timestamp", "-1700000000"), TS, BODY, MalformedHeaderError),
        (_with("webhook-signature", "garbage"), TS, BODY, MalformedHeaderError),
        (_with("webhook-signature", ",abc"), TS, BODY, MalformedHeaderError),
        (headers_for([SECRET]), TS + 301, BODY, StaleTimestampError),  # too old
        (headers_for([SECRET]), TS - 301, BODY, StaleTimestampError),  # too far in the future
        (headers_for([SECRET]), TS, BODY + b" ", BadSignatureError),
        (headers_for([OTHER_SECRET]), TS, BODY, BadSignatureError),
        (_with("webhook-id", "msg_other"), TS, BODY, BadSignatureError),
        (_with("webhook-signature", "v1a,AAAA v2,BBBB"), TS, BODY, BadSignatureError),
        (_with("webhook-signature", "v1,AAAA"), TS, BODY, BadSignatureError),
    ],
)
def test_verify_errors(
    headers: dict[str, str], now: int, body: bytes, error: type[SignatureError]
) -> None:
    with pytest.raises(error) as info:
        verify(SECRET, body, headers, now)
    assert isinstance(info.value, SignatureError)
    assert str(info.value)


def test_verify_tampered_timestamp_fails_signature() -> None:
    headers = _with("webhook-timestamp", str(TS + 1))
    with pytest.raises(BadSignatureError):
        verify(SECRET, BODY, headers, TS)


def test_verify_custom_tolerance() -> None:
    headers = headers_for([SECRET])
    verify(SECRET, BODY, headers, TS + 1000, tolerance=1000)
    with pytest.raises(StaleTimestampError):
        verify(SECRET, BODY, headers, TS + 11, tolerance=10)
    with pytest.raises(ValueError):
        verify(SECRET, BODY, headers, TS, tolerance=-1)


# --- properties --------------------------------------------------------------------------

msg_ids = st.text(min_size=1, max_size=40).filter(lambda s: s.strip() != "")
timestamps = st.integers(min_value=0, max_value=2**33)


@given(
    raw=st.binary(min_size=24, max_size=64),
    msg_id=msg_ids,
    ts=timestamps,
    body=st.binary(max_size=512),
)
def test_roundtrip_and_tamper(raw: bytes, msg_id: str, ts: int, body: bytes) -> None:
    secret = generate_secret(raw)
    headers = webhook_headers([secret], msg_id, ts, body, UA)
    verify(secret, body, headers, ts)
    with pytest.raises(BadSignatureError):
        verify(secret, body + b"\x00", headers, ts)


@given(raw=st.binary(min_size=24, max_size=64), msg_id=msg_ids, ts=timestamps, text=st.text())
def test_sign_agrees_with_standardwebhooks(raw: bytes, msg_id: str, ts: int, text: str) -> None:
    secret = generate_secret(raw)
    theirs = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, tz=UTC), text)
    assert sign(secret, msg_id, ts, text.encode()) == theirs
