"""The console's pure parts: health and charts, the timeline's text, sessions, language choice."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from leadhook.adapters.http.sender import check_name_now
from leadhook.api.console.i18n import STRINGS, explain, message, pick, translator
from leadhook.api.console.session import (
    MAX_AGE,
    REVEAL_SECONDS,
    Session,
    SessionSigner,
    csrf_ok,
)
from leadhook.domain.attempts import TURNED_AWAY
from leadhook.domain.catalog import Catalog, Entry, Member
from leadhook.domain.errors import NotFoundError, ValidationError
from leadhook.domain.events import EVENT_TYPES
from leadhook.domain.targets import TargetError, validate_url
from leadhook.services.console import (
    AttemptSample,
    chart_series,
    health_of,
    percentile,
    request_headers,
    timeline_entry,
)
from leadhook.services.ports import Subscription

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
NOW = 1_700_000_000.0


def sample(
    at: float, code: int | None, latency: float = 10.0, error: str | None = None
) -> AttemptSample:
    return AttemptSample("s1", at, code, latency, error)


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7.0 and percentile([], 0.5) is None


def test_health_counts_successes_and_names_the_newest_failure() -> None:
    h = health_of(
        [
            sample(NOW - 30, 200, 5),
            sample(NOW - 20, 500, 50),
            sample(NOW - 10, None, 9, "timeout"),
            sample(NOW - 5, 204, 7),
        ]
    )
    assert (h.attempts, h.successes, h.success_rate) == (4, 2, 0.5)
    assert h.last_error == "timeout" and h.last_error_at == NOW - 10
    assert h.p50_ms == 7 and h.p99_ms == 50
    assert h.per_second == 4 / 3600
    empty = health_of([])
    assert empty.success_rate is None and empty.last_error is None and empty.per_second == 0


def test_health_times_only_attempts_that_went_out() -> None:
    # A turned-away attempt (the circuit open) is a failure of the delivery but took no time
    # at the endpoint: its 0 ms made a never-answering endpoint's p50 read 0.0 ms (a review).
    turned = [sample(NOW - i, None, 0.0, TURNED_AWAY) for i in range(1, 9)]
    h = health_of([*turned, sample(NOW - 20, None, 10_000.0, "timeout")])
    assert (h.attempts, h.successes) == (9, 0)
    assert h.p50_ms == 10_000.0 and h.p99_ms == 10_000.0
    assert health_of(turned).p50_ms is None
    # The last error is the endpoint's own (the timeout), not the circuit's turning away.
    assert h.last_error == "timeout" and h.last_error_at == NOW - 20
    assert health_of(turned).last_error == TURNED_AWAY  # nothing else to say


def test_an_attempt_turned_away_shows_no_request_headers() -> None:
    from types import SimpleNamespace

    delivery: Any = SimpleNamespace(event_id="E1")
    sent: Any = SimpleNamespace(attempted_at=NOW, error="timeout")
    turned: Any = SimpleNamespace(attempted_at=NOW, error=TURNED_AWAY)
    assert dict(request_headers(delivery, sent, b"{}"))["webhook-id"] == "E1"
    assert request_headers(delivery, turned, b"{}") == ()  # nothing went out


def test_the_chart_buckets_rate_and_failure_share_per_minute() -> None:
    sub = Subscription("s1", "m", "http://x", ("*",), "", True, "whsec_x", 16, None, 0, 0)
    now = 3600 * 1000 + 30.0  # half a minute into a bucket
    series = chart_series(
        sub, [sample(now - 1, 200), sample(now - 2, 500), sample(now - 3600 * 2, 500)], now
    )
    assert len(series.times) == 60 and series.times[-1] == 3600 * 1000
    assert series.rate[-1] == round(2 / 60, 3) and series.failure_pct[-1] == 50.0
    assert series.failure_pct[0] is None and series.rate[0] == 0  # no attempts, no share
    assert series.label == "http://x"


def test_a_timeline_entry_has_labels_before_after_operator_and_follow_up() -> None:
    catalog = Catalog.default("941", "WNh7rwLXUQPFwACQ6EKPqD")
    status = timeline_entry(catalog, (GOLDEN / "object_update_status.json").read_text())
    (change,) = status.changes
    assert (change.code, change.label, change.before, change.after) == (
        "leads_status",
        "线索状态",
        "-",
        "跟进中",
    )
    assert status.operator_type == 1 and status.operator_id == 17
    assert status.origin == "jingsocial · pc"
    assert status.time == "2023-02-21 17:50:53"  # the tenant's timezone (Asia/Shanghai)
    notes = json.loads((GOLDEN / "object_add_notes.json").read_text())
    assert timeline_entry(catalog, json.dumps(notes)).follow_up == (
        notes["extra_data"]["is_follow_up"] == 1
    )
    created = timeline_entry(catalog, (GOLDEN / "object_create.json").read_text())
    assert created.changes and all(c.before == "-" for c in created.changes)


def test_the_operator_is_named_when_the_catalog_knows_the_person() -> None:
    base = Catalog.default("941", "bt")
    catalog = Catalog(
        **{
            **base.__dict__,
            "members": {"wang": Member("wang", "王芳", "7wJy")},
            "lead_statuses": {"c": Entry("c", "已联系")},
        }
    )
    event = json.loads((GOLDEN / "object_update_status.json").read_text())
    event["extra_data"]["omni_user_uuid"] = "7wJy"
    assert timeline_entry(catalog, json.dumps(event)).operator_name == "王芳"


def test_sessions_are_signed_expire_and_refuse_tampering() -> None:
    signer = SessionSigner("secret")
    session = Session.new(NOW).signed_in("acme", "k1", NOW)
    value = signer.dumps(session)
    assert signer.loads(value, NOW + 60) == session
    assert signer.loads(value, NOW + MAX_AGE + 1) is None
    assert SessionSigner("another").loads(value, NOW) is None
    _, mac = value.split(".")
    forged = json.dumps({"c": session.csrf, "t": int(NOW), "m": "other", "k": "k1"}).encode()

    forged_value = base64.urlsafe_b64encode(forged).decode().rstrip("=") + "." + mac
    assert signer.loads(forged_value, NOW) is None
    assert signer.loads("garbage", NOW) is None and signer.loads(None, NOW) is None
    assert signer.loads("abc.\xe9\xe9", NOW) is None  # non-ASCII: refused, not a TypeError
    assert signer.loads(value + "\u00a0", NOW) is None
    assert csrf_ok(session, session.csrf) and not csrf_ok(session, None)
    assert not csrf_ok(session, Session.new(NOW).csrf)
    assert session.signed_in("acme", "k1", NOW).csrf != session.csrf  # sign-in rotates it


def test_the_language_follows_the_cookie_then_the_browser() -> None:
    assert pick("zh-CN,zh;q=0.9,en;q=0.8", None) == "zh"
    assert pick("fr-FR,en;q=0.5,zh;q=0.4", None) == "en"
    assert pick("en;q=0.2,zh-TW;q=0.9", None) == "zh"
    assert (
        pick("zh-CN", "en") == "en" and pick(None, None) == "en" and pick("x;q=bad", "zz") == "en"
    )
    t = translator("zh")
    assert t("nav.leads") == "线索" and t("no.such.key") == "no.such.key"


def test_every_event_type_has_a_label_in_both_languages() -> None:
    for event_type in EVENT_TYPES:
        en, zh = STRINGS["type." + event_type]
        assert en and zh and en != zh


def test_a_signed_out_session_is_refused_and_forgotten_once_it_would_have_expired() -> None:
    signer = SessionSigner("s")
    now = 1_000_000.0
    session = Session.new(now).signed_in("t1", "k1", now)
    cookie = signer.dumps(session)
    signer.end(session, now)
    assert signer.loads(cookie, now + 1) is None
    # An anonymous session has nothing to end: signing one "out" remembers nothing.
    anonymous = Session.new(now)
    signer.end(anonymous, now)
    assert signer.loads(signer.dumps(anonymous), now + 1) == anonymous
    assert len(signer._ended) == 1
    # Past the signed-out session's own expiry it is dropped from memory by the next sign-out.
    later = now + MAX_AGE + 1
    signer.end(Session.new(later).signed_in("t1", "k1", later), later)
    assert session.csrf not in signer._ended and len(signer._ended) == 1


def test_a_sealed_secret_opens_only_for_its_session_subscription_and_time() -> None:
    signer = SessionSigner("k")
    session = Session.new(NOW).signed_in("acme", "k1", NOW)
    sealed = signer.seal_reveal(session, "sub_1", "whsec_abc", True, NOW)
    assert "whsec_abc" not in sealed and "sub_1" not in sealed  # encrypted, not only signed
    assert signer.open_reveal(sealed, session, "sub_1", NOW + 1) == ("whsec_abc", True)
    assert signer.open_reveal(sealed, session, "sub_2", NOW + 1) is None
    other = Session.new(NOW).signed_in("acme", "k1", NOW)
    assert signer.open_reveal(sealed, other, "sub_1", NOW + 1) is None
    assert signer.open_reveal(sealed, session, "sub_1", NOW + REVEAL_SECONDS + 1) is None
    assert SessionSigner("other").open_reveal(sealed, session, "sub_1", NOW) is None
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for bad in (tampered, "", None, "é" * 10, "x" * 5000):
        assert signer.open_reveal(bad, session, "sub_1", NOW) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://169.254.169.254/latest",
        "http://localhost/hook",
        "ftp://example.com/hook",
        "http://user:pw@example.com/hook",
        "http://example.com:0/hook",
        "http:///hook",
        "http://exa mple.com/hook",
        "http://[::1/hook",
        "https://example.com/" + "x" * 3000,
    ],
)
def test_a_refused_endpoint_url_reads_in_chinese(url: str) -> None:
    with pytest.raises(TargetError) as caught:
        validate_url(url, allow_private=False)
    said = str(caught.value)
    zh = message(said, "zh")
    assert zh != said and re.search(r"[\u4e00-\u9fff]", zh), said
    assert not re.search(r"\b(is|must|names|set)\b", zh.split("（")[0]), zh
    assert message(said, "en") == said


def test_a_name_refused_for_what_it_resolves_to_reads_in_chinese() -> None:
    with pytest.raises(TargetError) as caught:
        check_name_now("hooks.acme", resolve=lambda host: ["10.0.0.7"])
    said = str(caught.value)
    assert message(said, "zh") == (
        "hooks.acme 解析到私有地址；如需允许，请设置 LEADHOOK_ALLOW_PRIVATE_TARGETS=1"
    )
    assert message(said, "en") == said


def test_a_problem_is_named_by_its_forms_label_and_unknown_text_stays_as_it_is() -> None:
    bounded = ValidationError.at(("body", "max_in_flight"), "must be an integer from 1 to 256")
    assert explain(bounded, "en") == "Max in flight: must be an integer from 1 to 256"
    assert explain(bounded, "zh") == "最大并发：必须是 1 到 256 之间的整数"
    item = ValidationError.at(("body", "event_types", 1), "unknown event type 'nope'")
    assert explain(item, "zh") == "事件类型[1]：未知的事件类型 'nope'"
    odd = ValidationError.at(("body", "colour"), "a message the console does not know")
    assert explain(odd, "zh") == "colour：a message the console does not know"
    assert explain(NotFoundError("subscription 'x1' not found"), "zh") == "未找到订阅 'x1'"
    # Every Chinese rendering is anchored: a longer message is not half-translated.
    assert message("must be a string or else", "zh") == "must be a string or else"


def test_an_errors_wait_counted_from_the_failure_is_left_to_the_next_attempts_time() -> None:
    # "HTTP 500; retry 3 in 491.17s", read hours later, seemed to say "from now" (a review):
    # the pages show the cause, and the next attempt's time beside it.
    from leadhook.api.console.views import _env

    cause = _env.filters["cause"]
    assert cause("HTTP 500; retry 3 in 491.17s") == "HTTP 500"
    assert cause("timeout after 10s; Retry-After 20s") == "timeout after 10s"
    assert cause("busy; Retry-After asked for no wait: retry 2 in 20s, the schedule's") == "busy"
    kept = "not sent: circuit open; retries exhausted after 4 attempts"
    assert cause(kept) == kept and cause(None) == ""


def test_a_long_refused_text_is_neither_translated_slowly_nor_echoed_whole() -> None:
    # A 40 KB time box made the Chinese message patterns backtrack for seconds with the GIL
    # held: every tenant's requests waited (a security review).
    import time as clock

    from leadhook.api.console.views import parse_local

    hostile = " is ;" * 8000
    started = clock.perf_counter()
    assert message(hostile, "zh") == hostile  # past the longest translated: left as it is
    with pytest.raises(ValidationError) as caught:
        parse_local(Catalog.default("t1", "bt"), hostile)
    said = str(caught.value)
    assert len(said) < 200 and "…" in said
    message(said, "zh")
    assert clock.perf_counter() - started < 0.5
