"""Hostile input over HTTP: a clear 422 (never a 500), a bounded echo, nothing written or
logged whole; and a disguised private target refused at create and at send."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import ADMIN, Api, assert_problem, open_api

from leadhook.adapters.http.sender import HttpSender
from leadhook.domain.targets import refusal_reason


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with open_api(f"sqlite:///{tmp_path}/hostile.db") as api:
        yield api


@pytest.mark.parametrize("tz", ["Europe", "x" * 100_000, "Asia/Shanghai\n"])
def test_a_bad_time_zone_is_a_422_with_a_bounded_echo_and_no_log(
    api: Api, tz: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    resp = api.client.post("/v1/tenants", json={"mid": "tz1", "timezone": tz}, headers=ADMIN)
    body = assert_problem(resp, 422, ["body", "timezone"])
    assert len(resp.content) < 2000
    assert "unknown time zone" in body["detail"]
    assert "x" * 1000 not in caplog.text
    assert api.client.get("/v1/tenants/tz1", headers=ADMIN).status_code == 404


def test_a_long_string_anywhere_comes_back_clipped(api: Api) -> None:
    resp = api.client.post(
        "/v1/leads", json={"fields": {"grade": "z" * 100_000}}, headers=api.auth()
    )
    assert_problem(resp, 422)
    assert len(resp.content) < 2000


@pytest.mark.parametrize("value", [10**3999, 2**53, -(2**53)])
def test_a_number_past_2_53_is_refused(api: Api, value: int) -> None:
    resp = api.client.post("/v1/leads", json={"fields": {"budget": value}}, headers=api.auth())
    assert_problem(resp, 422, ["body", "fields", "budget"])
    ok = api.client.post("/v1/leads", json={"fields": {"budget": 2**53 - 1}}, headers=api.auth())
    assert ok.status_code == 201, ok.text
    assert ok.json()["lead"]["fields"]["budget"] == 2**53 - 1


# An integer past a double's range: `math.isfinite` raises on it, `float` too.
HUGE = 10**400


def test_a_number_past_a_double_is_a_422_at_its_field_wherever_a_number_is_read(
    api: Api,
) -> None:
    hook = {"url": "https://example.com/hook", "event_types": ["*"]}
    resp = api.post("/v1/subscriptions", json={**hook, "rate_limit_per_s": HUGE})
    assert_problem(resp, 422, ["body", "rate_limit_per_s"])
    sub = api.post("/v1/subscriptions", json=hook).json()
    resp = api.patch(f"/v1/subscriptions/{sub['id']}", json={"rate_limit_per_s": HUGE})
    assert_problem(resp, 422, ["body", "rate_limit_per_s"])
    resp = api.post(f"/v1/subscriptions/{sub['id']}/replay", json={"since": HUGE})
    assert_problem(resp, 422, ["body", "since"])
    pool = {"name": "东区", "reclaim": {"after_days": HUGE}}
    resp = api.put("/v1/catalog/lead_pools/east", json=pool)
    assert_problem(resp, 422, ["body", "reclaim", "after_days"])
    # A claim limit is a count every JSON reader must hold exactly: at most 2**53 - 1.
    for limit in (HUGE, 2**53):
        resp = api.put("/v1/catalog/lead_pools/east", json={"name": "东区", "claim_limit": limit})
        assert_problem(resp, 422, ["body", "claim_limit"])
    resp = api.put("/v1/catalog/lead_pools/east", json={"name": "东区", "claim_limit": 2**53 - 1})
    assert resp.status_code == 200, resp.text
    assert api.get("/v1/subscriptions/" + sub["id"]).json()["rate_limit_per_s"] is None


def test_a_huge_operator_id_is_refused(api: Api) -> None:
    body = {"fields": {}, "operator": {"operator_type": 1, "operator_id": 10**4000 - 1}}
    assert_problem(api.client.post("/v1/leads", json=body, headers=api.auth()), 422)


def test_an_id_with_a_trailing_newline_is_refused(api: Api) -> None:
    resp = api.client.post("/v1/tenants", json={"mid": "acme2\n"}, headers=ADMIN)
    assert_problem(resp, 422)
    resp = api.client.put("/v1/catalog/members/wang%0A", json={"name": "W"}, headers=api.auth())
    assert resp.status_code in (404, 422), resp.text
    assert "wang\n" not in api.client.get("/v1/catalog", headers=api.auth()).text


@pytest.mark.parametrize(
    "url",
    [
        "http://①②⑦.0.0.1/",
        "http://%31%32%37.0.0.1/",
        "http://2130706433./",
        "http://[2002:7f00:1::]/",
        "http://[64:ff9b::7f00:1]/",
    ],
)
def test_a_disguised_private_target_is_refused_at_create(api: Api, url: str) -> None:
    resp = api.client.post(
        "/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=api.auth()
    )
    assert_problem(resp, 422, ["body", "url"])
    assert api.client.get("/v1/subscriptions", headers=api.auth()).json()["data"] == []


def _inward_name() -> str:
    """This machine's own name when it resolves to an address webhooks must not reach (as it
    does on most: /etc/hosts maps it to 127.0.1.1, 127.0.0.1 or a private address)."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if not any(refusal_reason(ipaddress.ip_address(i[4][0])) for i in infos):
        pytest.skip(f"this machine's name {name!r} resolves to public addresses only")
    return name


