"""The behaviour routes' short way through the app: plain requests skip FastAPI's machinery.

A behaviour (`POST /v1/leads`, `PATCH /v1/leads/{id}`, `POST /v1/leads/{id}/status`, …) is
the busiest request leadhook serves, and the cheapest part of it was the work: routing over a
hundred routes, resolving dependencies and building a `Request` cost as much CPU as writing the
lead, its event and its deliveries. For a request that needs none of FastAPI's judgement (a
known tenant key, a JSON body the route's own model accepts, well-formed headers) this
middleware does what the route would do, with the route's own pieces: the body model the route
declares, `deps.behaviour_metadata`, `routes.leads.submit`, the app's exception handlers.

Anything else (a bad or missing key, a body the model refuses, a query string, an odd media
type) is handed to the app unchanged, body replayed, so every refusal is the one the route
gives, byte for byte. The table is built from the router's routes (`routes.leads.FAST_ACTIONS`
marks the endpoints), so a route and its short way cannot disagree about path or model.
"""

from __future__ import annotations

import inspect
import json
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request as StarletteRequest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadhook.api.deps import bearer, behaviour_metadata, plain_json_input
from leadhook.api.limits import (
    RATE_CHARGED,
    TokenBuckets,
    declared_length,
    head_bytes,
    rate_refusal,
    replayed,
    url_bytes,
)
from leadhook.api.metrics import CLIENT_GONE, ApiMetrics
from leadhook.api.problems import OutageLog
from leadhook.api.routes.leads import committed, submit
from leadhook.bootstrap import Container
from leadhook.services import collector

_JSON_TYPE = (b"content-type", b"application/json")
# Bodies longer than this (a batch of leads, not one behaviour) are parsed with the cyclic
# garbage collector paused.
_LARGE_BODY = 64 * 1024
# Set in the scope of a request the short way handed to the app whole (see ShortWay).
DECLINED = "leadhook.short_way_declined"


@dataclass(frozen=True)
class FastRoute:
    """One behaviour route as the short way runs it."""

    route: APIRoute
    action: str
    model: type[BaseModel]
    body_optional: bool


def fast_routes(
    routes: Iterable[Any], actions: Mapping[Callable[..., Any], str]
) -> dict[tuple[str, str], FastRoute]:
    """(method, path template) → FastRoute for every route whose endpoint `actions` marks."""
    table: dict[tuple[str, str], FastRoute] = {}
    for route in routes:
        if not isinstance(route, APIRoute) or route.endpoint not in actions:
            continue
        model, optional = _body_model(route.endpoint)
        for method in route.methods or ():
            table[(method, route.path)] = FastRoute(route, actions[route.endpoint], model, optional)
    return table


def _body_model(endpoint: Callable[..., Any]) -> tuple[type[BaseModel], bool]:
    hint = typing.get_type_hints(endpoint)["body"]  # Annotated[...] is stripped
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        (hint,) = members
    if not (inspect.isclass(hint) and issubclass(hint, BaseModel)):
        raise TypeError(f"{endpoint.__name__}: the body must be a model, not {hint!r}")
    return hint, optional


def _template(path: str) -> tuple[str, str] | None:
    # /v1/leads, /v1/leads/batch, /v1/leads/{lead_id}, /v1/leads/{lead_id}/<behaviour>
    parts = path.split("/")
    if len(parts) < 3 or parts[1] != "v1" or parts[2] != "leads":
        return None
    if len(parts) == 3:
        return "/v1/leads", ""
    lead_id = parts[3]
    if not lead_id:
        return None
    if len(parts) == 4:
        return ("/v1/leads/batch", "") if lead_id == "batch" else ("/v1/leads/{lead_id}", lead_id)
    if len(parts) == 5 and parts[4]:
        return "/v1/leads/{lead_id}/" + parts[4], lead_id
    return None


class _Fallback(Exception):
    """The request needs the app's own judgement."""


