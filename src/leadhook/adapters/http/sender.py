"""POST webhooks with one pooled aiohttp session, refusing private targets at send time.

The sender of the `http` and `https` schemes (services/senders.py); what it got back is mapped
onto the transport-neutral results by adapters/http/answers.py.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from leadhook.adapters.http.answers import http_answer, no_answer
from leadhook.domain.attempts import SendResult
from leadhook.domain.targets import TargetError, check_address, check_host

BODY_LIMIT = 1024


class TargetRefused(OSError):
    """A webhook target that resolved to an address webhooks must not reach."""


class GuardedResolver(AbstractResolver):
    """Resolve names with another resolver; refuse the name if any address is not public."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        hosts = await self._inner.resolve(host, port, family)
        for item in hosts:
            try:
                check_address(item["host"], allow_private=False)
            except TargetError as exc:
                # Every address must pass: a name that also points inside could be rebound.
                raise TargetRefused(f"refused target {host.rstrip('.')}: {exc}") from None
        return hosts

    async def close(self) -> None:
        await self._inner.close()


@lru_cache(maxsize=4096)
def _literal_refusal(url: str) -> str | None:
    # aiohttp skips the resolver for literal IP hosts, so those are checked here.
    host = URL(url).host or ""
    try:
        check_host(host, allow_private=False)
    except TargetError as exc:
        return f"refused target: {exc}"
    return None


class HttpSender:
    """Send webhook POSTs: keep-alive pool, per-attempt timeout, no redirects, no proxies,
    no cookies."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_private: bool = False,
        limit: int = 100,
        resolver: AbstractResolver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  # unix seconds: for a Retry-After given as a date
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_s = timeout
        self._allow_private = allow_private
        if not allow_private:
            resolver = GuardedResolver(resolver)
        connector = aiohttp.TCPConnector(
            limit=limit, limit_per_host=0, resolver=resolver, ttl_dns_cache=60
        )
        # No cookie jar: a delivery carries nothing an earlier answer set. With one, a cookie
        # one subscriber's endpoint set went back to every endpoint on that host, another
        # tenant's included; and filtering the jar was ~15% of a send's CPU.
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        """POST `body` to `url`; any failure is described in the result, never raised."""
        start = time.perf_counter()
        if not self._allow_private:
            refusal = _literal_refusal(url)
            if refusal is not None:
                return no_answer(0.0, refusal)
        try:
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                try:
                    head = await _read_head(resp)
                except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                    # The status line and headers came: the endpoint answered, and its status
                    # decides (a 2xx whose body dawdles past the timeout, or is cut short, is
                    # delivered, not retried). Only the body is lost, and the connection.
                    resp.close()
                    head = b""
                return http_answer(
                    resp.status,
                    _ms(start),
                    head.decode("utf-8", errors="replace"),
                    resp.headers.get("Retry-After"),
                    self._clock(),
                )
        except TimeoutError:
            return no_answer(_ms(start), f"timeout after {self._timeout_s:g}s")
        except aiohttp.ClientConnectorDNSError as exc:
            return no_answer(_ms(start), _dns_error(exc))
        except aiohttp.ClientError as exc:
            return no_answer(_ms(start), f"{type(exc).__name__}: {exc}"[:500])
        except (OSError, ValueError) as exc:
            return no_answer(_ms(start), f"{type(exc).__name__}: {exc}"[:500])

    async def aclose(self) -> None:
        """Close the session and its pooled connections."""
        await self._session.close()

    async def __aenter__(self) -> HttpSender:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


async def _read_head(resp: aiohttp.ClientResponse) -> bytes:
    """Read at most BODY_LIMIT bytes of the response, then drop the rest of it."""
    length = resp.content_length
    if length is not None and length <= BODY_LIMIT:
        data = await resp.read()  # the usual short answer: read it whole, keep the connection
        return data[:BODY_LIMIT]  # (decompressed, it may be longer than it was on the wire)
    chunks: list[bytes] = []
    size = 0
    while size < BODY_LIMIT:
        chunk = await resp.content.read(BODY_LIMIT - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size >= BODY_LIMIT and not resp.content.at_eof():
        resp.close()  # a large body: close this connection rather than read it all
    return b"".join(chunks)


def _dns_error(exc: aiohttp.ClientConnectorDNSError) -> str:
    cause = exc.__cause__
    if isinstance(cause, TargetRefused):
        return str(cause)
    return f"DNS error: {exc}"[:500]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)
