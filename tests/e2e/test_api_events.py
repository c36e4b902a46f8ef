"""The pull side: GET /v1/events serves the stored JSON byte for byte, pages and filters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import Api, assert_problem, seeded_api

from leadhook.domain.events import EVENT_TYPES, parse_event_json


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


def _history(api: Api) -> list[str]:
    """Make a few leads live a little; return their lead ids."""
    ids = []
    for i in range(3):
        lid = api.create_lead(fields={"name": f"客户{i}", "headimgurl": ["http://x/a.png"]})["id"]
        api.post(f"/v1/leads/{lid}/notes", json={"notes": f'备注 {i} "quoted" \\ \u2028 😀'})
        api.post(f"/v1/leads/{lid}/owner", json={"owner": "m1", "scene_type": 1})
        if i == 1:
            api.post(f"/v1/leads/{lid}/void", json={"reason": "重复"})
        ids.append(lid)
    return ids


def _body(payloads: list[str], next_cursor: str | None) -> str:
    return '{"data":[' + ",".join(payloads) + '],"next_cursor":' + json.dumps(next_cursor) + "}"


def test_events_are_served_byte_for_byte_as_stored(api: Api) -> None:
    _history(api)
    payloads = api.stored_payloads()
    assert len(payloads) == 10
    resp = api.get("/v1/events")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.text == _body(payloads, None)
    assert resp.content == _body(payloads, None).encode()
    # Page by page, too: each page is the next slice of the log, its cursor the last id.
    after: str | None = None
    for start in range(0, 10, 4):
        params: dict[str, Any] = {"limit": 4, **({"after": after} if after else {})}
        page = api.get("/v1/events", params=params)
        chunk = payloads[start : start + 4]
        after = json.loads(chunk[-1])["event_id"] if start + 4 < 10 else None
        assert page.text == _body(chunk, after)
    # One event by its id: the very same text.
    for payload in payloads:
        event_id = json.loads(payload)["event_id"]
        one = api.get(f"/v1/events/{event_id}")
        assert one.status_code == 200 and one.text == payload
        assert one.headers["content-type"] == "application/json"
    # Every stored event is a valid event of the contract, and the log is in event_id order.
    events = [parse_event_json(p) for p in payloads]
    assert [e.event_id for e in events] == sorted(e.event_id for e in events)


def test_paging_with_after_has_no_gaps_or_repeats(api: Api) -> None:
    ids = _history(api)
    everything = api.get("/v1/events", params={"limit": 1000}).json()["data"]
    for limit in (1, 3, 7):
        assert api.events() == everything
        got: list[dict[str, Any]] = []
        after = None
        while True:
            params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
            page = api.get("/v1/events", params=params).json()
            got.extend(page["data"])
            after = page["next_cursor"]
            if after is None:
                break
        assert got == everything
    # `after` the last event: an empty page.
    last = everything[-1]["event_id"]
    assert api.get("/v1/events", params={"after": last}).json() == {"data": [], "next_cursor": None}
    # `after` names a position: what follows it, filtered.
    middle = everything[4]["event_id"]
    rest = api.get("/v1/events", params={"after": middle, "entity_id": ids[2]}).json()["data"]
    assert rest == [e for e in everything[5:] if e["extra_data"]["entity_id"] == ids[2]]


def test_filters(api: Api) -> None:
    ids = _history(api)
    everything = api.events()
    for event_type in ("object_create", "object_add_notes", "object_voids", "object_restore"):
        got = api.events(event_type=event_type)
        assert got == [e for e in everything if e["event_type"] == event_type]
    assert len(api.events(event_type="object_create")) == 3
    for lid in ids:
        got = api.events(entity_id=lid)
        assert got == [e for e in everything if e["extra_data"]["entity_id"] == lid]
        assert [e["entity_version"] for e in got] == list(range(1, len(got) + 1))
    both = api.events(entity_id=ids[1], event_type="object_voids")
    assert len(both) == 1 and both[0]["extra_data"]["notes"] == "重复"
    assert api.events(entity_id="nobody") == []
    # Filtered pages with a small limit still cover everything once.
    notes: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"event_type": "object_add_notes", "limit": 1}
        page = api.get("/v1/events", params={**params, **({"after": after} if after else {})})
        notes.extend(page.json()["data"])
        after = page.json()["next_cursor"]
        if after is None:
            break
    assert notes == [e for e in everything if e["event_type"] == "object_add_notes"]


def test_bad_queries(api: Api) -> None:
    _history(api)
    for params, status, loc in (
        ({"event_type": "object_explode"}, 422, ["query", "event_type"]),
        ({"event_type": "OBJECT_CREATE"}, 422, ["query", "event_type"]),
        ({"after": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}, 400, None),
        ({"after": "garbage"}, 400, None),
        ({"limit": 0}, 422, ["query", "limit"]),
        ({"limit": 1001}, 422, ["query", "limit"]),
        ({"limit": "ten"}, 422, ["query", "limit"]),
    ):
        assert_problem(api.get("/v1/events", params=params), status, loc)
    assert_problem(api.get("/v1/events/01ARZ3NDEKTSV4RRFFQ69G5FAV"), 404)
    for event_type in EVENT_TYPES:
        assert api.get("/v1/events", params={"event_type": event_type}).status_code == 200


def test_next_cursor_pages_the_log_as_cursor_too(api: Api) -> None:
    # Every other listing takes `next_cursor` back as `cursor`: a client paging the log the
    # same way got its first page again and again.
    _history(api)
    first = api.get("/v1/events", params={"limit": 2}).json()
    by_after = api.get("/v1/events", params={"limit": 2, "after": first["next_cursor"]}).json()
    by_cursor = api.get("/v1/events", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert by_cursor == by_after and by_cursor["data"] != first["data"]
    both = {"after": first["next_cursor"], "cursor": by_after["next_cursor"]}
    assert_problem(api.get("/v1/events", params=both), 422, ["query", "cursor"])
    # An unknown one is named as it was sent.
    unknown = assert_problem(api.get("/v1/events", params={"cursor": "nope"}), 400)
    assert unknown["detail"].startswith("cursor='nope'"), unknown


def test_a_bad_filter_is_listed_beside_a_bad_limit(api: Api) -> None:
    # The filters were checked only once every parameter had parsed: a bad `limit` hid them.
    for path, params, locs in (
        ("/v1/events", {"event_type": "nope", "limit": "0"}, ["event_type", "limit"]),
        (
            "/v1/deliveries",
            {"status": "bogus", "event_type": "nope", "created_after": "x", "limit": "999"},
            ["status", "event_type", "created_after", "limit"],
        ),
    ):
        body = assert_problem(api.get(path, params=params), 422)
        assert sorted(e["loc"] for e in body["errors"]) == sorted(["query", n] for n in locs)
        msgs = {e["loc"][1]: e["msg"] for e in body["errors"]}
        assert msgs["event_type"] == "unknown event type 'nope'", msgs
    # The two delivery listings word a bad status alike.
    sub = api.post(
        "/v1/subscriptions", json={"url": "https://hooks.example.com/h", "event_types": ["*"]}
    )
    for path in ("/v1/deliveries", f"/v1/subscriptions/{sub.json()['id']}/deliveries"):
        body = assert_problem(api.get(path, params={"status": "bogus"}), 422, ["query", "status"])
        assert body["errors"][0]["msg"] == "must be one of pending, delivered, failed, dead"
    # Braces in an echoed value stay text.
    body = assert_problem(api.get("/v1/events", params={"event_type": "{x}"}), 422)
    assert body["errors"][0]["msg"] == "unknown event type '{x}'"
