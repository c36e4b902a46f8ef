"""The console over HTTP without a browser: sessions, CSRF, isolation, headers, assets."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.settings import Settings

ADMIN = "console-admin"


@pytest.fixture
def client(tmp_path: Any) -> Iterator[TestClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/console.db",
        admin_token=ADMIN,
        allow_private_targets=True,
        console_secret="s3cret",
    )
    container = build(settings)
    with TestClient(create_app(container), follow_redirects=False) as c:
        yield c
    container.close()


def tenant(client: TestClient, mid: str) -> str:
    resp = client.post(
        "/v1/tenants", json={"mid": mid}, headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert resp.status_code == 201, resp.text
    key: str = resp.json()["api_key"]
    return key


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def sign_in(client: TestClient, key: str) -> str:
    token = csrf_of(client.get("/console/login").text)
    resp = client.post("/console/login", data={"api_key": key, "csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/leads"
    return csrf_of(client.get("/console/leads").text)


def test_pages_need_a_session_and_the_cookie_is_locked_down(client: TestClient) -> None:
    resp = client.get("/console/leads?q=x")
    assert resp.status_code == 303
    assert resp.headers["location"] == "/console/login?next=%2Fconsole%2Fleads%3Fq%3Dx"
    login = client.get("/console/login")
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    csp = login.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert login.headers["cache-control"] == "no-store"


def test_sign_in_needs_the_forms_csrf_token_and_a_valid_key(client: TestClient) -> None:
    key = tenant(client, "acme")
    client.get("/console/login")
    refused = client.post("/console/login", data={"api_key": key})
    assert refused.status_code == 403
    token = csrf_of(client.get("/console/login").text)
    wrong = client.post("/console/login", data={"api_key": "lh_nope", "csrf_token": token})
    assert wrong.status_code == 200 and "Unknown or revoked API key." in wrong.text
    elsewhere = client.post(
        "/console/login",
        data={"api_key": key, "csrf_token": token, "next": "https://evil.example/"},
    )
    assert elsewhere.headers["location"] == "/console/leads"  # never off the console


def test_a_tenant_sees_only_its_own_objects(client: TestClient) -> None:
    mine, theirs = tenant(client, "acme"), tenant(client, "other")
    auth = {"Authorization": f"Bearer {theirs}"}
    lead = client.post("/v1/leads", json={"fields": {"name": "外人"}}, headers=auth).json()
    sub = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]},
        headers=auth,
    ).json()
    token = sign_in(client, mine)
    for path in (f"/console/leads/{lead['lead']['id']}", f"/console/subscriptions/{sub['id']}"):
        resp = client.get(path)
        assert resp.status_code == 404 and "Not found" in resp.text
    resp = client.post(f"/console/subscriptions/{sub['id']}/disable", data={"csrf_token": token})
    assert resp.status_code == 404
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=auth).json()["enabled"] is True
    assert "外人" not in client.get("/console/leads").text


def test_a_subscription_made_in_the_console_is_the_apis(client: TestClient) -> None:
    key = tenant(client, "acme")
    token = sign_in(client, key)
    resp = client.post(
        "/console/subscriptions",
        data={
            "csrf_token": token,
            "url": "http://127.0.0.1:9/hook",
            "description": "CRM",
            "event_types": ["object_create", "object_voids"],
        },
    )
    (sub,) = client.get("/v1/subscriptions", headers={"Authorization": f"Bearer {key}"}).json()[
        "data"
    ]
    # Post/Redirect/Get: the answer to the form is a redirect, so a reload cannot post it again.
    assert resp.status_code == 303
    assert resp.headers["location"] == f"/console/subscriptions/{sub['id']}?done=created"
    shown = client.get(resp.headers["location"])
    secret = re.search(r'data-testid="secret">(whsec_[^<]+)<', shown.text)
    assert shown.status_code == 200 and secret is not None
    assert "Subscription created." in shown.text
    assert sub["event_types"] == ["object_create", "object_voids"] and sub["description"] == "CRM"
    bad = client.post(
        "/console/subscriptions", data={"csrf_token": token, "url": "ftp://x", "event_types": "*"}
    )
    assert bad.status_code == 422 and 'role="alert"' in bad.text
    again = client.get(f"/console/subscriptions/{sub['id']}")
    assert again.status_code == 200 and secret.group(1) not in again.text  # shown once
    reloaded = client.get(resp.headers["location"])  # the page that showed it, reloaded
    assert secret.group(1) not in reloaded.text and 'data-testid="secret-gone"' in reloaded.text
    assert 'max="256"' in again.text  # the API's bound, not a looser one
    # A refused edit shows the reason and keeps what was typed; nothing is saved.
    typed = {
        "csrf_token": token,
        "url": "http://127.0.0.1:9/hook",
        "description": "MY NEW DESC",
        "max_in_flight": "500",
        "event_types": ["object_update"],
    }
    refused = client.post(f"/console/subscriptions/{sub['id']}", data=typed)
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert 'value="MY NEW DESC"' in refused.text and 'value="500"' in refused.text
    assert re.search(r'value="object_update" checked', refused.text)
    stored = client.get(
        f"/v1/subscriptions/{sub['id']}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert stored["description"] == "CRM" and stored["max_in_flight"] == sub["max_in_flight"]


def test_bad_filters_answer_a_page_with_the_reason(client: TestClient) -> None:
    sign_in(client, tenant(client, "acme"))
    resp = client.get("/console/deliveries?since=yesterday")
    assert resp.status_code == 422 and "is not a time" in resp.text
    # Named by its box: with Since and Until on one form, which one was refused (a review).
    assert "Since: &#39;yesterday&#39; is not a time" in resp.text, resp.text
    later = client.get("/console/deliveries?since=2026-03-01T10:00&until=tomorrow")
    assert later.status_code == 422 and "Until: &#39;tomorrow&#39; is not a time" in later.text
    # A refused filter comes back above the filter form, as typed, to be corrected there.
    assert 'role="alert"' in resp.text and 'id="f-since"' in resp.text
    assert resp.text.index('role="alert"') < resp.text.index('<form method="get"')
    # In a text box: a date picker (`datetime-local`) shows nothing for a value it cannot hold.
    assert 'id="f-since" name="since" type="text" step="1" value="yesterday"' in resp.text
    assert 'id="f-until" name="until" type="datetime-local"' in resp.text
    reversed_range = client.get(
        "/console/deliveries",
        params={"since": "2026-03-02T10:00", "until": "2026-03-01T10:00", "status": "dead"},
    )
    assert reversed_range.status_code == 422
    assert "Until: must be later than since" in reversed_range.text
    # The event log's filter alike: above its form, with the form and the live view kept.
    events = client.get("/console/events", params={"event_type": "bogus", "lead": "L1"})
    assert events.status_code == 422 and 'role="alert"' in events.text
    assert events.text.index('role="alert"') < events.text.index('<form method="get"')
    assert 'id="live-events"' in events.text and 'value="L1"' in events.text
    assert "Nothing matches" not in events.text
    assert 'value="2026-03-01T10:00:00"' in reversed_range.text  # kept, in the box's form
    assert '<option value="dead" selected>' in reversed_range.text
    # A time given as unix seconds or with an offset comes back in the box, in the tenant's
    # timezone (Asia/Shanghai by default), so that the next Filter keeps it.
    for since in ("1772330400", "2026-03-01T02:00:00Z", "2026-03-01T10:00:00%2B08:00"):
        shown = client.get(f"/console/deliveries?since={since}")
        assert shown.status_code == 200
        assert (
            'id="f-since" name="since" type="datetime-local" step="1" value="2026-03-01T10:00:00"'
            in shown.text
        )
    # A number of seconds past any date a box shows was a 500 (OverflowError), and so was
    # the last second of 9999 in UTC, which is the year 10000 in Asia/Shanghai.
    last = "253402300799"
    for far in ("99999999999999999999", "1" * 400, "1969-12-31T00:00Z", last):
        refused = client.get("/console/deliveries", params={"since": far})
        assert refused.status_code == 422, far
        assert "is not a time between 1970 and 9999" in refused.text
    for bound in ("until", "since"):
        late = client.get("/console/deliveries", params={bound: "9999-12-31T23:59:59"})
        assert late.status_code == 200 and 'value="9999-12-31T23:59:59"' in late.text
    same = client.get("/console/deliveries?since=2026-03-01T10:00&until=2026-03-01T10:00")
    assert same.status_code == 422
    assert client.get(
        "/console/deliveries?since=2026-03-01T10:00&until=2026-03-02T10:00"
    ).is_success
    for page in ("events", "deliveries"):  # the value named on both, in either language
        resp = client.get(f"/console/{page}?event_type=nope")
        assert resp.status_code == 422 and "unknown event type &#39;nope&#39;" in resp.text
        zh = client.get(f"/console/{page}?event_type=nope", headers={"Accept-Language": "zh-CN"})
        assert zh.status_code == 422 and "未知的事件类型 &#39;nope&#39;" in zh.text, page
    resp = client.get("/console/leads?p=0")
    assert (
        resp.status_code == 400 and "Page: Input should be greater than or equal to 1" in resp.text
    )
    zh = client.get("/console/leads?p=x", headers={"Accept-Language": "zh-CN"})
    assert zh.status_code == 400 and "页码：应为整数" in zh.text
    zh = client.get("/console/leads?p=0", headers={"Accept-Language": "zh-CN"})
    assert "页码：应大于或等于 1" in zh.text


def test_the_language_follows_the_browser_then_the_switch(client: TestClient) -> None:
    page = client.get("/console/login", headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    assert '<html lang="zh-CN">' in page.text and "租户 API 密钥" in page.text
    switched = client.post("/console/lang", data={"csrf_token": csrf_of(page.text), "lang": "en"})
    assert switched.status_code == 303
    page = client.get("/console/login", headers={"Accept-Language": "zh-CN"})
    assert "Tenant API key" in page.text
    # On the sign-in form of a shared link, the switch keeps the link to go on to.
    shared = "/console/login?next=%2Fconsole%2Fdeliveries%3Fstatus%3Ddead"
    form = client.get(shared)
    back = client.post(
        "/console/lang",
        data={"csrf_token": csrf_of(form.text), "lang": "zh", "next": shared},
    )
    assert back.status_code == 303 and back.headers["location"] == shared


def test_assets_and_their_licences_are_served_from_the_package(client: TestClient) -> None:
    for name in ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css", "console.js", "console.css"):
        assert client.get(f"/console/static/{name}").status_code == 200, name
    assert "MIT" in client.get("/console/static/uPlot.LICENSE.txt").text
    assert "BSD" in client.get("/console/static/htmx.LICENSE.txt").text
    html = client.get("/console/login").text
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(client: TestClient) -> None:
    key = tenant(client, "out1")
    token = sign_in(client, key)
    saved = client.cookies.get("leadhook_console")
    assert saved
    assert client.get("/console/leads").status_code == 200
    resp = client.post("/console/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/console/login", resp.text
    assert client.get("/console/leads").status_code == 303  # this browser: signed out
    # A copy of the cookie taken before signing out (another tab, a stolen copy) is refused.
    client.cookies.clear()
    client.cookies.set("leadhook_console", saved)
    resp = client.get("/console/leads")
    assert resp.status_code == 303 and resp.headers["location"].startswith("/console/login")
    # Signing in again works, with a new session.
    client.cookies.clear()
    assert sign_in(client, key) != token
    assert client.get("/console/leads").status_code == 200


def test_an_unknown_console_address_is_the_consoles_not_found_page(client: TestClient) -> None:
    for path in ("/console/nosuchpage", "/console/leads/x/y/z"):
        resp = client.get(path)
        assert resp.status_code == 404, path
        assert resp.headers["content-type"].startswith("text/html"), path
    assert client.get("/console/static/console.css").status_code == 200  # assets still served
    assert client.get("/console/static/nope.css").status_code == 404
    assert client.get("/v1/nosuch").headers["content-type"].startswith("application/problem")


def test_a_cookie_with_bytes_no_signer_makes_is_a_stranger_not_a_500(client: TestClient) -> None:
    client.cookies.clear()
    raw = {"cookie": b"leadhook_console=abc.\xe9\xe9"}  # as a hostile client sends it
    resp = client.get("/console/leads", headers=raw, follow_redirects=False)  # type: ignore[arg-type]
    assert resp.status_code in (302, 303), resp.status_code  # sent to sign in


def test_a_lead_page_shows_its_newest_events_and_sends_to_the_log_for_the_rest(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadhook.services import console as console_service

    monkeypatch.setattr(console_service, "TIMELINE_LIMIT", 3)
    key = tenant(client, "acme")
    sign_in(client, key)
    auth = {"Authorization": f"Bearer {key}"}
    busy = client.post("/v1/leads", json={"fields": {"name": "a"}}, headers=auth).json()["lead"]
    for i in range(4):
        client.post(f"/v1/leads/{busy['id']}/notes", json={"notes": f"n{i}"}, headers=auth)
    page = client.get(f"/console/leads/{busy['id']}").text
    assert re.findall(r'data-version="(\d+)"', page) == ["5", "4", "3"]  # the newest three
    assert f'href="/console/events?lead={busy["id"]}"' in page
    quiet = client.post("/v1/leads", json={"fields": {"name": "b"}}, headers=auth).json()["lead"]
    page = client.get(f"/console/leads/{quiet['id']}").text
    assert re.findall(r'data-version="(\d+)"', page) == ["1"] and "older-events" not in page


def test_a_new_secret_is_shown_once_and_a_reload_repeats_nothing(client: TestClient) -> None:
    key = tenant(client, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    token = sign_in(client, key)
    made = client.post(
        "/console/subscriptions",
        data={"csrf_token": token, "url": "http://127.0.0.1:9/hook", "event_types": "*"},
    )
    assert made.status_code == 303
    cookie = made.headers["set-cookie"]
    assert cookie.startswith("leadhook_console_reveal=")
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    (sub,) = client.get("/v1/subscriptions", headers=auth).json()["data"]
    # Its path is the new subscription's page: another subscription's page (another tab)
    # neither receives nor clears it.
    assert f"path=/console/subscriptions/{sub['id']}".lower() in cookie.lower()
    elsewhere = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/elsewhere", "event_types": ["*"]},
        headers=auth,
    ).json()
    assert "set-cookie" not in client.get(f"/console/subscriptions/{elsewhere['id']}").headers
    first = client.get(made.headers["location"])
    created = re.search(r'data-testid="secret">(whsec_[^<]+)<', first.text)
    assert created is not None
    assert created.group(1) not in cookie  # sealed, not the secret in clear
    # Rotating answers a redirect too: the new secret is shown on the page it leads to.
    rotated = client.post(
        f"/console/subscriptions/{sub['id']}/rotate-secret", data={"csrf_token": token}
    )
    assert rotated.status_code == 303
    assert rotated.headers["location"] == f"/console/subscriptions/{sub['id']}?done=rotated"
    sealed = client.cookies.get("leadhook_console_reveal")
    page = client.get(rotated.headers["location"])
    new = re.search(r'data-testid="secret">(whsec_[^<]+)<', page.text)
    assert new is not None and new.group(1) != created.group(1)
    assert 'data-testid="rotating"' in page.text  # a second rotation now would end the first
    assert 'data-testid="rotating"' not in first.text
    assert "The previous secret keeps signing" in page.text
    # Reloading the page shows no secret and rotates nothing: the subscription signs with the
    # secret the page showed, which a second rotation would have replaced.
    for _ in range(2):
        again = client.get(rotated.headers["location"])
        assert new.group(1) not in again.text and 'data-testid="secret-gone"' in again.text
    current = client.get(f"/v1/subscriptions/{sub['id']}/secret", headers=auth).json()
    assert current["secret"] == new.group(1)
    # Revealed while the rotation is under way: the page says until when the previous one
    # signs too; the reload's note, that a second rotation would end it at once.
    revealed = client.post(
        f"/console/subscriptions/{sub['id']}/reveal-secret", data={"csrf_token": token}
    )
    shown = client.get(revealed.headers["location"]).text
    assert 'data-testid="previous-secret"' in shown and new.group(1) in shown
    reloaded = client.get(revealed.headers["location"]).text
    assert "rotating again now ends the previous secret at once" in reloaded
    assert "Rotating once more" not in first.text
    assert len(client.get("/v1/subscriptions", headers=auth).json()["data"]) == 2
    # A sealed secret opens only for its own subscription and its own session.
    assert sealed is not None
    client.cookies.set("leadhook_console_reveal", sealed, path="/console")
    assert "whsec_" not in client.get(f"/console/subscriptions/{elsewhere['id']}").text
    sign_in(client, key)  # a new session: the cookie sealed for the old one opens nothing
    client.cookies.set("leadhook_console_reveal", sealed, path="/console")
    assert new.group(1) not in client.get(f"/console/subscriptions/{sub['id']}").text


def test_signed_in_the_sign_in_page_says_so_and_no_latency_reads_as_a_dash(
    client: TestClient,
) -> None:
    key = tenant(client, "acme")
    client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert 'data-testid="signed-in-as"' not in client.get("/console/login").text
    sign_in(client, key)
    again = client.get("/console/login?next=/console/events").text
    assert 'data-testid="signed-in-as"' in again and "acme" in again
    assert 'href="/console/events"' in again  # on to the page, without signing in again
    listed = client.get("/console/subscriptions").text
    assert "- ms" not in listed  # no attempt yet: no latency, not a dash with a unit


def test_the_secret_is_revealed_by_a_form_and_a_subscription_deleted_with_its_deliveries(
    client: TestClient,
) -> None:
    key, auth, sub, delivery = one_delivery(client, "http://127.0.0.1:9/gone")
    token = sign_in(client, key)
    page = client.get(f"/console/subscriptions/{sub['id']}").text
    assert f'action="/console/subscriptions/{sub["id"]}/reveal-secret"' in page
    assert "whsec_" not in page  # no secret until asked for
    # Without the form's token nothing is shown.
    refused = client.post(f"/console/subscriptions/{sub['id']}/reveal-secret")
    assert refused.status_code == 403 and "whsec_" not in refused.text
    revealed = client.post(
        f"/console/subscriptions/{sub['id']}/reveal-secret", data={"csrf_token": token}
    )
    assert revealed.status_code == 303
    assert revealed.headers["location"] == f"/console/subscriptions/{sub['id']}?done=revealed"
    assert "whsec_" not in revealed.headers["location"] + revealed.headers["set-cookie"]
    shown = client.get(revealed.headers["location"]).text
    secret = re.search(r'data-testid="secret">(whsec_[^<]+)<', shown)
    assert secret is not None and "The current signing secret" in shown
    assert secret.group(1) == sub["secret"]  # the one it signs with: nothing rotated
    again = client.get(revealed.headers["location"]).text
    assert sub["secret"] not in again and 'data-testid="secret-gone"' in again
    # Another tenant's subscription is not found, its secret not shown.
    other = sign_in(client, tenant(client, "other"))
    stranger = client.post(
        f"/console/subscriptions/{sub['id']}/reveal-secret", data={"csrf_token": other}
    )
    assert stranger.status_code == 404 and "whsec_" not in stranger.text
    missing = client.post(f"/console/subscriptions/{sub['id']}/delete", data={"csrf_token": other})
    assert missing.status_code == 404
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=auth).status_code == 200
    # The owner deletes it: its unfinished delivery ends as dead, the list says so.
    token = sign_in(client, key)
    assert 'data-testid="delete"' in client.get(f"/console/subscriptions/{sub['id']}").text
    gone = client.post(f"/console/subscriptions/{sub['id']}/delete", data={"csrf_token": token})
    assert gone.status_code == 303
    assert gone.headers["location"] == f"/console/subscriptions?done=deleted&id={sub['id']}"
    listed = client.get(gone.headers["location"]).text
    assert 'data-testid="deleted"' in listed
    assert "its unfinished deliveries ended as dead" in listed
    # Its ended deliveries are a link away: they stay, filtered by it.
    assert f'href="/console/deliveries?subscription={sub["id"]}"' in listed
    assert f'href="/console/subscriptions/{sub["id"]}"' not in listed  # not a live row
    assert client.get(f"/v1/subscriptions/{sub['id']}", headers=auth).status_code == 404
    assert client.get(f"/v1/deliveries/{delivery['id']}", headers=auth).json()["status"] == "dead"
    assert client.get(f"/console/subscriptions/{sub['id']}").status_code == 404
    twice = client.post(f"/console/subscriptions/{sub['id']}/delete", data={"csrf_token": token})
    assert twice.status_code == 404
    # A test sent from a page shown before the delete says so where its answer would be.
    late = client.post(
        f"/console/subscriptions/{sub['id']}/test",
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
    )
    assert late.status_code == 200 and 'id="test-result"' in late.text
    assert "deleted meanwhile: no test event was sent" in late.text
    # An unknown `done` says nothing.
    assert 'data-testid="deleted"' not in client.get("/console/subscriptions?done=x").text


def test_missing_events_are_sent_from_the_subscriptions_page(client: TestClient) -> None:
    key = tenant(client, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    for name in ("a", "b"):
        client.post("/v1/leads", json={"fields": {"name": name}}, headers=auth)
    sub = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]},
        headers=auth,
    ).json()
    token = sign_in(client, key)
    page = f"/console/subscriptions/{sub['id']}"
    assert f'action="{page}/replay-missing"' in client.get(page).text
    refused = client.post(f"{page}/replay-missing", data={"csrf_token": token, "since": ""})
    assert refused.status_code == 422 and "choose the time" in refused.text
    sent = client.post(
        f"{page}/replay-missing", data={"csrf_token": token, "since": "2000-01-01T00:00"}
    )
    assert sent.status_code == 303 and sent.headers["location"] == f"{page}?done=missing&n=2"
    shown = client.get(sent.headers["location"]).text
    assert "Missing events queued" in shown and 'data-testid="replayed">2<' in shown
    assert (
        len(client.get(f"/v1/subscriptions/{sub['id']}/deliveries", headers=auth).json()["data"])
        == 2
    )
    again = client.post(
        f"{page}/replay-missing", data={"csrf_token": token, "since": "2000-01-01T00:00"}
    )
    assert again.headers["location"] == f"{page}?done=missing&n=0"


def one_delivery(
    client: TestClient, url: str
) -> tuple[str, dict[str, str], dict[str, Any], dict[str, Any]]:
    """A tenant's key and header, a subscription to `url` and the delivery of one lead."""
    key = tenant(client, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    sub = client.post(
        "/v1/subscriptions", json={"url": url, "event_types": ["*"]}, headers=auth
    ).json()
    client.post("/v1/leads", json={"fields": {"name": "张三"}}, headers=auth)
    (delivery,) = client.get("/v1/deliveries", headers=auth).json()["data"]
    return key, auth, sub, delivery


def test_a_deleted_subscriptions_delivery_offers_no_retry(client: TestClient) -> None:
    key, auth, sub, delivery = one_delivery(client, "http://127.0.0.1:9/gone")
    token = sign_in(client, key)
    assert client.delete(f"/v1/subscriptions/{sub['id']}", headers=auth).status_code == 204
    page = client.get(f"/console/deliveries/{delivery['id']}")
    assert page.status_code == 200
    assert 'data-testid="no-retry"' in page.text and "/retry" not in page.text
    assert f'href="/console/subscriptions/{sub["id"]}"' not in page.text  # it would be a 404
    refused = client.post(f"/console/deliveries/{delivery['id']}/retry", data={"csrf_token": token})
    assert refused.status_code == 409 and "was deleted" in refused.text
    # Said once, by the page, where its Retry button was (not the service's words above it).
    assert refused.text.count('data-testid="no-retry"') == 1
    assert 'class="flash err"' not in refused.text


def test_an_action_opened_as_a_page_is_405_and_an_unknown_page_404(client: TestClient) -> None:
    key = tenant(client, "acme")
    sign_in(client, key)
    for path in (
        "/console/logout",
        "/console/lang",
        "/console/subscriptions/sub_x/rotate-secret",
        "/console/subscriptions/sub_x/reveal-secret",
        "/console/subscriptions/sub_x/delete",
        "/console/subscriptions/sub_x/replay-missing",
        "/console/deliveries/dlv_x/retry",
    ):
        resp = client.get(path)
        assert resp.status_code == 405, path
        assert resp.headers["allow"] == "POST"
        assert "is an action, not a page" in resp.text and "Not a page" in resp.text
    assert client.get("/console/leads").status_code == 200  # still signed in: nothing ran
    # A page posted to is a 405 naming how it is read, not a 404 "no page".
    for path in ("/console/leads", "/console/events", "/console/deliveries/dlv_x"):
        resp = client.post(path)
        assert resp.status_code == 405, path
        assert resp.headers["allow"] == "GET, HEAD"
        assert "is a page" in resp.text
    for method in ("GET", "POST"):
        unknown = client.request(method, "/console/no-such-page")
        assert unknown.status_code == 404 and "the console has no page" in unknown.text


def test_the_timeline_names_a_member_operator_with_their_id(client: TestClient) -> None:
    key = tenant(client, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    member = {"name": "王芳", "omni_user_uuid": "u-wang", "operator_id": 77}
    assert client.put("/v1/catalog/members/wang_fang", json=member, headers=auth).is_success
    operator = {"operator_type": 1, "operator_id": 77}
    made = client.post(
        "/v1/leads", json={"fields": {"name": "张三"}, "operator": operator}, headers=auth
    ).json()["lead"]
    sign_in(client, key)
    page = client.get(f"/console/leads/{made['id']}").text
    # Two members may share a name: the id tells them apart.
    assert re.search(r'王芳\s*<span data-testid="operator-id">#77</span>', page)


def test_a_deleted_subscriptions_deliveries_stay_filtered_by_it(client: TestClient) -> None:
    key = tenant(client, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    gone, kept = (
        client.post(
            "/v1/subscriptions",
            json={"url": f"http://127.0.0.1:9/{name}", "event_types": ["*"]},
            headers=auth,
        ).json()
        for name in ("gone", "kept")
    )
    client.post("/v1/leads", json={"fields": {"name": "张三"}}, headers=auth)
    assert client.delete(f"/v1/subscriptions/{gone['id']}", headers=auth).status_code == 204
    sign_in(client, key)
    page = client.get(f"/console/deliveries?subscription={gone['id']}&status=dead").text
    # The filter shows (and keeps, for the next Filter) the deleted subscription it is on,
    # by what named it (its URL here: it has no description), not by a raw id.
    gone_url = "http://127.0.0.1:9/gone"
    assert f'<option value="{gone["id"]}" selected>{gone_url} (deleted)</option>' in page
    assert f"{gone_url}</a>" not in page and f"<td>{gone_url} (deleted)</td>" in page
    assert f'href="/console/subscriptions/{gone["id"]}"' not in page  # it would be a 404
    assert (
        page.count('data-delivery="') == 1
        and f'href="/console/subscriptions/{kept["id"]}"' not in page
    )
    (dead,) = client.get(f"/v1/deliveries?subscription_id={gone['id']}", headers=auth).json()[
        "data"
    ]
    assert (
        f"{gone_url} <code>{gone['id']}</code> (deleted)"
        in client.get(f"/console/deliveries/{dead['id']}").text
    )
    # An id that names no subscription of this tenant is said to be none, not "deleted".
    other = client.get("/console/deliveries?subscription=bogus").text
    assert '<option value="bogus" selected>bogus (no such subscription)</option>' in other


def test_a_page_past_the_end_says_so_and_time_boxes_name_their_zone(client: TestClient) -> None:
    sign_in(client, tenant(client, "acme"))
    # An empty list says it is empty; a page beyond the last one says that instead, and still
    # offers the way back.
    assert "Nothing here yet." in client.get("/console/leads").text
    past = client.get("/console/leads?p=7")
    assert past.status_code == 200 and "this page is past the end" in past.text
    assert "Nothing here yet." not in past.text and "Previous page" in past.text
    for path in ("/console/deliveries", "/console/events"):
        assert "Nothing here yet." in client.get(path).text
        beyond = client.get(path + "?before=1")
        assert "this page is past the end" in beyond.text and "First page" in beyond.text
        # A digit that is not 0–9 ("²" is one to `str.isdigit`) was a 500.
        for bad in ("²", "①", "١٢"):
            assert client.get(path, params={"before": bad}).status_code == 422, (path, bad)
    # The datetime-local boxes hold the tenant's local time (Asia/Shanghai by default): their
    # labels name the zone.
    page = client.get("/console/deliveries").text
    for box in ("f-since", "f-until"):
        assert re.search(rf'<label for="{box}">[^<]+<span class="muted">\(Asia/Shanghai\)', page)
    assert 'aria-label="Pages"' in page
    client.cookies.set("leadhook_console_lang", "zh")
    assert 'aria-label="分页"' in client.get("/console/deliveries").text


def test_a_chinese_page_says_why_it_refused_in_chinese_by_the_forms_labels(
    client: TestClient,
) -> None:
    key = tenant(client, "acme")
    token = sign_in(client, key)
    client.cookies.set("leadhook_console_lang", "zh")
    sub = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/zh", "event_types": ["*"]},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    edit = {"csrf_token": token, "url": sub["url"], "event_types": "*", "max_in_flight": "0"}
    refused = client.post(f"/console/subscriptions/{sub['id']}", data=edit)
    assert refused.status_code == 422
    assert "最大并发：必须是 1 到 256 之间的整数" in refused.text and "body." not in refused.text
    bad_url = client.post(
        "/console/subscriptions", data={"csrf_token": token, "url": "ftp://x", "event_types": "*"}
    )
    assert "接收地址：必须是以 http:// 或 https:// 开头的完整地址" in bad_url.text
    replay = client.post(f"/console/subscriptions/{sub['id']}/replay", data={"csrf_token": token})
    assert "起始时间：请选择从哪个时间开始重放" in replay.text
    assert "&#39;yesterday&#39; 不是时间" in client.get("/console/deliveries?since=yesterday").text
    reversed_range = client.get("/console/deliveries?since=2026-03-02T10:00&until=2026-03-01")
    assert "截止时间：必须晚于起始时间" in reversed_range.text
    missing = client.get("/console/subscriptions/nope")
    assert missing.status_code == 404 and "未找到订阅 &#39;nope&#39;" in missing.text
    # Nothing was changed by the refused edit.
    after = client.get(
        f"/v1/subscriptions/{sub['id']}", headers={"Authorization": f"Bearer {key}"}
    ).json()
    assert after["max_in_flight"] == sub["max_in_flight"]
    # The CSRF refusal, an action opened as a page and a disable's reason, in Chinese too.
    forged = client.post(f"/console/subscriptions/{sub['id']}/test", data={"csrf_token": "x"})
    assert forged.status_code == 403 and "没有有效的 CSRF 令牌" in forged.text
    opened = client.get(f"/console/subscriptions/{sub['id']}/test")
    assert opened.status_code == 405 and "是一个操作，不是页面" in opened.text
    client.patch(
        f"/v1/subscriptions/{sub['id']}",
        json={"enabled": False},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert "已通过 API 停用" in client.get(f"/console/subscriptions/{sub['id']}").text


def test_a_lead_page_names_relations_by_the_catalogs_object_names_and_scenes_by_name(
    client: TestClient,
) -> None:
    key = tenant(client, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    account = {"name": "客户", "object_id": "obj-account"}
    assert client.put("/v1/catalog/objects/account", json=account, headers=auth).is_success
    made = client.post("/v1/leads", json={"fields": {"name": "张三"}}, headers=auth).json()
    lead = made["lead"]["id"]
    for kind, entity in (("account", "A-1"), ("project", "P-9")):
        relation = {"target_object_name": kind, "target_entity_id": entity}
        assert client.post(f"/v1/leads/{lead}/relations", json=relation, headers=auth).is_success
    sign_in(client, key)
    page = client.get(f"/console/leads/{lead}").text
    # A kind the catalog names reads by its name; one it does not know, by its key.
    found = re.search(r'<dd data-testid="relations">([^<]*)</dd>', page)
    assert found is not None and found.group(1) == "客户 A-1, project P-9"
    # So does the timeline's relation event; an owner change names its scene.
    assert '<p class="muted" data-detail="relation">Related to: 客户 A-1</p>' in page
    assert client.put("/v1/catalog/members/m1", json={"name": "王芳"}, headers=auth).is_success
    owner = {"owner": "m1", "scene_type": 2}
    assert client.post(f"/v1/leads/{lead}/owner", json=owner, headers=auth).is_success
    page = client.get(f"/console/leads/{lead}").text
    assert '<p class="muted" data-detail="scene_type">Scene: manual allocation (2)</p>' in page
    zh = client.get(f"/console/leads/{lead}", headers={"Accept-Language": "zh-CN"}).text
    assert '<p class="muted" data-detail="scene_type">场景: 手动分配 (2)</p>' in zh


def test_a_signed_in_session_is_held_to_its_keys_request_rate(tmp_path: Any) -> None:
    # The rate limit counted bearer keys only: a console session (a cookie) went unlimited,
    # creating subscriptions, sending test events and opening live views without bound.
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/rate.db",
        admin_token=ADMIN,
        console_secret="s3cret",
        rate_limit=(0.5, 4.0),  # a burst of 4, then one every 2 s
    )
    container = build(settings)
    try:
        with TestClient(create_app(container), follow_redirects=False) as client:
            key = tenant(client, "acme")
            # The sign-in page and its form are not counted (no key yet): the leads page
            # signing in lands on, then three more pages, are the burst of 4.
            sign_in(client, key)
            assert client.get("/console/events").status_code == 200
            assert client.get("/console/leads").status_code == 200
            assert client.get("/console/subscriptions").status_code == 200
            refused = client.get("/console/leads", headers={"Accept-Language": "zh-CN"})
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert "请求过多" in refused.text and "此 API 密钥每秒最多 0.5 个请求" in refused.text
            refused = client.get("/console/deliveries")
            assert refused.status_code == 429 and "Too many requests" in refused.text
            # The API's own budget for the key is another: its calls still go through.
            auth = {"Authorization": f"Bearer {key}"}
            assert client.get("/v1/leads", headers=auth).status_code == 200
    finally:
        container.close()


def test_head_of_the_event_stream_answers_its_head_and_ends(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadhook.api.console import routes

    sign_in(client, tenant(client, "acme"))
    # A stream of a second: before the fix, HEAD ran it whole, polling the log with nobody
    # reading (30 s by default, the connection held until then).
    monkeypatch.setattr(routes, "LIVE_STREAM_SECONDS", 1.0)
    svc = client.app.state.container.console  # type: ignore[attr-defined]
    polls = 0
    events_after = svc.events_after

    def counted(*args: Any) -> Any:
        nonlocal polls
        polls += 1
        return events_after(*args)

    monkeypatch.setattr(svc, "events_after", counted)
    head = client.head("/console/events/stream")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in head.headers  # the stream's GET has none either
    assert polls == 1  # the start's check only: no stream ran
    # GET still streams; signed out, HEAD answers as GET does (a redirect to sign in).
    with client.stream("GET", "/console/events/stream") as live:
        assert live.status_code == 200 and next(live.iter_bytes()).startswith(b"retry:")
    assert polls > 1
    client.cookies.clear()
    out = client.head("/console/events/stream", follow_redirects=False)
    gone = client.get("/console/events/stream", follow_redirects=False)
    assert (out.status_code, out.headers.get("location")) == (
        gone.status_code,
        gone.headers.get("location"),
    )
    assert out.status_code != 200


def test_a_session_that_ended_sends_htmx_and_forms_to_sign_in_and_back_to_their_page(
    client: TestClient,
) -> None:
    from leadhook.api.console.views import safe_next

    # htmx followed a redirect to the sign-in page and swapped its fragment in (a search's
    # results vanished): it is told to load the sign-in form instead, back to its page.
    search = client.get(
        "/console/leads?q=x",
        headers={"HX-Request": "true", "HX-Current-URL": "http://testserver/console/leads?q=x"},
    )
    assert search.status_code == 200
    assert search.headers["hx-redirect"] == "/console/login?next=%2Fconsole%2Fleads%3Fq%3Dx"
    # A page answered to a form posted without JavaScript (a test send) switches language
    # back to the page the form was on, not to its action (a GET of which is a 405).
    key = tenant(client, "acme")
    sub = client.post(
        "/v1/subscriptions",
        json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    token = sign_in(client, key)
    page = f"/console/subscriptions/{sub['id']}"
    posted = client.post(
        f"{page}/test", data={"csrf_token": token}, headers={"Referer": f"http://testserver{page}"}
    )
    assert posted.status_code == 200, posted.text
    assert f'name="next" value="{page}"' in posted.text
    # Signed out in another tab: the page's forms carry the ended session's token. A form
    # (JavaScript or not) goes to sign in and back to its page, not to a CSRF refusal.
    client.post("/console/logout", data={"csrf_token": token})
    for action in ("rotate-secret", "reveal-secret", "disable", "delete"):
        stale = client.post(
            f"{page}/{action}",
            data={"csrf_token": token},
            headers={"Referer": f"http://testserver{page}"},
        )
        assert stale.status_code == 303, (action, stale.text)
        assert stale.headers["location"] == "/console/login?" + urlencode({"next": page})
    htmx = client.post(
        f"{page}/test",
        headers={
            "X-CSRF-Token": token,
            "HX-Request": "true",
            "HX-Current-URL": f"http://testserver{page}",
        },
    )
    assert htmx.headers["hx-redirect"] == "/console/login?" + urlencode({"next": page})
    assert (
        client.get(
            f"/v1/subscriptions/{sub['id']}/secret", headers={"Authorization": f"Bearer {key}"}
        ).json()["secret"]
        == sub["secret"]
    )  # nothing ran
    # Signed in, a wrong token is still refused as such; so is a stale one at sign-in.
    fresh = sign_in(client, key)
    wrong = client.post(f"{page}/rotate-secret", data={"csrf_token": token})
    assert wrong.status_code == 403 and "CSRF" in wrong.text
    assert fresh != token
    client.post("/console/logout", data={"csrf_token": fresh})
    login = client.post("/console/login", data={"api_key": key, "csrf_token": fresh})
    assert login.status_code == 403
    # The sign-in's way back stays inside the console's pages.
    for kept in ("/console", "/console/leads?q=a", "/console/deliveries/d1"):
        assert safe_next(kept) == kept
    for refused in ("/consolex", "/console/../v1/tenants", "/console/%2e%2e/v1", "//evil",
                    "/console\\..\\v1", "https://evil/console/", None, ""):  # fmt: skip
        assert safe_next(refused) == "/console/leads", refused


def test_a_retry_for_a_disabled_subscription_says_it_waits(client: TestClient) -> None:
    key, auth, sub, delivery = one_delivery(client, "http://127.0.0.1:9/x")
    client.post(f"/v1/deliveries/{delivery['id']}/retry", headers=auth)  # 409: pending
    with client.app.state.container.engine.begin() as conn:  # type: ignore[attr-defined]
        from sqlalchemy import text

        conn.execute(text("UPDATE deliveries SET status = 'dead'"))
    client.patch(f"/v1/subscriptions/{sub['id']}", json={"enabled": False}, headers=auth)
    token = sign_in(client, key)
    page = client.get(f"/console/deliveries/{delivery['id']}")
    assert "Its subscription is disabled" in page.text
    done = client.post(f"/console/deliveries/{delivery['id']}/retry", data={"csrf_token": token})
    assert done.status_code == 303
    shown = client.get(done.headers["location"])
    assert "it will be sent once its subscription is enabled again" in shown.text, shown.text
    assert "it will be sent in a moment" not in shown.text


def test_an_empty_filtered_list_says_the_filters_match_nothing(client: TestClient) -> None:
    sign_in(client, tenant(client, "acme"))
    assert "Nothing here yet." in client.get("/console/leads").text
    assert "No lead matches this search." in client.get("/console/leads?q=nobody").text
    assert "Nothing matches these filters." in client.get("/console/deliveries?status=dead").text
    assert "Nothing matches these filters." in client.get("/console/events?lead=x").text