def test_a_name_that_resolves_inside_is_refused_at_create_and_at_a_url_change(api: Api) -> None:
    name = _inward_name()
    hook = {"url": f"http://{name}:9/hook", "event_types": ["*"]}
    resp = api.client.post("/v1/subscriptions", json=hook, headers=api.auth())
    body = assert_problem(resp, 422, ["body", "url"])
    assert f"{name} resolves to a " in body["detail"]
    assert "LEADHOOK_ALLOW_PRIVATE_TARGETS=1" in body["detail"]
    assert api.client.get("/v1/subscriptions", headers=api.auth()).json()["data"] == []
    # A name that does not resolve (yet) passes: every send resolves and checks it again.
    made = api.post("/v1/subscriptions", json={**hook, "url": "https://nothing.invalid/hook"})
    assert made.status_code == 201, made.text
    sub = made.json()
    moved = api.client.patch(
        f"/v1/subscriptions/{sub['id']}", json={"url": hook["url"]}, headers=api.auth()
    )
    assert_problem(moved, 422, ["body", "url"])
    kept = api.client.get(f"/v1/subscriptions/{sub['id']}", headers=api.auth()).json()
    assert kept["url"] == "https://nothing.invalid/hook" and kept["updated_at"] == sub["updated_at"]
    # Its URL kept as it is, the rest of a change is not looked up again.
    same = api.client.patch(
        f"/v1/subscriptions/{sub['id']}",
        json={"url": sub["url"], "description": "d"},
        headers=api.auth(),
    )
    assert same.status_code == 200, same.text


def test_a_name_that_resolves_inside_is_allowed_with_private_targets(tmp_path: Path) -> None:
    name = _inward_name()
    with open_api(f"sqlite:///{tmp_path}/private.db", allow_private_targets=True) as api:
        hook = {"url": f"http://{name}:9/hook", "event_types": ["*"]}
        assert api.post("/v1/subscriptions", json=hook).status_code == 201


@pytest.mark.parametrize(
    "url", ["http://[2002:7f00:1::]:9/", "http://[64:ff9b::7f00:1]:9/", "http://2130706433.:9/"]
)
async def test_a_disguised_private_target_is_refused_at_send(url: str) -> None:
    async with HttpSender(timeout=2) as sender:
        result = await sender.send(url, b"{}", {})
    assert result.status_code is None
    assert result.error and result.error.startswith("refused target"), result.error


def test_a_huge_field_name_is_not_echoed_whole(api: Api) -> None:
    resp = api.client.post("/v1/leads", json={"fields": {"k" * 100_000: 1}}, headers=api.auth())
    assert_problem(resp, 422)
    assert len(resp.content) < 2000


# ---- bodies that are not JSON the API can read: 400 bad-json, never a 500 -----------------

UNREADABLE = {
    # A surrogate's three bytes in UTF-8 form, which UTF-8 forbids: Python's JSON reader
    # decodes them (its "surrogatepass") into text that no database driver can encode.
    "an encoded surrogate": b'{"notes": "\xed\xa0\x80"}',
    "Latin-1": '{"notes": "café"}'.encode("latin-1"),
    "UTF-16": '{"notes": "x"}'.encode("utf-16"),
    "a number of 5,000 digits": b'{"notes": "x", "n": ' + b"7" * 5000 + b"}",
    "arrays nested 5,000 deep": b'{"notes": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    # Words Python's JSON reader takes as numbers, which JSON has not (RFC 8259).
    "NaN": b'{"notes": NaN}',
    "Infinity": b'{"notes": "x", "n": Infinity}',
    "-Infinity": b'{"notes": "x", "rate_limit_per_s": -Infinity}',
}


