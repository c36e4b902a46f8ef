"""Abuse limits at the door: request rate per API key, header, URL and body sizes.

Both are pure ASGI middlewares that answer problem+json before any route, dependency or
database work runs, so a flood costs leadhook as little as possible.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadhook.api import problems
from leadhook.api.problems import CredentialCheck

log = logging.getLogger("leadhook.api")

MAX_TRACKED_KEYS = 10_000
"""Buckets kept at once; the least recently used goes first (random keys cannot grow memory)."""


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per key: `rate` tokens a second, holding at most `burst`."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()

    def take(self, key: bytes) -> float:
        """Spend a token of `key`; return 0 if there was one, else the seconds until one."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > MAX_TRACKED_KEYS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def _bearer_key(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() != b"bearer" or not token:
                return None
            # A digest, not the key itself, is what the limiter keeps in memory.
            return hashlib.blake2b(token, digest_size=16).digest()
    return None


RATE_CHARGED = "leadhook.rate_charged"
"""Set in a request's scope once its key paid its token (the short way charges before the app)."""


def rate_refusal(buckets: TokenBuckets, scope: Scope) -> Response | None:
    """Spend a token of the request's API key: None if it had one, else the 429 to answer."""
    key = _bearer_key(scope)
    if key is None:
        return None
    wait = buckets.take(key)
    if wait <= 0:
        return None
    return problems.problem(
        429,
        "Too many requests",
        rate_detail(buckets),
        "rate-limited",
        headers={"Retry-After": retry_after(wait)},
    )


def rate_detail(buckets: TokenBuckets) -> str:
    """What a refusal over the rate says (the API's 429 and the console's page)."""
    return (
        f"this API key is limited to {buckets.rate:g} requests a second"
        f" (bursts of {buckets.burst:g}); retry after the time Retry-After gives"
    )


def retry_after(wait: float) -> str:
    """`Retry-After` for a wait of `wait` seconds: whole seconds, at least one."""
    return str(max(1, math.ceil(wait)))


class RateLimit:
    """Limit requests per API key (per process); over the limit: 429 with Retry-After.

    Requests without a bearer key are not limited here: they are answered 401 at once.
    """

    def __init__(self, app: ASGIApp, buckets: TokenBuckets) -> None:
        self.app = app
        self.buckets = buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and RATE_CHARGED not in scope:
            refusal = rate_refusal(self.buckets, scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def head_bytes(scope: Scope) -> int:
    """The size of a request's headers as HeaderLimit counts it."""
    return sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def url_bytes(scope: Scope) -> int:
    """The size of a request's URL (path and query string) as HeaderLimit counts it."""
    return len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")


def declared_length(scope: Scope) -> bytes | None:
    """The request's first Content-Length header, as sent (None without one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return bytes(value)
    return None


class HeaderLimit:
    """Refuse oversized request heads: 431 for the headers, 414 for the URL."""

    def __init__(self, app: ASGIApp, max_header_bytes: int, max_url_bytes: int) -> None:
        self.app = app
        self.max_header_bytes = max_header_bytes
        self.max_url_bytes = max_url_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        """The 431 or 414 answer for an oversized request head, or None to let it through."""
        if head_bytes(scope) > self.max_header_bytes:
            return problems.problem(
                431,
                "Request header fields too large",
                f"request headers are limited to {self.max_header_bytes} bytes in all",
                "header-fields-too-large",
            )
        if url_bytes(scope) > self.max_url_bytes:
            return problems.problem(
                414,
                "URI too long",
                f"request URLs are limited to {self.max_url_bytes} bytes",
                "uri-too-long",
            )
        return None


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, reading at most `limit` + 1 of them.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    buffered up to the limit and refused as soon as it passes it, then replayed to the app.
    The credential the request's path asks for is checked first: with none, or an unknown
    one, the answer is 401, as for every other request (a key that cannot be read, the
    database down, leaves the 413).
    """

    def __init__(self, app: ASGIApp, limit: int, credential: CredentialCheck | None = None) -> None:
        self.app = app
        self.limit = limit
        self.credential = credential

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = declared_length(scope)
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await (await self._refusal(scope))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away inside the body: what came is not the request. The app
                # was handed it as whole, so a chunked body cut short was carried out (a lead
                # created from half a batch). Nothing is run and nothing can be answered (the
                # metrics around every middleware saw the disconnect: counted as 499).
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await (await self._refusal(scope))(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replayed(b"".join(chunks), receive), send)

    async def _refusal(self, scope: Scope) -> Response:
        """The 413, or the 401 of the credential the request's path asks for (`credential`:
        it raises the request's 401, if any)."""
        if self.credential is not None:
            try:
                refused = await problems.credential_refusal(Request(scope), self.credential)
            except Exception:  # the key cannot be read (the database is down): the size
                # alone refuses the request, as before the credential was looked at
                log.debug("no key read for a body over the size limit", exc_info=True)
                refused = None
            if refused is not None:
                return refused
        return _too_large(self.limit)


def _too_large(limit: int) -> Response:
    return problems.problem(
        413,
        "Payload too large",
        f"request bodies are limited to {limit} bytes",
        "payload-too-large",
    )


def replayed(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app `body` (already read) whole, then what `receive` says."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
