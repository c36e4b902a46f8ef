"""Operations and the documents: health, readiness, metrics, OpenAPI, errors as problem+json."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ADMIN_TOKEN, Api, assert_problem, seeded_api
from fastapi.testclient import TestClient

from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.domain.events import EVENT_TYPES
from leadhook.services import cursor as cursors
from leadhook.settings import Settings


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


# Every path and method of the original interface (docs/api.md has them all).
SPEC_PATHS: dict[str, set[str]] = {
    "/v1/tenants": {"post"},
    "/v1/tenants/{mid}/keys": {"post"},
    "/v1/tenants/{mid}/keys/{key_id}": {"delete"},
    "/v1/catalog": {"get"},
    "/v1/catalog/{kind}/{key}": {"put"},
    "/v1/leads": {"get", "post"},
    "/v1/leads/{lead_id}": {"get", "patch"},
    "/v1/leads/{lead_id}/status": {"post"},
    "/v1/leads/{lead_id}/owner": {"post"},
    "/v1/leads/{lead_id}/life-cycle": {"post"},
    "/v1/leads/{lead_id}/lead-pool": {"post"},
    "/v1/leads/{lead_id}/notes": {"post"},
    "/v1/leads/{lead_id}/team-members": {"post"},
    "/v1/leads/{lead_id}/team-members/{member_id}": {"delete"},
    "/v1/leads/{lead_id}/void": {"post"},
    "/v1/leads/{lead_id}/restore": {"post"},
    "/v1/leads/{lead_id}/relations": {"post"},
    "/v1/leads/{lead_id}/source": {"patch"},
    "/v1/leads/{lead_id}/timeline": {"get"},
    "/v1/events": {"get"},
    "/v1/events/{event_id}": {"get"},
    "/v1/subscriptions": {"post"},
    "/v1/subscriptions/{sub_id}": {"get", "patch", "delete"},
    "/v1/subscriptions/{sub_id}/rotate-secret": {"post"},
    "/v1/subscriptions/{sub_id}/test": {"post"},
    "/v1/subscriptions/{sub_id}/deliveries": {"get"},
    "/v1/subscriptions/{sub_id}/replay": {"post"},
    "/v1/deliveries/{delivery_id}/retry": {"post"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}


def test_healthz_and_readyz(api: Api) -> None:
    health = api.client.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": api.container.engine.dialect.name}


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    # A directory is no SQLite database: every connection fails.
    container = build(Settings(database_url=f"sqlite:///{tmp_path}"), run_migrations=False)
    try:
        with TestClient(create_app(container)) as client:
            resp = client.get("/readyz")
            assert resp.status_code == 503 and resp.json()["status"] == "unavailable"
            assert str(tmp_path) not in resp.text  # no driver message to unauthenticated callers
            assert client.get("/healthz").status_code == 200
    finally:
        container.close()


def test_metrics_count_requests_by_route_template(api: Api) -> None:
    lid = api.create_lead()["id"]
    api.get(f"/v1/leads/{lid}")
    api.get("/v1/leads/nope")
    resp = api.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'leadhook_http_requests_total{method="POST",route="/v1/leads",status="201"}' in text
    assert 'route="/v1/leads/{lead_id}",status="200"} 1.0' in text
    assert 'route="/v1/leads/{lead_id}",status="404"} 1.0' in text
    assert lid not in text
    assert "leadhook_http_request_seconds_bucket" in text


def test_metrics_count_refused_bodies_too_under_their_route(api: Api) -> None:
    big = b"x" * (1024 * 1024 + 1)
    resp = api.post("/v1/leads", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    text = api.client.get("/metrics").text
    assert 'leadhook_http_requests_total{method="POST",route="/v1/leads",status="413"} 1.0' in text
    # The route the method takes at that path ({lead_id} would take "batch" for a GET).
    resp = api.post("/v1/leads/batch", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert api.get("/nowhere").status_code == 404
    text = api.client.get("/metrics").text
    assert 'route="/v1/leads/batch",status="413"} 1.0' in text
    assert 'leadhook_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text


def _drive(
    api: Api,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
    on_send: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run one request through the app, as the server would, with a client that sends
    `body` (more to come) and then goes away; None: a request with no body, whose client
    stays. `on_send` is called with the server's scope at each message the app sends.
    Return that scope and what the app sent."""
    import anyio

    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }  # fmt: skip
    first = {"type": "http.request", "body": body or b"", "more_body": body is not None}
    messages = iter([first])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if on_send is not None:
            on_send(scope)

    async def run() -> None:
        await api.client.app(scope, receive, send)

    with contextlib.suppress(Exception):  # a route may raise once its client is gone
        anyio.run(run)
    return scope, sent


