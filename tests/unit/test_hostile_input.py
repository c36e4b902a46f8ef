"""Hostile input is refused with a clear, bounded error: time zones that are paths, ids with
a trailing newline, numbers no JSON consumer can read, and target URLs spelled to hide a
private address (percent-encoded, compatibility digits, a final dot, 6to4, NAT64)."""

from __future__ import annotations

import ipaddress
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadhook.domain.catalog import validate_key
from leadhook.domain.catalog_entries import MAX_TIMEZONE, validate_timezone
from leadhook.domain.errors import ValidationError
from leadhook.domain.operator import Operator
from leadhook.domain.targets import TargetError, canonical_host, refusal_reason, validate_url
from leadhook.domain.values import MAX_SAFE_INTEGER
from leadhook.services.redaction import redact

PRIVATE_V4 = st.sampled_from(
    [
        "127.0.0.1",
        "127.9.8.7",
        "10.0.0.1",
        "192.168.1.20",
        "172.16.5.4",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
    ]
)


@pytest.mark.parametrize(
    "tz", ["Europe", "Europe/", "America", "../../etc/passwd", "/etc/passwd", "x" * 100_000, ""]
)
def test_a_time_zone_that_is_no_zone_is_a_validation_error_with_a_bounded_message(tz: str) -> None:
    with pytest.raises(ValidationError) as caught:
        validate_timezone(tz)
    assert caught.value.errors[0].loc == ("body", "timezone")
    assert len(caught.value.detail) < MAX_TIMEZONE + 100


@given(st.text(max_size=300))
def test_any_time_zone_text_is_accepted_or_refused_cleanly(tz: str) -> None:
    try:
        assert validate_timezone(tz) == tz
    except ValidationError as exc:
        assert len(exc.detail) < 10 * MAX_TIMEZONE + 100  # a repr escapes at most 10 to 1


def test_real_time_zones_still_pass() -> None:
    for tz in ("Asia/Shanghai", "UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"):
        assert validate_timezone(tz) == tz


@given(st.from_regex(r"\A[A-Za-z0-9_-]{1,63}\Z"), st.sampled_from(["\n", "\r\n", " ", "\x00"]))
def test_an_id_with_a_trailing_newline_or_space_is_refused(key: str, tail: str) -> None:
    assert validate_key(key) == key
    with pytest.raises(ValidationError):
        validate_key(key + tail)


@pytest.mark.parametrize("op_id", [2**53, 10**4000 - 1, 2**63])
def test_an_operator_id_past_what_json_consumers_read_is_refused(op_id: int) -> None:
    with pytest.raises(ValidationError, match="at most"):
        Operator.parse({"operator_type": 1, "operator_id": op_id})
    assert Operator.parse({"operator_type": 1, "operator_id": MAX_SAFE_INTEGER}).operator_id


@pytest.mark.parametrize(
    "url",
    [
        "http://①②⑦.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://2130706433./",
        "http://127.0.0.1./",
        "http://0x7f.1./",
        "http://１２７．０．０．１/",
        "http://127。0。0。1/",
        "http://LOCALHOST./",
        "http://ｌｏｃａｌｈｏｓｔ/",
        "http://[2002:7f00:1::]/",
        "http://[2002:a00:1::]/",
        "http://[64:ff9b::127.0.0.1]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[64:ff9b:1::a00:1]/",
        "http://[::ffff:7f00:1]/",
    ],
)
def test_private_addresses_in_disguise_are_refused_at_create(url: str) -> None:
    with pytest.raises(TargetError, match="LEADHOOK_ALLOW_PRIVATE_TARGETS"):
        validate_url(url, allow_private=False)
    assert validate_url(url, allow_private=True) == url


@given(PRIVATE_V4)
def test_6to4_and_nat64_addresses_are_judged_by_the_ipv4_they_carry(v4: str) -> None:
    packed = int(ipaddress.IPv4Address(v4))
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (packed << 80))
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | packed)
    for ip in (six_to_four, nat64):
        reason = refusal_reason(ip)
        assert reason is not None and str(ip) in reason
    assert refusal_reason(ipaddress.IPv6Address("2002:808:808::")) is None  # 8.8.8.8 inside
    assert refusal_reason(ipaddress.IPv6Address("64:ff9b::808:808")) is None


@given(PRIVATE_V4)
def test_a_percent_encoded_private_host_is_refused(v4: str) -> None:
    encoded = "".join(quote(c, safe="") if c.isdigit() else c for c in v4)
    encoded = "".join(f"%{ord(c):02X}" if c.isdigit() else c for c in encoded)
    assert canonical_host(encoded) == v4
    with pytest.raises(TargetError):
        validate_url(f"http://{encoded}/hook", allow_private=False)


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/x", "https://xn--fsq.example/", "http://93.184.216.34/"]
)
def test_public_targets_still_pass(url: str) -> None:
    assert validate_url(url, allow_private=False) == url


def test_redaction_hides_secrets_and_keys_and_leaves_other_text() -> None:
    text = "secret whsec_abc+/= and key lh_" + "A" * 43 + " and lh_short stay"
    assert redact(text) == "secret [redacted] and key [redacted] and lh_short stay"
    assert redact("nothing secret") == "nothing secret"
