"""POST webhooks over pooled keep-alive HTTP/1.1 connections, refusing private targets at send
time.

The sender of the `http` and `https` schemes (services/senders.py); what it got back is mapped
onto the transport-neutral results by adapters/http/answers.py.

A webhook attempt is one narrow kind of request: a POST of a JSON body, no redirects, no
proxies, no cookies, no compression, at most a kilobyte of the answer kept. So the sender
speaks HTTP/1.1 itself on the event loop's transports (TLS by the standard library's `ssl`,
the answer parsed by httptools, uvicorn's parser) instead of through a general client: an
attempt costs ~20 µs of CPU this way against ~90 µs through aiohttp's `ClientSession`, which
was half of a draining worker's time (docs/benchmarks.md, the fifteenth round).
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, cast
from urllib.parse import quote, urlsplit

import httptools
from yarl import URL

from leadhook.adapters.http.answers import http_answer, no_answer
from leadhook.domain.attempts import SendResult
from leadhook.domain.targets import (
    ALLOW_HINT,
    TargetError,
    check_host,
    parse_ip,
    refusal_reason,
)

BODY_LIMIT = 1024
HEAD_LIMIT = 65536  # bytes of an answer read before it is whole or over BODY_LIMIT: its head
KEEPALIVE_SECONDS = 15.0  # an idle pooled connection is closed after this long
DNS_TTL_SECONDS = 60.0
DEFAULT_USER_AGENT = "leadhook"
_UNSAFE_HEADER = re.compile(r"[\r\n\x00]")
_SENDERS_OWN = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_UNSAFE_REQUEST_LINE = re.compile(r"[\x00-\x20\x7f]")
# What a request line cannot carry as it is: characters URIs never hold (RFC 3986 lists none
# of these) and every one past ASCII, sent percent-encoded (UTF-8), as a browser sends them.
_NOT_IN_URIS = re.compile(r'[^\x00-\x7f]|["<>\\^`{|}]')


def _request_target(url: str, scheme: str, netloc: str) -> str:
    """The path and query of `url` exactly as the subscription spells them: an escape stays
    as written (`%2F` is not `/`, `%3F` not `?`, and `%zz` is not made `%25zz`), and so do
    dot segments; only what a request line cannot carry is percent-encoded. yarl's reading
    of the URL re-quoted it, so an endpoint that checks a token in its query, or compares
    it, got a request for another URI (a review)."""
    rest = url[len(scheme) + 3 + len(netloc) :].split("#", 1)[0]
    if not rest.startswith("/"):
        rest = "/" + rest  # "http://host?x" asks for "/?x"
    return _NOT_IN_URIS.sub(lambda m: quote(m.group(), safe=""), rest)


class TargetRefused(OSError):
    """A webhook target that resolved to an address webhooks must not reach."""


class Resolver(Protocol):
    """Turns a host name into the addresses to connect to, in the order to try them."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Return the addresses of `host` (raise OSError if it has none)."""
        ...


class SystemResolver:
    """Resolve with the operating system's resolver (`getaddrinfo`, off the event loop)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses: list[str] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = str(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
        return addresses


# How long a subscription's create or change waits for its host name to resolve before it
# lets the name pass unresolved (every send checks the name again, `GuardedResolver`).
NAME_CHECK_SECONDS = 2.0
# Lookups at once: one past them passes unresolved rather than wait behind a stuck resolver.
_NAME_CHECKS = threading.BoundedSemaphore(8)


def check_name_now(
    host: str,
    *,
    resolve: Callable[[str], list[str]] | None = None,
    timeout: float = NAME_CHECK_SECONDS,
) -> None:
    """Refuse, when a subscription is created or its URL changed, a host name that resolves
    now to an address webhooks must not reach (`TargetError`).

    A literal address is `check_host`'s. A name that does not resolve, or not within
    `timeout`, passes, and so does one while `_NAME_CHECKS` lookups are running already: it
    may be made later, and every send resolves and checks it again (a name can also be
    pointed inside afterwards, which only that check sees). The name looked up is the one
    the sender connects to (yarl's IDNA 2008 form, not Python's IDNA 2003: `faß.de` is
    `xn--fa-hia.de`, not `fass.de`), on a daemon thread: one the resolver holds longer never
    holds a stopping process. The refusal names the kind of address, not the address: the
    API is no way to read a network's internal names."""
    if parse_ip(host) is not None:
        return
    try:
        name = URL.build(scheme="http", host=host).raw_host or host
    except (ValueError, UnicodeError):
        return  # not a name the sender could reach either: its send says why
    lookup = resolve or _addresses_of
    found: list[list[str]] = []

    def run() -> None:
        try:
            found.append(lookup(name))
        except (OSError, UnicodeError, ValueError):
            pass
        finally:
            _NAME_CHECKS.release()

    if not _NAME_CHECKS.acquire(blocking=False):
        return
    try:
        thread = threading.Thread(target=run, name="leadhook-name-check", daemon=True)
        thread.start()
    except BaseException:
        _NAME_CHECKS.release()
        raise
    thread.join(timeout)
    kind = _refused_kind(found[0]) if found else None
    if kind is not None:
        raise TargetError(f"{host.rstrip('.')} resolves to {kind}; {ALLOW_HINT}")


