"""Prometheus metrics of the API process, in a registry of the app's own."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match


class ApiMetrics:
    """HTTP request counts and latencies, labelled by route template (not raw path)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "leadhook_http_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "leadhook_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Time and count one request."""
        start = time.perf_counter()
        response = await call_next(request)
        route = _route(request)
        self.latency.labels(request.method, route).observe(time.perf_counter() - start)
        self.requests.labels(request.method, route, str(response.status_code)).inc()
        return response


def _route(request: Request) -> str:
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            path: Any = getattr(route, "path", None)
            return str(path) if path else "other"
    return "unmatched"
