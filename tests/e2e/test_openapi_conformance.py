"""The OpenAPI document against real answers: every operation is called the way a client does
(on a real SQLite file, through the whole app), and every answer, success or problem, must be
one the document declares: its status code listed for the operation, its media type listed for
that status, its body valid against the schema listed there (JSON Schema 2020-12, the dialect
of OpenAPI 3.1). Every operation must be seen succeeding at least once, so a route whose body
drifts from its declared model fails here even where FastAPI does not re-validate it (routes
that answer pre-serialised JSON).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ADMIN_TOKEN, seed_catalog
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from leadhook.adapters.db.queue import SqlDeliveryQueue
from leadhook.api.app import create_app
from leadhook.bootstrap import Container, build
from leadhook.services.ports import Attempt, DeliveryStatus, Verdict
from leadhook.settings import Settings

# Routes with no JSON body to check: the schema is declared as a string, or nothing.
NOT_JSON = {"text/plain"}


@dataclass
class Seen:
    """The answers seen, by operation: (METHOD, path template)."""

    doc: dict[str, Any]
    answers: dict[tuple[str, str], list[httpx.Response]] = field(default_factory=dict)

    def template(self, method: str, path: str) -> str:
        """The document's path template that `path` matches for `method`."""
        for template, ops in self.doc["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            if method.lower() in ops and re.match(pattern, path):
                return template
        raise AssertionError(f"{method} {path} is not in the OpenAPI document")


@dataclass
class Walk:
    """A client that records every answer under its operation."""

    client: TestClient
    container: Container
    seen: Seen
    key: str = ""

    def call(self, method: str, path: str, *, admin: bool = False, **kwargs: Any) -> httpx.Response:
        token = ADMIN_TOKEN if admin else self.key
        headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
        resp = self.client.request(method, path, headers=headers, **kwargs)
        op = (method.upper(), self.seen.template(method, path.split("?")[0]))
        self.seen.answers.setdefault(op, []).append(resp)
        return resp

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
        assert resp.is_success, f"{method} {path} -> {resp.status_code}: {resp.text[:500]}"
        return resp.json() if resp.content else None


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/oa.db",
        admin_token=ADMIN_TOKEN,
        allow_private_targets=True,
    )
    container = build(settings)
    app = create_app(container)
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
        yield Walk(client, container, Seen(doc))
    container.close()


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}