def _addresses_of(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(sockaddr[0]) for _family, _type, _proto, _name, sockaddr in infos]


class GuardedResolver:
    """Resolve names with another resolver; refuse the name if any address is not public."""

    def __init__(self, inner: Resolver | None = None) -> None:
        self._inner = inner or SystemResolver()

    async def resolve(self, host: str, port: int) -> list[str]:
        addresses = await self._inner.resolve(host, port)
        # Every address must pass: a name that also points inside could be rebound. Said by
        # its kind, not its address: a delivery's error is the tenant's to read, and no way to
        # learn a network's internal addresses (a review).
        kind = _refused_kind(addresses)
        if kind is not None:
            raise TargetRefused(
                f"refused target {host.rstrip('.')}: resolves to {kind}; {ALLOW_HINT}"
            )
        return addresses


def _refused_kind(addresses: list[str]) -> str | None:
    """The kind of the first of `addresses` webhooks must not reach (`refusal_reason`'s words
    without the address: "a private address"), or None when every one is public: the one
    rule of the check at a subscription's create and of the check at every send."""
    for address in addresses:
        ip = parse_ip(address)
        reason = "not an IP address" if ip is None else refusal_reason(ip)
        if reason is not None:
            return reason.split(" is ", 1)[-1].split(" (", 1)[0]
    return None


@dataclass(frozen=True, slots=True)
class _Target:
    """What a webhook URL tells the sender: where to connect and the request's first lines."""

    key: tuple[str, str, int]  # the pool's key: scheme, host, port
    host: str  # as the URL names it (IDNA-encoded; an IPv6 literal without brackets)
    port: int
    tls: bool
    address: str | None  # the address a literal host names (nothing to resolve), else None
    head: str  # "POST <target> HTTP/1.1\r\nHost: <host>\r\n"
    refusal: str | None  # why the target is refused without a connection, if it is


