"""The API surface around the contract: event types, deliveries across subscriptions, media
types, the one representation of time, and the metrics of the documentation routes."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ADMIN, Api, assert_problem, seeded_api
from delivery_support import Stack, wait_for
from jsonschema import Draft202012Validator

from leadhook.domain.events import EVENT_TYPES
from leadhook.domain.times import parse_rfc3339

REPO = Path(__file__).parents[2]
EXAMPLES = REPO / "docs" / "examples"
RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
# The one example file per type that the API serves (the owner change: the claim).
EXAMPLE_FILES = {
    **{t: f"{t}.json" for t in EVENT_TYPES},
    "object_create": "object_create.with-additions.json",
    "object_change_owner": "object_change_owner.claim.json",
}


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


# ---- event types ---------------------------------------------------------------------------


def test_event_types_describe_the_13_types_from_the_committed_files(api: Api) -> None:
    resp = api.get("/v1/event-types")
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert [d["name"] for d in data] == list(EVENT_TYPES)
    for item in data:
        name = item["name"]
        assert set(item) == {"name", "description", "schema", "example"}
        committed = json.loads((REPO / "schemas" / f"{name}.json").read_text(encoding="utf-8"))
        assert item["schema"] == committed
        example = json.loads((EXAMPLES / EXAMPLE_FILES[name]).read_text(encoding="utf-8"))
        assert item["example"] == example
        assert list(item["example"]) == list(example)  # key order too
        assert not list(Draft202012Validator(item["schema"]).iter_errors(item["example"]))
        assert item["description"].endswith(".") and "Emitted by" in item["description"]
        one = api.get(f"/v1/event-types/{name}")
        assert one.status_code == 200 and one.json() == item


def test_event_types_need_a_key_and_an_unknown_one_is_404(api: Api) -> None:
    assert_problem(api.client.get("/v1/event-types"), 401)
    assert_problem(api.client.get("/v1/event-types/object_create"), 401)
    missing = assert_problem(api.get("/v1/event-types/object_delete"), 404)
    assert "object_create" in missing["detail"]


def test_openapi_webhooks_show_what_event_types_serve(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()
    served = {d["name"]: d for d in api.get("/v1/event-types").json()["data"]}
    for name, hook in doc["webhooks"].items():
        operation = hook["post"]
        assert operation["description"].startswith(served[name]["description"])
        body = operation["requestBody"]["content"]["application/json"]
        assert body["examples"]["example"]["value"] == served[name]["example"]
    assert {"/v1/event-types", "/v1/event-types/{name}", "/v1/deliveries"} <= set(doc["paths"])
    assert "/v1/deliveries/{delivery_id}/attempts" in doc["paths"]


def test_openapi_describes_the_filters_and_what_a_patch_takes(api: Api) -> None:
    doc = api.client.get("/openapi.json").json()

    def param(path: str, name: str) -> dict[str, Any]:
        params = doc["paths"][path]["get"]["parameters"]
        found: dict[str, Any] = next(p for p in params if p["name"] == name)
        return found

    for path in ("/v1/deliveries", "/v1/subscriptions/{sub_id}/deliveries"):
        status = param(path, "status")
        assert status["description"] == "the delivery's status", path
        (enum,) = [s for s in status["schema"]["anyOf"] if "enum" in s]
        assert enum == {"type": "string", "enum": ["pending", "delivered", "failed", "dead"]}
    (types,) = [s for s in param("/v1/events", "event_type")["schema"]["anyOf"] if "enum" in s]
    assert len(types["enum"]) == 13
    ref = doc["paths"]["/v1/subscriptions/{sub_id}"]["patch"]["requestBody"]["content"]
    name = ref["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    props = doc["components"]["schemas"][name]["properties"]
    assert props["url"]["type"] == "string" and "anyOf" not in props["url"]  # never null
    assert {"type": "null"} in props["rate_limit_per_s"]["anyOf"]  # null lifts the limit


# ---- deliveries across subscriptions --------------------------------------------------------


def _subscribe(api: Api, key: str | None = None, **body: Any) -> str:
    body = {"url": "https://hooks.example.com/h", "event_types": ["*"], **body}
    resp = api.post("/v1/subscriptions", json=body, key=key)
    assert resp.status_code == 201, resp.text
    sub_id: str = resp.json()["id"]
    return sub_id


def _listing(api: Api, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    """Follow `next_cursor` of GET /v1/deliveries to the end, two at a time."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        resp = api.get("/v1/deliveries", params=query, key=key)
        assert resp.status_code == 200, resp.text
        out.extend(resp.json()["data"])
        cursor = resp.json()["next_cursor"]
        if cursor is None:
            return out


