"""The circuit breaker's rules: open after silence, probe, back off, close on an answer."""

from __future__ import annotations

from leadhook.api import bodies
from leadhook.domain.circuit import (
    BASE_COOLDOWN,
    CLOSED,
    MAX_COOLDOWN,
    THRESHOLD,
    Circuit,
    after_no_answer,
)
from leadhook.domain.times import rfc3339


def circuit_json(c: Circuit, now: float) -> dict[str, object]:
    return bodies.circuit(c, now).model_dump()


def test_silence_opens_it_after_the_threshold() -> None:
    c = after_no_answer(CLOSED, [1.0] * (THRESHOLD - 1), now=2.0)
    assert c == Circuit(THRESHOLD - 1) and c.state(2.0) == "closed"
    c = after_no_answer(c, [1.5], now=3.0)
    assert (c.opened_at, c.retry_at, c.cooldown) == (3.0, 3.0 + BASE_COOLDOWN, BASE_COOLDOWN)
    assert c.state(3.0) == "open" and c.state(3.0 + BASE_COOLDOWN) == "half_open"


def test_stragglers_count_but_a_failed_probe_doubles_the_cooldown_up_to_the_cap() -> None:
    c = after_no_answer(CLOSED, [0.0] * THRESHOLD, now=10.0)
    late = after_no_answer(c, [9.0, 9.5], now=11.0)  # started before it opened
    assert late.retry_at == c.retry_at and late.failures == THRESHOLD + 2
    cooldown = BASE_COOLDOWN
    now = 10.0
    for _ in range(12):
        probe_at = c.retry_at or 0.0
        now = probe_at + 1
        c = after_no_answer(c, [probe_at], now=now)
        cooldown = min(MAX_COOLDOWN, cooldown * 2)
        assert c.opened_at == now and c.retry_at == now + cooldown
    assert c.cooldown == MAX_COOLDOWN


def test_the_api_shape() -> None:
    c = after_no_answer(CLOSED, [0.0] * THRESHOLD, now=10.0)
    assert circuit_json(c, 11.0) == {
        "state": "open",
        "opened_at": rfc3339(10.0),
        "retry_at": rfc3339(10.0 + BASE_COOLDOWN),
        "consecutive_failures": THRESHOLD,
    }
    assert circuit_json(CLOSED, 0.0)["state"] == "closed"


def test_the_queue_says_which_attempt_was_the_probe() -> None:
    """Catches: with two workers, a straggler of the burst (claimed before the circuit opened)
    that started after the opening worker read its clock, but before its commit, was taken
    for a failed probe: the first wait doubled to 10 s with no probe sent."""
    c = after_no_answer(CLOSED, [0.0] * THRESHOLD, now=10.0)
    straggler = after_no_answer(c, [10.01], now=10.5, probed=False)
    assert (straggler.failures, straggler.retry_at) == (THRESHOLD + 1, c.retry_at)
    probe = after_no_answer(c, [16.0], now=16.5, probed=True)
    assert probe.retry_at == 16.5 + 2 * BASE_COOLDOWN


def test_the_first_cooldown_ends_before_the_first_retry_can_come_due() -> None:
    # With the default schedule, the first retry of an attempt that opened the circuit comes
    # 3.75-5 s later: a 5 s cooldown turned every one of them away (a review), and an
    # endpoint back after a blip waited for the second retry, ~30 s.
    from leadhook.domain.retry import JITTER_SPREAD, RetryPolicy

    first_wait = RetryPolicy.default().schedule[0] * (1 - JITTER_SPREAD)
    c = CLOSED
    for t in range(THRESHOLD):
        c = after_no_answer(c, [float(t)], float(t))
    assert c.state(THRESHOLD - 1 + first_wait) == "half_open"  # the earliest first retry probes
