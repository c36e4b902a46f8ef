"""`POST /v1/subscriptions` with an Idempotency-Key: a retried create makes no second endpoint.

A subscription created twice receives every event twice; a client retrying a create whose
answer it lost (a timeout, a dropped connection) sends the same key again and must get the
first subscription back, on both databases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from api_helpers import Api, assert_problem, seeded_api

from leadhook.services.subscriptions import SubscriptionService

BODY = {"url": "https://example.com/hook", "event_types": ["*"], "description": "crm"}


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


def _create(api: Api, key: str | None, body: Any = BODY) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return api.post("/v1/subscriptions", content=json.dumps(body), headers=headers)


def _ids(api: Api) -> list[str]:
    return [s["id"] for s in api.get("/v1/subscriptions").json()["data"]]


def test_a_retried_create_answers_the_first_subscription_with_its_secret(api: Api) -> None:
    before = _ids(api)
    first = _create(api, "create-1")
    again = _create(api, "create-1")
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["secret"] == first.json()["secret"]
    assert _ids(api) == [*before, first.json()["id"]]
    # Without a key, each create is a new endpoint, as before.
    other = _create(api, None)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_the_key_with_another_request_or_a_deleted_subscription_is_409(api: Api) -> None:
    first = _create(api, "create-2").json()
    assert_problem(_create(api, "create-2", {**BODY, "description": "other"}), 409)
    assert api.delete(f"/v1/subscriptions/{first['id']}").status_code == 204
    assert_problem(_create(api, "create-2"), 409)
    assert first["id"] not in _ids(api)


def test_a_failed_create_records_nothing_and_a_bad_key_is_400(api: Api) -> None:
    before = _ids(api)
    assert_problem(_create(api, "create-3", {**BODY, "url": "ftp://x"}), 422)
    created = _create(api, "create-3")  # the failed request left the key free
    assert created.status_code == 201, created.text
    assert_problem(_create(api, "k" * 256), 400)
    assert_problem(_create(api, ""), 400)
    assert _ids(api) == [*before, created.json()["id"]]


def test_one_key_is_one_tenants(api: Api) -> None:
    other = api.new_tenant("t-idem")
    mine = _create(api, "shared-key").json()["id"]
    theirs = api.post(
        "/v1/subscriptions",
        content=json.dumps(BODY),
        key=other,
        headers={"Idempotency-Key": "shared-key"},
    )
    assert theirs.status_code == 201 and theirs.json()["id"] != mine


def test_a_request_that_missed_a_concurrent_first_answers_its_subscription(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The interleaving PostgreSQL allows: this request read the key before the first request
    # with it committed, so it makes a subscription of its own, and its record of the key
    # then finds the first one's. It must answer the first's, and leave nothing of its own.
    first = _create(api, "race").json()
    before = _ids(api)
    missed = [True]
    real = SubscriptionService._created_with

    def read_too_early(uow: Any, mid: str, key: str, fp: str) -> Any:
        if missed.pop() if missed else False:
            return None
        return real(uow, mid, key, fp)

    monkeypatch.setattr(SubscriptionService, "_created_with", staticmethod(read_too_early))
    again = _create(api, "race")
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first["id"] and again.json()["secret"] == first["secret"]
    assert _ids(api) == before


def test_concurrent_creates_with_one_key_all_answer_one_subscription(api: Api) -> None:
    before = _ids(api)
    for round_ in range(5):
        keys = [f"together-{round_}"] * 6
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda key: _create(api, key), keys))
        assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1
    assert len(_ids(api)) == len(before) + 5
