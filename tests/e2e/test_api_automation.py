"""Pool automation over HTTP: pool rules in the catalog, allocation on create, claim, return,
reclaim runs, duplicates and merge; and the scheduler running in the worker process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from api_helpers import Api, _seed_template, assert_behaviour, assert_problem
from fastapi.testclient import TestClient

from leadhook.adapters.memory import FakeClock
from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.cli.runtime import run_service
from leadhook.settings import Settings

START = 1_676_962_253.0
DAY = 86400
EAST = {
    "name": "东区公海",
    "members": ["m1", "m2"],
    "claim_limit": 1,
    "assignment": {"mode": "round_robin", "members": ["m1", "m2", "m3"], "enabled": False},
    "reclaim": {"after_days": 1.5, "enabled": True},
}


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[tuple[Api, FakeClock]]:
    """The API over a seeded database of each backend, with a clock the test moves."""
    url, key = seeded_databases.restore(backend, "api-seeded", _seed_template)
    clock = FakeClock(START)
    settings = Settings(database_url=url, admin_token="admin-token-for-tests")
    container = build(settings, run_migrations=False, clock=clock)
    try:
        with TestClient(create_app(container)) as client:
            api = Api(client, container, "t1", key)
            assert api.put("/v1/catalog/lead_pools/east", json=EAST).status_code == 200
            yield api, clock
    finally:
        container.close()


def _enable_assignment(api: Api) -> None:
    assignment = {**EAST["assignment"], "enabled": True}  # type: ignore[dict-item]
    resp = api.put("/v1/catalog/lead_pools/east", json={**EAST, "assignment": assignment})
    assert resp.status_code == 200, resp.text


def test_pool_rules_are_set_with_put_and_shown_by_get(api: tuple[Api, FakeClock]) -> None:
    a, _ = api
    pools = a.get("/v1/catalog").json()["lead_pools"]
    assert next(p for p in pools if p["code"] == "east") == {
        "code": "east",
        **EAST,
        "assignment": {**EAST["assignment"]},  # type: ignore[dict-item]
        "reclaim": {"after_days": 1.5, "enabled": True, "to_lead_pool": None},
    }
    bad = a.put("/v1/catalog/lead_pools/east", json={**EAST, "members": ["ghost"]})
    assert_problem(bad, 422, ["body", "members", 0])
    bad = a.put("/v1/catalog/lead_pools/east", json={**EAST, "reclaim": {"after_days": -1}})
    assert_problem(bad, 422, ["body", "reclaim", "after_days"])
    assert a.get("/v1/catalog").json()["lead_pools"] == pools


def test_a_create_into_an_assigning_pool_answers_both_events(api: tuple[Api, FakeClock]) -> None:
    a, _ = api
    _enable_assignment(a)
    resp = a.post("/v1/leads", json={"fields": {"name": "赵拥晨"}, "lead_pool": "east"})
    body = assert_behaviour(resp, 201)
    create, owner = body["events"]
    assert (create["event_type"], owner["event_type"]) == ("object_create", "object_change_owner")
    assert owner["action_keyword"] == "auto_distribution"
    assert owner["extra_data"]["scene_type"] == 1 and owner["extra_data"]["operator_type"] == 0
    assert body["lead"]["owner"] == "m1"
    assert [e["event_type"] for e in a.events()] == ["object_create", "object_change_owner"]


def test_claim_and_its_refusals(api: tuple[Api, FakeClock]) -> None:
    a, _ = api
    one = a.create_lead(lead_pool="east")["id"]
    two = a.create_lead(lead_pool="east")["id"]
    resp = a.post(f"/v1/leads/{one}/claim", json={"member": "m1"})
    (event,) = assert_behaviour(resp)["events"]
    assert event["extra_data"]["scene_type"] == 3 and event["extra_data"]["operator_type"] == 2
    assert event["extra_data"]["omni_user_uuid"] == "omni-m1"
    before = a.counts()
    for lead_id, member in ((one, "m2"), (two, "m1"), (two, "m3")):
        problem = assert_problem(a.post(f"/v1/leads/{lead_id}/claim", json={"member": member}), 409)
        assert problem["type"].endswith("claim-refused")
    assert_problem(a.post(f"/v1/leads/{two}/claim", json={"member": "nobody"}), 422)
    assert_problem(a.post(f"/v1/leads/{two}/claim", json={}), 422)
    assert_problem(a.post("/v1/leads/missing/claim", json={"member": "m1"}), 404)
    # The operator of a claim is the member: operator_type 2, given or left out.
    for op_type in (0, 1):
        bad = {"member": "m2", "operator": {"operator_type": op_type, "operator_id": 5}}
        assert_problem(
            a.post(f"/v1/leads/{two}/claim", json=bad), 422, ["body", "operator", "operator_type"]
        )
    assert a.counts() == before
    details = {"operator_id": 77, "login_platform": "member_center"}
    resp = a.post(f"/v1/leads/{two}/claim", json={"member": "m2", "operator": details})
    extra = assert_behaviour(resp)["events"][0]["extra_data"]
    assert (extra["operator_type"], extra["operator_id"], extra["login_platform"]) == (
        2,
        77,
        "member_center",
    )


def test_return_then_allocation(api: tuple[Api, FakeClock]) -> None:
    a, _ = api
    lead_id = a.create_lead(owner="m1")["id"]
    resp = a.post(f"/v1/leads/{lead_id}/return", json={"lead_pool": "sales", "notes": "无需求"})
    events = assert_behaviour(resp)["events"]
    assert [e["event_type"] for e in events] == ["object_change_owner", "object_change_lead_pool"]
    assert (
        events[0]["extra_data"]["scene_type"] == 4 and events[0]["extra_data"]["notes"] == "无需求"
    )
    _enable_assignment(a)
    owned = a.create_lead(lead_pool="east")  # → m1
    resp = a.post(f"/v1/leads/{owned['id']}/return", json={})
    events = assert_behaviour(resp)["events"]
    assert [e["extra_data"]["scene_type"] for e in events] == [4, 1]
    assert events[1]["extra_data"]["owner"] == "m2"
    # Every key is optional, and so is the body itself.
    plain = a.create_lead(owner="m1")["id"]
    events = assert_behaviour(a.post(f"/v1/leads/{plain}/return"))["events"]
    assert [(e["event_type"], e["extra_data"]["scene_type"]) for e in events] == [
        ("object_change_owner", 4)
    ]


def test_reclaim_runs_now_and_lists_its_runs(api: tuple[Api, FakeClock]) -> None:
    a, clock = api
    lead_id = a.create_lead(lead_pool="east", owner="m1")["id"]
    clock.advance(1.5 * DAY - 1)
    assert a.post("/v1/automation/run").json() == {"moved": 0, "data": []}
    clock.advance(1)
    resp = a.post("/v1/automation/run")
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["moved"] == 1
    (run,) = answer["data"]
    assert (run["rule"], run["lead_pool"], run["trigger"], run["lead_ids"]) == (
        "reclaim",
        "east",
        "manual",
        [lead_id],
    )
    assert a.get(f"/v1/leads/{lead_id}").json()["owner"] is None
    event = a.events()[-1]
    assert event["event_type"] == "object_change_owner"
    assert event["extra_data"]["scene_type"] == 5 and "reclaim rule" in event["extra_data"]["notes"]
    assert a.post("/v1/automation/run").json()["moved"] == 0
    listed = a.get("/v1/automation/runs", params={"limit": 1}).json()
    assert listed == {"data": [run], "next_cursor": None}
    assert_problem(a.get("/v1/automation/runs", params={"cursor": "!!"}), 400)


def test_duplicates_and_merge(api: tuple[Api, FakeClock]) -> None:
    a, _ = api
    keep = a.create_lead(fields={"name": "赵", "mobile": "138 0013 8000"})["id"]
    dup = a.create_lead(fields={"mobile": "+8613800138000", "email": "z@x.cn"}, owner="m2")["id"]
    a.post(f"/v1/leads/{dup}/notes", json={"notes": "想试用"})
    a.create_lead(fields={"mobile": "13900000000"})
    found = a.get(f"/v1/leads/{keep}/duplicates").json()["data"]
    assert [(d["lead"]["id"], d["matched_on"]) for d in found] == [(dup, ["mobile"])]
    assert_problem(a.post(f"/v1/leads/{keep}/merge", json={"duplicates": []}), 422)
    assert_problem(a.post(f"/v1/leads/{keep}/merge", json={"duplicates": ["nope"]}), 404)
    headers = {"Idempotency-Key": "merge-1"}
    resp = a.post(f"/v1/leads/{keep}/merge", json={"duplicates": [dup]}, headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [(e["event_type"], e["extra_data"]["entity_id"]) for e in body["events"]] == [
        ("object_update", keep),
        ("object_add_notes", keep),
        ("object_change_owner", keep),
        ("object_voids", dup),
    ]
    assert body["lead"]["fields"]["email"] == "z@x.cn" and body["lead"]["owner"] == "m2"
    assert a.get(f"/v1/leads/{dup}").json()["voided"] is True
    assert a.get(f"/v1/leads/{keep}/duplicates").json()["data"] == []
    events = len(a.events())
    again = a.post(f"/v1/leads/{keep}/merge", json={"duplicates": [dup]}, headers=headers)
    assert again.text == resp.text and len(a.events()) == events
    assert_problem(a.post(f"/v1/leads/{keep}/merge", json={"duplicates": [dup]}), 409)


def test_the_worker_process_runs_the_rules_on_its_schedule(api: tuple[Api, FakeClock]) -> None:
    a, clock = api
    lead_id = a.create_lead(lead_pool="east", owner="m1")["id"]
    clock.advance(2 * DAY)
    container = replace(
        a.container, settings=replace(a.container.settings, automation_interval=0.05)
    )

    async def main() -> None:
        shutdown = asyncio.Event()
        task = asyncio.create_task(
            run_service(container, sock=None, shutdown=shutdown, handle_signals=False)
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if a.container.leads.get("t1", lead_id).owner is None:
                break
            await asyncio.sleep(0.05)
        shutdown.set()
        await task

    asyncio.run(main())
    assert a.get(f"/v1/leads/{lead_id}").json()["owner"] is None
    (run,) = a.get("/v1/automation/runs").json()["data"]
    assert run["trigger"] == "schedule" and run["lead_ids"] == [lead_id]
