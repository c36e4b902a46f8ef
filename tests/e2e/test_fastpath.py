"""The behaviour routes' short way (api/fastpath.py) answers exactly what the routes answer.

Each refusal is sent twice, to the app as built and to the same app without the short way,
over one database: status, media type and body must be identical. Plain requests must take the
short way (else it is dead code and the speed-up gone), and the metrics still name the route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ADMIN, ADMIN_TOKEN, seed_catalog
from fastapi.testclient import TestClient

from leadhook.api import fastpath
from leadhook.api.app import create_app
from leadhook.api.fastpath import DECLINED, FastBehaviours, ShortWay
from leadhook.api.routes import leads
from leadhook.bootstrap import Container, build
from leadhook.settings import Settings


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient, str, Container]]:
    """(client with the short way, client without it, tenant key, container)."""
    container = build(
        Settings(database_url=f"sqlite:///{tmp_path}/fast.db", admin_token=ADMIN_TOKEN)
    )
    plain = create_app(container)
    plain.user_middleware = [m for m in plain.user_middleware if m.cls is not FastBehaviours]
    plain.short_way = None  # type: ignore[attr-defined]
    try:
        with TestClient(create_app(container)) as fast, TestClient(plain) as slow:
            resp = fast.post("/v1/tenants", json={"mid": "t1"}, headers=ADMIN)
            key = resp.json()["api_key"]
            seed_catalog(fast, key)
            yield fast, slow, key, container
    finally:
        container.close()


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which way each behaviour request went: "fast" or "app"."""
    ways: list[str] = []
    original = FastBehaviours._submit

    def spy(self: FastBehaviours, *args: Any) -> Any:
        try:
            pending = original(self, *args)
        except fastpath._Fallback:
            ways.append("app")
            raise
        ways.append("fast")
        return pending

    monkeypatch.setattr(FastBehaviours, "_submit", spy)
    return ways


def test_every_behaviour_route_but_one_has_a_short_way() -> None:
    table = fastpath.fast_routes(leads.router.routes, leads.FAST_ACTIONS)
    assert {path for _, path in table} == {
        "/v1/leads",
        "/v1/leads/batch",
        "/v1/leads/{lead_id}",
        *(
            f"/v1/leads/{{lead_id}}/{name}"
            for name in (
                "status", "owner", "life-cycle", "lead-pool", "notes", "team-members", "void",
                "restore", "relations", "source",
            )
        ),
    }  # fmt: skip
    # The model is the route's own; void and restore take no body at all.
    assert table[("POST", "/v1/leads/{lead_id}/status")].model.__name__ == "StatusIn"
    assert table[("POST", "/v1/leads/{lead_id}/void")].body_optional
    assert not table[("POST", "/v1/leads")].body_optional


def test_plain_behaviours_take_the_short_way_and_answer_as_the_routes_do(
    apps: tuple[TestClient, TestClient, str, Container], taken: list[str]
) -> None:
    fast, slow, key, _ = apps
    auth = {"Authorization": f"Bearer {key}"}
    created = fast.post("/v1/leads", json={"fields": {"name": "甲"}}, headers=auth)
    assert created.status_code == 201, created.text
    assert created.headers["content-type"] == "application/json"
    lead = created.json()["lead"]
    other = slow.post("/v1/leads", json={"fields": {"name": "乙"}}, headers=auth).json()["lead"]
    assert sorted(lead) == sorted(other)
    steps: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PATCH", "", {"fields": {"name": "丙"}}),
        ("POST", "/status", {"leads_status": "s_open"}),
        ("POST", "/notes", {"notes": "called", "is_follow_up": 1}),
        ("POST", "/void", None),
        ("POST", "/restore", {}),
    ]
    for method, suffix, body in steps:
        url = f"/v1/leads/{lead['id']}{suffix}"
        got = fast.request(method, url, json=body, headers=auth)
        assert got.status_code == 200, (url, got.text)
    assert taken == ["fast"] * 6
    batch = fast.post("/v1/leads/batch", json={"leads": [{"fields": {}}] * 3}, headers=auth)
    assert batch.status_code == 201 and len(batch.json()["data"]) == 3
    assert taken[-1] == "fast"
    timeline = fast.get(f"/v1/leads/{lead['id']}/timeline", headers=auth).json()["data"]
    assert [e["entity_version"] for e in timeline] == [6, 5, 4, 3, 2, 1]
    metrics = fast.get("/metrics").text
    assert 'route="/v1/leads/{lead_id}/status",status="200"' in metrics
    assert 'route="/v1/leads",status="201"' in metrics


