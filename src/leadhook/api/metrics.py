"""Prometheus metrics of the API process, in a registry of the app's own."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadhook.api.matching import route_table

CLIENT_CLOSED = 499
"""The `status` label of a request whose client went away before its answer began (nginx's
"client closed request"): no answer was sent, so none is counted as one."""
CLIENT_GONE = "leadhook.client_gone"
"""Set in a request's scope when its client is found gone before its answer began: by
`ApiMetrics` when the app reads a disconnect, by the short way (which runs outside it) when its
body read does, or by serve's protocol when the connection is lost
(`cli.runtime.OneSendHttpTools`)."""
REFUSED = "leadhook.refused"
"""Set by serve's protocol to the status it answered a request with itself (a body that broke
while its app read it): what its client got, although its app then finds the client gone."""
HEAD_ORIGIN = "leadhook.head"
"""`deps.HEAD_AS_GET`: in the scope of a HEAD answered as its GET, the server's own scope."""


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
        # The labelled children of each (method, route, status), looked up once: `labels()`
        # takes a lock and builds its key on every call (3.6-5.8 us a request for the two,
        # 1.5 with the children kept; bench/profiles.md, the 27th round). Routes are
        # templates and statuses few, so this stays as small as the labels are.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """Wrap an ASGI app so that every HTTP request is timed and counted."""

        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500
            started = False

            async def receiving() -> Message:
                message = await receive()
                if message["type"] == "http.disconnect" and not started:
                    scope[CLIENT_GONE] = True
                return message

            async def sending(message: Message) -> None:
                nonlocal status, started
                if message["type"] == "http.response.start":
                    status, started = message["status"], True
                await send(message)

            try:
                await app(scope, receiving, sending)
            finally:
                self.observe(scope, status, time.perf_counter() - start)

        return wrapped

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one answered HTTP request and its latency.

        A request whose client went away before its answer began counts as `CLIENT_CLOSED`,
        whatever the app then tried to send: it was counted as a 500 (nothing had set a
        status) or as the 400 a body read cut short answers, with nothing in the log.
        """
        if REFUSED in scope:
            status = scope[REFUSED]
        # A HEAD answered as its GET: the server noted its client on its own scope.
        elif CLIENT_GONE in scope or CLIENT_GONE in scope.get(HEAD_ORIGIN, ()):
            status = CLIENT_CLOSED
        method, route = scope["method"], _route(scope)
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.latency.labels(method, route),
                self.requests.labels(method, route, str(status)),
            )
        latency, requests = children
        latency.observe(seconds)
        requests.inc()


T = TypeVar("T")


# The scrapes' reads failing now (by message): logged when they begin to fail and when they
# read again, not at every scrape (a scraper every 0.1 s wrote twenty lines a second during
# an outage, where docs/operations.md promises one when it starts and one when it ends).
_FAILING: set[str] = set()


def _scraped(read: Callable[[], T], failed: str) -> T | None:
    """What `read` reads from the database for a scrape; None (logged once) if it fails: a
    scrape must not fail because the database is down."""
    log = logging.getLogger("leadhook.api")
    try:
        value = read()
    except Exception as exc:
        if failed not in _FAILING:
            _FAILING.add(failed)
            log.warning(failed, extra={"error": type(exc).__name__, "until": "it reads again"})
        return None
    if failed in _FAILING:
        _FAILING.discard(failed)
        log.warning(f"{failed} before: it reads again")
    return value


class PurgeCounts(Collector):
    """Rows purged by retention per table, read from the database at each scrape.

    The purge runs wherever the delivery loop runs (this process, a child process, or
    `leadhook worker` elsewhere): the database is the one place that knows them all.
    """

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Without it, registering would call collect(), and read the database, right away.
        yield self._family()

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "leadhook_retention_purged_rows",
            "Rows deleted by retention since the database was created",
            labels=["table"],
        )

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        counts = _scraped(self._read, "reading purge counts failed")
        if counts is None:
            return
        for table in ("idempotency_keys", "deliveries", "delivery_attempts", "events"):
            family.add_metric([table], counts.get(table, 0))
        yield family


class DeliveryBacklog(Collector):
    """The deliveries waiting to be sent, every tenant's, read from the database at each
    scrape: the one signal of whether delivery keeps up that needs no tenant's key.

    `leadhook_deliveries_overdue_seconds` stays near 0 while the workers keep up; it grows
    while they cannot (too few, stopped) or an endpoint fails (its deliveries wait for their
    retries, later versions of a lead for the earlier one)."""

    def __init__(
        self, read: Callable[[], tuple[int, float | None]], clock: Callable[[], float]
    ) -> None:
        self._read = read
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        yield from self._families(0, 0.0)

    def collect(self) -> Iterator[Metric]:
        backlog = _scraped(self._read, "reading the delivery backlog failed")
        if backlog is None:
            return
        count, earliest = backlog
        overdue = 0.0 if earliest is None else max(0.0, self._clock() - earliest)
        yield from self._families(count, overdue)

    @staticmethod
    def _families(count: int, overdue: float) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "leadhook_deliveries_due",
            "Deliveries waiting to be sent (pending or failed) to enabled subscriptions",
            value=count,
        )
        yield GaugeMetricFamily(
            "leadhook_deliveries_overdue_seconds",
            "How long the most overdue of those deliveries has been due (0: none is)",
            value=overdue,
        )


class DeliveryOutcomes(Collector):
    """What the delivery loops did, every worker's (`serve`'s child and `leadhook worker`s
    alike), read from the database at each scrape: the delivering processes serve no HTTP,
    and each record counts its outcomes in its own transaction (`delivery_outcomes`)."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        # Without it, registering would call collect(), and read the database, right away.
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        counts = _scraped(self._read, "reading the delivery outcomes failed")
        if counts is None:
            return
        yield from self._families(counts)

    @staticmethod
    def _families(counts: dict[str, int]) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "leadhook_delivery_attempts",
            "Delivery attempts since the counters began, by result: delivered (2xx),"
            " failed (an error status, no answer, a refused target), turned_away (the"
            " endpoint's circuit open: nothing sent)",
            labels=["result"],
        )
        for result in ("delivered", "failed", "turned_away"):
            attempts.add_metric([result], counts.get(result, 0))
        yield attempts
        yield CounterMetricFamily(
            "leadhook_deliveries_dead",
            "Deliveries that went dead (retries exhausted, or the endpoint answered 410)",
            value=counts.get("dead", 0),
        )
        yield CounterMetricFamily(
            "leadhook_circuit_openings",
            "Times an endpoint's circuit opened, or opened again after a failed probe",
            value=counts.get("circuit_opened", 0),
        )


