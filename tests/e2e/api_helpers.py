"""What the API tests share: an app over a real database, a tenant with a catalog, checks."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from leadhook.adapters.db import tables as t
from leadhook.api.app import create_app
from leadhook.bootstrap import Container, build
from leadhook.domain.events import parse_event_json
from leadhook.settings import Settings

ADMIN_TOKEN = "admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROBLEM = "application/problem+json"

# The catalog every test tenant gets on top of the defaults.
MEMBERS = {"m1": "王五", "m2": "李四", "m3": "张三"}
STATUSES = {"s_new": "新线索", "s_open": "跟进中"}
CATALOG_PUTS: list[tuple[str, str, dict[str, Any]]] = [
    *[("members", k, {"name": v, "omni_user_uuid": f"omni-{k}"}) for k, v in MEMBERS.items()],
    *[("lead_statuses", k, {"name": v}) for k, v in STATUSES.items()],
    ("business_types", "bt_authing", {"name": "Authing"}),
    ("objects", "account", {"name": "客户", "object_id": "12"}),
    ("fields", "grade", {"name": "等级", "type": "option", "options": {"a": "A级", "b": "B级"}}),
    ("fields", "budget", {"name": "预算", "type": "number"}),
    ("fields", "landing_page", {"name": "落地页", "type": "text", "group": "source"}),
]


@dataclass
class Api:
    """A TestClient over a fresh database, with one tenant (`mid`) and its key."""

    client: TestClient
    container: Container
    mid: str
    key: str

    def auth(self, key: str | None = None) -> dict[str, str]:
        """Return the Authorization header of `key` (the tenant's own key by default)."""
        return {"Authorization": f"Bearer {key or self.key}"}

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request as the tenant (or as `key`)."""
        return self.client.request(
            method, path, headers={**self.auth(key), **(headers or {})}, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def new_tenant(self, mid: str, *, seed: bool = True) -> str:
        """Create another tenant (with the test catalog) and return its key."""
        resp = self.client.post("/v1/tenants", json={"mid": mid}, headers=ADMIN)
        assert resp.status_code == 201, resp.text
        key: str = resp.json()["api_key"]
        if seed:
            seed_catalog(self.client, key)
        return key

    def create_lead(self, key: str | None = None, **body: Any) -> dict[str, Any]:
        """Create a lead and return it."""
        resp = self.post("/v1/leads", json=body, key=key)
        assert resp.status_code == 201, resp.text
        lead: dict[str, Any] = resp.json()["lead"]
        return lead

    def events(self, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
        """Return every event of the tenant (all pages), oldest first."""
        out: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            query = {**params, "limit": 1000, **({"after": after} if after else {})}
            resp = self.get("/v1/events", params=query, key=key)
            assert resp.status_code == 200, resp.text
            page = resp.json()
            out.extend(page["data"])
            after = page["next_cursor"]
            if after is None:
                return out

    def count(self, table: t.Table) -> int:
        """Count the rows of a table (of every tenant)."""
        with self.container.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def counts(self) -> dict[str, int]:
        """Count the rows of every table that a behaviour writes."""
        return {
            name: self.count(table)
            for name, table in (
                ("leads", t.leads),
                ("events", t.events),
                ("deliveries", t.deliveries),
                ("idempotency_keys", t.idempotency_keys),
            )
        }

    def stored_payloads(self, entity_id: str | None = None) -> list[str]:
        """Return the `events.payload` column text, oldest first."""
        c = t.events.c
        stmt = select(c.payload).where(c.mid == self.mid).order_by(c.seq)
        if entity_id is not None:
            stmt = stmt.where(c.entity_id == entity_id)
        with self.container.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())


def seed_catalog(client: TestClient, key: str) -> None:
    """Put the test catalog (members, statuses, a business type, fields) into a tenant."""
    for kind, entry, body in CATALOG_PUTS:
        resp = client.put(
            f"/v1/catalog/{kind}/{entry}", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert resp.status_code == 200, resp.text


@contextmanager
def open_api(database_url: str, *, mid: str = "t1", **settings: Any) -> Iterator[Api]:
    """Build the app over an empty `database_url` with one seeded tenant; close it afterwards."""
    container = build(Settings(database_url=database_url, admin_token=ADMIN_TOKEN, **settings))
    try:
        with TestClient(create_app(container)) as client:
            resp = client.post("/v1/tenants", json={"mid": mid}, headers=ADMIN)
            assert resp.status_code == 201, resp.text
            key = resp.json()["api_key"]
            seed_catalog(client, key)
            yield Api(client, container, mid, key)
    finally:
        container.close()


def _seed_template(database_url: str) -> str:
    """Migrate a database, add tenant `t1` with the test catalog, and return its key."""
    container = build(Settings(database_url=database_url))
    try:
        key: str = container.tenants.create("t1").api_key
        for kind, entry, body in CATALOG_PUTS:
            container.tenants.put_catalog_entry("t1", kind, entry, body)
    finally:
        container.close()
    return key


@contextmanager
def seeded_api(backend: str, databases: Any, **settings: Any) -> Iterator[Api]:
    """Like `open_api`, on a database restored from a per-run prepared one (much faster)."""
    url, key = databases.restore(backend, "api-seeded", _seed_template)
    container = build(
        Settings(database_url=url, admin_token=ADMIN_TOKEN, **settings), run_migrations=False
    )
    try:
        with TestClient(create_app(container)) as client:
            yield Api(client, container, "t1", key)
    finally:
        container.close()


def assert_problem(
    resp: httpx.Response, status: int, loc: list[str | int] | None = None
) -> dict[str, Any]:
    """Check an RFC 9457 answer: status, content type, members; `loc` among `errors`."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM), resp.headers
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    assert body["type"].startswith("https://")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if loc is not None:
        locs = [e["loc"] for e in body.get("errors", [])]
        assert loc in locs, f"{loc} not among {locs}: {body}"
    return body


def assert_behaviour(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    """Check a behaviour answer: `{"lead", "events"}`, each event valid and at the next version."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body: dict[str, Any] = resp.json()
    assert list(body) == ["lead", "events"]
    lead = body["lead"]
    for i, raw in enumerate(body["events"]):
        event = parse_event_json(json.dumps(raw))
        assert event.extra_data.entity_id == lead["id"]
        assert event.entity_version == lead["version"] - len(body["events"]) + 1 + i
    return body


def event_payloads(resp: httpx.Response) -> list[str]:
    """Return the raw JSON text of each event in a behaviour answer (as the server sent it)."""
    text = resp.text
    start = text.index(',"events":[') + len(',"events":[')
    return split_json_array(text[start : len(text) - 2])


def split_json_array(inner: str) -> list[str]:
    """Split the inside of a JSON array of objects into each object's exact text."""
    if not inner:
        return []
    decoder = json.JSONDecoder()
    out: list[str] = []
    pos = 0
    while pos < len(inner):
        _, end = decoder.raw_decode(inner, pos)
        out.append(inner[pos:end])
        pos = end + 1  # skip the comma
    return out