def _refusals(lead_id: str, key: str) -> list[tuple[str, str, dict[str, str], bytes]]:
    auth = {"Authorization": f"Bearer {key}"}
    json_auth = {**auth, "Content-Type": "application/json"}
    lead = f"/v1/leads/{lead_id}"
    nested = b'{"fields": {"a": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    return [
        ("POST", "/v1/leads", json_auth, b'{"fields":'),  # not JSON
        ("POST", "/v1/leads", json_auth, b'{"fields": 3}'),  # the model refuses
        ("POST", "/v1/leads", json_auth, b'{"nope": 1}'),
        ("POST", "/v1/leads", json_auth, b"[]"),
        ("POST", "/v1/leads", json_auth, b""),  # a body is required
        ("POST", "/v1/leads", json_auth, b"null"),
        ("POST", "/v1/leads", json_auth, nested),
        ("POST", "/v1/leads", {"Content-Type": "application/json"}, b"{}"),  # no key
        ("POST", "/v1/leads", {**json_auth, "Authorization": "Bearer lh_nope"}, b"{}"),
        ("POST", "/v1/leads", {**auth, "Content-Type": "text/plain"}, b"{}"),
        ("POST", "/v1/leads", json_auth, b'{"fields": {"name": "a\\u0000b"}}'),
        ("POST", "/v1/leads?x=%00", json_auth, b"{}"),
        ("POST", "/v1/leads", {**json_auth, "Idempotency-Key": "k" * 256}, b"{}"),
        ("POST", "/v1/leads", {**json_auth, "If-Match": "abc"}, b"{}"),
        ("POST", f"{lead}/status", {**json_auth, "If-Match": "7"}, b'{"leads_status": null}'),
        ("POST", "/v1/leads/nope/status", json_auth, b'{"leads_status": null}'),  # 404
        ("POST", f"{lead}/status", json_auth, b'{"leads_status": "no-such"}'),  # domain 422
        ("POST", f"{lead}/owner", json_auth, b'{"owner": "m1", "operator": {"x": 1}}'),
        ("PATCH", lead, json_auth, b"{}"),  # fields required
        ("POST", f"{lead}/unknown-behaviour", json_auth, b"{}"),  # no such route
        ("POST", f"{lead}/void", json_auth, b'{"reason": 5}'),
        ("POST", f"{lead}/notes", json_auth, b'{"notes": "\xed\xa0\x80"}'),  # not UTF-8
        ("POST", "/v1/leads", json_auth, '{"fields": {"name": "é"}}'.encode("latin-1")),
        ("POST", "/v1/leads", json_auth, '{"fields": {}}'.encode("utf-16")),
        ("POST", "/v1/leads", json_auth, b'{"fields": {"budget": ' + b"9" * 5000 + b"}}"),
        ("PUT", lead, json_auth, b"{}"),  # 405: Allow names GET and PATCH
        ("POST", "/v1/leads/", json_auth, b"{}"),  # a trailing slash: no such route
    ]


def test_each_refusal_is_the_one_the_route_gives(
    apps: tuple[TestClient, TestClient, str, Container],
) -> None:
    fast, slow, key, _ = apps
    auth = {"Authorization": f"Bearer {key}"}
    lead_id = fast.post("/v1/leads", json={}, headers=auth).json()["lead"]["id"]
    for method, url, headers, body in _refusals(lead_id, key):
        a = fast.request(method, url, headers=headers, content=body)
        b = slow.request(method, url, headers=headers, content=body)
        assert a.status_code >= 400, (url, body[:40], a.status_code)
        assert (a.status_code, a.headers.get("content-type"), a.content) == (
            b.status_code,
            b.headers.get("content-type"),
            b.content,
        ), (method, url, body[:60])
        assert a.headers.get("allow") == b.headers.get("allow")
    # Nothing of it was written: the lead is still at version 1, alone.
    page = fast.get("/v1/leads", headers=auth).json()["data"]
    assert [(x["id"], x["version"]) for x in page] == [(lead_id, 1)]


def test_an_idempotent_retry_answers_the_first_response_on_both_ways(
    apps: tuple[TestClient, TestClient, str, Container],
) -> None:
    fast, slow, key, _ = apps
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "once"}
    first = fast.post("/v1/leads", json={"fields": {"name": "甲"}}, headers=headers)
    again = slow.post("/v1/leads", json={"fields": {"name": "甲"}}, headers=headers)
    third = fast.post("/v1/leads", json={"fields": {"name": "甲"}}, headers=headers)
    assert first.status_code == again.status_code == third.status_code == 201
    assert first.content == again.content == third.content
    other = fast.post("/v1/leads", json={"fields": {"name": "乙"}}, headers=headers)
    assert other.status_code == 409
    assert json.loads(other.content)["status"] == 409


