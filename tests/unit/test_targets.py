"""Which webhook targets are refused: private, loopback, link-local, CGNAT, metadata, ..."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable

import pytest

from leadhook.adapters.http.sender import check_name_now
from leadhook.domain.targets import (
    TargetError,
    check_address,
    check_host,
    parse_ip,
    refusal_reason,
    validate_url,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "fd12:3456::1": "private",
    "169.254.1.1": "link-local",
    "fe80::1": "link-local",
    "fec0::1": "site-local",
    "fec0::ffff:7f00:1": "site-local",
    "169.254.169.254": "metadata",
    "fd00:ec2::254": "metadata",
    "100.100.100.200": "metadata",
    "100.64.0.1": "carrier-grade NAT",
    "100.127.255.254": "carrier-grade NAT",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "reserved",
    "192.0.2.10": "private",  # documentation range
    "::ffff:127.0.0.1": "loopback",  # IPv4-mapped
    "::ffff:10.0.0.1": "private",
    "64:ff9b::a9fe:a9fe": "metadata",  # NAT64 of 169.254.169.254
}
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "100.128.0.1"]


@pytest.mark.parametrize(("ip", "kind"), sorted(REFUSED.items()))
def test_non_public_addresses_are_refused_with_a_reason(ip: str, kind: str) -> None:
    reason = refusal_reason(ipaddress.ip_address(ip))
    assert reason is not None and kind in reason
    with pytest.raises(TargetError, match="LEADHOOK_ALLOW_PRIVATE_TARGETS"):
        check_address(ip, allow_private=False)
    check_address(ip, allow_private=True)  # the switch allows every one of them


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    assert refusal_reason(ipaddress.ip_address(ip)) is None
    check_address(ip, allow_private=False)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("127.1", "127.0.0.1"),  # legacy spellings that resolvers accept
        ("0x7f.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("example.com", None),
        ("1.2.3.4.5", None),
        ("0xdead.example", None),
        ("cafe.de", None),
    ],
)
def test_parse_ip_sees_every_literal_spelling(host: str, expected: str | None) -> None:
    ip = parse_ip(host)
    assert (None if ip is None else str(ip)) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/leadhook",
        "http://example.com:8080/a?b=c",
        "https://8.8.8.8/x",
        "https://[2606:4700:4700::1111]:443/x",
        "HTTPS://Example.COM/",
    ],
)
def test_valid_public_urls_pass_unchanged(url: str) -> None:
    assert validate_url(url, allow_private=False) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "characters"),
        ("ftp://example.com/x", "http"),
        ("example.com/hook", "http"),
        ("/relative/path", "http"),
        ("http://user:pw@example.com/", "credentials"),
        ("http://user@example.com/", "credentials"),
        ("http:///nohost", "host"),
        ("http://example.com:0/", "port 0"),
        ("http://example.com\\evil/p", "backslash"),
        ("http://example.com%5Cevil/p", "backslash"),
        ("http://example.com:99999/", "not a valid URL"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\n", "whitespace"),
        ("http://127.0.0.1:8000/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.0.0.5/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("http://0.0.0.0:80/", "unspecified"),
        ("http://2130706433/", "loopback"),
        ("http://localhost:8000/", "this machine"),
        ("http://api.localhost/", "this machine"),
        ("http://metadata.google.internal/", "this machine"),
        ("https://example.com/" + "a" * 2100, "characters"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        validate_url(url, allow_private=False)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/hook", "http://localhost/", "http://10.0.0.5/"]
)
def test_private_targets_pass_when_allowed(url: str) -> None:
    assert validate_url(url, allow_private=True) == url


def test_scheme_and_credentials_are_checked_even_when_private_targets_are_allowed() -> None:
    with pytest.raises(TargetError):
        validate_url("file:///etc/passwd", allow_private=True)
    with pytest.raises(TargetError):
        validate_url("http://a:b@127.0.0.1/", allow_private=True)


def test_check_host_names_pass_only_when_not_local() -> None:
    check_host("hooks.example.com", allow_private=False)
    with pytest.raises(TargetError):
        check_host("LOCALHOST.", allow_private=False)


def test_a_name_is_refused_now_when_any_address_it_resolves_to_is_not_public() -> None:
    def resolving(*addresses: str) -> Callable[[str], list[str]]:
        return lambda host: list(addresses)

    with pytest.raises(TargetError, match=r"^hooks\.acme resolves to a private address; set"):
        check_name_now("hooks.acme.", resolve=resolving("93.184.215.14", "10.1.2.3"))
    with pytest.raises(TargetError, match="resolves to a cloud metadata address") as caught:
        check_name_now("meta.acme", resolve=resolving("169.254.169.254"))
    assert "169.254" not in str(caught.value)  # the kind, not the address: no internal DNS
    with pytest.raises(TargetError) as embedded:
        check_name_now("six.acme", resolve=resolving("2002:a00:7::"))  # 6to4 of 10.0.0.7
    assert "10.0.0.7" not in str(embedded.value) and "2002" not in str(embedded.value)
    check_name_now("hooks.acme", resolve=resolving("93.184.215.14", "2606:2800:21f:cb07::1"))


def test_the_name_looked_up_is_the_one_the_sender_connects_to() -> None:
    # Python's IDNA 2003 codec reads "faß.de" as "fass.de"; yarl (the sender) as
    # "xn--fa-hia.de": the check looked up another host than the one sent to (a review).
    asked: list[str] = []

    def resolve(host: str) -> list[str]:
        asked.append(host)
        return ["93.184.215.14"]

    check_name_now("faß.de", resolve=resolve)
    assert asked == ["xn--fa-hia.de"]


def test_a_name_that_does_not_resolve_or_not_in_time_passes_to_the_send_check() -> None:
    def missing(host: str) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def slow(host: str) -> list[str]:
        time.sleep(0.5)
        return ["127.0.0.1"]

    def never(host: str) -> list[str]:
        raise AssertionError("a literal address is not looked up")

    check_name_now("nothing.invalid", resolve=missing)
    started = time.monotonic()
    check_name_now("slow.acme", resolve=slow, timeout=0.05)
    assert time.monotonic() - started < 0.4
    check_name_now("127.0.0.1", resolve=never)  # check_host's, at validate_url