def test_deliveries_are_listed_across_subscriptions_and_filtered(api: Api) -> None:
    all_types = _subscribe(api)
    creates = _subscribe(api, event_types=["object_create"])
    first = api.create_lead(fields={"name": "甲"})["id"]
    api.post(f"/v1/leads/{first}/notes", json={"notes": "n"})
    second = api.create_lead(fields={"name": "乙"})["id"]
    other_key = api.new_tenant("t9", seed=False)
    _subscribe(api, key=other_key)
    api.create_lead(key=other_key)

    everything = _listing(api)
    # Newest first: lead 2's create (to both), the note (one), lead 1's create (to both).
    assert [(d["entity_id"], d["event_type"]) for d in everything] == [
        (second, "object_create"),
        (second, "object_create"),
        (first, "object_add_notes"),
        (first, "object_create"),
        (first, "object_create"),
    ]
    assert all(d["attempts"] == [] and d["status"] == "pending" for d in everything)
    assert [d["id"] for d in _listing(api, lead_id=first)] == [d["id"] for d in everything[2:]]
    notes = _listing(api, event_type="object_add_notes")
    assert [(d["subscription_id"], d["entity_id"]) for d in notes] == [(all_types, first)]
    assert {d["subscription_id"] for d in _listing(api, subscription_id=creates)} == {creates}
    assert len(_listing(api, subscription_id=creates)) == 2
    assert _listing(api, status="pending") == everything
    assert _listing(api, status="dead") == []
    # Time: created_after is inclusive, created_before exclusive, any offset.
    newest = everything[0]["created_at"]
    assert [d["id"] for d in _listing(api, created_after=newest)] == [
        d["id"] for d in everything if d["created_at"] >= newest
    ]
    assert _listing(api, created_before="2000-01-01T08:00:00+08:00") == []
    assert _listing(api, created_after="2000-01-01T00:00:00Z") == everything
    # Another tenant sees only its own, and our subscription filter matches nothing of it.
    theirs = _listing(api, key=other_key)
    assert len(theirs) == 1 and theirs[0]["id"] not in {d["id"] for d in everything}
    assert _listing(api, key=other_key, subscription_id=all_types) == []
    # Deleting a subscription keeps its deliveries listed, as dead.
    assert api.delete(f"/v1/subscriptions/{creates}").status_code == 204
    dead = _listing(api, status="dead")
    assert len(dead) == 2 and {d["subscription_id"] for d in dead} == {creates}


def test_bad_delivery_filters_are_422_naming_each(api: Api) -> None:
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"status": "lost"}, ["query", "status"]),
        ({"event_type": "object_delete"}, ["query", "event_type"]),
        ({"created_after": "yesterday"}, ["query", "created_after"]),
        ({"created_before": "2026-12-01T08:00:00"}, ["query", "created_before"]),  # no zone
        ({"created_after": "2026-13-01T00:00:00Z"}, ["query", "created_after"]),
        (
            {"created_after": "2026-12-02T00:00:00Z", "created_before": "2026-12-01T00:00:00Z"},
            ["query", "created_before"],
        ),
        ({"limit": 0}, ["query", "limit"]),
    ]
    for params, loc in cases:
        assert_problem(api.get("/v1/deliveries", params=params), 422, loc)
    assert_problem(api.get("/v1/deliveries", params={"cursor": "!!"}), 400)
    assert_problem(api.client.get("/v1/deliveries"), 401)