class FastBehaviours:
    """ASGI middleware: answer plain behaviour requests directly, hand the rest to the app."""

    def __init__(
        self,
        app: ASGIApp,
        api: FastAPI,
        container: Container,
        table: Mapping[tuple[str, str], FastRoute],
    ) -> None:
        self.app = app
        self.api = api
        self.container = container
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PATCH") or DECLINED in scope:
            await self.app(scope, receive, send)
            return
        found = _template(scope["path"])
        fast = None if found is None else self.table.get((scope["method"], found[0]))
        if fast is None or found is None:
            await self.app(scope, receive, send)
            return
        body = await _read(receive)
        if body is None:  # the client went away: counted as CLIENT_CLOSED, nothing answered
            scope[CLIENT_GONE] = True
            return
        scope["route"] = fast.route  # for the metrics' route label, as the router would set
        scope["path_params"] = {"lead_id": found[1]} if found[1] else {}
        try:
            pending = self._submit(scope, fast, found[1], body)
        except _Fallback:
            await self.app(scope, replayed(body, receive), send)
            return
        except Exception as exc:
            await self._problem(exc, scope, body, receive, send)
            return
        try:
            status, text = await committed(pending)
        except Exception as exc:
            await self._problem(exc, scope, body, receive, send)
            return
        await answer(send, status, text)

    def _submit(self, scope: Scope, fast: FastRoute, lead_id: str, raw: bytes) -> Any:
        wanted = {b"authorization": None, b"content-type": None, b"if-match": None,
                  b"idempotency-key": None, b"content-encoding": None}  # fmt: skip
        for name, value in scope["headers"]:
            if name in wanted:
                if wanted[name] is not None:
                    raise _Fallback  # a repeated header: let the app decide
                wanted[name] = value.decode("latin-1")
        content_type = wanted[b"content-type"]
        if wanted[b"content-encoding"] is not None:  # the app's 422 (or identity's pass)
            raise _Fallback
        if not plain_json_input(scope["path"], scope["query_string"], content_type, raw):
            raise _Fallback
        try:
            # A batch's body is thousands of objects at once: no collection while they are
            # parsed and validated (services/collector.py).
            with collector.paused() if len(raw) > _LARGE_BODY else nullcontext():
                data = json.loads(raw) if raw else None
                if data is None and not fast.body_optional:
                    raise _Fallback
                body = None if data is None else fast.model.model_validate(data)
            # A key the service has not seen lately is read by the app's own way, on a
            # thread (`deps.tenant_of`): never on the loop.
            mid = self.container.tenants.cached(bearer(wanted[b"authorization"]))
            if mid is None:
                raise _Fallback
            req = behaviour_metadata(
                mid,
                scope["method"],
                scope["path"],
                raw,
                wanted[b"if-match"],
                wanted[b"idempotency-key"],
            )
        except Exception as exc:
            raise _Fallback from exc
        return submit(self.container, fast.action, req, body, lead_id)  # type: ignore[arg-type]

    async def _problem(
        self, exc: Exception, scope: Scope, body: bytes, receive: Receive, send: Send
    ) -> None:
        handler = None
        for cls in type(exc).__mro__:
            handler = self.api.exception_handlers.get(cls)
            if handler is not None:
                break
        if handler is None:
            raise exc
        answer = handler(StarletteRequest(scope, replayed(body, receive)), exc)
        response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)


async def answer(send: Send, status: int, text: str) -> None:
    """Send a JSON answer: the messages and headers Starlette's `Response` would send."""
    body = text.encode()
    if status < 200 or status in (204, 304):
        headers = [_JSON_TYPE]
    else:
        headers = [(b"content-length", str(len(body)).encode()), _JSON_TYPE]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ShortWay:
    """The outermost layer's short way: a plain behaviour request skips every middleware.

    The app's middlewares (its metrics, the head and body limits, the outage log's watch,
    Starlette's and FastAPI's error and limit layers) each wrap every request and each of its
    sends: about a tenth of the API process's time on a sequential client's behaviours
    (`bench.profile_child`). Most of them have nothing to do for a behaviour that is within
    every limit, so `LeadhookAPI` asks `takes` first: a request it takes is answered here by
    `FastBehaviours`, with what those layers would have done around it (counted and timed
    for /metrics, reported to the outage log); any other request, and any the short way
    declines (its body replayed), runs through the whole app as before.

    The rate limit is the one thing that acts on every request: the short way charges the
    key's token itself, from the same buckets as `RateLimit` (which then charges no second
    one if the request is handed on), and answers its 429 as `RateLimit` would.
    """

    def __init__(
        self,
        app: ASGIApp,
        api: FastAPI,
        container: Container,
        table: Mapping[tuple[str, str], FastRoute],
        metrics: ApiMetrics,
        outages: OutageLog,
        buckets: TokenBuckets | None = None,
    ) -> None:
        self.app = app  # the whole app, every middleware included
        self.buckets = buckets
        self.table = table
        self.metrics = metrics
        self.outages = outages
        s = container.settings
        self.max_header_bytes = s.max_header_bytes
        self.max_url_bytes = s.max_url_bytes
        self.max_body_bytes = s.max_body_bytes
        self.fast = FastBehaviours(self._declined, api=api, container=container, table=table)

    def takes(self, scope: Scope) -> bool:
        """Whether `scope` is a behaviour request that no middleware would act on."""
        if scope["method"] not in ("POST", "PATCH"):
            return False
        found = _template(scope["path"])
        if found is None or (scope["method"], found[0]) not in self.table:
            return False
        # Over a limit HeaderLimit answers 414 or 431, BodyLimit 413; a body of no declared
        # length (chunked) is counted by BodyLimit as it arrives.
        declared = declared_length(scope)
        return (
            url_bytes(scope) <= self.max_url_bytes
            and head_bytes(scope) <= self.max_header_bytes
            and declared is not None
            and declared.isdigit()
            and int(declared) <= self.max_body_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start" and DECLINED not in scope:
                status = message["status"]
                if status < 500:
                    self.outages.answered()
            await send(message)

        try:
            if self.buckets is not None:
                scope[RATE_CHARGED] = True
                refusal = rate_refusal(self.buckets, scope)
                if refusal is not None:  # as RateLimit answers: before the outage log's watch
                    await refusal(scope, receive, send)
                    status = refusal.status_code
                    return
            await self.fast(scope, receive, sending)
        finally:
            if DECLINED not in scope:  # else the app's own metrics counted it
                self.metrics.observe(scope, status, time.perf_counter() - start)

    async def _declined(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[DECLINED] = True
        await self.app(scope, receive, send)


async def _read(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
