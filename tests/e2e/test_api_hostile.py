"""Hostile input over HTTP: a clear 422 (never a 500), a bounded echo, nothing written or
logged whole; and a disguised private target refused at create and at send."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_helpers import ADMIN, Api, assert_problem, open_api

from leadhook.adapters.http.sender import HttpSender


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
