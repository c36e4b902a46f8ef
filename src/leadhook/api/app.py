"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from prometheus_client import CollectorRegistry
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

from leadhook import __version__
from leadhook.api import console, deps, problems
from leadhook.api.fastpath import FastBehaviours, ShortWay, fast_routes
from leadhook.api.limits import BodyLimit, HeaderLimit, RateLimit, TokenBuckets
from leadhook.api.matching import RouteTable
from leadhook.api.metrics import (
    ApiMetrics,
    DeliveryBacklog,
    DeliveryOutcomes,
    PurgeCounts,
    WriterCounts,
)
from leadhook.api.problems_doc import narrow_problems
from leadhook.api.routes import (
    automation,
    catalog,
    event_types,
    events,
    leads,
    ops,
    subscriptions,
    tenants,
)
from leadhook.bootstrap import Container
from leadhook.domain import event_types as types
from leadhook.domain.events import EVENT_MODELS

DESCRIPTION = """\
leadhook owns CRM leads for many tenants, records every behaviour on a lead as an event in a
fixed JSON contract, and delivers the events to subscribers' webhooks, signed (Standard
Webhooks), in order per lead, retried for about three days, never lost.

Errors are `application/problem+json` (RFC 9457). Bodies are JSON: any other media type
answers 422. Every mutating lead call honours `Idempotency-Key` and `If-Match: <version>`.
Times in answers are RFC 3339 UTC strings (`2026-12-01T08:30:00.250Z`); the event contract's
own fields keep their form. The *Webhooks* section documents each event type exactly as
subscribers receive it, as does `GET /v1/event-types`.
"""


# A JSON body without a Content-Type is read as JSON (any other media type is a 422, see
# deps.storable_input). FastAPI 0.12x reads it so by default; newer versions need the flag.
_LENIENT_CONTENT_TYPE: dict[str, Any] = (
    {"strict_content_type": False}
    if "strict_content_type" in inspect.signature(FastAPI.__init__).parameters
    else {}
)

# FastAPI's own OpenTelemetry hooks (0.16x) ask the global providers on every request, about
# 30 µs even with none configured (the profile of `POST /v1/leads`): leadhook reports through
# /metrics, so they are off where the version has them.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


