"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from leadhook import __version__
from leadhook.api import problems
from leadhook.api.metrics import ApiMetrics
from leadhook.api.routes import catalog, events, leads, ops, tenants
from leadhook.bootstrap import Container
from leadhook.domain.events import EVENT_MODELS

DESCRIPTION = """\
leadhook owns CRM leads for many tenants, records every behaviour on a lead as an event in a
fixed JSON contract, and delivers the events to subscribers' webhooks, signed (Standard
Webhooks), in order per lead, retried for about three days, never lost.

Errors are `application/problem+json` (RFC 9457). Every mutating lead call honours
`Idempotency-Key` and `If-Match: <version>`. The *Webhooks* section documents each event type
exactly as subscribers receive it.
"""


def create_app(container: Container) -> FastAPI:
    """Build the API around a container (settings, database, services)."""
    app = FastAPI(title="leadhook", version=__version__, description=DESCRIPTION)
    app.state.container = container
    registry = CollectorRegistry()
    app.state.registry = registry
    api_metrics = ApiMetrics(registry)
    app.state.api_metrics = api_metrics
    problems.install(app)
    app.middleware("http")(api_metrics.middleware)
    app.middleware("http")(_limit_body(container.settings.max_body_bytes))
    for router in (tenants.router, catalog.router, leads.router, events.router, ops.router):
        app.include_router(router)
    _document_webhooks(app)
    return app


def _limit_body(
    limit: int,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def middleware(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return _too_large(limit)
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and declared is None:
            body = await request.body()  # chunked: read it (bounded by the server) and check
            if len(body) > limit:
                return _too_large(limit)
        return await call_next(request)

    return middleware


def _too_large(limit: int) -> Response:
    return problems.problem(
        413,
        "Payload too large",
        f"request bodies are limited to {limit} bytes",
        "payload-too-large",
    )


def _document_webhooks(app: FastAPI) -> None:
    for event_type, model in EVENT_MODELS.items():

        def receiver(body: object) -> None:
            """Documentation only."""

        # Set at run time: with postponed annotations a loop variable cannot be an annotation.
        receiver.__annotations__ = {"body": model, "return": None}

        receiver.__doc__ = (model.__doc__ or event_type) + (
            " Sent as a signed POST (headers webhook-id, webhook-timestamp, webhook-signature);"
            " answer 2xx to acknowledge."
        )
        app.webhooks.post(event_type, summary=event_type)(receiver)
