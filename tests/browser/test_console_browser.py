"""The console in a real browser: sign-in, leads and timelines, live events, subscriptions,
a failing delivery retried after its receiver recovers, replay, tenant isolation and CSRF."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from console_support import ConsoleLog, Server, Tenant, screenshot
from delivery_support import Receiver
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


def sign_in(page: Any, server: Server, tenant: Tenant, next_path: str = "") -> None:
    page.goto(server.url + "/console" + next_path)
    page.get_by_label("Tenant API key").fill(tenant.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/(?!login)"))


def until(check: Any, page: Any, what: str, timeout: float = 15.0) -> None:
    """Reload the page until `check()` holds (the dispatcher works in the background)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
        page.reload()


def test_sign_in_with_a_key_then_sign_out(
    page: Any, server: Server, acme: Tenant, tmp_path: Path
) -> None:
    resp = page.goto(server.url + "/console")
    assert page.url.endswith("/console/login")
    assert resp.ok
    cookie = next(c for c in page.context.cookies() if c["name"] == "leadhook_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    screenshot(page, "login", tmp_path)

    page.get_by_label("Tenant API key").fill("lh_not-a-key")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").get_by_text("Unknown or revoked API key.").wait_for()

    page.get_by_label("Tenant API key").fill(acme.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/leads")
    assert page.get_by_role("heading", name="Leads").is_visible()
    assert page.locator(".tenant").inner_text() == "acme"

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto(server.url + "/console/leads")
    assert "/console/login" in page.url  # signed out for real


def test_a_leads_timeline_shows_before_and_after_in_catalog_labels(
    page: Any, server: Server, acme: Tenant, tmp_path: Path
) -> None:
    lead = acme.lead("赵拥晨", "13800138000")
    acme.lead("李四", "13900139000")
    operator = {"operator_type": 2, "operator_id": 3021, "login_platform": "crm"}
    acme.call(
        "POST",
        f"/v1/leads/{lead}/owner",
        json={"owner": "wang_fang", "scene_type": 3, "operator": operator},
    )
    acme.call("POST", f"/v1/leads/{lead}/status", json={"leads_status": "contacted"})
    acme.call(
        "POST", f"/v1/leads/{lead}/notes", json={"notes": "Wants a trial", "is_follow_up": True}
    )
    sign_in(page, server, acme)

    page.get_by_label("Search").fill("1380013")
    page.wait_for_url(re.compile(r"q=1380013"))
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(1)  # typed: htmx searched as the text came
    assert "王芳" in rows.first.inner_text() and "已联系" in rows.first.inner_text()
    screenshot(page, "leads", tmp_path)

    rows.first.get_by_role("link", name="赵拥晨").click()
    page.wait_for_url(f"**/console/leads/{lead}")
    status = page.locator(
        '.entry[data-event-type="object_update_status"] tr[data-field="leads_status"]'
    )
    assert status.locator("th").inner_text() == "线索状态"  # the catalog's label of the field
    assert status.locator(".before .value").inner_text() == "-"
    assert status.locator(".after .value").inner_text() == "已联系"
    assert status.inner_text().split() == ["线索状态", "before:", "-", "→", "after:", "已联系"]
    owner = page.locator('.entry[data-event-type="object_change_owner"]')
    assert "王芳" in owner.locator('tr[data-field="owner"] .after .value').inner_text()
    assert "member #3021" in owner.locator(".who").inner_text()
    assert "crm" in owner.locator(".who").inner_text()
    note = page.locator('.entry[data-event-type="object_add_notes"]')
    assert note.locator(".badge.follow").inner_text() == "Follow-up"
    assert "Wants a trial" in note.inner_text()
    screenshot(page, "lead", tmp_path)

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "lead-phone", tmp_path)


def test_keyboard_reaches_the_content_and_the_navigation(
    page: Any, server: Server, acme: Tenant
) -> None:
    sign_in(page, server, acme)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # past the brand, to the first navigation link
    assert page.evaluate("document.activeElement.textContent") == "Leads"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/events")


def test_an_event_arrives_live(page: Any, server: Server, acme: Tenant, tmp_path: Path) -> None:
    sign_in(page, server, acme, "/events")
    page.goto(server.url + "/console/events")
    page.locator("#live-state").get_by_text("connected").wait_for()
    assert not page.get_by_test_id("live-needs-js").is_visible()
    lead = acme.lead("王五", "13700137000")
    live = page.locator(f'#live-events [data-event-id] a[href="/console/leads/{lead}"]')
    live.wait_for(timeout=10_000)
    item = page.locator("#live-events li").first
    assert "Lead created" in item.inner_text()
    live_time = item.locator("time").inner_text()  # when it happened, in the tenant's zone
    item.locator("summary").click()
    assert '"event_type": "object_create"' in item.locator("pre").inner_text()
    screenshot(page, "events", tmp_path)

    page.goto(server.url + f"/console/events?lead={lead}")
    page.locator("#live-state").get_by_text("connected").wait_for()
    logged = page.locator("ol.events").nth(1).locator("li")
    assert logged.count() == 1
    assert logged.first.locator("time").inner_text() == live_time  # as the log says it
    logged.first.locator("summary").click()  # its JSON, pretty-printed
    assert '\n  "mid": "acme"' in logged.first.locator("pre").inner_text()


def test_a_failed_delivery_is_retried_after_the_receiver_recovers_then_replayed(
    page: Any, server: Server, acme: Tenant, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.behaviour = lambda r, n: (500, {}, 0.0)
    sign_in(page, server, acme, "/subscriptions")
    page.goto(server.url + "/console/subscriptions")
    page.get_by_label("Endpoint URL").fill(receiver.url("/crm"))
    page.get_by_label("Description").fill("CRM sync")
    page.get_by_role("button", name="Create").click()
    secret = page.get_by_test_id("secret").inner_text()
    assert secret.startswith("whsec_")
    receiver.secrets.append(secret)
    sub_id = page.locator("p.meta code").inner_text()
    # Reloadable, no resend; and a reload says the secret was shown once (it said nothing when
    # the script took `done=created` off the address).
    assert page.url == server.url + f"/console/subscriptions/{sub_id}?done=created"
    page.reload()
    expect(page.get_by_test_id("secret-gone")).to_be_visible()
    assert page.get_by_test_id("secret").count() == 0

    page.get_by_role("button", name="Send a test event").click()
    assert "HTTP 500" in page.get_by_test_id("test-result").inner_text()

    lead = acme.lead("钱七", "13600136000")
    page.goto(server.url + f"/console/deliveries?subscription={sub_id}&lead={lead}")
    failed = page.locator('tr[data-status="failed"]')
    until(lambda: failed.count() == 1, page, "the delivery to fail")
    failed.get_by_role("link", name="Open").click()
    page.wait_for_url("**/console/deliveries/*")
    attempt = page.locator("article.attempt").first
    assert attempt.locator(".status-code").inner_text() == "HTTP 500"
    assert attempt.locator("pre.response").inner_text() == "answer 500"
    attempt.locator("summary").click()
    assert "webhook-timestamp" in attempt.locator("table.headers").inner_text()

    receiver.behaviour = lambda r, n: (200, {}, 0.0)  # the receiver recovers
    page.get_by_role("button", name="Retry now").click()
    page.get_by_role("status").get_by_text("Queued again").wait_for()
    status = page.get_by_test_id("delivery-status")
    until(lambda: status.inner_text() == "delivered", page, "the retry to be delivered")
    assert page.locator("article.attempt").count() == 2
    # The retry started a new count, as the list and the API's attempt_count say; every
    # attempt made is counted apart (one label showed both numbers).
    page.reload()
    assert page.get_by_test_id("attempt-count").inner_text() == "1"
    assert page.get_by_test_id("attempts-all").inner_text() == "2"
    screenshot(page, "delivery", tmp_path)
    page.goto(server.url + f"/console/deliveries?subscription={sub_id}")
    screenshot(page, "deliveries", tmp_path)
    # On a phone the table scrolls inside its box, and nothing else does (each row's hidden
    # link text once escaped the box and widened the page to 1,013 px).
    page.set_viewport_size({"width": 375, "height": 740})
    for path in ("/console/deliveries", "/console/events", f"/console/subscriptions/{sub_id}"):
        page.goto(server.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
    page.set_viewport_size({"width": 1280, "height": 860})
    event_id = acme.call("GET", f"/v1/events?entity_id={lead}").json()["data"][0]["event_id"]
    assert sum(r.msg_id == event_id for r in receiver.acked()) == 1

    page.goto(server.url + f"/console/subscriptions/{sub_id}")
    zone = ZoneInfo("Asia/Shanghai")  # the tenant's timezone: the form's times are in it
    since = (datetime.now(zone) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_role("form", name="Replay").get_by_label("Since").fill(since)
    # The form offers the dead ones by default: a delivered one is replayed by choosing it.
    assert page.locator("#replay-status").input_value() == "dead"
    page.locator("#replay-status").select_option("delivered")
    page.get_by_role("button", name="Replay", exact=True).click()
    assert int(page.get_by_test_id("replayed").inner_text()) >= 1
    deadline = time.monotonic() + 15
    while sum(r.msg_id == event_id for r in receiver.acked()) < 2:
        assert time.monotonic() < deadline, "the replayed delivery did not arrive"
        time.sleep(0.05)
    assert all(r.verified_with == [secret] for r in receiver.acked() if r.msg_id == event_id)
    # The tenant's events of those ten minutes this subscription never got (other tests'
    # leads, logged before it existed) are queued once: a second send finds none missing.
    for _ in range(2):
        page.get_by_role("form", name="Events it never got").get_by_label("Since").fill(since)
        page.get_by_role("button", name="Send missing events").click()
        queued = int(page.get_by_test_id("replayed").inner_text())
    assert queued == 0
    page.reload()
    assert page.locator('dd[data-stat="success"]').inner_text() != "-"
    screenshot(page, "subscription", tmp_path)
    page.goto(server.url + "/console/subscriptions")
    assert page.locator(f'tr[data-subscription="{sub_id}"]').is_visible()
    page.locator("#charts canvas").first.wait_for()
    screenshot(page, "subscriptions", tmp_path)


def test_another_tenants_ids_answer_404(
    page: Any,
    server: Server,
    acme: Tenant,
    other: Tenant,
    receiver: Receiver,
    console_log: ConsoleLog,
) -> None:
    console_log.http_errors_expected = True
    sub = other.call(
        "POST", "/v1/subscriptions", json={"url": receiver.url("/other"), "event_types": ["*"]}
    ).json()
    lead = other.lead("外人", "13500135000")
    deliveries = other.call("GET", f"/v1/subscriptions/{sub['id']}/deliveries").json()["data"]
    sign_in(page, server, acme)
    for path in (
        f"/console/leads/{lead}",
        f"/console/subscriptions/{sub['id']}",
        f"/console/deliveries/{deliveries[0]['id']}",
    ):
        resp = page.goto(server.url + path)
        assert resp.status == 404, path
        assert page.get_by_role("heading", name="Not found").is_visible()
    listing = page.goto(server.url + f"/console/deliveries?subscription={sub['id']}")
    assert listing.status == 200 and page.locator("tbody tr").count() == 0
    csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    retry = page.request.post(
        server.url + f"/console/deliveries/{deliveries[0]['id']}/retry",
        form={"csrf_token": csrf},
        max_redirects=0,
    )
    assert retry.status == 404


def test_a_form_without_its_csrf_token_is_refused(
    page: Any, server: Server, acme: Tenant, receiver: Receiver, console_log: ConsoleLog
) -> None:
    console_log.http_errors_expected = True
    sub = acme.call(
        "POST", "/v1/subscriptions", json={"url": receiver.url("/csrf"), "event_types": ["*"]}
    ).json()
    sign_in(page, server, acme)
    page.goto(server.url + f"/console/subscriptions/{sub['id']}")
    form = page.locator(f'form[action="/console/subscriptions/{sub["id"]}/disable"]')
    form.locator('input[name="csrf_token"]').evaluate("input => input.remove()")
    with page.expect_response(re.compile(r"/disable$")) as answer:
        form.get_by_role("button", name="Disable").click()
    assert answer.value.status == 403
    assert page.get_by_role("heading", name="Refused").is_visible()
    assert acme.call("GET", f"/v1/subscriptions/{sub['id']}").json()["enabled"] is True
    # A token of another session is no better than none.
    forged = page.request.post(
        server.url + f"/console/subscriptions/{sub['id']}/disable",
        form={"csrf_token": "x" * 43},
        max_redirects=0,
    )
    assert forged.status == 403
    assert acme.call("GET", f"/v1/subscriptions/{sub['id']}").json()["enabled"] is True


def test_the_language_follows_the_browser_and_the_switch(
    browser: Any, server: Server, acme: Tenant, console_log: ConsoleLog, tmp_path: Path
) -> None:
    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    page.on("console", console_log.on_console)
    try:
        page.goto(server.url + "/console/login")
        assert page.get_by_role("heading", name="登录").is_visible()
        page.get_by_label("租户 API 密钥").fill(acme.key)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url("**/console/leads")
        assert page.get_by_role("link", name="订阅").is_visible()
        screenshot(page, "leads-zh", tmp_path)
        # A search typed since the page loaded is part of where the switch returns to.
        page.locator("#q").fill("张")
        page.wait_for_url("**/console/leads?q=*")
        page.get_by_role("button", name="EN").click()
        page.wait_for_url("**/console/leads?q=*")
        assert page.locator("#q").input_value() == "张"
        assert page.get_by_role("link", name="Subscriptions").is_visible()
        assert page.locator("html").get_attribute("lang") == "en"
    finally:
        context.close()
    assert console_log.errors == []


def test_with_javascript_off_reloading_after_a_form_repeats_nothing(
    browser: Any, server: Server, acme: Tenant
) -> None:
    # Without JavaScript nothing rewrites the address after a form: reloading the page that
    # answered a POST sent that POST again (a second subscription, a second rotation).
    context = browser.new_context(locale="en-US", java_script_enabled=False)
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        before = {s["id"] for s in acme.call("GET", "/v1/subscriptions").json()["data"]}
        sign_in(page, server, acme, "/subscriptions")
        page.get_by_label("Endpoint URL").fill("http://127.0.0.1:9/no-js")
        page.get_by_role("button", name="Create").click()
        created = page.get_by_test_id("secret").inner_text()
        assert created.startswith("whsec_")
        page.reload()
        expect(page.get_by_test_id("secret-gone")).to_be_visible()
        assert page.get_by_test_id("secret").count() == 0
        after = [s for s in acme.call("GET", "/v1/subscriptions").json()["data"]]
        (sub,) = [s for s in after if s["id"] not in before]
        # A rotation is a step to confirm (it ends the receivers' secret 24 h later).
        assert not page.get_by_role("button", name="Rotate secret").is_visible()
        page.get_by_text("Rotate secret…").click()
        page.get_by_role("button", name="Rotate secret").click()
        rotated = page.get_by_test_id("secret").inner_text()
        # Under way now: the page says a second rotation would end the previous secret.
        expect(page.get_by_test_id("rotating")).to_be_attached()
        assert rotated.startswith("whsec_") and rotated != created
        page.reload()
        page.reload()
        assert page.get_by_test_id("secret").count() == 0
        current = acme.call("GET", f"/v1/subscriptions/{sub['id']}/secret").json()["secret"]
        assert current == rotated  # one rotation, however often the page was reloaded
        # The secret shown again on request, then the subscription deleted: both are forms.
        page.get_by_role("button", name="Reveal secret").click()
        assert page.get_by_test_id("secret").inner_text() == rotated
        page.get_by_text("Delete subscription…").click()
        page.get_by_role("button", name="Delete it for good").click()
        expect(page.get_by_test_id("deleted")).to_be_visible()
        page.get_by_role("link", name="See its deliveries").click()
        expect(page.get_by_label("Subscription")).to_be_visible()
        left = acme.call("GET", "/v1/subscriptions").json()["data"]
        assert sub["id"] not in {s["id"] for s in left}
        # The live view cannot run: the page says so, rather than wait for events forever.
        page.goto(server.url + "/console/events")
        expect(page.get_by_test_id("live-needs-js")).to_be_visible()
    finally:
        context.close()


def test_the_live_view_ends_with_its_session(page: Any, server: Server) -> None:
    import httpx
    from console_support import ADMIN, make_tenant

    tenant = make_tenant(server, "livegone")
    admin = {"Authorization": f"Bearer {ADMIN}"}
    keys = server.url + "/v1/tenants/livegone/keys"
    (console_key,) = httpx.get(keys, headers=admin, timeout=10).json()["data"]
    writer = Tenant(
        "livegone", httpx.post(keys, headers=admin, timeout=10).json()["api_key"], server
    )
    # Signed out in another tab: the live view stops and its page goes to sign in.
    sign_in(page, server, tenant, "/events")
    page.goto(server.url + "/console/events")
    page.locator("#live-state").get_by_text("connected").wait_for()
    other = page.context.new_page()
    other.goto(server.url + "/console/leads")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url("**/console/login")
    writer.lead("赵六", "13600136000")
    page.wait_for_url("**/console/login**", timeout=10_000)
    assert page.locator("#live-events").count() == 0
    other.close()
    # The key revoked while the live view is open: the same, within a couple of seconds.
    sign_in(page, server, tenant, "/events")
    page.goto(server.url + "/console/events")
    page.locator("#live-state").get_by_text("connected").wait_for()
    assert httpx.delete(f"{keys}/{console_key['id']}", headers=admin, timeout=10).is_success
    writer.lead("钱七", "13500135000")
    page.wait_for_url("**/console/login**", timeout=10_000)


def test_a_long_value_without_spaces_wraps_instead_of_widening_the_page(
    page: Any, server: Server, acme: Tenant
) -> None:
    long = "http://127.0.0.1:9/" + "x" * 500  # nothing listens there
    lead = acme.lead("长" * 3 + "y" * 300, "13400134000")
    acme.call("POST", f"/v1/leads/{lead}/notes", json={"notes": long})
    acme.call("POST", "/v1/subscriptions", json={"url": long, "event_types": ["*"]})
    sign_in(page, server, acme, "/leads")
    for width in (1280, 375):
        page.set_viewport_size({"width": width, "height": 800})
        for path in (f"/console/leads/{lead}", "/console/subscriptions"):
            page.goto(server.url + path)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width + 1, (path, width, wide)


def test_a_chinese_page_names_times_in_chinese_on_a_24_hour_clock_in_the_tenants_zone(
    browser: Any, server: Server, acme: Tenant, console_log: ConsoleLog
) -> None:
    sub = acme.call(
        "POST", "/v1/subscriptions", json={"url": "http://127.0.0.1:9/zh", "event_types": ["*"]}
    ).json()
    context = browser.new_context(locale="zh-CN", timezone_id="America/New_York")
    page = context.new_page()
    page.on("console", console_log.on_console)
    try:
        page.goto(server.url + "/console/login")
        page.get_by_label("租户 API 密钥").fill(acme.key)
        page.get_by_role("button", name="登录").click()
        page.wait_for_url("**/console/leads")
        assert page.get_by_role("navigation", name="分页").count() == 1
        page.goto(server.url + f"/console/subscriptions/{sub['id']}")
        # The replay boxes' times are the tenant's, and say so.
        assert page.get_by_label("起始时间").count() == 2  # replay, and the missing events'
        for box in ("replay-since", "missing-since"):
            assert "(Asia/Shanghai)" in page.locator(f'label[for="{box}"]').inner_text()
        canvas = page.locator("#charts canvas").first
        canvas.wait_for()
        legend = page.locator("#charts .u-legend").first
        assert "时间" in legend.inner_text() and "Time" not in legend.inner_text()
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] / 2)
        shown = legend.locator("tr").first.inner_text()
        stamp = re.search(r"(\d{4})/(\d{2})/(\d{2}) (\d{2}):(\d{2})", shown)
        assert stamp is not None, shown  # zh-CN, 24-hour: not uPlot's "12/6 10am"
        at = datetime(*(int(x) for x in stamp.groups()), tzinfo=ZoneInfo("Asia/Shanghai"))
        # The chart covers the last hour, read in Shanghai's time, not the browser's New York.
        assert abs((datetime.now(ZoneInfo("Asia/Shanghai")) - at).total_seconds()) < 2 * 3600
    finally:
        context.close()
    assert console_log.errors == []


# How many lines an element's text takes on the page.
LINES = """el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;
}"""


def test_table_cells_and_change_labels_keep_their_words_whole(
    page: Any, server: Server, acme: Tenant
) -> None:
    # Every table cell broke anywhere (`overflow-wrap: anywhere`): a cell's narrowest width
    # was one character, so at 1,280 px mobile numbers and statuses wrapped mid-word, badges
    # read "pendi / ng", and a long value stacked a change's label one character a line.
    number = f"139{time.time_ns() // 1000 % 10**8:08d}"  # this test's own: the tenant is shared
    lead = acme.lead("欧阳娜娜", number)
    acme.call("PATCH", f"/v1/leads/{lead}", json={"fields": {"name": "长" * 600}})
    sign_in(page, server, acme, "/leads")
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto(server.url + "/console/leads")
    mobile = page.locator("td", has_text=number)
    assert mobile.evaluate(LINES) == 1
    page.goto(server.url + f"/console/leads/{lead}")
    for label in page.locator("table.changes th").all():
        assert label.evaluate(LINES) == 1, label.inner_text()
    # On a phone a wide table scrolls inside its box: its words stay whole, the page does not
    # widen.
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(server.url + "/console/leads")
    assert mobile.evaluate(LINES) == 1
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0
    page.goto(server.url + f"/console/leads/{lead}")
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 0


def test_a_search_or_a_test_send_after_the_session_ended_goes_to_sign_in(
    page: Any, server: Server, console_log: ConsoleLog
) -> None:
    from console_support import make_tenant

    # Signed out in another tab, then typing in the search box: htmx followed the redirect and
    # swapped the sign-in page's (absent) results in, so the table vanished and nothing said
    # why (a review). The page now goes to the sign-in form, and back to the search after it.
    tenant = make_tenant(server, "searchgone")
    tenant.lead("孙八", "13400134000")
    sign_in(page, server, tenant, "/leads")
    other = page.context.new_page()
    other.goto(server.url + "/console/leads")
    other.get_by_role("button", name="Sign out").click()
    other.wait_for_url("**/console/login")
    page.locator("#q").fill("孙")
    page.wait_for_url("**/console/login?next=%2Fconsole%2Fleads**", timeout=10_000)
    page.get_by_label("Tenant API key").fill(tenant.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/leads"))
    # A test send to a subscription deleted meanwhile: said where the result goes, not
    # swallowed (an earlier result stayed as if it were the new one), nor as "the request
    # failed: reload the page" (a reload is a 404).
    sub = tenant.call(
        "POST", "/v1/subscriptions", json={"url": "http://127.0.0.1:9/x", "event_types": ["*"]}
    ).json()
    page.goto(server.url + f"/console/subscriptions/{sub['id']}")
    tenant.call("DELETE", f"/v1/subscriptions/{sub['id']}")
    page.get_by_role("button", name="Send a test event").click()
    page.locator("#test-result").get_by_text("deleted meanwhile").wait_for()
    other.close()