class LeadhookAPI(FastAPI):
    """FastAPI, with the behaviour requests' short way taken before every middleware."""

    short_way: ShortWay | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        short = self.short_way
        if short is not None and scope["type"] == "http" and short.takes(scope):
            scope["app"] = self  # as Starlette sets it: the exception handlers read it
            await short(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "HEAD":
            # The mark's value is the server's own scope, where it notes a client gone
            # (`metrics.CLIENT_GONE`) after this copy was made.
            scope, send = {**scope, "method": "GET", deps.HEAD_AS_GET: scope}, _without_body(send)
        if scope["type"] == "http" and scope["method"] == "GET":
            query = scope.get("query_string", b"")
            if query and scope["path"].startswith("/v1/"):
                scope["query_string"] = without_empty_values(query)
        await super().__call__(scope, receive, send)


def _without_body(send: Send) -> Send:
    """The `send` of a HEAD request answered as its GET (RFC 9110: a server answers HEAD
    wherever it answers GET, with the same status and headers and no content).

    FastAPI's routes take only the methods they name, so HEAD on any path answered 405; a
    monitor probing `/healthz` or a client checking a lead's `ETag` sends HEAD. The server
    (uvicorn) writes no body on a HEAD request either; this keeps the app from making one.
    `Allow` keeps listing the methods routes name: HEAD goes with GET without being listed.
    """

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return sending


def without_empty_values(query: bytes) -> bytes:
    """Drop the parameters that have no value (`owner=`, a bare `voided`) from a query string.

    A reader's listing URL with its filters left empty (`?owner=&lead_pool=&cursor=`, as a
    form or a URL template sends them) means "no filter", as on `GET /v1/events`: the typed
    ones answered 422 (`voided=`, `limit=`) and `owner=` matched no lead at all.
    """
    parts = query.split(b"&")
    # The value is what follows the first "=": `owner=nobody=` has the value `nobody=`, a
    # value like any other (dropping it because the text ends with "=" lifted the filter).
    kept = [p for p in parts if p.partition(b"=")[2]]
    return query if len(kept) == len(parts) else b"&".join(kept)


DOCS_ASSETS = "/docs/assets"


def _install_docs(app: FastAPI) -> None:
    """Serve /docs (Swagger UI) and /redoc (ReDoc) with their scripts from this package:
    FastAPI's defaults load them from a CDN (and ReDoc its fonts from Google), so on a
    machine without that network the documentation pages stayed blank. Both pages are the
    same text for every request: made once here."""
    openapi, title = app.openapi_url or "/openapi.json", f"{app.title} API"
    favicon = f"{DOCS_ASSETS}/favicon-32x32.png"
    pages = {
        "/docs": get_swagger_ui_html(
            openapi_url=openapi,
            title=title,
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=favicon,
        ),
        "/redoc": get_redoc_html(
            openapi_url=openapi,
            title=title,
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=favicon,
            with_google_fonts=False,
        ),
    }
    for path, page in pages.items():
        app.add_api_route(path, _constant(bytes(page.body)), include_in_schema=False)
    app.mount(
        DOCS_ASSETS, StaticFiles(packages=[("leadhook.api", "docs_static")]), name="docs-assets"
    )


def _constant(body: bytes) -> Callable[[], Awaitable[HTMLResponse]]:
    async def page() -> HTMLResponse:
        return HTMLResponse(body)

    return page


def stopping(app: Any) -> None:
    """Tell `app`'s long-lived answers that the server is stopping (see `create_app`)."""
    event = getattr(getattr(app, "state", None), "stopping", None)
    if isinstance(event, asyncio.Event):
        event.set()


def create_app(container: Container) -> FastAPI:
    """Build the API around a container (settings, database, services)."""
    app = LeadhookAPI(
        title="leadhook",
        version=__version__,
        description=DESCRIPTION,
        # Paths are matched exactly: `/v1/leads/` is a 404, not a redirect to `/v1/leads`
        # (a client's POST would not follow it, and a redirect is no problem+json).
        redirect_slashes=False,
        docs_url=None,  # served below, from the package's own files
        redoc_url=None,
        **_LENIENT_CONTENT_TYPE,
        **_NO_TELEMETRY,
    )
    app.state.container = container
    # Set when the server begins to stop (`stopping`): long-lived answers (the console's live
    # stream) end at once rather than hold the graceful shutdown until it cancels them.
    app.state.stopping = asyncio.Event()
    registry = CollectorRegistry()
    app.state.registry = registry
    api_metrics = ApiMetrics(registry)
    app.state.api_metrics = api_metrics
    registry.register(PurgeCounts(container.purge_counts))
    registry.register(DeliveryBacklog(container.delivery_backlog, container.clock))
    registry.register(DeliveryOutcomes(container.delivery_outcomes))
    registry.register(WriterCounts(container.writer.counts))
    # Innermost: behaviour requests that need no judgement skip the router (api/fastpath.py).
    fast = fast_routes(leads.router.routes, leads.FAST_ACTIONS)
    app.add_middleware(FastBehaviours, api=app, container=container, table=fast)
    problems.install(app, deps.route_credential)
    s = container.settings
    app.add_middleware(BodyLimit, limit=s.max_body_bytes, credential=deps.path_credential)
    buckets = None if s.rate_limit is None else TokenBuckets(*s.rate_limit)
    app.state.rate_buckets = buckets  # the console's sessions count against it too
    if buckets is not None:
        app.add_middleware(RateLimit, buckets=buckets)
    app.add_middleware(
        HeaderLimit, max_header_bytes=s.max_header_bytes, max_url_bytes=s.max_url_bytes
    )
    app.add_middleware(api_metrics.asgi)  # outermost: refused requests are counted too
    # Before all of them: behaviours no middleware would act on (api/fastpath.py, ShortWay).
    whole = partial(FastAPI.__call__, app)
    app.short_way = ShortWay(whole, app, container, fast, api_metrics, app.state.outages, buckets)
    # Routes are matched in order: the behaviours, the busiest, first.
    routers = [
        leads.router,
        events.router,
        tenants.router,
        catalog.router,
        ops.router,
        subscriptions.router,
        subscriptions.deliveries_router,
        automation.router,
    ]
    for router in routers:
        app.include_router(router)
    _install_docs(app)
    routers.append(console.install(app))  # the web console at /console
    app.include_router(event_types.router)
    routers.append(event_types.router)
    # Every method of every path, for a 405's Allow and the metrics of refused requests.
    app.state.route_table = RouteTable.of(
        [*app.router.routes, *(route for router in routers for route in router.routes)]
    )
    _document_webhooks(app)
    return app


def _document_webhooks(app: FastAPI) -> None:
    # The same description and example as GET /v1/event-types (leadhook.domain.event_types);
    # the schema is the event model's, which the committed schemas/ are generated from.
    for event_type, model in EVENT_MODELS.items():

        def receiver(body: object) -> None:
            """Documentation only."""

        # Set at run time: with postponed annotations a loop variable cannot be an annotation.
        receiver.__annotations__ = {"body": model, "return": None}
        receiver.__doc__ = types.description(event_type) + (
            " Sent as a signed POST (headers webhook-id, webhook-timestamp, webhook-signature);"
            " answer 2xx to acknowledge."
        )
        app.webhooks.post(event_type, summary=event_type)(receiver)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        # Examples go in after generation: FastAPI drops every null from the document it
        # builds, and an example event must keep its nulls (`"owner": null`).
        if app.openapi_schema is None:
            doc = generate()
            for event_type, hook in doc.get("webhooks", {}).items():
                content = hook["post"]["requestBody"]["content"]["application/json"]
                value = types.example(event_type)
                content["examples"] = {"example": {"summary": event_type, "value": value}}
            for operations in doc.get("paths", {}).values():
                for method, operation in operations.items():
                    narrow_problems(method, operation)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
