"""Unit tests for the pure retry decision, and the HTTP answers it is fed.

The decision tables go through the HTTP sender's mapping (`adapters/http/answers.py`), so they
pin the whole path from a status code and `Retry-After` to the decision, as it was when the
domain read status codes itself; the domain's own results are tested directly below them.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadhook.adapters.http.answers import http_answer, retry_after_seconds
from leadhook.domain.attempts import Delivered, Failed, Gone, Retry, SendResult, no_answer
from leadhook.domain.retry import (
    DEFAULT_DISABLE_AFTER,
    Decision,
    RetryPolicy,
    decide,
    should_auto_disable,
)

NOW = 1_700_000_000.0
POLICY = RetryPolicy(schedule=(10.0, 20.0, 40.0), jitter=False, max_retry_after=3600.0)
JITTERY = RetryPolicy(schedule=(10.0, 20.0, 40.0), jitter=True, max_retry_after=3600.0)


def http_result(
    status: int | None, retry_after: str | None, error: str | None, now: float = NOW
) -> SendResult:
    """Return what the HTTP sender answers for `status` (None: no answer, because `error`)."""
    if status is None:
        return no_answer(1.0, error)
    return http_answer(status, 1.0, "", retry_after, now)


def http_date(offset: float) -> str:
    return format_datetime(datetime.fromtimestamp(NOW + offset, tz=UTC), usegmt=True)


@pytest.mark.parametrize(
    ("policy", "result", "attempt", "rand", "kind", "at"),
    [
        # 2xx
        (POLICY, http_result(200, None, None), 1, 0.5, "delivered", None),
        (POLICY, http_result(204, "30", None), 4, 0.5, "delivered", None),
        (POLICY, http_result(299, None, None), 2, 0.5, "delivered", None),
        # 410 disables regardless of remaining retries
        (POLICY, http_result(410, None, None), 1, 0.5, "disable", None),
        (POLICY, http_result(410, "30", None), 4, 0.5, "disable", None),
        # 429 / 503 with a valid Retry-After
        (POLICY, http_result(429, "30", None), 1, 0.5, "retry", NOW + 30),
        # ... shorter than the schedule's wait too; asking for none (0, a date past) spent a
        # retry at once each time: the schedule's wait instead
        (POLICY, http_result(503, " 0 ", None), 3, 0.5, "retry", NOW + 40),
        (POLICY, http_result(429, "5", None), 1, 0.5, "retry", NOW + 5),
        (JITTERY, http_result(429, "0", None), 1, 0.0, "retry", NOW + 10),  # jittered 10
        (JITTERY, http_result(429, "0", None), 1, 0.8, "retry", NOW + 8),  # jittered 8
        (JITTERY, http_result(503, "30", None), 1, 0.0, "retry", NOW + 30),  # no jitter
        (POLICY, http_result(429, http_date(120), None), 2, 0.5, "retry", NOW + 120),
        (POLICY, http_result(429, http_date(-120), None), 2, 0.5, "retry", NOW + 20),  # past
        (POLICY, http_result(429, "999999", None), 1, 0.5, "retry", NOW + 3600),  # clamped
        (POLICY, http_result(429, "9" * 500, None), 1, 0.5, "retry", NOW + 3600),  # huge
        (POLICY, http_result(429, http_date(10**6), None), 1, 0.5, "retry", NOW + 3600),
        # ... but only while retries remain
        (POLICY, http_result(429, "30", None), 4, 0.5, "dead", None),
        (POLICY, http_result(503, http_date(60), None), 4, 0.5, "dead", None),
        # unparsable / absent Retry-After falls back to the schedule
        (POLICY, http_result(429, "soon", None), 1, 0.5, "retry", NOW + 10),
        (POLICY, http_result(503, "-5", None), 2, 0.5, "retry", NOW + 20),
        (POLICY, http_result(503, "1.5", None), 2, 0.5, "retry", NOW + 20),
        (POLICY, http_result(503, "", None), 3, 0.5, "retry", NOW + 40),
        (POLICY, http_result(429, None, None), 3, 0.5, "retry", NOW + 40),
        # Retry-After is ignored on other statuses
        (POLICY, http_result(500, "5", None), 1, 0.5, "retry", NOW + 10),
        # other failures follow the schedule
        (POLICY, http_result(500, None, None), 1, 0.5, "retry", NOW + 10),
        (POLICY, http_result(404, None, None), 2, 0.5, "retry", NOW + 20),
        (POLICY, http_result(301, None, None), 3, 0.5, "retry", NOW + 40),
        (POLICY, http_result(None, None, "timeout"), 1, 0.5, "retry", NOW + 10),
        (POLICY, http_result(None, None, None), 3, 0.5, "retry", NOW + 40),
        (POLICY, http_result(500, None, None), 4, 0.5, "dead", None),
        (POLICY, http_result(None, None, "refused"), 9, 0.5, "dead", None),
        # jitter within the last quarter: base * (1 - 0.25 * rand)
        (JITTERY, http_result(500, None, None), 1, 0.5, "retry", NOW + 8.75),
        (JITTERY, http_result(500, None, None), 2, 0.2, "retry", NOW + 19),
        (JITTERY, http_result(500, None, None), 3, 1.0, "retry", NOW + 30),
        (JITTERY, http_result(500, None, None), 1, 0.0, "retry", NOW + 10),
        (JITTERY, http_result(500, None, None), 1, -3.0, "retry", NOW + 10),  # clamped rand
        (JITTERY, http_result(500, None, None), 1, 7.0, "retry", NOW + 7.5),  # clamped rand
        (RetryPolicy((0.05,)), http_result(500, None, None), 1, 0.0, "retry", NOW + 0.05),
        (RetryPolicy((0.0,)), http_result(500, None, None), 1, 0.7, "retry", NOW),
        # no retries configured
        (RetryPolicy(()), http_result(500, None, None), 1, 0.5, "dead", None),
        (RetryPolicy(()), http_result(429, "30", None), 1, 0.5, "dead", None),
        (RetryPolicy(()), http_result(200, None, None), 1, 0.5, "delivered", None),
    ],
)
def test_decide(
    policy: RetryPolicy,
    result: SendResult,
    attempt: int,
    rand: float,
    kind: str,
    at: float | None,
) -> None:
    decision = decide(policy, result, attempt, NOW, lambda: rand)
    assert decision.kind == kind
    if at is None:
        assert decision.next_attempt_at is None
    else:
        assert decision.next_attempt_at == pytest.approx(at)
    assert decision.reason


@pytest.mark.parametrize(
    ("result", "attempt", "fragments"),
    [
        (http_result(200, None, None), 1, ["delivered"]),
        (http_result(410, None, None), 1, ["410", "disabled", "dead"]),
        (http_result(None, None, "timed out"), 1, ["no response", "timed out"]),
        (http_result(500, None, None), 4, ["HTTP 500", "exhausted after 4 attempts"]),
        (http_result(None, None, "boom"), 4, ["no response: boom", "exhausted"]),
        (http_result(429, "30", None), 1, ["429", "Retry-After"]),
    ],
)
def test_reason_explains(result: SendResult, attempt: int, fragments: list[str]) -> None:
    reason = decide(POLICY, result, attempt, NOW, lambda: 0.5).reason
    for fragment in fragments:
        assert fragment in reason


@pytest.mark.parametrize("attempt", [0, -1])
def test_decide_rejects_bad_attempt_number(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt_number"):
        decide(POLICY, http_result(500, None, None), attempt, NOW, lambda: 0.5)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("-1", None),
        ("+1", None),
        ("1.5", None),
        ("1e3", None),
        ("soon", None),
        ("Mon, 99 Foo 2024 00:00:00 GMT", None),
        (http_date(90), 90.0),
        (http_date(-90), 0.0),
        ("Tue, 14 Nov 2023 22:14:20 -0000", 60.0),  # no zone (-0000) is taken as UTC
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    got = retry_after_seconds(value, NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_default_schedule_sums_to_about_three_days() -> None:
    policy = RetryPolicy.default()
    assert policy.jitter is True
    assert policy.max_retries == len(policy.schedule) > 0
    assert list(policy.schedule) == sorted(policy.schedule)
    assert 0.9 * 3 * 86400 <= sum(policy.schedule) <= 1.1 * 3 * 86400


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,4", (1.0, 2.0, 4.0)),
        (" 0.5 , 1.5 ", (0.5, 1.5)),
        ("", ()),
        ("   ", ()),
        ("0", (0.0,)),
        ("30.", (30.0,)),
        (".25", (0.25,)),
    ],
)
def test_from_env_value_accepts(text: str, expected: tuple[float, ...]) -> None:
    policy = RetryPolicy.from_env_value(text)
    assert policy.schedule == expected
    assert policy.jitter is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "negative"),
        ("1,-0.5", "entry 2.*negative"),
        ("a", "not a number"),
        ("1,,2", "entry 2.*empty"),
        ("1,2,", "entry 3.*empty"),
        ("nan", "finite"),
        ("inf", "finite"),
        ("1,-inf", "finite"),
        ("1e3", "plain decimal"),
        ("1_000", "plain decimal"),
        ("+1", "plain decimal"),
    ],
)
def test_from_env_value_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy.from_env_value(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": (1.0, -1.0)},
        {"schedule": (math.nan,)},
        {"schedule": (math.inf,)},
        {"schedule": (), "max_retry_after": -1.0},
        {"schedule": (), "max_retry_after": math.inf},
    ],
)
def test_policy_rejects_invalid_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("first_failure_at", "now", "disable_after", "expected"),
    [
        (None, NOW, DEFAULT_DISABLE_AFTER, False),
        (NOW, NOW, DEFAULT_DISABLE_AFTER, False),
        (NOW - DEFAULT_DISABLE_AFTER + 1, NOW, DEFAULT_DISABLE_AFTER, False),
        (NOW - DEFAULT_DISABLE_AFTER, NOW, DEFAULT_DISABLE_AFTER, True),
        (NOW - 10 * 86400, NOW, DEFAULT_DISABLE_AFTER, True),
        (NOW - 60, NOW, 60.0, True),
        (NOW - 59, NOW, 60.0, False),
    ],
)
def test_should_auto_disable(
    first_failure_at: float | None, now: float, disable_after: float, expected: bool
) -> None:
    assert should_auto_disable(first_failure_at, now, disable_after) is expected


def test_default_disable_after_is_five_days() -> None:
    assert DEFAULT_DISABLE_AFTER == 5 * 86400
    assert should_auto_disable(NOW - 5 * 86400, NOW) is True
    assert should_auto_disable(NOW - 4 * 86400, NOW) is False


finite_seconds = st.floats(min_value=0, max_value=10 * 86400, allow_nan=False)


@given(
    schedule=st.lists(finite_seconds, min_size=1, max_size=15),
    jitter=st.booleans(),
    data=st.data(),
    now=st.floats(min_value=0, max_value=4e9, allow_nan=False),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
    status=st.one_of(st.none(), st.integers(min_value=100, max_value=599)),
    retry_after=st.one_of(st.none(), st.text(max_size=12), st.integers(0, 10**7).map(str)),
)
def test_wait_is_bounded(
    schedule: list[float],
    jitter: bool,
    data: st.DataObject,
    now: float,
    rand: float,
    status: int | None,
    retry_after: str | None,
) -> None:
    policy = RetryPolicy(tuple(schedule), jitter=jitter)
    attempt = data.draw(st.integers(min_value=1, max_value=len(schedule) + 2))
    decision = decide(
        policy, http_result(status, retry_after, None, now), attempt, now, lambda: rand
    )
    assert isinstance(decision, Decision)
    if decision.kind != "retry":
        assert decision.next_attempt_at is None
        return
    assert decision.next_attempt_at is not None
    assert attempt <= len(schedule)
    assert decision.next_attempt_at >= now
    wait = decision.next_attempt_at - now
    eps = 4 * math.ulp(decision.next_attempt_at)  # float rounding of now + wait
    base = schedule[attempt - 1]
    asked = retry_after_seconds(retry_after, now) if status in (429, 503) else None
    if asked is not None and asked > 0:
        assert 0 < wait <= policy.max_retry_after + eps
    else:  # the schedule's (jittered) wait; also when Retry-After asked for none
        assert (0.75 * base if jitter else base) - eps <= wait <= base + eps


# ---- the transport-neutral results, as a sink that is not HTTP would answer them -------------


def test_results_of_any_transport_decide_alike() -> None:
    assert decide(POLICY, Delivered(latency_ms=1.0), 9, NOW, lambda: 0.5).kind == "delivered"
    gone = decide(POLICY, Gone(latency_ms=1.0, why="queue deleted"), 1, NOW, lambda: 0.5)
    assert (gone.kind, gone.reason) == (
        "disable",
        "queue deleted: subscription disabled; this delivery is dead",
    )
    later = decide(POLICY, Retry(latency_ms=1.0, why="throttled", after=90), 1, NOW, lambda: 0.5)
    assert (later.kind, later.next_attempt_at, later.reason) == (
        "retry",
        NOW + 90,
        "throttled; Retry-After 90s",
    )
    # Asking for no wait follows the schedule, and the reason says so; a short wait is kept.
    sooner = decide(POLICY, Retry(latency_ms=1.0, why="throttled", after=0), 2, NOW, lambda: 0.5)
    assert (sooner.next_attempt_at, sooner.reason) == (
        NOW + 20,
        "throttled; Retry-After asked for no wait: retry 2 in 20s, the schedule's",
    )
    short = decide(POLICY, Retry(latency_ms=1.0, why="throttled", after=1), 2, NOW, lambda: 0.5)
    assert (short.next_attempt_at, short.reason) == (NOW + 1, "throttled; Retry-After 1s")
    # Retry without a delay, or with one that is not a number, follows the schedule.
    for after in (None, math.nan):
        plain = decide(POLICY, Retry(latency_ms=1.0, why="busy", after=after), 2, NOW, lambda: 0)
        assert plain.next_attempt_at == NOW + 20 and plain.reason == "busy; retry 2 in 20s"
    failed = decide(POLICY, Failed(latency_ms=1.0, why="broker down"), 4, NOW, lambda: 0.5)
    assert (failed.kind, failed.reason) == (
        "dead",
        "broker down; retries exhausted after 4 attempts",
    )


@pytest.mark.parametrize(
    ("status", "kind", "why"),
    [
        (200, Delivered, None),
        (299, Delivered, None),
        (410, Gone, "HTTP 410 Gone"),
        (429, Retry, "HTTP 429"),
        (503, Retry, "HTTP 503"),
        (500, Failed, "HTTP 500"),
        (404, Failed, "HTTP 404"),
        (301, Failed, "HTTP 301"),
    ],
)
def test_http_answers_map_status_codes(status: int, kind: type, why: str | None) -> None:
    result = http_answer(status, 12.5, "body", "30", NOW)
    assert type(result) is kind and getattr(result, "why", None) == why
    # What the attempt records is kept whatever the result.
    assert (result.status_code, result.latency_ms, result.body, result.error) == (
        status,
        12.5,
        "body",
        None,
    )
    if isinstance(result, Retry):
        assert result.after == 30.0


def test_no_answer_keeps_the_error_and_names_it() -> None:
    result = no_answer(300.0, "timeout after 0.3s")
    assert result.status_code is None and result.error == "timeout after 0.3s"
    assert result.why == "no response: timeout after 0.3s"
    assert no_answer(0.0, None).why == "no response"


def test_a_reason_gives_its_wait_to_the_hundredth() -> None:
    # The jitter's wait read "retry 1 in 4.71899s" in the CLI's and the console's last error.
    jittered = decide(JITTERY, Failed(latency_ms=1.0, why="HTTP 500"), 1, NOW, lambda: 0.123)
    assert jittered.reason == "HTTP 500; retry 1 in 9.69s"
    assert jittered.next_attempt_at == NOW + 10 * (1 - 0.25 * 0.123)  # the wait itself is exact