class WriterCounts(Collector):
    """The group-commit writer's transactions by way, and the behaviours in them.

    `units / transactions` is the size of the groups: how many requests share a commit.
    `deferred_redone` counts groups that failed deferred (on PostgreSQL some unit's error,
    on SQLite a unit's error after it wrote) and ran again unit by unit: each costs that
    group its deferred attempt (docs/write-path.md).
    """

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def describe(self) -> Iterator[Metric]:
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._read())

    @staticmethod
    def _families(counts: dict[str, int]) -> Iterator[Metric]:
        groups = CounterMetricFamily(
            "leadhook_writer_transactions",
            "Write transactions of the behaviours' group-commit writer, by how they ran",
            labels=["way"],
        )
        for way, n in counts.items():  # the writer's ways, in its order
            if way != "units":
                groups.add_metric([way], n)
        yield groups
        yield CounterMetricFamily(
            "leadhook_writer_behaviours",
            "Units of work (behaviours, batches) the group-commit writer ran",
            value=counts.get("units", 0),
        )


def _route(scope: Scope) -> str:
    # The router records the route it dispatched to in the scope; its path is the template
    # (`/v1/leads/{lead_id}`), never the raw path, so the labels stay few. (Walking
    # `app.router.routes` does not work: routers included by FastAPI are wrapped, path-less.)
    path: Any = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    # A request refused before routing (413, 414, 431, 429) reached no route, but its path
    # may be one: count it under that route's template, so that `unmatched` counts only
    # paths that no route serves.
    table = route_table(scope)
    refused = None if table is None else table.template(scope["path"], scope["method"])
    return _plain_route(scope) or refused or "unmatched"


def _plain_route(scope: Scope) -> str | None:
    # FastAPI's own pages (`/docs`, `/openapi.json`, `/redoc`) are plain Starlette routes,
    # which record only their endpoint: find the route of that endpoint in the router.
    endpoint, router = scope.get("endpoint"), scope.get("router")
    if endpoint is None or router is None:
        return None
    for route in getattr(router, "routes", ()):
        if getattr(route, "endpoint", None) is endpoint:
            path: Any = getattr(route, "path", None)
            return path if isinstance(path, str) and path else None
    return None