def _json_headers(api: Api, framing: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [
        (b"authorization", f"Bearer {api.key}".encode()),
        (b"content-type", b"application/json"),
        framing,
    ]


@pytest.mark.parametrize(
    "path", ["/v1/leads", "/v1/leads/batch", "/v1/subscriptions", "/v1/catalog/members/m9"]
)
def test_a_client_gone_before_its_answer_counts_as_499_not_as_an_answer(
    api: Api, path: str
) -> None:
    # The client sent half a body and went away. Nothing can be answered; the short way
    # counted it as a 500 (no status was ever set) and the routes as the 400 a body read cut
    # short answers, neither in the log: an operator saw errors that no client ever got.
    method = "PUT" if path.startswith("/v1/catalog") else "POST"
    headers = _json_headers(api, (b"content-length", b"1000"))
    _drive(api, method, path, headers, b'{"fields": {')
    text = api.client.get("/metrics").text
    counted = [line for line in text.splitlines() if f'method="{method}"' in line]
    counted = [line for line in counted if line.startswith("leadhook_http_requests_total{")]
    assert len(counted) == 1 and 'status="499"} 1.0' in counted[0], counted


def test_a_chunked_body_cut_short_is_not_carried_out(api: Api) -> None:
    # No Content-Length: the body comes in chunks, and the client goes away after a chunk
    # that is valid JSON on its own. BodyLimit, which gathers such bodies, handed what had
    # come to the app as the whole body: the lead was created from half a request.
    before = api.get("/v1/leads").json()["data"]
    headers = _json_headers(api, (b"transfer-encoding", b"chunked"))
    _, sent = _drive(api, "POST", "/v1/leads", headers, b'{"fields": {"name": "half"}}')
    assert sent == []
    assert api.get("/v1/leads").json()["data"] == before
    text = api.client.get("/metrics").text
    assert 'leadhook_http_requests_total{method="POST",route="/v1/leads",status="499"} 1.0' in text


def test_a_head_whose_client_went_away_counts_as_499(api: Api) -> None:
    # A HEAD is answered as its GET on a copy of the server's scope; the server marks a
    # client gone on its own scope, which the copy did not see: counted as the GET's 200.
    from leadhook.api.metrics import CLIENT_GONE

    def reset(scope: dict[str, Any]) -> None:
        scope[CLIENT_GONE] = True  # the reset, read while the app answered

    _drive(api, "HEAD", "/healthz", [], None, on_send=reset)
    text = api.client.get("/metrics").text
    # (A HEAD is counted as the GET it is answered as.)
    assert 'leadhook_http_requests_total{method="GET",route="/healthz",status="499"} 1.0' in text


def test_openapi_documents_the_spec_and_the_13_webhooks(api: Api) -> None:
    resp = api.client.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    for path, methods in SPEC_PATHS.items():
        assert path in doc["paths"], path
        assert methods <= set(doc["paths"][path]), (path, set(doc["paths"][path]))
    assert set(doc["webhooks"]) == set(EVENT_TYPES)
    for event_type, hook in doc["webhooks"].items():
        schema = hook["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema, event_type
    behaviour = doc["paths"]["/v1/leads/{lead_id}/notes"]["post"]
    assert "application/problem+json" in behaviour["responses"]["422"]["content"]
    # Every behaviour route honours both headers, and says so (pool routes included).
    for path, item in doc["paths"].items():
        if path.startswith("/v1/leads") and "post" in item and path != "/v1/leads/batch":
            params = {p["name"] for p in item["post"].get("parameters", [])}
            assert {"If-Match", "Idempotency-Key"} <= params or path == "/v1/leads", path
    listing = {p["name"] for p in doc["paths"]["/v1/events"]["get"]["parameters"]}
    assert {"after", "event_type", "entity_id", "limit"} <= listing


def test_every_error_is_problem_json(api: Api) -> None:
    lid = api.create_lead()["id"]
    checks: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/nowhere", {}, 404),
        ("GET", "/v1/leads/nope", {}, 404),
        ("DELETE", "/v1/leads", {}, 405),
        ("PUT", "/healthz", {}, 405),
        ("GET", "/v1/leads", {"params": {"cursor": "!!"}}, 400),
        ("GET", "/v1/leads", {"params": {"limit": -1}}, 422),
        ("POST", f"/v1/leads/{lid}/notes", {"json": {}}, 422),
        (
            "POST",
            f"/v1/leads/{lid}/notes",
            {"json": {"notes": "x"}, "headers": {"If-Match": "9"}},
            412,
        ),
        (
            "POST",
            "/v1/leads",
            {"content": b"[", "headers": {"content-type": "application/json"}},
            400,
        ),
        ("POST", "/v1/tenants", {"json": {"mid": "x"}}, 401),
    ]
    for method, path, kwargs, status in checks:
        assert_problem(api.request(method, path, **kwargs), status)
    assert_problem(api.client.get("/v1/leads"), 401)
    assert_problem(api.client.get("/v1/tenants/t1", headers={"Authorization": "Bearer x"}), 401)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert_problem(api.client.post("/v1/tenants", json={"mid": "t1"}, headers=admin), 409)


def test_values_no_database_can_take_are_400_not_500(api: Api) -> None:
    """NUL characters and out-of-range cursors never reach the database."""
    lid = api.create_lead()["id"]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path, params in (
        ("/v1/leads/%00x", {}),
        (f"/v1/leads/{lid}%00", {}),
        ("/v1/leads/%00x/timeline", {}),
        ("/v1/events/%00", {}),
        ("/v1/leads", {"owner": "\x00"}),
        ("/v1/leads", {"lead_pool": "a\x00b"}),
        ("/v1/events", {"entity_id": "\x00"}),
        ("/v1/events", {"after": "\x00"}),
        ("/v1/leads", {"cursor": cursors.encode(2**63)}),
        ("/v1/leads", {"cursor": cursors.encode(10**40)}),
    ):
        assert_problem(api.get(path, params=params), 400)
    assert_problem(api.post("/v1/leads/%00/notes", json={"notes": "x"}), 400)
    assert_problem(api.client.get("/v1/tenants/%00", headers=admin), 400)
    # A query that is not UTF-8 once percent-decoded was read with U+FFFD in its place: a
    # filter that matched nothing (200), where the same bytes in a body are refused.
    for query in ("owner=%FF", "lead_pool=%ED%A0%80", "%C3=x", "owner=a%E2%82"):
        refused = api.client.get(f"/v1/leads?{query}", headers=api.auth())
        assert "not UTF-8" in assert_problem(refused, 400)["detail"], query
    assert_problem(api.post(f"/v1/leads/{lid}/notes?x=%FF", json={"notes": "x"}), 400)
    for fine in ("owner=%E2%82%AC", "owner=+%2B", "owner=%EF%BF%BD"):  # €, " +", U+FFFD itself
        assert api.client.get(f"/v1/leads?{fine}", headers=api.auth()).status_code == 200
    assert_problem(api.client.delete("/v1/tenants/t1/keys/%00", headers=admin), 400)
    # Nor in the body: PostgreSQL text cannot hold a NUL, so no backend takes one.
    counts = api.counts()
    json_type = {"content-type": "application/json"}
    for method, path, raw, loc in (
        ("POST", f"/v1/leads/{lid}/notes", rb'{"notes": "a\u0000b"}', ["body", "notes"]),
        ("POST", "/v1/leads", rb'{"fields": {"name": "\u0000"}}', ["body", "fields", "name"]),
        ("PUT", "/v1/catalog/members/m7", rb'{"name": "x\u0000"}', ["body", "name"]),
        (
            "POST",
            "/v1/subscriptions",
            rb'{"url": "https://example.com/h", "event_types": ["*"], "description": "\u0000"}',
            ["body", "description"],
        ),
    ):
        assert_problem(api.request(method, path, content=raw, headers=json_type), 422, loc)
    assert api.counts() == counts
    # An escaped backslash before "u0000" is just text.
    resp = api.post(f"/v1/leads/{lid}/notes", content=rb'{"notes": "\\u0000"}', headers=json_type)
    assert resp.status_code == 200 and resp.json()["events"][0]["extra_data"]["notes"] == "\\u0000"


def test_text_that_is_not_unicode_is_422_not_500(api: Api) -> None:
    """JSON may escape half a surrogate pair (`\\ud800`): valid JSON, but no text to store."""
    lid = api.create_lead()["id"]
    json_type = {"content-type": "application/json"}
    counts = api.counts()
    for method, path, raw, loc in (
        ("POST", "/v1/leads", rb'{"fields": {"name": "a\ud800"}}', ["body", "fields", "name"]),
        (
            "POST",
            "/v1/leads",
            rb'{"lead_omni_user_uuid": "\udfff"}',
            ["body", "lead_omni_user_uuid"],
        ),
        (
            "POST",
            "/v1/leads",
            rb'{"fields": {"headimgurl": ["\ud800"]}}',
            ["body", "fields", "headimgurl", 0],
        ),
        (
            "POST",
            "/v1/leads/batch",
            rb'{"leads": [{}, {"fields": {"name": "\ud800"}}]}',
            ["body", "leads", 1, "fields", "name"],
        ),
        ("POST", f"/v1/leads/{lid}/notes", rb'{"notes": "\ud800"}', ["body", "notes"]),
        ("PATCH", f"/v1/leads/{lid}", rb'{"fields": {"\ud800": 1}}', ["body", "fields", "\\ud800"]),
        ("PUT", "/v1/catalog/members/m7", rb'{"name": "\udbff"}', ["body", "name"]),
    ):
        resp = api.request(method, path, content=raw, headers=json_type)
        assert_problem(resp, 422, loc)
        resp.content.decode("utf-8")  # the answer itself is UTF-8
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}", **json_type}
    resp = api.client.post("/v1/tenants", content=rb'{"mid": "x", "name": "\ud800"}', headers=admin)
    assert_problem(resp, 422, ["body", "name"])
    assert api.counts() == counts
    # A whole pair, escaped, is a character like any other.
    pair = api.post(
        "/v1/leads", content=rb'{"fields": {"name": "\ud83d\ude00"}}', headers=json_type
    )
    assert pair.status_code == 201 and pair.json()["lead"]["fields"]["name"] == "\U0001f600"


