"""Classify webhook target URLs and addresses: what a subscription may point at (SSRF rule).

Pure: nothing here resolves a name or opens a connection. Literal IP hosts are checked when a
subscription is written; the sender checks every resolved address again at send time.
"""

from __future__ import annotations

import ipaddress
import socket
import unicodedata
from urllib.parse import unquote, urlsplit

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
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known NAT64: the last 32 bits are IPv4
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): never public
_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal"})


class TargetError(ValueError):
    """A target URL or address that webhooks must not be sent to."""


def canonical_host(host: str) -> str:
    """Return `host` as an HTTP client or resolver reads it, before it is classified.

    Clients percent-decode a host (``%31%32%37.0.0.1``), map it through IDNA's compatibility
    normalisation (``①②⑦.0.0.1``, full-width digits and dots) and ignore a final dot
    (``2130706433.``): all of those reach 127.0.0.1, so they are classified as such.
    """
    text = host.strip("[]")
    if ":" in text:  # IPv6: only a zone id (after %) may follow the address
        return text.split("%", 1)[0].lower()
    text = unicodedata.normalize("NFKC", unquote(text))
    for dot in ("\u3002", "\uff0e", "\uff61"):  # IDNA label separators
        text = text.replace(dot, ".")
    return text.rstrip(".").lower()


def parse_ip(host: str) -> IPAddress | None:
    """Return the address a URL host names literally, or None for a DNS name.

    Legacy IPv4 spellings that resolvers accept (``127.1``, ``0x7f.0.0.1``, ``2130706433``)
    count as literal addresses too, and so do the spellings `canonical_host` undoes.
    """
    text = canonical_host(host)
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
        if ip in _NAT64_LOCAL:
            return f"{ip} is a local-use NAT64 address"
        # IPv4 reached through IPv6: mapped (::ffff:a.b.c.d), 6to4 (2002:aabb:ccdd::) and
        # well-known NAT64 (64:ff9b::a.b.c.d) are judged by the IPv4 address they carry.
        embedded = (
            ip.ipv4_mapped
            or ip.sixtofour
            or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        )
        if embedded is not None:
            reason = refusal_reason(embedded)
            return None if reason is None else f"{reason} (embedded in {ip})"
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip in _METADATA, "a cloud metadata address"),
        (ip.is_link_local, "a link-local address"),
        # fec0::/10, deprecated (RFC 3879) but still routed inside some networks; Python's
        # ipaddress calls it global.
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "a site-local address"),
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
    name = canonical_host(host)
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
    if "\\" in parts.netloc or "%5c" in parts.netloc.lower():
        # `http://host\evil/p`: a browser reads the backslash as a slash (host `host`), this
        # reader as part of the host, and the sender refused it only when it came to send.
        raise TargetError("must not have a backslash in its host (nor %5C)")
    host = parts.hostname
    if not host:
        raise TargetError("must name a host")
    if port == 0:
        raise TargetError("must not use port 0")
    check_host(host, allow_private=allow_private)
    return url