def test_attempts_of_a_delivery(stack: Stack) -> None:
    stack.receiver.behaviour = lambda rec, seen: (503 if seen < 1 else 204, {}, 0.0)
    sub = stack.subscribe()
    stack.dispatch()
    lead = stack.lead()
    wait_for(lambda: len(stack.deliveries(sub["id"], "delivered")) == 1, what="delivered")
    (delivery,) = stack.call("GET", "/v1/deliveries", params={"lead_id": lead}).json()["data"]
    resp = stack.call("GET", f"/v1/deliveries/{delivery['id']}/attempts")
    assert resp.status_code == 200
    body = resp.json()
    assert (body["delivery_id"], body["status"]) == (delivery["id"], "delivered")
    assert [a["status_code"] for a in body["data"]] == [503, 204]
    assert body["data"] == delivery["attempts"]
    assert body["data"][0]["attempted_at"] <= body["data"][1]["attempted_at"]
    # Another tenant's delivery is not found, never forbidden.
    admin = {"Authorization": "Bearer e2e-admin"}
    other = stack.client.post("/v1/tenants", json={"mid": "other"}, headers=admin).json()
    theirs = stack.client.get(
        f"/v1/deliveries/{delivery['id']}/attempts",
        headers={"Authorization": f"Bearer {other['api_key']}"},
    )
    assert_problem(theirs, 404)
    assert_problem(stack.call("GET", "/v1/deliveries/nope/attempts"), 404)


# ---- bodies that are not JSON ---------------------------------------------------------------


def test_a_body_that_is_not_json_is_422_and_changes_nothing(api: Api) -> None:
    lid = api.create_lead()["id"]
    counts = api.counts()
    bodies: list[dict[str, Any]] = [
        {"content": b'{"notes": "x"}', "headers": {"content-type": "text/plain"}},
        {"data": {"notes": "x"}},  # application/x-www-form-urlencoded
        {"files": {"notes": ("n.txt", b"x")}},  # multipart/form-data
    ]
    routes = [
        ("POST", "/v1/leads"),
        ("PATCH", f"/v1/leads/{lid}"),
        ("POST", f"/v1/leads/{lid}/notes"),
        ("PUT", "/v1/catalog/members/m9"),
        ("POST", "/v1/subscriptions"),
    ]
    for method, path in routes:
        for kwargs in bodies:
            # 422, not 415: bad input stays within 400/404/409/412/413/422 (docs/api.md).
            problem = assert_problem(api.request(method, path, **kwargs), 422)
            assert problem["type"].endswith("/unsupported-media-type"), problem
            assert "application/json" in problem["detail"]
    text = {"content": b"mid=x", "headers": {**ADMIN, "content-type": "text/plain"}}
    assert_problem(api.client.post("/v1/tenants", **text), 422)
    resp = api.post(f"/v1/leads/{lid}/notes", content=b"x", headers={"content-type": "text/csv"})
    assert resp.headers["accept-post"] == "application/json"
    resp = api.patch(f"/v1/leads/{lid}", content=b"x", headers={"content-type": "text/plain"})
    assert resp.headers["accept-patch"] == "application/json"
    assert api.counts() == counts