def test_the_words_nan_and_infinity_inside_text_are_only_text(api: Api) -> None:
    lead_id = api.create_lead()["id"]
    text = "NaN Infinity -Infinity"
    resp = api.post(f"/v1/leads/{lead_id}/notes", json={"notes": text})
    assert resp.status_code == 200, resp.text
    assert resp.json()["events"][0]["extra_data"]["notes"] == text


def _state(api: Api) -> tuple[list[tuple[str, int]], int]:
    leads = api.client.get("/v1/leads", headers=api.auth()).json()["data"]
    events = api.client.get("/v1/events", headers=api.auth()).json()["data"]
    return [(x["id"], x["version"]) for x in leads], len(events)


@pytest.mark.parametrize("body", list(UNREADABLE.values()), ids=list(UNREADABLE))
def test_a_body_that_is_not_readable_json_is_400_bad_json_and_changes_nothing(
    api: Api, body: bytes
) -> None:
    lead_id = api.create_lead()["id"]
    before = _state(api)
    headers = {**api.auth(), "Content-Type": "application/json"}
    calls = [
        ("POST", "/v1/leads"),
        ("POST", "/v1/leads/batch"),
        ("PATCH", f"/v1/leads/{lead_id}"),
        ("POST", f"/v1/leads/{lead_id}/notes"),
        ("POST", "/v1/subscriptions"),  # not a behaviour: FastAPI's own way
    ]
    for method, path in calls:
        resp = api.client.request(method, path, content=body, headers=headers)
        problem = assert_problem(resp, 400)
        assert problem["type"].endswith("/bad-json"), (path, problem)
        # A chunked body (no Content-Length) takes the app's way whole: the same answer.
        chunked = api.client.request(method, path, content=iter([body]), headers=headers)
        assert (chunked.status_code, chunked.json()["type"]) == (400, problem["type"]), path
    assert _state(api) == before


def test_a_body_that_is_not_json_is_answered_after_the_credential(api: Api) -> None:
    lead_id = api.create_lead()["id"]
    before = _state(api)
    json_type = {"Content-Type": "application/json"}
    routes = [
        ("POST", f"/v1/leads/{lead_id}/notes", api.auth()),
        ("POST", "/v1/leads", api.auth()),
        ("POST", "/v1/subscriptions", api.auth()),
        ("POST", "/v1/tenants", ADMIN),
    ]
    for method, path, auth in routes:
        for body in (b"{bad", '{"notes": "café"}'.encode("latin-1"), b"{" * 5000):
            # No credential, or a wrong one: 401 first, as for any other request.
            anonymous = api.client.request(method, path, content=body, headers=json_type)
            assert_problem(anonymous, 401)
            wrong = {**json_type, "Authorization": "Bearer lh_not_a_key"}
            assert_problem(api.client.request(method, path, content=body, headers=wrong), 401)
        # With the credential: 400 bad-json, where the reader stopped, and no `errors`
        # (there is no field to name in a body that is not JSON).
        resp = api.client.request(method, path, content=b"{bad", headers={**json_type, **auth})
        problem = assert_problem(resp, 400)
        assert problem["type"].endswith("/bad-json") and "errors" not in problem, problem
        assert problem["detail"].startswith("the request body is not valid JSON: ")
        assert problem["detail"].endswith("at character 1"), problem["detail"]
    assert _state(api) == before


