"""Reading leads: the listing with its filters and cursor, the timeline, and batch creation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_helpers import Api, assert_problem, seeded_api, split_json_array

from leadhook.services import cursor as cursors


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


def _all_pages(api: Api, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        resp = api.get(path, params=query)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["data"]) <= limit
        out.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert page["data"], "a page with a next cursor is never empty"


def _leads(api: Api) -> list[dict[str, Any]]:
    specs: list[tuple[dict[str, Any], list[tuple[str, dict[str, Any] | None]]]] = [
        ({"owner": "m1"}, []),
        ({"owner": "m2", "lead_pool": "sales"}, [("/life-cycle", {"life_status": "mql"})]),
        ({}, [("/void", None)]),
        ({"owner": "m1", "lead_pool": "sales"}, []),
        ({}, [("/life-cycle", {"life_status": "mql"})]),
        ({"owner": "m1"}, [("/void", None)]),
        ({"lead_pool": "sales"}, []),
    ]
    leads = []
    for body, steps in specs:
        lid = api.create_lead(**body)["id"]
        for suffix, step_body in steps:
            assert api.post(f"/v1/leads/{lid}{suffix}", json=step_body).status_code == 200
        leads.append(api.get(f"/v1/leads/{lid}").json())
    # Filler, so that paging crosses several pages.
    resp = api.post(
        "/v1/leads/batch", json={"leads": [{"fields": {"name": f"f{i}"}} for i in range(6)]}
    )
    assert resp.status_code == 201
    leads.extend(item["lead"] for item in resp.json()["data"])
    return leads


FILTERS: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
    ({}, lambda lead: True),
    ({"owner": "m1"}, lambda lead: lead["owner"] == "m1"),
    ({"lead_pool": "sales"}, lambda lead: lead["lead_pool"] == "sales"),
    ({"life_status": "mql"}, lambda lead: lead["life_status"] == "mql"),
    ({"voided": "true"}, lambda lead: lead["voided"]),
    ({"voided": "false"}, lambda lead: not lead["voided"]),
    (
        {"owner": "m1", "voided": "false", "lead_pool": "market"},
        lambda lead: lead["owner"] == "m1" and not lead["voided"] and lead["lead_pool"] == "market",
    ),
    ({"owner": "nobody"}, lambda lead: False),
]


def test_listing_filters_and_pages_without_gaps_or_repeats(api: Api) -> None:
    leads = _leads(api)
    for filters, keep in FILTERS:
        expected = [lead for lead in leads if keep(lead)]
        for limit in (1, 4, 50):
            assert _all_pages(api, "/v1/leads", limit, **filters) == expected, (filters, limit)
    # Another tenant's leads never show.
    other = api.new_tenant("other", seed=False)
    api.create_lead(key=other)
    assert _all_pages(api, "/v1/leads", 5) == leads


def test_parameters_left_empty_are_left_out(api: Api) -> None:
    # A URL with its filters left empty, as a form or the reference's templates send it:
    # the listing unfiltered (the typed ones answered 422, and `owner=` matched no lead).
    leads = _leads(api)
    resp = api.get("/v1/leads?owner=&lead_pool=&life_status=&voided=&cursor=&limit=")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"data": leads, "next_cursor": None}
    assert api.get("/v1/leads?owner=m1&voided&limit=").json()["data"] == [
        lead for lead in leads if lead["owner"] == "m1"
    ]
    lead = leads[0]["id"]
    timeline = api.get(f"/v1/leads/{lead}/timeline?is_follow_up=&cursor=&limit=")
    assert timeline.status_code == 200, timeline.text
    assert timeline.json() == api.get(f"/v1/leads/{lead}/timeline").json()
    assert_problem(api.get("/v1/leads?voided=maybe&owner="), 422)  # a value is still checked
    # A value that ends with "=" is a value, not an empty one: the filter still applies.
    assert api.get("/v1/leads?owner=m1=").json()["data"] == []
    assert_problem(api.get("/v1/leads?limit=abc="), 422)
    assert_problem(api.get("/v1/events?event_type=object_create="), 422)
    assert api.get(f"/v1/events?entity_id={lead}=").json()["data"] == []


def test_listing_refuses_bad_parameters(api: Api) -> None:
    api.create_lead()
    for params, status in (
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "cDE"}, 200),  # a well-formed cursor past the end
        ({"cursor": cursors.encode(10**30)}, 400),
        ({"cursor": "cC0x"}, 400),  # "p-1"
        ({"limit": 0}, 422),
        ({"limit": 501}, 422),
        ({"limit": "x"}, 422),
        ({"voided": "maybe"}, 422),
    ):
        resp = api.get("/v1/leads", params=params)
        if status == 200:
            assert resp.status_code == 200, resp.text
        else:
            assert_problem(resp, status)
    assert api.get("/v1/leads", params={"cursor": cursors.encode(10**6)}).json() == {
        "data": [],
        "next_cursor": None,
    }


def test_timeline_is_newest_first_with_follow_up_filter_and_paging(api: Api) -> None:
    lid = api.create_lead(fields={"name": "t"})["id"]
    other = api.create_lead()["id"]
    for i in range(7):
        follow = i % 3 == 0
        api.post(f"/v1/leads/{lid}/notes", json={"notes": f"n{i}", "is_follow_up": follow})
        api.post(f"/v1/leads/{other}/notes", json={"notes": f"o{i}"})
        if i == 3:
            api.patch(f"/v1/leads/{lid}", json={"fields": {"name": "t2"}})
    resp = api.get(f"/v1/leads/{lid}/timeline", params={"limit": 100})
    assert resp.status_code == 200
    stored = api.stored_payloads(lid)
    assert resp.text == '{"data":[' + ",".join(reversed(stored)) + '],"next_cursor":null}'
    everything = resp.json()["data"]
    assert [e["entity_version"] for e in everything] == list(range(9, 0, -1))
    for limit in (1, 2, 4):
        assert _all_pages(api, f"/v1/leads/{lid}/timeline", limit) == everything
    follow_ups = [e for e in everything if e["extra_data"]["is_follow_up"] == 1]
    assert [e["extra_data"]["notes"] for e in follow_ups] == ["n6", "n3", "n0"]
    for limit in (1, 2):
        assert _all_pages(api, f"/v1/leads/{lid}/timeline", limit, is_follow_up=1) == follow_ups
    others = _all_pages(api, f"/v1/leads/{lid}/timeline", 3, is_follow_up=0)
    assert others == [e for e in everything if e["extra_data"]["is_follow_up"] == 0]
    # true / false, as the notes' body takes them, read as 1 / 0.
    assert _all_pages(api, f"/v1/leads/{lid}/timeline", 2, is_follow_up="true") == follow_ups
    assert _all_pages(api, f"/v1/leads/{lid}/timeline", 3, is_follow_up="false") == others
    for params in ({"cursor": "%%%"}, {"cursor": cursors.encode(10**19)}):
        assert_problem(api.get(f"/v1/leads/{lid}/timeline", params=params), 400)
    for params in ({"is_follow_up": 2}, {"is_follow_up": "yes"}, {"limit": 0}):
        assert_problem(api.get(f"/v1/leads/{lid}/timeline", params=params), 422)
    huge = api.get(f"/v1/leads/{lid}/timeline", params={"cursor": cursors.encode(2**40)})
    assert huge.json()["data"] == everything[:50]


def test_batch_creates_each_lead_with_its_own_event(api: Api) -> None:
    items = [{"fields": {"name": f"b{i}"}} for i in range(3)]
    items[1] = {"fields": {"name": "b1", "utm_source": "x"}, "owner": "m1", "lead_pool": "sales"}
    resp = api.post("/v1/leads/batch", json={"leads": items})
    assert resp.status_code == 201, resp.text
    data = resp.json()["data"]
    assert len(data) == 3
    for item, answer in zip(items, data, strict=True):
        assert answer["lead"]["fields"]["name"] == item["fields"]["name"]
        assert answer["lead"]["version"] == 1
        assert [e["event_type"] for e in answer["events"]] == ["object_create"]
        assert answer["events"][0]["extra_data"]["entity_id"] == answer["lead"]["id"]
    assert data[1]["lead"]["owner"] == "m1" and data[1]["lead"]["source"] == {"utm_source": "x"}
    assert api.events() == [answer["events"][0] for answer in data]
    inner = resp.text[len('{"data":[') : -2]
    raw_events = [item[item.index('"events":[') + 10 : -2] for item in split_json_array(inner)]
    assert raw_events == api.stored_payloads()


def test_batch_of_a_thousand(api: Api) -> None:
    resp = api.post(
        "/v1/leads/batch", json={"leads": [{"fields": {"name": f"n{i}"}} for i in range(1000)]}
    )
    assert resp.status_code == 201
    assert len(resp.json()["data"]) == 1000
    assert api.counts()["leads"] == 1000 and api.counts()["events"] == 1000
    too_many = {"leads": [{} for _ in range(1001)]}
    assert_problem(api.post("/v1/leads/batch", json=too_many), 422, ["body", "leads"])
    assert api.counts()["leads"] == 1000


def test_one_bad_lead_fails_the_whole_batch(api: Api) -> None:
    good = {"fields": {"name": "ok"}}
    for index, bad, loc in (
        (2, {"fields": {"nope": 1}}, ["body", "leads", 2, "fields", "nope"]),
        (0, {"owner": "nobody"}, ["body", "leads", 0, "owner"]),
        (4, {"fields": {"lead_pool": "sales"}}, ["body", "leads", 4, "fields", "lead_pool"]),
        (1, {"surprise": 1}, ["body", "leads", 1, "surprise"]),
        (3, {"fields": "x"}, ["body", "leads", 3, "fields"]),
    ):
        items: list[Any] = [good] * 5
        items[index] = bad
        problem = assert_problem(api.post("/v1/leads/batch", json={"leads": items}), 422, loc)
        assert f"leads.{index}" in ".".join(str(p) for p in problem["errors"][0]["loc"])
    assert_problem(api.post("/v1/leads/batch", json={"leads": []}), 422, ["body", "leads"])
    assert_problem(api.post("/v1/leads/batch", json={}), 422, ["body", "leads"])
    assert api.counts() == {"leads": 0, "events": 0, "deliveries": 0, "idempotency_keys": 0}


def test_batch_honours_idempotency_key(api: Api) -> None:
    body = {"leads": [{"fields": {"name": "a"}}, {"fields": {"name": "b"}}]}
    key = {"Idempotency-Key": "batch-1"}
    first = api.post("/v1/leads/batch", json=body, headers=key)
    again = api.post("/v1/leads/batch", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert first.content == again.content
    assert api.counts()["leads"] == 2
    assert_problem(api.post("/v1/leads/batch", json={"leads": [{}]}, headers=key), 409)