def test_a_content_coded_body_is_422_and_changes_nothing(api: Api) -> None:
    # RFC 9110 8.4.1: the API reads a body as sent; a gzip body was read as broken UTF-8
    # (400) and a plain one labelled gzip was taken as if unlabelled.
    lid = api.create_lead()["id"]
    counts = api.counts()
    plain = json.dumps({"notes": "x"}).encode()
    for coding, body in (("gzip", gzip.compress(plain)), ("gzip", plain), ("br, identity", plain)):
        for method, path in (("POST", f"/v1/leads/{lid}/notes"), ("POST", "/v1/leads")):
            headers = {"content-type": "application/json", "content-encoding": coding}
            problem = assert_problem(api.request(method, path, content=body, headers=headers), 422)
            assert "content-coded" in problem["detail"], problem
            assert coding.split(",")[0] in problem["detail"]
    assert api.counts() == counts
    # The credential is checked first, as for every body the API cannot read.
    anonymous = {"content-type": "application/json", "content-encoding": "gzip"}
    refused = api.client.post("/v1/leads", content=gzip.compress(plain), headers=anonymous)
    assert_problem(refused, 401)
    # identity is no coding at all.
    same = {"content-type": "application/json", "content-encoding": "identity"}
    ok = api.post(f"/v1/leads/{lid}/notes", content=plain, headers=same)
    assert ok.status_code == 200, ok.text


def test_json_bodies_with_or_without_a_content_type_are_read(api: Api) -> None:
    lid = api.create_lead()["id"]
    raw = b'{"notes": "no content type"}'
    bare = api.post(f"/v1/leads/{lid}/notes", content=raw)
    assert "content-type" not in bare.request.headers
    assert bare.status_code == 200, bare.text
    for media in ("application/json; charset=utf-8", "application/merge-patch+json"):
        resp = api.post(f"/v1/leads/{lid}/notes", content=raw, headers={"content-type": media})
        assert resp.status_code == 200, resp.text
    # A call without a body needs no content type at all, whatever type it names.
    restore = api.post(f"/v1/leads/{lid}/void", headers={"content-type": "text/plain"})
    assert restore.status_code == 200, restore.text


# ---- one representation of time --------------------------------------------------------------


