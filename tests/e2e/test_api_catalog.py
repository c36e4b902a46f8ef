"""The catalog API: every kind listed, created and replaced, bad entries refused with 422."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import Api, assert_behaviour, assert_problem, seeded_api

from leadhook.domain.catalog_entries import MAX_CATALOG_BYTES, catalog_to_json


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


KINDS = ("members", "business_types", "lead_statuses", "life_stages", "lead_pools", "fields")


def _entry(catalog: dict[str, Any], kind: str, key: str) -> dict[str, Any] | None:
    id_key = {
        "life_stages": "code",
        "lead_pools": "code",
        "fields": "code",
        "objects": "object_name",
    }
    return next((e for e in catalog[kind] if e[id_key.get(kind, "id")] == key), None)


def test_get_catalog_lists_every_kind(api: Api) -> None:
    resp = api.get("/v1/catalog")
    assert resp.status_code == 200
    catalog = resp.json()
    for kind in (*KINDS, "objects"):
        assert isinstance(catalog[kind], list), kind
    assert catalog["mid"] == api.mid
    assert _entry(catalog, "members", "m1") == {
        "id": "m1",
        "name": "王五",
        "omni_user_uuid": "omni-m1",
        "operator_id": None,
    }
    assert _entry(catalog, "lead_statuses", "s_new") == {"id": "s_new", "name": "新线索"}
    assert _entry(catalog, "business_types", "bt_authing") == {
        "id": "bt_authing",
        "name": "Authing",
    }
    assert _entry(catalog, "lead_pools", "market") == {
        "code": "market",
        "name": "市场公海",
        "members": [],
        "claim_limit": None,
        "assignment": None,
        "reclaim": None,
    }
    assert _entry(catalog, "life_stages", "baby_lead") == {
        "code": "baby_lead",
        "name": "初始线索",
        "order": 1,
    }
    grade = _entry(catalog, "fields", "grade")
    assert grade == {
        "code": "grade",
        "name": "等级",
        "type": "option",
        "group": "ordinary",
        "options": {"a": "A级", "b": "B级"},
        "builtin": False,
    }
    assert _entry(catalog, "fields", "mobile") is not None
    assert _entry(catalog, "objects", "account") == {
        "object_name": "account",
        "name": "客户",
        "object_id": "12",
    }


@pytest.mark.parametrize(
    ("kind", "key", "body", "listed"),
    [
        (
            "members",
            "m9",
            {"name": "赵六", "omni_user_uuid": "u-9", "operator_id": 909},
            {"id": "m9", "name": "赵六", "omni_user_uuid": "u-9", "operator_id": 909},
        ),
        ("business_types", "bt_x", {"name": "X"}, {"id": "bt_x", "name": "X"}),
        ("lead_statuses", "s_won", {"name": "赢单"}, {"id": "s_won", "name": "赢单"}),
        (
            "life_stages",
            "lost",
            {"name": "流失", "order": 9},
            {"code": "lost", "name": "流失", "order": 9},
        ),
        (
            "lead_pools",
            "vip",
            {"name": "VIP池"},
            {
                "code": "vip",
                "name": "VIP池",
                "members": [],
                "claim_limit": None,
                "assignment": None,
                "reclaim": None,
            },
        ),
        (
            "fields",
            "utm_extra",
            {"name": "额外", "type": "text", "group": "source"},
            {
                "code": "utm_extra",
                "name": "额外",
                "type": "text",
                "group": "source",
                "builtin": False,
            },
        ),
        (
            "objects",
            "contact",
            {"name": "联系人", "object_id": "7"},
            {"object_name": "contact", "name": "联系人", "object_id": "7"},
        ),
    ],
)
def test_put_creates_then_replaces_an_entry(
    api: Api, kind: str, key: str, body: dict[str, Any], listed: dict[str, Any]
) -> None:
    resp = api.put(f"/v1/catalog/{kind}/{key}", json=body)
    assert resp.status_code == 200, resp.text
    assert resp.json() == listed
    assert _entry(api.get("/v1/catalog").json(), kind, key) == listed
    one = api.get(f"/v1/catalog/{kind}/{key}")
    assert one.status_code == 200 and one.json() == listed
    before = len(api.get("/v1/catalog").json()[kind])
    renamed = {**body, "name": "Renamed"}
    again = api.put(f"/v1/catalog/{kind}/{key}", json=renamed)
    assert again.status_code == 200
    catalog = api.get("/v1/catalog").json()
    assert len(catalog[kind]) == before
    entry = _entry(catalog, kind, key)
    assert entry is not None
    assert entry["name"] == "Renamed"


def test_catalog_entries_take_effect_on_leads(api: Api) -> None:
    api.put("/v1/catalog/members/m9", json={"name": "赵六"})
    api.put("/v1/catalog/business_types/bt_new", json={"name": "New", "default": True})
    api.put("/v1/catalog/life_stages/pre", json={"name": "前置", "order": 0})
    api.put("/v1/catalog/lead_pools/vip", json={"name": "VIP池"})
    api.put("/v1/catalog/fields/score", json={"name": "分数", "type": "number"})
    lead = api.create_lead(owner="m9", lead_pool="vip", fields={"score": 7})
    assert lead["business_type"] == "bt_new"
    assert lead["life_status"] == "pre"  # the new first stage
    # The default moves only when another type is made it: false, like leaving it out,
    # changes nothing (on the default itself too).
    assert api.put(
        "/v1/catalog/business_types/bt_new", json={"name": "New", "default": False}
    ).is_success
    api.put("/v1/catalog/business_types/bt_other", json={"name": "Other", "default": False})
    api.put("/v1/catalog/business_types/bt_new", json={"name": "New"})
    assert api.get("/v1/catalog").json()["default_business_type"] == "bt_new"
    assert lead["fields"]["score"] == 7
    create = api.events()[-1]
    assert create["extra_data"]["mapping_data_text"]["owner"] == "赵六"
    assert create["extra_data"]["business_type_name"] == "New"
    assert create["extra_data"]["mapping_data"]["to_pre_timestamp"]
    # A renamed member is shown by its new name in later events.
    api.put("/v1/catalog/members/m9", json={"name": "赵六六"})
    resp = api.post(f"/v1/leads/{lead['id']}/owner", json={"owner": "m1", "scene_type": 2})
    body = assert_behaviour(resp)
    assert body["events"][0]["extra_data"]["former_owner_name"] == "赵六六"


BAD_ENTRIES: list[tuple[str, Any, int, list[str | int] | None]] = [
    ("/v1/catalog/widgets/x", {"name": "x"}, 404, None),  # an unknown kind: no such resource
    ("/v1/catalog/members/bad%20key", {"name": "x"}, 422, ["path", "key"]),
    ("/v1/catalog/members/" + "k" * 65, {"name": "x"}, 422, ["path", "key"]),
    ("/v1/catalog/members/m9", {}, 422, ["body", "name"]),
    ("/v1/catalog/members/m9", {"name": ""}, 422, ["body", "name"]),
    ("/v1/catalog/members/m9", {"name": 5}, 422, ["body", "name"]),
    ("/v1/catalog/members/m9", {"name": "x" * 201}, 422, ["body", "name"]),
    ("/v1/catalog/members/m9", {"name": "a\nb"}, 422, ["body", "name"]),
    ("/v1/catalog/lead_pools/p", {"name": "a\u0085b"}, 422, ["body", "name"]),
    ("/v1/catalog/members/m9", {"name": "x", "order": 1}, 422, ["body", "order"]),
    ("/v1/catalog/members/m9", {"name": "x", "omni_user_uuid": 3}, 422, ["body", "omni_user_uuid"]),
    ("/v1/catalog/members/m9", ["name"], 422, ["body"]),
    ("/v1/catalog/business_types/b", {"name": "x", "default": "yes"}, 422, ["body", "default"]),
    ("/v1/catalog/life_stages/s", {"name": "x", "order": "1"}, 422, ["body", "order"]),
    ("/v1/catalog/life_stages/s", {"name": "x", "order": True}, 422, ["body", "order"]),
    ("/v1/catalog/fields/f", {"name": "x", "type": "blob"}, 422, ["body", "type"]),
    ("/v1/catalog/fields/f", {"name": "x", "type": "reference"}, 422, ["body", "type"]),
    ("/v1/catalog/fields/f", {"name": "x", "group": "system"}, 422, ["body", "group"]),
    ("/v1/catalog/fields/f", {"name": "x", "type": "option"}, 422, ["body", "options"]),
    ("/v1/catalog/fields/f", {"name": "x", "options": {"a": "A"}}, 422, ["body", "options"]),
    # "" clears a field: an option of that value could never be chosen.
    (
        "/v1/catalog/fields/f",
        {"name": "x", "type": "option", "options": {"": "None", "a": "A"}},
        422,
        ["body", "options"],
    ),
    (
        "/v1/catalog/fields/f",
        {"name": "x", "type": "option", "options": {"a": 5}},
        422,
        ["body", "options", "a"],
    ),
    (
        "/v1/catalog/fields/f",
        {"name": "x", "type": "option", "options": {"a": "A\tB"}},
        422,
        ["body", "options", "a"],
    ),
    (
        "/v1/catalog/fields/f",
        {"name": "x", "type": "option", "options": {"a": " "}},
        422,
        ["body", "options", "a"],
    ),
    (
        "/v1/catalog/fields/f",
        {"name": "x", "type": "option", "options": {"a": "A" * 201}},
        422,
        ["body", "options", "a"],
    ),
    (
        "/v1/catalog/fields/f",
        {"name": "x", "type": "option", "options": {"a" * 10_001: "A"}},
        422,
        ["body", "options", "a" * 64],
    ),
    ("/v1/catalog/fields/mobile", {"name": "x"}, 422, ["path", "key"]),
    ("/v1/catalog/fields/to_mql_timestamp", {"name": "x"}, 422, ["path", "key"]),
    ("/v1/catalog/objects/o", {"name": "x"}, 422, ["body", "object_id"]),
]


def test_put_refuses_bad_entries(api: Api) -> None:
    before = api.get("/v1/catalog").json()
    for path, body, status, loc in BAD_ENTRIES:
        try:
            assert_problem(api.put(path, json=body), status, loc)
        except AssertionError as exc:
            raise AssertionError(f"PUT {path} {body}: {exc}") from None
    assert api.get("/v1/catalog").json() == before


def test_put_answers_the_entry_it_put(api: Api) -> None:
    # A member whose name is another member's id must not be mistaken for it.
    api.put("/v1/catalog/members/alice", json={"name": "bob"})
    resp = api.put("/v1/catalog/members/bob", json={"name": "Bob"})
    assert resp.json() == {"id": "bob", "name": "Bob", "omni_user_uuid": "", "operator_id": None}
    api.put("/v1/catalog/objects/contact", json={"name": "account", "object_id": "1"})
    resp = api.put("/v1/catalog/objects/account", json={"name": "Account", "object_id": "2"})
    assert resp.json() == {"object_name": "account", "name": "Account", "object_id": "2"}


def test_put_refuses_malformed_json(api: Api) -> None:
    resp = api.put(
        "/v1/catalog/members/m9", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    assert_problem(resp, 400)
    assert _entry(api.get("/v1/catalog").json(), "members", "m9") is None


def test_one_entry_of_an_unknown_key_or_kind_is_refused(api: Api) -> None:
    assert_problem(api.get("/v1/catalog/members/nobody"), 404)
    # An unknown kind is a resource that does not exist (docs/api.md): 404, for both methods,
    # and the PUT creates nothing.
    assert_problem(api.get("/v1/catalog/widgets/m1"), 404)
    assert_problem(api.put("/v1/catalog/widgets/m1", json={"name": "x"}), 404)
    assert "widgets" not in api.get("/v1/catalog").json()


def test_a_members_operator_binding_is_shown_and_fills_the_operators_user_id(api: Api) -> None:
    resp = api.put(
        "/v1/catalog/members/m1",
        json={"name": "王五", "operator_id": 17, "omni_user_uuid": "omni-m1"},
    )
    assert resp.status_code == 200, resp.text
    shown = api.get("/v1/catalog/members/m1").json()
    assert shown == {"id": "m1", "name": "王五", "omni_user_uuid": "omni-m1", "operator_id": 17}
    lid = api.create_lead(fields={"name": "x"})["id"]
    operator = {"operator_type": 1, "operator_id": 17, "login_environment": "pad"}
    resp = api.post(f"/v1/leads/{lid}/notes", json={"notes": "called", "operator": operator})
    extra = assert_behaviour(resp)["events"][0]["extra_data"]
    assert (extra["omni_user_uuid"], extra["login_environment"]) == ("omni-m1", "pad")
    # a value in the request wins over the binding
    operator["omni_user_uuid"] = "from-request"
    resp = api.post(f"/v1/leads/{lid}/notes", json={"notes": "again", "operator": operator})
    assert assert_behaviour(resp)["events"][0]["extra_data"]["omni_user_uuid"] == "from-request"


def test_binding_an_account_already_bound_to_another_member_is_409(api: Api) -> None:
    assert api.put("/v1/catalog/members/m1", json={"name": "王五", "operator_id": 17}).is_success
    before = api.get("/v1/catalog").json()
    resp = api.put("/v1/catalog/members/m2", json={"name": "李四", "operator_id": 17})
    problem = assert_problem(resp, 409)
    assert "already bound to member 'm1'" in problem["detail"]
    assert api.get("/v1/catalog").json() == before
    # Past 2**53 - 1 no behaviour's operator_id can name the member (a behaviour refuses it).
    for bad in (0, -3, "17", True, 2**53, 99999999999999999999999):
        resp = api.put("/v1/catalog/members/m2", json={"name": "李四", "operator_id": bad})
        assert_problem(resp, 422, ["body", "operator_id"])


def test_catalog_answers_are_the_stored_document_byte_for_byte(api: Api) -> None:
    """The answers go through the declared models (api/bodies.py) yet stay the catalog's own
    JSON: same keys in the same order, a field's `ref`/`options` absent when unset, a whole
    number of days still a whole number."""
    pool = {"name": "东区", "members": ["m1"], "reclaim": {"after_days": 3, "enabled": True}}
    put = api.put("/v1/catalog/lead_pools/east", json=pool)
    assert put.status_code == 200, put.text
    stored = catalog_to_json(api.container.tenants.get(api.mid).catalog)

    def compact(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    assert api.get("/v1/catalog").text == compact(stored)
    assert '"after_days":3,' in put.text and "ref" not in compact(_entry(stored, "fields", "name"))
    for kind in (*KINDS, "objects"):
        for entry in stored[kind]:
            key = entry["object_name" if kind == "objects" else "code" if "code" in entry else "id"]
            resp = api.get(f"/v1/catalog/{kind}/{key}")
            assert resp.text == compact(entry), (kind, key)


def test_each_stages_timestamp_field_is_listed_and_readable_as_a_builtin(api: Api) -> None:
    """Catches: `to_<stage>_timestamp` refused by a PUT as built in, yet missing from
    `GET /v1/catalog` and 404 from `GET /v1/catalog/fields/{code}` (a review)."""
    expected = {
        "code": "to_mql_timestamp",
        "name": "市场认可线索时间",
        "type": "datetime",
        "group": "system",
        "builtin": True,
    }
    one = api.get("/v1/catalog/fields/to_mql_timestamp")
    assert one.status_code == 200, one.text
    assert one.json() == expected
    fields = api.get("/v1/catalog").json()["fields"]
    assert _entry({"fields": fields}, "fields", "to_mql_timestamp") == expected
    # After the built-in and custom fields, in the stages' order; a new stage brings its own.
    put = api.put("/v1/catalog/life_stages/won", json={"name": "赢单", "order": 99})
    assert put.status_code == 200, put.text
    codes = [f["code"] for f in api.get("/v1/catalog").json()["fields"]]
    stage_codes = [c for c in codes if c.startswith("to_") and c.endswith("_timestamp")]
    assert codes[-len(stage_codes) :] == stage_codes
    assert stage_codes[-1] == "to_won_timestamp"
    assert api.get("/v1/catalog/fields/to_won_timestamp").json()["builtin"] is True
    refused = api.put("/v1/catalog/fields/to_won_timestamp", json={"name": "x"})
    assert refused.status_code == 422


def test_a_catalog_is_bounded_in_size_and_a_refused_entry_changes_nothing(api: Api) -> None:
    # Each request under the body's 1 MiB, forty of them made a catalog of 18 MB: every
    # behaviour of the tenant paid for it, and its versions held gigabytes (a review).
    def options(n: int, prefix: str) -> dict[str, str]:
        return {f"{prefix}{i}": "L" * 190 for i in range(n)}

    before = api.get("/v1/catalog").json()
    huge = {"name": "big", "type": "option", "options": options(3000, "o")}  # ~600 KB
    refused = assert_problem(api.put("/v1/catalog/fields/big", json=huge), 422, ["body"])
    assert f"more than the {MAX_CATALOG_BYTES:,}" in refused["detail"]
    half = {"name": "half", "type": "option", "options": options(1300, "h")}  # ~260 KB
    assert api.put("/v1/catalog/fields/half", json=half).status_code == 200
    other = {"name": "other", "type": "option", "options": options(1300, "k")}
    assert_problem(api.put("/v1/catalog/fields/other", json=other), 422, ["body"])
    after = api.get("/v1/catalog").json()
    assert {k: v for k, v in after.items() if k != "fields"} == {
        k: v for k, v in before.items() if k != "fields"
    }
    assert "big" not in json.dumps(after["fields"]) and "other" not in after["fields"]
    # Within the bound, the catalog still works: a lead takes one of the options.
    lead = api.post("/v1/leads", json={"fields": {"half": "h7"}})
    assert assert_behaviour(lead, 201)["lead"]["fields"]["half"] == "h7"