def every_operation(w: Walk) -> None:
    """Call each operation of the document at least once with a request it accepts (and a few
    it refuses, whose problem answers are checked too)."""
    made = w.ok("POST", "/v1/tenants", json={"mid": "acme"}, admin=True)
    w.key = made["api_key"]
    seed_catalog(w.client, w.key)
    w.ok("GET", "/v1/tenants/acme", admin=True)
    w.ok("GET", "/v1/tenants", admin=True)
    w.call("GET", "/v1/tenants?cursor=nope", admin=True)  # 400
    issued = w.ok("POST", "/v1/tenants/acme/keys", admin=True)
    w.ok("GET", "/v1/tenants/acme/keys", admin=True)
    w.ok("DELETE", f"/v1/tenants/acme/keys/{issued['id']}", admin=True)
    w.call("GET", "/v1/tenants/nobody", admin=True)  # 404

    w.ok("PUT", "/v1/catalog/members/m9", json={"name": "赵六"})
    w.ok("GET", "/v1/catalog/members/m9")
    w.ok("PUT", "/v1/catalog/lead_pools/sales", json={"name": "销售公海", "members": ["m1"]})
    w.ok("GET", "/v1/catalog")
    w.call("GET", "/v1/catalog/members/nobody")  # 404
    w.call("GET", "/v1/catalog/widgets/x")  # 422

    lead = w.ok("POST", "/v1/leads", json={"fields": {"name": "甲", "mobile": "13800138000"}})
    lid = lead["lead"]["id"]
    dup = w.ok("POST", "/v1/leads", json={"fields": {"name": "乙", "mobile": "13800138000"}})
    w.ok("POST", "/v1/leads/batch", json={"leads": [{"fields": {"name": "丙"}}]})
    w.ok("GET", "/v1/leads")
    w.ok("GET", f"/v1/leads/{lid}")
    w.ok("PATCH", f"/v1/leads/{lid}", json={"fields": {"budget": 5}})
    w.ok("GET", f"/v1/leads/{lid}/timeline")
    w.ok("POST", f"/v1/leads/{lid}/status", json={"leads_status": "s_new"})
    w.ok("POST", f"/v1/leads/{lid}/owner", json={"owner": "m1", "scene_type": 1})
    w.ok("POST", f"/v1/leads/{lid}/life-cycle", json={"life_status": "mql"})
    w.ok("POST", f"/v1/leads/{lid}/notes", json={"notes": "n", "is_follow_up": True})
    w.ok("POST", f"/v1/leads/{lid}/team-members", json={"members": ["m2"]})
    w.ok("DELETE", f"/v1/leads/{lid}/team-members/m2")
    w.ok(
        "POST",
        f"/v1/leads/{lid}/relations",
        json={"target_object_name": "account", "target_entity_id": "A1"},
    )
    w.ok("PATCH", f"/v1/leads/{lid}/source", json={"fields": {"landing_page": "/x"}})
    w.ok("POST", f"/v1/leads/{lid}/return", json={"lead_pool": "market"})
    w.ok("POST", f"/v1/leads/{lid}/lead-pool", json={"lead_pool": "sales"})
    w.ok("POST", f"/v1/leads/{lid}/claim", json={"member": "m1"})
    w.ok("GET", f"/v1/leads/{lid}/duplicates")
    w.ok("POST", f"/v1/leads/{lid}/merge", json={"duplicates": [dup["lead"]["id"]]})
    w.ok("POST", f"/v1/leads/{lid}/void", json={"reason": "test"})
    w.call("POST", f"/v1/leads/{lid}/notes", json={"notes": "n"})  # 409 lead-voided
    w.ok("POST", f"/v1/leads/{lid}/restore")
    w.call("GET", "/v1/leads/nobody")  # 404
    w.call("POST", "/v1/leads", json={"fields": {"nope": 1}})  # 422
    w.call("POST", "/v1/leads", content=b"{", headers={"content-type": "application/json"})
    w.call("POST", "/v1/leads", content=b"x", headers={"content-type": "text/plain"})  # 422
    w.call("PATCH", f"/v1/leads/{lid}", json={"fields": {}}, headers={"If-Match": '"1"'})  # 412
    w.call("GET", "/v1/leads", headers={"Authorization": "Bearer lh_wrong"})  # 401

    events = w.ok("GET", "/v1/events")
    w.ok("GET", f"/v1/events/{events['data'][0]['event_id']}")
    w.ok("GET", "/v1/event-types")
    w.ok("GET", "/v1/event-types/object_create")

    hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    sub = w.ok("POST", "/v1/subscriptions", json=hook)
    sid = sub["id"]
    w.ok("GET", "/v1/subscriptions")
    w.ok("GET", f"/v1/subscriptions/{sid}")
    w.ok("PATCH", f"/v1/subscriptions/{sid}", json={"description": "d"})
    w.ok("GET", f"/v1/subscriptions/{sid}/secret")
    w.ok("POST", f"/v1/subscriptions/{sid}/rotate-secret")
    w.ok("GET", f"/v1/subscriptions/{sid}/secret")  # while the previous one still signs
    w.ok("POST", f"/v1/subscriptions/{sid}/test")  # nothing listens: success false
    w.ok("POST", "/v1/leads", json={"fields": {"name": "丁"}})  # a delivery for the new sub
    listed = w.ok("GET", f"/v1/subscriptions/{sid}/deliveries")
    w.ok("GET", "/v1/deliveries", params={"status": "pending"})
    did = listed["data"][0]["id"]
    w.call("POST", f"/v1/deliveries/{did}/retry")  # 409: still pending
    one_dead_attempt(w)
    w.ok("GET", f"/v1/deliveries/{did}")
    w.ok("GET", f"/v1/deliveries/{did}/attempts")
    w.ok("GET", f"/v1/subscriptions/{sid}")  # failing since the attempt
    w.ok("POST", f"/v1/subscriptions/{sid}/replay", json={"since": 0})
    w.ok("POST", f"/v1/subscriptions/{sid}/replay-missing", json={"since": 0})
    w.call("POST", f"/v1/subscriptions/{sid}/replay-missing", json={"since": 5, "until": 1})
    one_dead_attempt(w)
    w.ok("POST", f"/v1/deliveries/{did}/retry")
    w.call("GET", "/v1/deliveries", params={"created_after": "yesterday"})  # 422
    w.ok("DELETE", f"/v1/subscriptions/{sid}")  # its pending delivery ends dead
    w.call("POST", f"/v1/deliveries/{did}/retry")  # 409: subscription deleted

    w.ok("POST", "/v1/automation/run")
    w.ok("GET", "/v1/automation/runs")

    w.ok("GET", "/healthz", admin=True)
    w.ok("GET", "/readyz", admin=True)
    w.call("GET", "/metrics", admin=True)


