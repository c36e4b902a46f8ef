"""Classify webhook target URLs and addresses: what a subscription may point at (SSRF rule).

Pure: nothing here resolves a name or opens a connection. Literal IP hosts are checked when a
subscription is written; the sender checks every resolved address again at send time.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
ALLOW_HINT = "set LEADHOOK_ALLOW_PRIVATE_TARGETS=1 to allow it"

_METADATA = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack
        ipaddress.ip_address("fd00:ec2::254"),  # AWS over IPv6
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    }
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal"})


class TargetError(ValueError):
    """A target URL or address that webhooks must not be sent to."""


def parse_ip(host: str) -> IPAddress | None:
    """Return the address a URL host names literally, or None for a DNS name.

    Legacy IPv4 spellings that resolvers accept (``127.1``, ``0x7f.0.0.1``, ``2130706433``)
    count as literal addresses too.
    """
    text = host.strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text and all(c in "0123456789abcdefxABCDEFX." for c in text) and text[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def refusal_reason(ip: IPAddress) -> str | None:
    """Say why webhooks must not go to `ip`, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or (
            ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        )
        if embedded is not None:
            return refusal_reason(embedded)
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip in _METADATA, "a cloud metadata address"),
        (ip.is_link_local, "a link-local address"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "a carrier-grade NAT address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    for hit, reason in checks:
        if hit:
            return f"{ip} is {reason}"
    return None


def check_address(ip: IPAddress | str, *, allow_private: bool) -> None:
    """Raise TargetError when `ip` is not a public address, unless private targets are allowed."""
    if allow_private:
        return
    addr = ip if not isinstance(ip, str) else parse_ip(ip)
    if addr is None:
        raise TargetError(f"{ip!r} is not an IP address")
    reason = refusal_reason(addr)
    if reason is not None:
        raise TargetError(f"{reason}; {ALLOW_HINT}")


def check_host(host: str, *, allow_private: bool) -> None:
    """Refuse a literal private address or a name that always means this machine."""
    if allow_private:
        return
    ip = parse_ip(host)
    if ip is not None:
        check_address(ip, allow_private=False)
        return
    name = host.rstrip(".").lower()
    if name in _LOCAL_NAMES or name.endswith(".localhost"):
        raise TargetError(f"{host} names this machine; {ALLOW_HINT}")


def validate_url(url: str, *, allow_private: bool) -> str:
    """Return `url` if it is an absolute http(s) URL without credentials on an allowed host."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise TargetError(f"must be 1-{MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise TargetError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise TargetError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise TargetError("must not carry credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise TargetError("must name a host")
    if port == 0:
        raise TargetError("must not use port 0")
    check_host(host, allow_private=allow_private)
    return url