@lru_cache(maxsize=4096)
def _target(url: str, allow_private: bool) -> _Target:
    parsed = URL(url)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"not an absolute http(s) URL: {url[:200]}")
    host = parsed.raw_host
    port = parsed.port or (443 if scheme == "https" else 80)
    # One reading of the host for the check and the connection: `parse_ip` also takes the
    # legacy IPv4 spellings resolvers accept (127.1, 0x7f.0.0.1), as `check_host` judges them.
    ip = parse_ip(host)
    refusal = None
    if not allow_private:
        try:
            check_host(host, allow_private=False)
        except TargetError as exc:
            refusal = f"refused target: {exc}"
    parts = urlsplit(url)
    path = _request_target(url, parts.scheme, parts.netloc)
    authority = parsed.host_port_subcomponent or host
    if _UNSAFE_REQUEST_LINE.search(path + authority):
        raise ValueError(f"not a URL a request line can carry: {url[:200]}")
    head = f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n"
    return _Target(
        (scheme, host, port),
        host,
        port,
        scheme == "https",
        None if ip is None else str(ip),
        head,
        refusal,
    )


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None
        self._start_exchange()

    def _start_exchange(self) -> None:
        self.status: int | None = None  # set once the final answer's head has come
        self.retry_after: str | None = None
        self.body: list[bytes] = []
        self.size = 0
        self.received = 0
        self.framed = False  # a Content-Length or chunked body: its end is known
        self.complete = False  # the whole answer came
        self.overflow = False  # more than BODY_LIMIT bytes of body: only the first kept
        self.broken: str | None = None  # why the exchange ended without a whole answer
        self.heard = False  # a byte of the answer came
        self._heads: bytes | bytearray = b""  # read while a head was open (<= HEAD_LIMIT)
        self._head_at = 0  # where in `_heads` the next head begins
        self._informational = False
        self._keep_alive = False
        self.timed_out = False

    # -- used by the sender -------------------------------------------------------------

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def unheard(self) -> bool:
        """Whether the endpoint closed the connection without a byte of answer (and before
        the timeout): on a kept-alive connection, the endpoint's own idle close crossing the
        request on the wire."""
        return self.closed and not self.heard and not self.timed_out and self.status is None

    async def exchange(self, request: bytes, timeout: float) -> None:
        """Write `request` and wait until its answer came whole, overflowed or broke off, or
        `timeout` seconds passed (then `timed_out` is set)."""
        assert self.transport is not None
        self._start_exchange()
        waiter = self._loop.create_future()
        self._waiter = waiter
        timer = self._loop.call_later(timeout, self._expire)
        self.transport.write(request)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _expire(self) -> None:
        self.timed_out = True
        self._wake()

    def _flushed(self) -> bool:
        """Tell whether every byte written has gone out (an answer may come before the
        endpoint read the whole request: the rest then waits on an endpoint that may never
        read it)."""
        return self.transport is not None and not self.transport.get_write_buffer_size()

    def reusable(self) -> bool:
        return (
            self.complete
            and not self.overflow
            and self._keep_alive
            and self.usable()
            and self._flushed()  # else the next request would queue behind the unsent bytes
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            if self.complete and self._flushed():
                self.transport.close()
            else:
                # Given up on midway: close() would first write what is unsent (and shut TLS
                # down), waiting for an endpoint that may never read.
                self.transport.abort()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for (a 408 before an idle close): drop it
            return
        self.heard = True
        if self.status is None:
            # A head is open (the answer's, or 1xx answers' before it): the parser gets no
            # more than HEAD_LIMIT bytes of heads, however the endpoint's writes were split
            # (a whole head in one read was parsed before it could be counted), and they are
            # kept for `on_headers_complete` to read each head's protocol.
            room = HEAD_LIMIT - self.received
            head, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            if not self._heads:
                self._heads = head  # the usual answer: one read, not copied
            elif isinstance(self._heads, bytearray):
                self._heads += head
            else:
                self._heads = bytearray(self._heads) + head
            if not self._feed(head):
                return
            if self.status is None:
                if self.received >= HEAD_LIMIT:  # the heads need more bytes than the limit
                    self._give_up(_head_too_long())
                return
            if not data:
                return
        if self._feed(data) and self.received > HEAD_LIMIT and not (self.complete or self.overflow):
            # Trailers that do not end (httptools would hold them all): the status decides.
            self._give_up(_head_too_long())

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; False if the answer was given up on."""
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # httptools' parse errors, an upgrade it will not follow
            # A callback's refusal (`_refuse`) said why already.
            self._give_up(self.broken or f"invalid HTTP answer: {type(exc).__name__}: {exc}")
            return False
        self.received += len(data)
        return not self.closed

    def _give_up(self, why: str) -> None:
        self.broken = why[:500]
        self.close()
        self._wake()

    def _refuse(self, why: str) -> None:
        """Refuse the answer from an httptools callback (it raises out of `feed_data`)."""
        self.broken = why
        raise ValueError(why)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self.complete:
            return  # idle, or the answer came whole before the close
        if self.status is not None and not self.framed:
            self.complete = True  # an answer without a length ends where the connection does
            self._keep_alive = False
        elif self.broken is None:
            self.broken = "the endpoint closed the connection" + (
                " before answering" if self.status is None else " midway through its answer"
            )
        self._wake()

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"retry-after":
            self.retry_after = value.decode("latin-1")
        elif lowered in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_message_begin(self) -> None:
        if self.complete:
            # Bytes after the whole answer (a second answer nobody asked for): they must not
            # overwrite this one, and the connection is out of step.
            raise ValueError("bytes after the answer")

    def on_headers_complete(self) -> None:
        # httptools also takes `RTSP/1.0 200`, `ICE/1.0 200`, `HTTP/2.0 200`, `HTTP/0.9 200`.
        # A head ends at its first blank line (a 1xx answer has no body): this one begins
        # after the blank lines of the heads before it.
        heads, start = self._heads, self._head_at
        while start < len(heads) and heads[start] in b"\r\n":  # blank lines between them
            start += 1
        self._head_at = heads.find(b"\r\n\r\n", start) + 4
        version = self._parser.get_http_version()
        if heads[start : start + 5] != b"HTTP/" or version not in ("1.0", "1.1"):
            line = bytes(heads[start : start + 40]).split(b"\r\n", 1)[0]
            self._refuse(f"invalid HTTP answer: not HTTP/1.x ({line!r})")
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 100 Continue, 103 Early Hints: the answer is next
            self.retry_after = None
            self.framed = False
            return
        self.status = status

    def on_body(self, chunk: bytes) -> None:
        room = BODY_LIMIT - self.size
        if room > 0:
            self.body.append(chunk[:room])
        self.size += len(chunk)
        if self.size > BODY_LIMIT and not self.overflow:
            self.overflow = True  # keep the first kilobyte; the rest is not read
            self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._keep_alive = self._parser.should_keep_alive() and self.status != 101
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Unanswered(Exception):
    """The attempt got no answer; the message says why."""


class HttpSender:
    """Send webhook POSTs: keep-alive pool, per-attempt timeout, no redirects, no proxies,
    no cookies."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_private: bool = False,
        limit: int = 100,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  # unix seconds: for a Retry-After given as a date
        self._timeout_s = timeout
        self._allow_private = allow_private
        inner = resolver or SystemResolver()
        self._resolver: Resolver = inner if allow_private else GuardedResolver(inner)
        self._ssl = ssl_context
        self._limit = max(1, limit)
        self._slots = asyncio.Semaphore(self._limit)  # connections in use at once
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        """POST `body` to `url`; any failure is described in the result, never raised."""
        start = time.perf_counter()
        try:
            target = _target(url, self._allow_private)
            request = _request(target, body, headers)
        except (ValueError, UnicodeError) as exc:
            return no_answer(0.0, f"{type(exc).__name__}: {exc}"[:500])
        if target.refusal is not None:
            return no_answer(0.0, target.refusal)
        conn: _Connection | None = None
        if self._slots.locked():
            # Every connection is in use: the wait for one is part of the attempt's time.
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                return self._timed_out(start)
        else:
            await self._slots.acquire()
        try:
            conn = self._pooled(target.key)
            kept = conn is not None
            while True:
                if conn is None:
                    try:
                        async with asyncio.timeout(self._timeout_s - (time.perf_counter() - start)):
                            conn = await self._connect(target)
                    except TimeoutError:
                        return self._timed_out(start)
                    except _Unanswered as exc:
                        return no_answer(_ms(start), str(exc)[:500])
                left = self._timeout_s - (time.perf_counter() - start)
                if left <= 0:  # not sent: a request that can only time out would be sent again
                    self._release(target.key, conn)
                    return self._timed_out(start)
                try:
                    # One timer for the rest of the attempt's time (cheaper than a timeout scope).
                    await conn.exchange(request, left)
                except BaseException:
                    conn.close()  # cancelled: the connection is mid-request
                    raise
                if not (kept and conn.unheard()):
                    break
                # The endpoint closed a kept-alive connection as the request went out on it,
                # without a byte of answer: its idle timeout crossing the request on the wire.
                # Sent again once, on a new connection, within the attempt's time (as HTTP
                # clients do for a request that is safe to repeat: a webhook is, by its
                # webhook-id); a new connection closed the same way is the attempt's failure.
                conn.close()
                conn, kept = None, False
            if conn.status is None:
                conn.close()
                if conn.timed_out:
                    return self._timed_out(start)
                return no_answer(_ms(start), conn.broken or "no answer")
            if not conn.complete and not conn.overflow:
                # The status line and headers came: the endpoint answered, and its status
                # decides (a 2xx whose body dawdles past the timeout, or is cut short, is
                # delivered, not sent again). Only the body is lost, and the connection.
                conn.body = []
            result = http_answer(
                conn.status,
                _ms(start),
                b"".join(conn.body).decode("utf-8", errors="replace"),
                conn.retry_after,
                self._clock(),
            )
            self._release(target.key, conn)
            return result
        finally:
            self._slots.release()

    def _timed_out(self, start: float) -> SendResult:
        return no_answer(_ms(start), f"timeout after {self._timeout_s:g}s")

    # -- the pool ------------------------------------------------------------------------

    def _pooled(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to be timed out
            self._idle_count -= 1
            if conn.usable() and time.monotonic() - conn.idle_since < KEEPALIVE_SECONDS:
                return conn
            conn.close()
        return None

    def _release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        if not conn.reusable() or self._closed or self._idle_count >= self._limit:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(conn)
        self._idle_count += 1
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(KEEPALIVE_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Close the connections idle for longer than the keep-alive time."""
        self._sweeper = None
        cutoff = time.monotonic() - KEEPALIVE_SECONDS
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if c.usable() and c.idle_since > cutoff]
            for conn in idle:
                if conn not in keep:
                    conn.close()
            self._idle_count -= len(idle) - len(keep)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        if self._idle_count and not self._closed:
            # When the oldest left is due (each list is in the order its connections came idle).
            oldest = min(idle[0].idle_since for idle in self._idle.values())
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(oldest - cutoff, self._sweep)

    async def _connect(self, target: _Target) -> _Connection:
        if target.address is not None:
            addresses = [target.address]
        else:
            addresses = await self._addresses(target.host, target.port)
        loop = asyncio.get_running_loop()
        context = self._tls_context() if target.tls else None
        failure: OSError | None = None
        for address in addresses:
            try:
                _, conn = await loop.create_connection(
                    _Connection,
                    address,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context is not None else None,
                )
                return conn
            except ssl.SSLError as exc:
                raise _Unanswered(f"TLS error with {target.host}:{target.port}: {exc}") from None
            except OSError as exc:
                failure = exc
        raise _Unanswered(
            f"cannot connect to {target.host}:{target.port}: {type(failure).__name__}: {failure}"
        )

    async def _addresses(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            addresses = await self._resolver.resolve(host, port)
        except TargetRefused as exc:
            raise _Unanswered(str(exc)) from None
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label IDNA cannot encode
            raise _Unanswered(f"DNS error: cannot resolve {host}: {exc}") from None
        if not addresses:
            raise _Unanswered(f"DNS error: {host} has no address")
        if len(self._dns) >= 4096:
            self._dns.clear()
        self._dns[(host, port)] = (now + DNS_TTL_SECONDS, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()  # the system's CAs, hostname checked
        return self._ssl

    async def aclose(self) -> None:
        """Close every pooled connection."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        await asyncio.sleep(0)  # let the transports finish closing

    async def __aenter__(self) -> HttpSender:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _request(target: _Target, body: bytes, headers: Mapping[str, str]) -> bytes:
    """The request's bytes: its head (the headers as given, a length, defaults) and body."""
    lines = [f"{name}: {value}\r\n" for name, value in headers.items()]
    given = "".join(lines)
    if given.count("\n") != len(lines) or given.count("\r") != len(lines) or "\x00" in given:
        bad = next(n for n, v in headers.items() if _UNSAFE_HEADER.search(n + v))
        raise ValueError(f"header {bad[:100]!r} cannot be sent")
    names = {name.lower() for name in headers}
    if names & _SENDERS_OWN:
        lines = [line for line in lines if line.split(":", 1)[0].lower() not in _SENDERS_OWN]
        given = "".join(lines)
    if "content-type" not in names:
        given += "Content-Type: application/json\r\n"
    if "user-agent" not in names:
        given += f"User-Agent: {DEFAULT_USER_AGENT}\r\n"
    text = f"{target.head}Content-Length: {len(body)}\r\n{given}\r\n"
    return text.encode("utf-8") + body


def _head_too_long() -> str:
    return f"the answer's head is over {HEAD_LIMIT} bytes"


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
