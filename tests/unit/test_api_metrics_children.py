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


def test_what_a_client_got_decides_the_status_counted() -> None:
    """Catches: a client gone before its answer counted as the status its app sent (it got
    none: 499), a HEAD's note missed on the server's own scope, or a request the server
    refused itself (a body broken while read) counted as a client gone."""
    from leadhook.api.metrics import CLIENT_GONE, HEAD_ORIGIN, REFUSED

    registry = CollectorRegistry()
    metrics = ApiMetrics(registry)
    base = {"type": "http", "method": "POST", "route": _Route()}
    metrics.observe({**base, CLIENT_GONE: True}, 201, 0.01)
    metrics.observe({**base, "method": "GET", HEAD_ORIGIN: {CLIENT_GONE: True}}, 200, 0.01)
    metrics.observe({**base, CLIENT_GONE: True, REFUSED: 400}, 500, 0.01)

    def sample(method: str, status: str) -> float | None:
        labels = {"route": "/v1/leads", "method": method, "status": status}
        return registry.get_sample_value("leadhook_http_requests_total", labels)

    assert (sample("POST", "499"), sample("GET", "499"), sample("POST", "400")) == (1, 1, 1)
    assert sample("POST", "201") is None and sample("GET", "200") is None
