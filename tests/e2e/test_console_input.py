"""What the console takes from an address or a form, on both databases: input no store can keep
is refused with a page, and text that reaches a page's data block cannot end or hide it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import Api, seeded_api
from test_console_http import csrf_of


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(
        backend, seeded_databases, console_secret="s3cret", allow_private_targets=True
    ) as api:
        yield api


def _sign_in(api: Api) -> str:
    token = csrf_of(api.client.get("/console/login").text)
    data = {"api_key": api.key, "csrf_token": token}
    assert api.client.post("/console/login", data=data, follow_redirects=False).status_code == 303
    return csrf_of(api.client.get("/console/leads").text)


def test_a_nul_in_an_address_or_a_form_is_refused_with_a_page(api: Api) -> None:
    # PostgreSQL refuses a NUL in any text parameter: these pages answered 500 there, and
    # SQLite stored the form's text with it (the API refuses both).
    token = _sign_in(api)
    for path in [
        "/console/leads?q=%00",
        "/console/leads/%00",
        "/console/subscriptions/%00",
        "/console/deliveries/%00",
        "/console/deliveries?lead=%00",
        "/console/events?lead=%00",
    ]:
        resp = api.client.get(path)
        assert resp.status_code == 400, (path, resp.text[:200])
        assert resp.headers["content-type"].startswith("text/html") and "NUL" in resp.text
    # A query that is not UTF-8 is refused as the API refuses it.
    resp = api.client.get("/console/leads?q=%FF")
    assert resp.status_code == 400 and "not UTF-8" in resp.text
    before = api.get("/v1/subscriptions").json()["data"]
    form = {"csrf_token": token, "url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    resp = api.client.post("/console/subscriptions", data={**form, "description": "a\x00b"})
    assert resp.status_code == 422 and "NUL" in resp.text
    assert api.get("/v1/subscriptions").json()["data"] == before


def test_text_in_a_pages_data_block_cannot_end_or_hide_the_page(api: Api) -> None:
    # A description with `<!--<script>` in the chart's JSON made the browser's HTML parser
    # take the rest of the page (the actions, the edit form) as part of that element.
    text = "<!--<script>a & b</script>"
    sub = api.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "description": text},
    ).json()
    _sign_in(api)
    for path in ["/console/subscriptions", f"/console/subscriptions/{sub['id']}"]:
        page = api.client.get(path).text
        found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page)
        assert found is not None, path
        block = found.group(1)
        assert not set("<>&") & set(block), block[:200]
        # The chart names the subscription by its description: the same text, read back.
        assert text in json.dumps(json.loads(block), ensure_ascii=False), path
        assert "<!--" not in page.split('id="chart-data">', 1)[1], path


def test_lead_search_matches_field_values_not_the_stored_json(api: Api) -> None:
    quoted = api.create_lead(fields={"name": 'O"Brien\\Co', "mobile": "13800138000"})
    plain = api.create_lead(fields={"name": "Ada Lovelace"})
    _sign_in(api)

    def found(q: str) -> set[str]:
        page = api.client.get("/console/leads", params={"q": q}).text
        return {lead["id"] for lead in (quoted, plain) if lead["id"] in page}

    assert found('O"Brien') == found("brien\\co") == {quoted["id"]}  # as typed, any case
    assert found("13800138") == {quoted["id"]}
    assert found("lovelace") == {plain["id"]}
    assert found(plain["id"]) == {plain["id"]}
    # The stored JSON's keys and structure are not text of a lead.
    assert found("fields") == found("mobile") == found('"name"') == set()
    assert found("%") == found("_") == set()  # literal, not wildcards


def test_a_subscription_form_with_no_event_type_ticked_is_refused(api: Api) -> None:
    token = _sign_in(api)
    before = api.get("/v1/subscriptions").json()["data"]
    form = {"csrf_token": token, "url": "http://127.0.0.1:9/hook", "description": "none ticked"}
    refused = api.client.post("/console/subscriptions", data=form)
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert 'value="none ticked"' in refused.text  # the form kept as typed
    # ... its boxes too: "All" not ticked again behind the user's back (a box then ticked
    # beside it would have made the subscription one of every type).
    assert 'value="*" checked' not in refused.text
    assert api.get("/v1/subscriptions").json()["data"] == before
    first = api.client.get("/console/subscriptions")
    assert 'value="*" checked' in first.text  # "All", ticked to begin with
    # "All" ticked beside some types is all of them.
    made = api.client.post(
        "/console/subscriptions", data={**form, "event_types": ["*", "object_create"]}
    )
    assert made.status_code == 200 and 'data-testid="secret"' in made.text  # after the redirect
    (sub,) = [s for s in api.get("/v1/subscriptions").json()["data"] if s not in before]
    assert sub["event_types"] == ["*"]
    # Clearing every box of a subscription changes nothing (it used to widen it to all).
    narrow = api.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/h2", "event_types": ["object_voids"]}
    ).json()
    edit = {"csrf_token": token, "url": "http://127.0.0.1:9/h2", "description": ""}
    assert api.client.post(f"/console/subscriptions/{narrow['id']}", data=edit).status_code == 422
    stored = api.get(f"/v1/subscriptions/{narrow['id']}").json()
    assert stored["event_types"] == ["object_voids"]


def test_a_refused_address_names_the_field_as_the_page_has_it(api: Api) -> None:
    # The page said "query.p: …", the API's location of the value, to a reader who never
    # typed a query.
    _sign_in(api)
    resp = api.client.get("/console/leads", params={"p": "0"})
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("text/html")
    assert "Page: Input should be greater than or equal to 1" in resp.text
    assert "query.p" not in resp.text


def test_a_replay_without_a_time_says_to_choose_one(api: Api) -> None:
    token = _sign_in(api)
    sub = api.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    ).json()
    resp = api.client.post(
        f"/console/subscriptions/{sub['id']}/replay", data={"csrf_token": token, "since": ""}
    )
    assert resp.status_code == 422 and "choose the time from which to replay" in resp.text
    # The form comes back as it was sent, its choice kept (here none: dead and delivered)...
    assert '<option value="" selected>' in resp.text
    # ...and offers the dead ones first when it is shown anew.
    shown = api.client.get(f"/console/subscriptions/{sub['id']}")
    assert '<option value="dead" selected>' in shown.text
    chose = api.client.post(
        f"/console/subscriptions/{sub['id']}/replay",
        data={"csrf_token": token, "since": "", "status": "failed"},
    )
    assert '<option value="failed" selected>' in chose.text
    assert '<option value="dead" selected>' not in chose.text
    assert "unix seconds" not in resp.text


@pytest.mark.parametrize("typed", ["1_000", "١٢", "１２", " nan", "infinity", "1e400", "9" * 5000])
def test_number_boxes_take_ascii_numbers_only(api: Api, typed: str) -> None:
    # int() and float() read "1_000" as 1000 and "١٢" (Arabic-Indic digits) as 12: a form
    # stored numbers its reader never typed as such. They are refused with the form, as the
    # API refuses them in JSON, and nothing changes.
    token = _sign_in(api)
    sub = api.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    ).json()
    form = {"csrf_token": token, "url": "http://127.0.0.1:9/hook", "description": "",
            "event_types": ["*"]}  # fmt: skip
    path = f"/console/subscriptions/{sub['id']}"
    for box in ("max_in_flight", "rate_limit_per_s"):
        resp = api.client.post(path, data={**form, box: typed})
        assert resp.status_code == 422 and 'role="alert"' in resp.text, (box, resp.text)
    stored = api.get(f"/v1/subscriptions/{sub['id']}").json()
    assert (stored["max_in_flight"], stored["rate_limit_per_s"]) == (
        sub["max_in_flight"],
        sub["rate_limit_per_s"],
    )
    # Plain numbers still go in.
    ok = api.client.post(path, data={**form, "max_in_flight": "7", "rate_limit_per_s": "2.5"})
    assert ok.status_code == 200
    stored = api.get(f"/v1/subscriptions/{sub['id']}").json()
    assert (stored["max_in_flight"], stored["rate_limit_per_s"]) == (7, 2.5)


def test_a_replay_time_in_other_digits_is_refused(api: Api) -> None:
    token = _sign_in(api)
    sub = api.post(
        "/v1/subscriptions", json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
    ).json()
    resp = api.client.post(
        f"/console/subscriptions/{sub['id']}/replay",
        data={"csrf_token": token, "since": "١٧٠٠٠٠٠٠٠٠"},
    )
    assert resp.status_code == 422 and "is not a time" in resp.text
