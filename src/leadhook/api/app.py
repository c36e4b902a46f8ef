"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadhook import __version__
from leadhook.api import problems
from leadhook.api.metrics import ApiMetrics, PurgeCounts
from leadhook.api.routes import catalog, events, leads, ops, subscriptions, tenants
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
    registry.register(PurgeCounts(container.purge_counts))
    problems.install(app)
    app.add_middleware(BodyLimit, limit=container.settings.max_body_bytes)
    app.add_middleware(api_metrics.asgi)  # outermost: refused requests are counted too
    for router in (tenants.router, catalog.router, leads.router, events.router, ops.router):
        app.include_router(router)
    app.include_router(subscriptions.router)
    app.include_router(subscriptions.deliveries_router)
    _document_webhooks(app)
    return app


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, reading at most `limit` + 1 of them.

    A declared Content-Length over the limit is refused before reading; a chunked body is
    buffered up to the limit and refused as soon as it passes it, then replayed to the app.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            if declared.isdigit() and int(declared) > self.limit:
                await _too_large(self.limit)(scope, receive, send)
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
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


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
