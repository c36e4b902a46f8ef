"""Every lead behaviour through its endpoint: answers, events, no-ops, voided leads, bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import Api, assert_behaviour, assert_problem, event_payloads, seeded_api

from leadhook.domain.events import parse_event_json
from leadhook.domain.replay import fold


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


MEMBER_OPERATOR = {
    "operator_type": 2,
    "operator_id": 5,
    "omni_user_uuid": "omni-m1",
    "login_platform": "member_center",
    "login_source_value": "wx123",
    "login_source_type": "wechat",
    "login_environment": "mobile",
    "login_source_name": "公众号",
}

# One lead's life, one step per behaviour: method, path after /v1/leads/{id}, body, event types.
LIFE: list[tuple[str, str, Any, list[str]]] = [
    ("PATCH", "", {"fields": {"name": "张伟伟", "budget": 100, "grade": "b"}}, ["object_update"]),
    ("POST", "/status", {"leads_status": "s_new"}, ["object_update_status"]),
    (
        "POST",
        "/owner",
        {"owner": "m1", "scene_type": 3, "operator": MEMBER_OPERATOR},
        ["object_change_owner"],
    ),
    ("POST", "/life-cycle", {"life_status": "mql"}, ["object_update_life_cycle"]),
    ("POST", "/lead-pool", {"lead_pool": "sales"}, ["object_change_lead_pool"]),
    ("POST", "/notes", {"notes": "打过电话", "is_follow_up": True}, ["object_add_notes"]),
    ("POST", "/team-members", {"members": ["m2", "m3"]}, ["object_add_team_member"]),
    ("DELETE", "/team-members/m2", None, ["object_remove_team_member"]),
    (
        "POST",
        "/relations",
        {"target_object_name": "account", "target_entity_id": "acc-1"},
        ["object_relation"],
    ),
    (
        "PATCH",
        "/source",
        {"fields": {"utm_source": "douyin", "landing_page": "/x"}},
        ["object_source_info"],
    ),
    ("POST", "/void", {"reason": "重复线索"}, ["object_voids"]),
    ("POST", "/restore", None, ["object_restore"]),
    (
        "POST",
        "/owner",
        {"owner": None, "scene_type": 5, "lead_pool": "market"},
        ["object_change_owner", "object_change_lead_pool"],
    ),
]


def test_every_behaviour_through_its_endpoint(api: Api) -> None:
    resp = api.post(
        "/v1/leads",
        json={
            "fields": {"name": "张伟", "mobile": "13800000000", "utm_source": "wechat"},
            "business_type": "bt_authing",
            "lead_omni_user_uuid": "omni-lead",
        },
    )
    body = assert_behaviour(resp, 201)
    lead = body["lead"]
    assert [e["event_type"] for e in body["events"]] == ["object_create"]
    assert lead["version"] == 1 and lead["business_type"] == "bt_authing"
    assert (lead["lead_pool"], lead["life_status"], lead["owner"]) == ("market", "baby_lead", None)
    assert lead["source"] == {"utm_source": "wechat"}
    assert set(lead) >= {
        "id",
        "version",
        "business_type",
        "owner",
        "lead_pool",
        "life_status",
        "leads_status",
        "voided",
        "fields",
        "source",
        "team_members",
        "relations",
        "created_at",
        "updated_at",
    }
    seen = event_payloads(resp)
    lid = lead["id"]
    emitted = {e["event_type"] for e in body["events"]}
    for method, suffix, payload, types in LIFE:
        resp = api.request(method, f"/v1/leads/{lid}{suffix}", json=payload)
        body = assert_behaviour(resp)
        assert [e["event_type"] for e in body["events"]] == types, (suffix, resp.text)
        emitted.update(types)
        # The events are exactly what the log keeps and GET /v1/events serves, byte for byte.
        raw = event_payloads(resp)
        assert raw == api.stored_payloads(lid)[len(seen) :]
        seen += raw
        listed = api.events(entity_id=lid)
        assert listed[-len(types) :] == body["events"]
        # The lead in the answer is the lead as stored.
        assert api.get(f"/v1/leads/{lid}").json() == body["lead"]
        assert body["lead"]["version"] == len(seen)
    assert len(emitted) == 13
    final = api.get(f"/v1/leads/{lid}").json()
    assert final["owner"] is None and final["lead_pool"] == "market" and not final["voided"]
    assert final["team_members"] == ["m3"]
    assert final["relations"] == [
        {"target_object_name": "account", "target_entity_id": "acc-1", "target_object_id": "12"}
    ]
    assert final["source"] == {"utm_source": "douyin", "landing_page": "/x"}
    # The log rebuilds the lead.
    catalog = api.container.tenants.get(api.mid).catalog
    rebuilt = fold(catalog, [parse_event_json(p) for p in seen])
    assert rebuilt.to_api_json() == final


def test_events_carry_the_operator_and_the_labels(api: Api) -> None:
    lid = api.create_lead(fields={"name": "x"})["id"]
    resp = api.post(
        f"/v1/leads/{lid}/owner",
        json={"owner": "m1", "scene_type": 2, "notes": "交给王五", "operator": MEMBER_OPERATOR},
    )
    event = assert_behaviour(resp)["events"][0]
    extra = event["extra_data"]
    assert event["action_keyword"] == "manual_distribution"
    assert (extra["operator_type"], extra["operator_id"]) == (2, 5)
    assert extra["timeline_data"]["login_source_name"] == "公众号"
    assert extra["login_environment"] == "mobile" and extra["notes"] == "交给王五"
    assert extra["entity_change_mapping"]["owner"]["after"] == {"value": "m1", "text": "王五"}
    assert extra["mapping_data_text"]["owner"] == ["-", "王五"]
    # Calls without a body (DELETE, void, restore) may name an operator too.
    api.post(f"/v1/leads/{lid}/team-members", json={"members": ["m2"]})
    resp = api.delete(f"/v1/leads/{lid}/team-members/m2", json={"operator": MEMBER_OPERATOR})
    assert assert_behaviour(resp)["events"][0]["extra_data"]["operator_id"] == 5
    resp = api.post(f"/v1/leads/{lid}/void", json={"operator": MEMBER_OPERATOR})
    assert assert_behaviour(resp)["events"][0]["extra_data"]["operator_type"] == 2
    resp = api.post(f"/v1/leads/{lid}/restore", json={"operator": MEMBER_OPERATOR})
    assert assert_behaviour(resp)["events"][0]["extra_data"]["login_platform"] == "member_center"
    # Without an operator the system acted.
    resp = api.post(f"/v1/leads/{lid}/status", json={"leads_status": "s_open"})
    extra = assert_behaviour(resp)["events"][0]["extra_data"]
    assert (extra["operator_type"], extra["operator_id"], extra["login_platform"]) == (0, 0, "")
    assert extra["mapping_data_text"]["leads_status"] == ["-", "跟进中"]


def _prepared(api: Api) -> str:
    lid = api.create_lead(fields={"name": "李雷"}, owner="m1", lead_pool="sales")["id"]
    for suffix, body in (
        ("/status", {"leads_status": "s_new"}),
        ("/life-cycle", {"life_status": "mql"}),
        ("/team-members", {"members": ["m2"]}),
        ("/relations", {"target_object_name": "account", "target_entity_id": "acc-1"}),
        ("/source", {"fields": {"utm_source": "x"}}),
        ("", {"fields": {"budget": 0}}),
    ):
        method = "PATCH" if suffix in ("/source", "") else "POST"
        assert api.request(method, f"/v1/leads/{lid}{suffix}", json=body).status_code == 200
    return lid


NO_OPS: list[tuple[str, str, Any]] = [
    ("PATCH", "", {"fields": {"name": "李雷"}}),
    ("PATCH", "", {"fields": {}}),
    ("POST", "/status", {"leads_status": "s_new"}),
    ("POST", "/owner", {"owner": "m1", "scene_type": 2}),
    ("POST", "/life-cycle", {"life_status": "mql"}),
    ("POST", "/lead-pool", {"lead_pool": "sales"}),
    ("POST", "/team-members", {"members": ["m2"]}),
    ("DELETE", "/team-members/m3", None),
    ("POST", "/relations", {"target_object_name": "account", "target_entity_id": "acc-1"}),
    ("PATCH", "/source", {"fields": {"utm_source": "x"}}),
    ("POST", "/restore", None),
    ("PATCH", "", {"fields": {"budget": 0.0}}),  # 0 and 0.0 are one JSON number
    ("PATCH", "", {"fields": {"budget": 0, "name": "李雷"}}),
]


def test_a_call_that_changes_nothing_emits_nothing(api: Api) -> None:
    lid = _prepared(api)
    lead = api.get(f"/v1/leads/{lid}").json()
    counts = api.counts()
    for method, suffix, body in NO_OPS:
        resp = api.request(method, f"/v1/leads/{lid}{suffix}", json=body)
        answer = assert_behaviour(resp)
        assert answer == {"lead": lead, "events": []}, (suffix, body)
    assert api.counts() == counts


VOIDED_REFUSES: list[tuple[str, str, Any]] = [
    ("PATCH", "", {"fields": {"name": "new"}}),
    ("POST", "/status", {"leads_status": "s_open"}),
    ("POST", "/owner", {"owner": "m2", "scene_type": 2}),
    ("POST", "/life-cycle", {"life_status": "sql"}),
    ("POST", "/lead-pool", {"lead_pool": "market"}),
    ("POST", "/notes", {"notes": "x"}),
    ("POST", "/team-members", {"members": ["m3"]}),
    ("DELETE", "/team-members/m2", None),
    ("POST", "/relations", {"target_object_name": "account", "target_entity_id": "acc-2"}),
    ("PATCH", "/source", {"fields": {"utm_source": "y"}}),
    ("POST", "/void", {"reason": "again"}),
]


def test_a_voided_lead_refuses_every_behaviour_but_restore(api: Api) -> None:
    lid = _prepared(api)
    assert assert_behaviour(api.post(f"/v1/leads/{lid}/void"))["lead"]["voided"] is True
    counts = api.counts()
    version = api.get(f"/v1/leads/{lid}").json()["version"]
    for method, suffix, body in VOIDED_REFUSES:
        problem = assert_problem(api.request(method, f"/v1/leads/{lid}{suffix}", json=body), 409)
        assert "voided" in problem["detail"], suffix
    assert api.counts() == counts
    restored = assert_behaviour(api.post(f"/v1/leads/{lid}/restore"))
    assert [e["event_type"] for e in restored["events"]] == ["object_restore"]
    assert restored["lead"]["version"] == version + 1 and restored["lead"]["voided"] is False
    assert api.post(f"/v1/leads/{lid}/notes", json={"notes": "back"}).status_code == 200


BAD_INPUT: list[tuple[str, str, Any, list[str | int]]] = [
    ("PATCH", "", {"fields": {"nope": 1}}, ["body", "fields", "nope"]),
    ("PATCH", "", {"fields": {"owner": "m2"}}, ["body", "fields", "owner"]),
    ("PATCH", "", {"fields": {"lead_pool": "market"}}, ["body", "fields", "lead_pool"]),
    ("PATCH", "", {"fields": {"life_status": "sql"}}, ["body", "fields", "life_status"]),
    ("PATCH", "", {"fields": {"leads_status": "s_open"}}, ["body", "fields", "leads_status"]),
    (
        "PATCH",
        "",
        {"fields": {"to_mql_timestamp": "2024-01-01 00:00:00"}},
        ["body", "fields", "to_mql_timestamp"],
    ),
    ("PATCH", "", {"fields": {"utm_source": "y"}}, ["body", "fields", "utm_source"]),
    ("PATCH", "", {"fields": {"business_type": "nope"}}, ["body", "fields", "business_type"]),
    ("PATCH", "", {"fields": {"business_type": None}}, ["body", "fields", "business_type"]),
    ("PATCH", "", {"fields": {"grade": "z"}}, ["body", "fields", "grade"]),
    ("PATCH", "", {"fields": {"budget": "many"}}, ["body", "fields", "budget"]),
    ("PATCH", "", {"fields": {"budget": 2**53}}, ["body", "fields", "budget"]),
    ("PATCH", "", {"fields": {"name": 5}}, ["body", "fields", "name"]),
    ("PATCH", "", {}, ["body", "fields"]),
    ("PATCH", "", {"fields": {"name": "x"}, "extra": 1}, ["body", "extra"]),
    ("PATCH", "/source", {"fields": {"name": "x"}}, ["body", "fields", "name"]),
    ("PATCH", "/source", {"fields": {"nope": "x"}}, ["body", "fields", "nope"]),
    ("POST", "/status", {"leads_status": "nope"}, ["body", "leads_status"]),
    ("POST", "/status", {}, ["body", "leads_status"]),
    ("POST", "/owner", {"owner": "nope", "scene_type": 2}, ["body", "owner"]),
    ("POST", "/owner", {"owner": "m2", "scene_type": 7}, ["body", "scene_type"]),
    ("POST", "/owner", {"owner": "m2", "scene_type": 4}, ["body", "owner"]),
    ("POST", "/owner", {"owner": None, "scene_type": 2}, ["body", "owner"]),
    (
        "POST",
        "/owner",
        {"owner": "m2", "scene_type": 2, "lead_pool": "market"},
        ["body", "lead_pool"],
    ),
    (
        "POST",
        "/owner",
        {"owner": None, "scene_type": 4, "lead_pool": "nope"},
        ["body", "lead_pool"],
    ),
    ("POST", "/life-cycle", {"life_status": "nope"}, ["body", "life_status"]),
    ("POST", "/lead-pool", {"lead_pool": "nope"}, ["body", "lead_pool"]),
    ("POST", "/notes", {"notes": ""}, ["body", "notes"]),
    ("POST", "/notes", {"notes": "x", "is_follow_up": 2}, ["body", "is_follow_up"]),
    ("POST", "/team-members", {"members": ["m2", "nope"]}, ["body", "members", 1]),
    ("POST", "/team-members", {"members": []}, ["body", "members"]),
    ("DELETE", "/team-members/nope", None, ["path", "member_id"]),
    (
        "POST",
        "/relations",
        {"target_object_name": "a b", "target_entity_id": "1"},
        ["body", "target_object_name"],
    ),
    ("POST", "/relations", {"target_object_name": "account"}, ["body", "target_entity_id"]),
    ("POST", "/void", {"reason": 5}, ["body", "reason"]),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"operator_type": 3}},
        ["body", "operator", "operator_type"],
    ),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"operator_type": True}},  # True == 1 to a Literal
        ["body", "operator", "operator_type"],
    ),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"operator_type": 1.0}},
        ["body", "operator", "operator_type"],
    ),
    ("POST", "/notes", {"notes": "x", "operator": {"who": 1}}, ["body", "operator", "who"]),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"operator_id": 4}},
        ["body", "operator", "operator_id"],
    ),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"login_environment": "t" * 65}},
        ["body", "operator", "login_environment"],
    ),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"login_platform": "a\u0007b"}},
        ["body", "operator", "login_platform"],
    ),
    (
        "POST",
        "/notes",
        {"notes": "x", "operator": {"login_source_type": 3}},
        ["body", "operator", "login_source_type"],
    ),
]


def test_bad_input_is_422_naming_the_field(api: Api) -> None:
    lid = _prepared(api)
    counts = api.counts()
    for method, suffix, body, loc in BAD_INPUT:
        try:
            assert_problem(api.request(method, f"/v1/leads/{lid}{suffix}", json=body), 422, loc)
        except AssertionError as exc:
            raise AssertionError(f"{method} {suffix} {body}: {exc}") from None
    assert api.counts() == counts


BAD_CREATES: list[tuple[Any, list[str | int]]] = [
    ({"fields": {"nope": 1}}, ["body", "fields", "nope"]),
    ({"fields": {"owner": "m1"}}, ["body", "fields", "owner"]),
    ({"fields": {"life_status": "mql"}}, ["body", "fields", "life_status"]),
    ({"fields": {"headimgurl": "not json"}}, ["body", "fields", "headimgurl"]),
    ({"business_type": "nope"}, ["body", "business_type"]),
    ({"owner": "nope"}, ["body", "owner"]),
    ({"lead_pool": "nope"}, ["body", "lead_pool"]),
    ({"lead_omni_user_uuid": 5}, ["body", "lead_omni_user_uuid"]),
    ({"lead_omni_user_uuid": "a\nb\u0007"}, ["body", "lead_omni_user_uuid"]),
    ({"lead_omni_user_uuid": "u" * 201}, ["body", "lead_omni_user_uuid"]),
    ({"fields": [1]}, ["body", "fields"]),
    ({"surprise": True}, ["body", "surprise"]),
]


def test_bad_creates_are_422_and_write_nothing(api: Api) -> None:
    counts = api.counts()
    for body, loc in BAD_CREATES:
        try:
            assert_problem(api.post("/v1/leads", json=body), 422, loc)
        except AssertionError as exc:
            raise AssertionError(f"{body}: {exc}") from None
    assert api.counts() == counts


def test_unknown_lead_is_404_for_every_behaviour(api: Api) -> None:
    for method, suffix, body, _ in LIFE:
        resp = api.request(method, f"/v1/leads/NoSuchLead00000000000{suffix}", json=body)
        assert_problem(resp, 404)
    assert_problem(api.get("/v1/leads/NoSuchLead00000000000"), 404)
    assert_problem(api.get("/v1/leads/NoSuchLead00000000000/timeline"), 404)


def test_malformed_json_is_400(api: Api) -> None:
    lid = api.create_lead()["id"]
    counts = api.counts()
    headers = {"content-type": "application/json"}
    for method, path in (
        ("POST", "/v1/leads"),
        ("POST", "/v1/leads/batch"),
        ("PATCH", f"/v1/leads/{lid}"),
        ("POST", f"/v1/leads/{lid}/notes"),
        ("POST", f"/v1/leads/{lid}/void"),
    ):
        for content in (b"{", b'{"fields": }', b"\xff\xfe", b"[" * 50_000 + b"]" * 50_000):
            problem = assert_problem(
                api.request(method, path, content=content, headers=headers), 400
            )
            assert problem["title"] == "Bad request"
    assert api.counts() == counts


def test_idempotency_key_replays_the_first_answer(api: Api) -> None:
    key = {"Idempotency-Key": "create-1"}
    first = api.post("/v1/leads", json={"fields": {"name": "x"}}, headers=key)
    assert first.status_code == 201
    counts = api.counts()
    again = api.post("/v1/leads", json={"fields": {"name": "x"}}, headers=key)
    assert (again.status_code, again.content) == (201, first.content)
    assert api.counts() == counts
    # The same key for another request is a conflict, whatever the path or body.
    assert_problem(api.post("/v1/leads", json={"fields": {"name": "y"}}, headers=key), 409)
    lid = first.json()["lead"]["id"]
    assert_problem(api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers=key), 409)
    # What only the tenant's data tells (an unknown lead, a field code the catalog lacks) is
    # found after the key is compared (docs/api.md): 409 too; a body's shape is refused first.
    assert_problem(api.post("/v1/leads/nope/notes", json={"notes": "n"}, headers=key), 409)
    assert_problem(api.post("/v1/leads", json={"fields": {"nope": "x"}}, headers=key), 409)
    assert_problem(api.post(f"/v1/leads/{lid}/notes", json={"notes": 5}, headers=key), 422)
    assert api.counts() == counts

    note_key = {"Idempotency-Key": "note-1"}
    note = api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers=note_key)
    assert note.status_code == 200 and len(note.json()["events"]) == 1
    counts = api.counts()
    replay = api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers=note_key)
    assert replay.content == note.content
    assert api.counts() == counts
    # Without the key the same request is a new note.
    assert len(api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}).json()["events"]) == 1
    # Another tenant's keys are its own.
    other = api.new_tenant("other")
    theirs = api.post("/v1/leads", json={"fields": {"name": "x"}}, headers=key, key=other)
    assert theirs.status_code == 201 and theirs.json()["lead"]["id"] != lid


def test_a_failed_request_does_not_use_up_its_key(api: Api) -> None:
    key = {"Idempotency-Key": "k-2"}
    assert_problem(api.post("/v1/leads", json={"owner": "nope"}, headers=key), 422)
    assert api.counts()["idempotency_keys"] == 0
    assert api.post("/v1/leads", json={"owner": "m1"}, headers=key).status_code == 201
    assert_problem(api.post("/v1/leads", json={}, headers={"Idempotency-Key": "x" * 256}), 400)
    assert_problem(api.post("/v1/leads", json={}, headers={"Idempotency-Key": ""}), 400)


def test_if_match(api: Api) -> None:
    lid = api.create_lead(fields={"name": "a"})["id"]
    ok = api.patch(f"/v1/leads/{lid}", json={"fields": {"name": "b"}}, headers={"If-Match": "1"})
    assert assert_behaviour(ok)["lead"]["version"] == 2
    counts = api.counts()
    stale = api.patch(f"/v1/leads/{lid}", json={"fields": {"name": "c"}}, headers={"If-Match": "1"})
    assert_problem(stale, 412)
    # Stale even when the call would change nothing.
    assert_problem(api.post(f"/v1/leads/{lid}/restore", headers={"If-Match": "1"}), 412)
    assert api.counts() == counts
    assert api.get(f"/v1/leads/{lid}").json()["fields"]["name"] == "b"
    for tag, version in (('"2"', 3), ('W/"3"', 4)):
        resp = api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers={"If-Match": tag})
        assert assert_behaviour(resp)["lead"]["version"] == version
    counts = api.counts()
    for bad in ("x", '"4', '4"', "W/4", 'W/"4', 'w/"4"', '""', ",", "4, x", "*, 4", "", " "):
        assert_problem(
            api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers={"If-Match": bad}),
            400,
        )
    # A well-formed version no lead has reached, however long, is stale (412), not malformed.
    # Its detail names the version as it was sent (it said "not -1" past 18 digits).
    for far, named in (
        ("1234567890123", "1234567890123"),
        ('"99999999999999999999"', "99999999999999999999"),
        ("00" + "9" * 5000, "9" * 5000),
    ):
        stale = api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers={"If-Match": far})
        assert_problem(stale, 412)
        # (A detail is cut at a bound of its own: the 5,000 digits are not all in it.)
        assert f"is at version 4, not {named}"[:200] in stale.json()["detail"]
    assert api.counts() == counts
    # `*` names any version (RFC 9110): the behaviour runs on the lead as it is; no lead, 404.
    for star in ("*", " * "):
        resp = api.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers={"If-Match": star})
        assert assert_behaviour(resp)["lead"]["version"] >= 5
    # A list (RFC 9110) matches when any version in it is the lead's; a header sent twice is
    # one list, whichever line comes first (the first line alone decided before).
    at = api.get(f"/v1/leads/{lid}").json()["version"]
    counts = api.counts()
    for lines in ([f"{at - 1}, {at + 1}"], [str(at + 1), str(at - 1)], [str(at - 1), str(at + 1)]):
        raw = [(b"if-match", line.encode()) for line in lines]
        refused = api.client.post(
            f"/v1/leads/{lid}/notes",
            json={"notes": "n"},
            headers=[*api.auth().items(), *raw],  # type: ignore[arg-type]
        )
        problem = assert_problem(refused, 412)
        assert f"at version {at}, not any of {at - 1}, {at + 1}" in problem["detail"]
    assert api.counts() == counts
    for shape in ('"{old}", "{now}"', "{old}|{now}", "{now}|{old}"):  # | parts two lines
        lines = shape.format(old=at - 5, now=at).split("|")
        raw = [(b"if-match", line.encode()) for line in lines]
        resp = api.client.post(
            f"/v1/leads/{lid}/notes",
            json={"notes": "n"},
            headers=[*api.auth().items(), *raw],  # type: ignore[arg-type]
        )
        assert assert_behaviour(resp)["lead"]["version"] == at + 1
        at += 1
    # Two Idempotency-Keys: which one would a retry send? 400, nothing done.
    counts = api.counts()
    twice = [*api.auth().items(), ("idempotency-key", "k1"), ("idempotency-key", "k2")]
    resp = api.client.post(f"/v1/leads/{lid}/notes", json={"notes": "n"}, headers=twice)  # type: ignore[arg-type]
    assert_problem(resp, 400)
    assert_problem(api.client.post("/v1/leads", json={}, headers=twice), 400)  # type: ignore[arg-type]
    assert api.counts() == counts
    gone = api.post("/v1/leads/nope/notes", json={"notes": "n"}, headers={"If-Match": "*"})
    assert_problem(gone, 404)
    assert_behaviour(api.post("/v1/leads", json={}, headers={"If-Match": "*"}), status=201)


def test_body_over_one_mebibyte_is_413_and_writes_nothing(api: Api) -> None:
    lid = api.create_lead()["id"]
    counts = api.counts()
    big = json.dumps({"notes": "x" * (1024 * 1024)}).encode()
    assert_problem(
        api.post(
            f"/v1/leads/{lid}/notes", content=big, headers={"content-type": "application/json"}
        ),
        413,
    )
    assert_problem(api.post("/v1/leads", json={"fields": {"name": "y" * (1024 * 1024 + 1)}}), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"notes": "'
        for _ in range(1100):
            yield b"x" * 1024
        yield b'"}'

    chunked = api.post(
        f"/v1/leads/{lid}/notes", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_problem(chunked, 413)
    # Without a key, or with an unknown one, the answer is the credential's 401, as for any
    # other request: declared or chunked, the size is not looked at first.
    for auth in ({}, {"authorization": "Bearer lh_unknown"}):
        headers = {"content-type": "application/json", **auth}
        for content in (big, chunks()):
            refused = api.client.post(f"/v1/leads/{lid}/notes", content=content, headers=headers)
            assert_problem(refused, 401)
        admin_only = api.client.post("/v1/tenants", content=big, headers=headers)
        assert_problem(admin_only, 401)
    # A key that cannot be read (the database down) leaves the size's 413, never a 500.
    import sqlalchemy.exc

    def down(_key: str | None) -> str:
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed"))

    original = api.container.tenants.authenticate
    api.container.tenants.authenticate = down  # type: ignore[method-assign]
    try:
        headers = {"content-type": "application/json", "authorization": "Bearer lh_not_cached"}
        over = api.client.post(f"/v1/leads/{lid}/notes", content=big, headers=headers)
        assert_problem(over, 413)
    finally:
        api.container.tenants.authenticate = original  # type: ignore[method-assign]
    small = api.post(
        f"/v1/leads/{lid}/notes",
        content=iter([b'{"notes": ', b'"chunked"}']),
        headers={"content-type": "application/json"},
    )
    assert small.status_code == 200, small.text
    assert small.json()["events"][0]["extra_data"]["notes"] == "chunked"
    counts = api.counts()
    assert api.counts() == counts
    # Just under the limit is fine (the text limit of a note is another matter: 422).
    near = json.dumps({"notes": "x" * 10_000}).encode()
    assert (
        api.post(
            f"/v1/leads/{lid}/notes", content=near, headers={"content-type": "application/json"}
        ).status_code
        == 200
    )


def test_a_lead_carries_its_version_as_its_etag(api: Api) -> None:
    lead = api.create_lead(fields={"name": "Ada"})
    path = f"/v1/leads/{lead['id']}"
    got = api.get(path)
    assert got.status_code == 200 and got.headers["etag"] == '"1"'
    assert api.client.head(path, headers=api.auth()).headers["etag"] == '"1"'
    # The ETag is what If-Match takes: a stale one is refused, the current one goes through.
    changed = api.patch(path, json={"fields": {"name": "Ada L"}}, headers={"If-Match": '"1"'})
    assert changed.status_code == 200
    assert_problem(
        api.patch(path, json={"fields": {"name": "x"}}, headers={"If-Match": '"1"'}), 412
    )
    # A conditional GET: 304 without a body while the lead is at that version.
    for tag in ('"2"', 'W/"2"', '"7", "2"', "*"):
        resp = api.get(path, headers={"If-None-Match": tag})
        assert (resp.status_code, resp.content) == (304, b""), tag
        assert resp.headers["etag"] == '"2"'
    fresh = api.get(path, headers={"If-None-Match": '"1"'})
    assert fresh.status_code == 200 and fresh.json()["version"] == 2
    assert fresh.headers["etag"] == '"2"'


def test_a_read_honours_if_match_before_if_none_match(api: Api) -> None:
    # RFC 9110 13.1.1: If-Match is evaluated for any method, and before If-None-Match.
    lead = api.create_lead(fields={"name": "Ada"})
    path = f"/v1/leads/{lead['id']}"
    for tag in ('"1"', 'W/"1"', '"9", "1"', "*"):
        got = api.get(path, headers={"If-Match": tag})
        assert got.status_code == 200 and got.json()["id"] == lead["id"], tag
    stale = api.get(path, headers={"If-Match": '"99"'})
    assert_problem(stale, 412)
    assert "version 1, not 99" in stale.json()["detail"]
    both = api.get(path, headers={"If-None-Match": '"1"', "If-Match": '"99"'})
    assert_problem(both, 412)
    assert api.get(path, headers={"If-None-Match": '"1"', "If-Match": '"1"'}).status_code == 304
    head = api.client.head(path, headers={**api.auth(), "If-Match": '"99"'})
    assert head.status_code == 412
    assert_problem(api.get(path, headers={"If-Match": "version one"}), 400)
    # An unknown lead is 404 whatever If-Match lists; a malformed one is refused first.
    assert_problem(api.get("/v1/leads/nope", headers={"If-Match": '"1"'}), 404)