def _times(value: Any, key: str = "") -> list[tuple[str, Any]]:
    """Every `*_at` / `*_since` value in an answer, with its key."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if (k.endswith("_at") or k.endswith("_since")) and not isinstance(v, dict | list):
                found.append((k, v))
            else:
                found.extend(_times(v, k))
    elif isinstance(value, list):
        for item in value:
            found.extend(_times(item, key))
    return found


def test_every_answer_shows_time_as_rfc3339_utc(stack: Stack) -> None:
    stack.receiver.behaviour = lambda rec, seen: (500 if seen < 1 else 200, {}, 0.0)
    sub = stack.subscribe()
    rotated = stack.call("POST", f"/v1/subscriptions/{sub['id']}/rotate-secret").json()
    stack.dispatch()
    lead = stack.lead(notes=1)
    wait_for(lambda: len(stack.deliveries(sub["id"], "delivered")) == 2, what="delivered")
    admin = {"Authorization": "Bearer e2e-admin"}
    answers = [
        sub,
        rotated,
        stack.call("GET", f"/v1/subscriptions/{sub['id']}").json(),
        stack.call("GET", f"/v1/subscriptions/{sub['id']}/secret").json(),
        stack.call("GET", "/v1/subscriptions").json(),
        stack.call("GET", f"/v1/leads/{lead}").json(),
        stack.call("GET", "/v1/leads").json(),
        stack.call("POST", f"/v1/leads/{lead}/notes", json={"notes": "n"}).json(),
        stack.call("GET", "/v1/deliveries").json(),
        stack.call("GET", f"/v1/subscriptions/{sub['id']}/deliveries").json(),
        stack.call("POST", f"/v1/subscriptions/{sub['id']}/test").json(),
        stack.client.get("/v1/tenants/acme", headers=admin).json(),
        stack.client.get("/v1/tenants/acme/keys", headers=admin).json(),
        stack.client.post("/v1/tenants/acme/keys", headers=admin).json(),
    ]
    seen = set()
    for answer in answers:
        for key, value in _times(answer):
            seen.add(key)
            assert value is None or RFC3339_UTC.fullmatch(value), (key, value, answer)
    assert {
        "created_at",
        "updated_at",
        "attempted_at",
        "next_attempt_at",
        "previous_secret_expires_at",
        "revoked_at",
    } <= seen
    # The contract's own fields keep their form: unix seconds and tenant-local text.
    behaviour = stack.call("POST", f"/v1/leads/{lead}/notes", json={"notes": "m"}).json()
    event = behaviour["events"][0]
    assert isinstance(event["create_time"], int)
    local = event["extra_data"]["created_timestamp"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", local)
    assert isinstance(behaviour["lead"]["fields"]["to_baby_lead_timestamp"], str)
    # And the instants agree: a lead's own times are its events' second (api.md, "Time").
    lead_at = parse_rfc3339(behaviour["lead"]["updated_at"])
    assert lead_at == event["create_time"]
    for key in ("created_at", "updated_at"):
        assert behaviour["lead"][key].endswith(".000Z"), (key, behaviour["lead"])


def test_replay_takes_since_as_unix_seconds_or_rfc3339(stack: Stack) -> None:
    sub = stack.subscribe()
    path = f"/v1/subscriptions/{sub['id']}/replay"
    for since in (0, 1.5, "2000-01-01T00:00:00Z", "2000-01-01T08:00:00+08:00"):
        resp = stack.call("POST", path, json={"since": since})
        assert resp.status_code == 202 and resp.json() == {"replayed": 0}, resp.text
    for since in (-1, "yesterday", "2000-01-01T00:00:00", True, 1e308, 253402300800):
        assert_problem(stack.call("POST", path, json={"since": since}), 422)
        missing = stack.call("POST", path + "-missing", json={"since": since})
        assert_problem(missing, 422)  # not a 500 from a number no column holds
    assert_problem(stack.call("POST", path + "-missing", json={"since": 0, "until": 1e308}), 422)
    for status in ("dead", "delivered", "failed"):
        resp = stack.call("POST", path, json={"since": 0, "status": status})
        assert resp.status_code == 202 and resp.json() == {"replayed": 0}, resp.text
    assert_problem(stack.call("POST", path, json={"since": 0, "status": "pending"}), 422)
    # A date-time before unix time 0 says so; a body's error gives no query-string advice.
    resp = stack.call("POST", path, json={"since": "0001-01-01T00:00:00+14:00"})
    assert "before 1970-01-01" in assert_problem(resp, 422)["detail"]
    detail = assert_problem(stack.call("POST", path, json={"since": "x"}), 422)["detail"]
    assert "%2B" not in detail
    assert "unix seconds" in detail and "RFC 3339" in detail  # both forms named
    # A value of neither type is one error at `since`, not one per member of the union.
    for since in (True, None, [1], {"t": 1}):
        resp = stack.call("POST", path, json={"since": since})
        assert_problem(resp, 422)
        assert [e["loc"] for e in resp.json()["errors"]] == [["body", "since"]], resp.text
        assert "RFC 3339" in resp.json()["errors"][0]["msg"]


# ---- metrics -------------------------------------------------------------------------------


def test_the_documentation_pages_load_nothing_from_another_site(api: Api) -> None:
    # FastAPI's defaults load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from
    # Google): on a machine without that network the pages stayed blank.
    for path, assets in (
        ("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")),
        ("/redoc", ("redoc.standalone.js",)),
    ):
        page = api.client.get(path)
        assert page.status_code == 200 and "/openapi.json" in page.text, path
        assert "https://" not in page.text and "http://" not in page.text, path
        for name in assets:
            assert f"/docs/assets/{name}" in page.text, (path, name)
            served = api.client.get(f"/docs/assets/{name}")
            assert served.status_code == 200 and len(served.content) > 100_000, name
    assert api.client.get("/docs/assets/nope.js").status_code == 404


def test_metrics_label_the_documentation_by_route(api: Api) -> None:
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert api.client.get(path).status_code == 200
    text = api.client.get("/metrics").text
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert f'{{method="GET",route="{path}",status="200"}} 1.0' in text, path
    assert 'route="unmatched",status="200"' not in text