def test_every_route_with_a_body_checks_the_credential_before_the_body(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        path = template.replace("{", "").replace("}", "")  # {lead_id} -> lead_id
        for method in {"post", "put", "patch", "delete"} & set(operations):
            resp = api.client.request(
                method, path, content=b"{bad", headers={"Content-Type": "application/json"}
            )
            assert resp.status_code == 401, (method, template, resp.text)
            checked += 1
    assert checked >= 29  # every mutating route of the reference


def test_a_utf8_byte_order_mark_is_skipped(api: Api) -> None:
    body = '{"fields": {"name": "张三"}}'.encode("utf-8-sig")
    headers = {**api.auth(), "Content-Type": "application/json"}
    resp = api.client.post("/v1/leads", content=body, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["lead"]["fields"]["name"] == "张三"


def test_a_405_allows_every_method_of_the_path(api: Api) -> None:
    lead_id = api.create_lead()["id"]
    for method, path, allowed in [
        ("PUT", f"/v1/leads/{lead_id}", "GET, PATCH"),
        ("DELETE", f"/v1/leads/{lead_id}", "GET, PATCH"),
        ("PUT", "/v1/leads", "GET, POST"),
        ("DELETE", "/v1/leads/batch", "GET, PATCH, POST"),  # {lead_id} takes "batch" too
    ]:
        resp = api.client.request(method, path, headers=api.auth())
        assert_problem(resp, 405)
        assert resp.headers["allow"] == allowed, (method, path)


def test_head_answers_as_get_without_a_body(api: Api) -> None:
    lead_id = api.create_lead()["id"]
    for path, headers in [
        ("/healthz", {}),
        (f"/v1/leads/{lead_id}", api.auth()),  # its ETag too
        ("/v1/leads?limit=1&owner=", api.auth()),
        (f"/v1/leads/{lead_id}", {}),  # 401
        ("/v1/no-such-path", api.auth()),  # 404
        ("/docs", {}),
    ]:
        got = api.client.get(path, headers=headers)
        head = api.client.head(path, headers=headers)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert dict(head.headers) == dict(got.headers), path
    # A path with no GET refuses HEAD as it refuses GET (and HEAD changes nothing).
    before = _state(api)
    refused = api.client.head("/v1/leads/batch", headers=api.auth())
    assert refused.status_code == api.client.get("/v1/leads/batch", headers=api.auth()).status_code
    assert api.client.head(f"/v1/leads/{lead_id}/notes", headers=api.auth()).status_code == 405
    assert _state(api) == before


def test_a_trailing_slash_is_another_path(api: Api) -> None:
    lead_id = api.create_lead()["id"]
    for method, path in [
        ("GET", "/v1/leads/"),
        ("POST", "/v1/leads/"),
        ("POST", f"/v1/leads/{lead_id}/notes/"),
    ]:
        resp = api.client.request(
            method, path, json={"notes": "x"}, headers=api.auth(), follow_redirects=False
        )
        assert resp.json()["type"].endswith("/not-found"), path
        assert_problem(resp, 404)
    # The console's address, typed with a slash, still opens it.
    resp = api.client.get("/console/", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/console/login"


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("login_platform", 64),
        ("login_source_type", 64),
        ("login_environment", 64),
        ("omni_user_uuid", 200),
        ("login_source_value", 200),
        ("login_source_name", 200),
    ],
)
def test_operator_texts_are_bounded(api: Api, name: str, limit: int) -> None:
    lead_id = api.create_lead()["id"]
    url = f"/v1/leads/{lead_id}/notes"
    operator = {"operator_type": 1, "operator_id": 5}
    too_long = {"notes": "x", "operator": {**operator, name: "a" * (limit + 1)}}
    assert_problem(api.post(url, json=too_long), 422, ["body", "operator", name])
    longest = {"notes": "x", "operator": {**operator, name: "a" * limit}}
    resp = api.post(url, json=longest)
    assert resp.status_code == 200, resp.text
    (event,) = resp.json()["events"]
    kept = event["extra_data"].get(name, event["extra_data"]["timeline_data"].get(name))
    assert kept == "a" * limit


def test_a_call_that_takes_no_body_refuses_keys_in_one(api: Api) -> None:
    keys = f"/v1/tenants/{api.mid}/keys"
    before = api.client.get(keys, headers=ADMIN).json()["data"]
    resp = api.client.post(keys, json={"x": 1}, headers=ADMIN)
    assert_problem(resp, 422, ["body", "x"])
    assert_problem(api.client.post(keys, json=[1], headers=ADMIN), 422, ["body"])
    bad = {**ADMIN, "Content-Type": "application/json"}
    assert api.client.post(keys, content=b"{", headers=bad).json()["type"].endswith("/bad-json")
    assert api.client.get(keys, headers=ADMIN).json()["data"] == before  # nothing issued
    # No body, `{}` and `null` say nothing: each issues a key.
    assert api.client.post(keys, headers=ADMIN).status_code == 201
    assert api.client.post(keys, json={}, headers=ADMIN).status_code == 201
    assert api.client.post(keys, content=b"null", headers=bad).status_code == 201
    sub = api.post("/v1/subscriptions", json={"url": "https://example.com/h", "event_types": ["*"]})
    sub_id = sub.json()["id"]
    rotate = f"/v1/subscriptions/{sub_id}/rotate-secret"
    secret = api.get(f"/v1/subscriptions/{sub_id}/secret").json()["secret"]
    assert_problem(api.post(rotate, json={"overlap": 0}), 422, ["body", "overlap"])
    assert api.get(f"/v1/subscriptions/{sub_id}/secret").json()["secret"] == secret
    assert api.post(rotate, json={}).status_code == 200
