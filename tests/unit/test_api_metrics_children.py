"""The API's request metrics keep counting through their cached labelled children."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from leadhook.api.metrics import ApiMetrics


class _Route:
    path = "/v1/leads"


def test_repeated_requests_count_under_their_route_and_status() -> None:
    """Catches: a labelled child looked up once and then reused for another status or route
    (counts merged), or a cached child that stops counting."""
    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    scope = {"type": "http", "method": "POST", "route": _Route()}
    for _ in range(3):
        metrics.observe(scope, 201, 0.002)
    metrics.observe(scope, 422, 0.3)
    metrics.observe({**scope, "method": "GET"}, 201, 0.002)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"route": "/v1/leads", **labels})

    total = "leadhook_http_requests_total"
    assert sample(total, method="POST", status="201") == 3
    assert sample(total, method="POST", status="422") == 1
    assert sample(total, method="GET", status="201") == 1
    assert sample("leadhook_http_request_seconds_count", method="POST") == 4
    assert sample("leadhook_http_request_seconds_bucket", method="POST", le="0.25") == 3
