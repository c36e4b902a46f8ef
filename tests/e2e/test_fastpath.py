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
from leadhook.api.fastpath import FastBehaviours
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
