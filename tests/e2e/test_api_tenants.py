"""Tenants, keys and authentication: admin token for tenants, keys hashed, 401s, isolation."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from api_helpers import ADMIN, Api, assert_problem, seeded_api
from fastapi.testclient import TestClient
from sqlalchemy import select

from leadhook.adapters.db import tables as t
from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.settings import Settings


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


def _key_rows(api: Api) -> list[dict[str, object]]:
    with api.container.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(t.api_keys)).mappings()]


def test_create_tenant_shows_the_key_once_and_stores_only_its_hash(api: Api) -> None:
    resp = api.client.post(
        "/v1/tenants",
        json={"mid": "941", "name": "Acme", "timezone": "Europe/Paris", "object_id": "77"},
        headers=ADMIN,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    key = body["api_key"]
    assert key.startswith("lh_") and len(key) > 30
    assert body["mid"] == "941"
    assert body["name"] == "Acme"
    assert body["timezone"] == "Europe/Paris"
    assert body["object_id"] == "77"
    assert body["default_business_type"]
    rows = [r for r in _key_rows(api) if r["mid"] == "941"]
    assert len(rows) == 1
    assert rows[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert rows[0]["id"] == body["key_id"]
    # The key itself is nowhere: not in any column of api_keys, not in the tenant row.
    for row in _key_rows(api):
        assert all(key not in str(value) for value in row.values())
    with api.container.engine.connect() as conn:
        assert all(key not in str(v) for r in conn.execute(select(t.tenants)) for v in r)
    # It works, and listing the tenant's keys or the tenant never shows it again.
    assert api.get("/v1/catalog", key=key).status_code == 200
    listed = api.client.get("/v1/tenants/941/keys", headers=ADMIN)
    assert listed.status_code == 200
    assert key not in listed.text and "api_key" not in listed.text
    assert listed.json()["data"][0]["prefix"] == key[:10]
    got = api.client.get("/v1/tenants/941", headers=ADMIN)
    assert got.status_code == 200 and key not in got.text
    assert got.json()["timezone"] == "Europe/Paris"
    # The tenant's settings reach its events: object_id, and its time zone in created_timestamp.
    created = api.post("/v1/leads", json={}, key=key).json()["events"][0]
    assert created["mid"] == "941" and created["extra_data"]["object_id"] == "77"
    local = datetime.fromtimestamp(created["create_time"], ZoneInfo("Europe/Paris"))
    assert created["extra_data"]["created_timestamp"] == local.strftime("%Y-%m-%d %H:%M:%S")


def test_new_tenant_has_the_default_catalog(api: Api) -> None:
    key = api.new_tenant("fresh", seed=False)
    catalog = api.get("/v1/catalog", key=key).json()
    assert [s["code"] for s in catalog["life_stages"]] == ["baby_lead", "mql", "sql", "customer"]
    assert [p["code"] for p in catalog["lead_pools"]] == ["market", "sales"]
    assert [b["id"] for b in catalog["business_types"]] == [catalog["default_business_type"]]
    assert catalog["timezone"] == "Asia/Shanghai" and catalog["object_id"] == "56"
    lead = api.create_lead(key=key)
    assert lead["business_type"] == catalog["default_business_type"]
    assert (lead["lead_pool"], lead["life_status"]) == ("market", "baby_lead")


BAD_TENANTS: list[tuple[dict[str, object], list[str | int] | None]] = [
    ({}, ["body", "mid"]),
    ({"mid": ""}, ["body", "mid"]),
    ({"mid": "has space"}, ["body", "mid"]),
    ({"mid": "x" * 65}, ["body", "mid"]),
    ({"mid": 941}, ["body", "mid"]),
    ({"mid": "ok", "timezone": "Mars/Olympus"}, ["body", "timezone"]),
    # Empty is not "the default"; the database's files that are not zones are not names.
    ({"mid": "ok", "timezone": ""}, ["body", "timezone"]),
    ({"mid": "ok", "timezone": "localtime"}, ["body", "timezone"]),
    ({"mid": "ok", "timezone": "Factory"}, ["body", "timezone"]),
    ({"mid": "ok", "name": "n" * 201}, ["body", "name"]),
    ({"mid": "ok", "object_id": "a b"}, ["body", "object_id"]),
    # One rule for an object id, whatever is wrong with it (two messages before: a review).
    ({"mid": "ok", "object_id": ""}, ["body", "object_id"]),
    ({"mid": "ok", "object_id": 56}, ["body", "object_id"]),
    ({"mid": "ok", "object_id": "x" * 201}, ["body", "object_id"]),
    ({"mid": "ok", "name": ""}, ["body", "name"]),
    # As every catalog name: shown in the console, the CLI's tables, events' texts.
    ({"mid": "ok", "name": "a\nb"}, ["body", "name"]),
    ({"mid": "ok", "name": "bell\u0007"}, ["body", "name"]),
    ({"mid": "ok", "surprise": 1}, ["body", "surprise"]),
]


def test_create_tenant_refuses_bad_input(api: Api) -> None:
    for body, loc in BAD_TENANTS:
        problem = assert_problem(api.client.post("/v1/tenants", json=body, headers=ADMIN), 422, loc)
        assert problem["errors"], body
        if body.get("name"):
            want = "control characters" if len(body["name"]) < 200 else "at most 200 characters"
            assert want in problem["errors"][0]["msg"], body
        if isinstance(body.get("object_id"), str):  # a number is the body model's 422
            assert "1-64 characters of ASCII" in problem["errors"][0]["msg"], body
    bad_json = {**ADMIN, "content-type": "application/json"}
    assert_problem(api.client.post("/v1/tenants", content=b"{", headers=bad_json), 400)
    assert api.client.get("/v1/tenants/ok", headers=ADMIN).status_code == 404
    assert len(_key_rows(api)) == 1


def test_create_tenant_twice_is_a_conflict(api: Api) -> None:
    assert_problem(api.client.post("/v1/tenants", json={"mid": api.mid}, headers=ADMIN), 409)
    assert len(_key_rows(api)) == 1


ADMIN_ROUTES = [
    ("POST", "/v1/tenants"),
    ("GET", "/v1/tenants/t1"),
    ("GET", "/v1/tenants/t1/keys"),
    ("POST", "/v1/tenants/t1/keys"),
    ("DELETE", "/v1/tenants/t1/keys/whatever"),
]


def test_admin_routes_need_the_admin_token(api: Api) -> None:
    wrong = [{}, {"Authorization": "Bearer wrong"}, api.auth(), {"Authorization": "Basic x"}]
    for method, path in ADMIN_ROUTES:
        body = {"mid": "intruder"} if method == "POST" else None
        for headers in wrong:
            resp = api.client.request(method, path, json=body, headers=headers)
            assert_problem(resp, 401)
            assert resp.headers["www-authenticate"] == "Bearer"
    assert len(_key_rows(api)) == 1


def test_admin_api_is_off_without_an_admin_token(sqlite_url: str) -> None:
    container = build(Settings(database_url=sqlite_url))
    try:
        with TestClient(create_app(container)) as client:
            for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
                resp = client.post("/v1/tenants", json={"mid": "x"}, headers=headers)
                assert_problem(resp, 401)
    finally:
        container.close()


NOT_A_TENANT_KEY: list[dict[str, str]] = [
    {},
    {"Authorization": ""},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer lh_unknown"},
    {"Authorization": "Token abc"},
    ADMIN,
]


def test_tenant_routes_need_a_known_key(api: Api) -> None:
    lead = api.create_lead(fields={"name": "x"})
    for method, path in (
        ("GET", "/v1/catalog"),
        ("PUT", "/v1/catalog/members/m9"),
        ("GET", "/v1/leads"),
        ("GET", f"/v1/leads/{lead['id']}"),
        ("POST", "/v1/leads"),
        ("POST", f"/v1/leads/{lead['id']}/notes"),
        ("GET", "/v1/events"),
    ):
        body = {"notes": "x", "name": "x"} if method in ("POST", "PUT") else None
        for headers in NOT_A_TENANT_KEY:
            resp = api.client.request(method, path, json=body, headers=headers)
            assert_problem(resp, 401)
            assert resp.headers["www-authenticate"] == "Bearer"
    assert api.counts()["leads"] == 1 and api.counts()["events"] == 1


def test_issue_and_revoke_keys(api: Api) -> None:
    issued = api.client.post(f"/v1/tenants/{api.mid}/keys", headers=ADMIN)
    assert issued.status_code == 201
    second = issued.json()["api_key"]
    assert second != api.key and issued.json()["revoked_at"] is None
    assert api.get("/v1/leads", key=second).status_code == 200
    keys = api.client.get(f"/v1/tenants/{api.mid}/keys", headers=ADMIN).json()["data"]
    assert len(keys) == 2 and second not in str(keys)
    first_id = next(k["id"] for k in keys if k["id"] != issued.json()["id"])

    revoked = api.client.delete(f"/v1/tenants/{api.mid}/keys/{first_id}", headers=ADMIN)
    assert revoked.status_code == 204 and revoked.content == b""
    assert_problem(api.get("/v1/leads"), 401)
    assert_problem(api.post("/v1/leads", json={}), 401)
    assert api.get("/v1/leads", key=second).status_code == 200
    keys = api.client.get(f"/v1/tenants/{api.mid}/keys", headers=ADMIN).json()["data"]
    assert {k["id"]: k["revoked_at"] is not None for k in keys} == {
        first_id: True,
        issued.json()["id"]: False,
    }
    # Revoking again is harmless; an unknown key or tenant is a 404.
    again = api.client.delete(f"/v1/tenants/{api.mid}/keys/{first_id}", headers=ADMIN)
    assert again.status_code == 204
    assert_problem(api.client.delete(f"/v1/tenants/{api.mid}/keys/nope", headers=ADMIN), 404)
    assert_problem(api.client.post("/v1/tenants/nobody/keys", headers=ADMIN), 404)
    assert_problem(api.client.get("/v1/tenants/nobody/keys", headers=ADMIN), 404)
    assert_problem(api.client.get("/v1/tenants/nobody", headers=ADMIN), 404)


def test_a_key_is_revoked_only_through_its_own_tenant(api: Api) -> None:
    other = api.new_tenant("other", seed=False)
    other_id = api.client.get("/v1/tenants/other/keys", headers=ADMIN).json()["data"][0]["id"]
    resp = api.client.delete(f"/v1/tenants/{api.mid}/keys/{other_id}", headers=ADMIN)
    assert_problem(resp, 404)
    assert api.get("/v1/leads", key=other).status_code == 200


def test_another_tenants_objects_answer_404_never_403(api: Api) -> None:
    lead = api.create_lead(fields={"name": "secret"})
    event_id = api.events()[0]["event_id"]
    other = api.new_tenant("other")
    lid = lead["id"]
    for method, path, body in (
        ("GET", f"/v1/leads/{lid}", None),
        ("GET", f"/v1/leads/{lid}/timeline", None),
        ("PATCH", f"/v1/leads/{lid}", {"fields": {"name": "stolen"}}),
        ("POST", f"/v1/leads/{lid}/status", {"leads_status": "s_new"}),
        ("POST", f"/v1/leads/{lid}/owner", {"owner": "m1", "scene_type": 2}),
        ("POST", f"/v1/leads/{lid}/life-cycle", {"life_status": "mql"}),
        ("POST", f"/v1/leads/{lid}/lead-pool", {"lead_pool": "sales"}),
        ("POST", f"/v1/leads/{lid}/notes", {"notes": "x"}),
        ("POST", f"/v1/leads/{lid}/team-members", {"members": ["m1"]}),
        ("DELETE", f"/v1/leads/{lid}/team-members/m1", None),
        ("POST", f"/v1/leads/{lid}/void", None),
        ("POST", f"/v1/leads/{lid}/restore", None),
        (
            "POST",
            f"/v1/leads/{lid}/relations",
            {"target_object_name": "a", "target_entity_id": "b"},
        ),
        ("PATCH", f"/v1/leads/{lid}/source", {"fields": {"utm_source": "x"}}),
        ("GET", f"/v1/events/{event_id}", None),
    ):
        assert_problem(api.request(method, path, json=body, key=other), 404)
    assert api.get("/v1/leads", key=other).json()["data"] == []
    assert api.events(key=other) == []
    assert_problem(api.get("/v1/events", params={"after": event_id}, key=other), 400)
    assert api.get("/v1/events", params={"entity_id": lid}, key=other).json()["data"] == []
    assert api.get(f"/v1/leads/{lid}").json()["version"] == 1
    assert api.counts()["events"] == 1


def test_the_admin_lists_every_tenant_oldest_first_a_page_at_a_time(api: Api) -> None:
    for mid in ("list-a", "list-b", "list-c"):
        made = api.client.post("/v1/tenants", json={"mid": mid}, headers=ADMIN)
        assert made.status_code == 201, made.text
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/tenants", params=params, headers=ADMIN)
        assert page.status_code == 200, page.text
        body = page.json()
        assert set(body) == {"data", "next_cursor"} and len(body["data"]) <= 2
        seen += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    mids = [x["mid"] for x in seen]
    assert len(mids) == len(set(mids))  # no tenant twice across pages
    assert mids[-3:] == ["list-a", "list-b", "list-c"]
    one = api.client.get("/v1/tenants/list-b", headers=ADMIN).json()
    assert next(x for x in seen if x["mid"] == "list-b") == one  # the same object as GET
    assert all("api_key" not in x for x in seen)
    # The admin token only; bad paging is refused and says which parameter.
    assert_problem(api.client.get("/v1/tenants"), 401)
    assert_problem(api.client.get("/v1/tenants", headers=api.auth()), 401)
    assert_problem(api.client.get("/v1/tenants?cursor=nope", headers=ADMIN), 400)
    for limit in ("0", "201", "x"):
        bad = api.client.get(f"/v1/tenants?limit={limit}", headers=ADMIN)
        assert "limit" in str(assert_problem(bad, 422)["errors"])