def _gauge(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


def test_metrics_show_the_delivery_backlog_of_every_tenant(
    backend: str, seeded_databases: Any
) -> None:
    # What an operator watches to know delivery keeps up, without any tenant's key: the
    # deliveries waiting for enabled subscriptions and how long the most overdue one waits.
    from api_helpers import _seed_template

    from leadhook.adapters.memory import FakeClock

    url, key = seeded_databases.restore(backend, "api-seeded", _seed_template)
    clock = FakeClock(1_800_000_000.0)
    container = build(
        Settings(database_url=url, admin_token=ADMIN_TOKEN, allow_private_targets=True),
        run_migrations=False,
        clock=clock,
    )
    try:
        with TestClient(create_app(container)) as client:
            api = Api(client, container, "t1", key)
            text = client.get("/metrics").text
            assert _gauge(text, "leadhook_deliveries_due") == 0  # the seed has no subscription
            assert _gauge(text, "leadhook_deliveries_overdue_seconds") == 0
            hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
            on = api.post("/v1/subscriptions", json=hook).json()["id"]
            off = api.post("/v1/subscriptions", json=hook).json()["id"]
            api.create_lead()  # one delivery to each (no delivery loop runs here)
            assert api.patch(f"/v1/subscriptions/{off}", json={"enabled": False}).is_success
            clock.advance(90)
            text = client.get("/metrics").text
            # The disabled subscription's delivery waits for a re-enable: not counted.
            assert _gauge(text, "leadhook_deliveries_due") == 1
            assert 90 <= _gauge(text, "leadhook_deliveries_overdue_seconds") < 91
            assert on not in text and off not in text  # no ids in labels
    finally:
        container.close()