@pytest.fixture
def outer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the outermost short way did with each request it was asked about."""
    ways: list[str] = []
    takes, call = ShortWay.takes, ShortWay.__call__

    def spy_takes(self: ShortWay, scope: Any) -> bool:
        taken = takes(self, scope)
        if not taken:
            ways.append("middlewares")
        return taken

    async def spy_call(self: ShortWay, scope: Any, receive: Any, send: Any) -> None:
        await call(self, scope, receive, send)
        ways.append("declined" if DECLINED in scope else "outer")

    monkeypatch.setattr(ShortWay, "takes", spy_takes)
    monkeypatch.setattr(ShortWay, "__call__", spy_call)
    return ways


def _app(tmp_path: Path, seed: bool = True, **settings: Any) -> tuple[TestClient, str, Container]:
    container = build(
        Settings(database_url=f"sqlite:///{tmp_path}/outer.db", admin_token=ADMIN_TOKEN, **settings)
    )
    client = TestClient(create_app(container))
    key = client.post("/v1/tenants", json={"mid": "t1"}, headers=ADMIN).json()["api_key"]
    if seed:
        seed_catalog(client, key)
    return client, key, container


def _count(client: TestClient, route: str, status: int) -> float:
    value = client.app.state.api_metrics.requests.labels("POST", route, str(status))  # type: ignore[attr-defined]
    return float(value._value.get())


def test_a_plain_behaviour_skips_every_middleware_yet_is_counted_once(
    apps: tuple[TestClient, TestClient, str, Container], outer: list[str]
) -> None:
    fast, slow, key, _ = apps
    auth = {"Authorization": f"Bearer {key}"}
    a = fast.post("/v1/leads", json={"fields": {"name": "甲"}}, headers=auth)
    assert outer == ["outer"]
    b = slow.post("/v1/leads", json={"fields": {"name": "甲"}}, headers=auth)
    # The same answer the whole app gives, headers included.
    assert (a.status_code, a.headers["content-type"]) == (b.status_code, b.headers["content-type"])
    assert sorted(a.headers) == sorted(b.headers)
    assert int(a.headers["content-length"]) == len(a.content)
    refused = fast.post("/v1/leads", json={"fields": 3}, headers=auth)
    assert refused.status_code == 422 and outer[-1] == "declined"
    # Each counted once: the short way counts what it answered, the app what it was handed.
    assert _count(fast, "/v1/leads", 201) == 1
    assert _count(fast, "/v1/leads", 422) == 1


def test_requests_over_a_limit_are_left_to_the_middlewares(
    tmp_path: Path, outer: list[str]
) -> None:
    client, key, container = _app(
        tmp_path, max_body_bytes=2000, max_header_bytes=3000, max_url_bytes=200
    )
    try:
        auth = {"Authorization": f"Bearer {key}"}
        outer.clear()
        big = {"fields": {"name": "x" * 3000}}
        assert client.post("/v1/leads", json=big, headers=auth).status_code == 413
        long_head = {**auth, "X-Padding": "p" * 3000}
        resp = client.post("/v1/leads", json={}, headers=long_head)
        assert resp.status_code == 431
        assert client.post("/v1/leads?" + "q" * 300, json={}, headers=auth).status_code == 414
        # A body of no declared length: BodyLimit counts it, then the route answers.
        chunks = iter([b'{"fields": ', b'{"name": "chunked"}}'])
        json_auth = {**auth, "Content-Type": "application/json"}
        resp = client.post("/v1/leads", content=chunks, headers=json_auth)
        assert resp.status_code == 201, resp.text
        assert outer == ["middlewares"] * 4
        assert client.post("/v1/leads", json={}, headers=auth).status_code == 201
        assert outer[-1] == "outer"
    finally:
        container.close()


def test_the_rate_limit_holds_on_the_short_way_and_charges_a_request_once(
    tmp_path: Path, outer: list[str]
) -> None:
    client, key, container = _app(tmp_path, seed=False, rate_limit=(0.01, 2.0))
    try:
        auth = {"Authorization": f"Bearer {key}"}
        outer.clear()
        # Handed on to the app (the model refuses it): RateLimit must not charge it again.
        assert client.post("/v1/leads", json={"fields": 3}, headers=auth).status_code == 422
        assert client.post("/v1/leads", json={}, headers=auth).status_code == 201
        third = client.post("/v1/leads", json={}, headers=auth)
        assert outer == ["declined", "outer", "outer"]
        assert third.status_code == 429
        assert third.headers["content-type"] == "application/problem+json"
        assert third.json()["type"].endswith("/rate-limited")
        assert int(third.headers["retry-after"]) >= 1
        # Another tenant's key has its own bucket.
        other = client.post("/v1/tenants", json={"mid": "t2"}, headers=ADMIN).json()["api_key"]
        resp = client.post("/v1/leads", json={}, headers={"Authorization": f"Bearer {other}"})
        assert resp.status_code != 429
    finally:
        container.close()


def test_a_behaviour_answered_on_the_short_way_ends_an_outage(
    apps: tuple[TestClient, TestClient, str, Container],
) -> None:
    fast, _, key, _ = apps
    outages = fast.app.state.outages  # type: ignore[attr-defined]
    outages.failed(503, "the database is unreachable", RuntimeError("down"))
    assert outages.since is not None
    resp = fast.post("/v1/leads", json={}, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 201
    assert outages.since is None