def one_dead_attempt(w: Walk) -> None:
    """Record one attempt of the pending delivery as its last (`dead`), as a worker would."""
    c = w.container
    queue = SqlDeliveryQueue(c.engine, c.gate)
    now = time.time()
    (job,) = queue.claim(worker_id="w", now=now + 1, limit=1, lease_until=now + 60, exclude=())
    attempt = Attempt(now, 500, 12.5, "HTTP 500", "down")
    verdict = Verdict(job, attempt, DeliveryStatus.DEAD, None, "HTTP 500")
    queue.record(worker_id="w", verdicts=[verdict], now=now)


def _schema_for(doc: dict[str, Any], method: str, template: str, resp: httpx.Response) -> Any:
    """The schema the document declares for this answer; fails when it declares none."""
    label = f"{method} {template} -> {resp.status_code}"
    declared = doc["paths"][template][method.lower()]["responses"]
    assert str(resp.status_code) in declared, f"{label}: status not documented"
    content = declared[str(resp.status_code)].get("content", {})
    if not resp.content:
        return None
    media = resp.headers["content-type"].split(";")[0].strip()
    assert media in content, f"{label}: {media} not documented (only {sorted(content)})"
    return None if media in NOT_JSON else content[media].get("schema", {})


def mismatches(seen: Seen) -> list[str]:
    """Every answer seen that its operation's documented schema refuses."""
    out: list[str] = []
    for (method, template), answers in sorted(seen.answers.items()):
        for resp in answers:
            label = f"{method} {template} -> {resp.status_code}"
            try:
                schema = _schema_for(seen.doc, method, template, resp)
            except AssertionError as exc:
                out.append(str(exc))
                continue
            if schema is None:
                continue
            # Refs are "#/components/...": resolve them against the document itself.
            root = {**schema, "components": seen.doc.get("components", {})}
            for error in Draft202012Validator(root).iter_errors(resp.json()):
                path = "/".join(str(p) for p in error.absolute_path)
                out.append(f"{label}: at /{path}: {error.message[:200]}")
    return out


def test_every_answer_is_one_the_openapi_document_declares(walk: Walk) -> None:
    every_operation(walk)
    assert mismatches(walk.seen) == []
    succeeded = {
        op for op, answers in walk.seen.answers.items() if any(r.is_success for r in answers)
    }
    assert operations(walk.seen.doc) - succeeded == set(), "operations never seen succeeding"
    problems = [
        r for answers in walk.seen.answers.values() for r in answers if r.status_code >= 400
    ]
    assert {r.status_code for r in problems} >= {400, 401, 404, 409, 412, 422}


def test_a_body_that_drifts_from_its_model_is_caught(walk: Walk) -> None:
    """The check itself can fail: a documented field renamed in one answer is reported."""
    made = walk.ok("POST", "/v1/tenants", json={"mid": "acme"}, admin=True)
    walk.key = made["api_key"]
    assert mismatches(walk.seen) == []
    (resp,) = walk.seen.answers[("POST", "/v1/tenants")]
    body = resp.json()
    body["apiKey"] = body.pop("api_key")
    walk.seen.answers[("POST", "/v1/tenants")] = [
        httpx.Response(201, json=body, request=resp.request)
    ]
    assert any("'api_key' is a required property" in m for m in mismatches(walk.seen))
    walk.seen.answers[("POST", "/v1/tenants")] = [httpx.Response(299, json=body)]
    assert any("status not documented" in m for m in mismatches(walk.seen))


def test_problem_answers_are_documented_under_their_media_type(walk: Walk) -> None:
    walk.call("GET", "/v1/leads", headers={"Authorization": "Bearer lh_wrong"})
    ((resp,),) = walk.seen.answers.values()
    assert resp.headers["content-type"].startswith("application/problem+json")
    declared = walk.seen.doc["paths"]["/v1/leads"]["get"]["responses"]["401"]["content"]
    assert declared["application/problem+json"]["schema"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
    ]


def test_an_operation_lists_no_problem_it_cannot_give(walk: Walk) -> None:
    paths = walk.seen.doc["paths"]

    def codes(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    # 412 only where If-Match is read: the behaviours and the lead's read.
    assert "412" in codes("/v1/leads/{lead_id}/status", "post")
    assert "412" in codes("/v1/leads/{lead_id}", "get")
    for path, method in (("/v1/catalog", "get"), ("/v1/events", "get"), ("/v1/tenants", "post")):
        assert "412" not in codes(path, method), (path, method)
    # 507 (a full disk refusing a write) only where something is written.
    assert "507" in codes("/v1/leads", "post") and "507" in codes("/v1/subscriptions", "post")
    for path in ("/v1/catalog", "/v1/events", "/v1/leads", "/v1/subscriptions"):
        assert "507" not in codes(path, "get"), path
