"""What a record counts for /metrics (`tally`), and where (`outcome_slot`)."""

from __future__ import annotations

from typing import Any

from leadhook.services.ports import OUTCOMES, Attempt, Verdict, outcome_slot, tally
from leadhook.services.ports.delivery import OUTCOME_SLOTS


def verdict(status: str, code: int | None, *, sent: bool = True) -> Verdict:
    job: Any = object()
    return Verdict(job, Attempt(1.0, code, 5.0, None, ""), status, None, None, sent=sent)  # type: ignore[arg-type]


def test_each_attempt_counts_once_and_a_dead_delivery_once_more() -> None:
    verdicts = [
        verdict("delivered", 200),
        verdict("failed", 500),
        verdict("failed", None),
        verdict("dead", 500),  # a failed attempt that ended the schedule
        verdict("dead", None, sent=False),  # turned away on its last attempt
        verdict("failed", None, sent=False),
    ]
    assert tally(verdicts, circuits_opened=2) == {
        "delivered": 1,
        "failed": 3,
        "turned_away": 2,
        "dead": 2,
        "circuit_opened": 2,
    }
    assert tally([]) == {} and set(tally(verdicts, 1)) == set(OUTCOMES)


def test_a_worker_always_counts_in_the_same_slot_of_a_few() -> None:
    slots = {outcome_slot(f"host:{pid}:abc") for pid in range(1000)}
    assert slots == set(range(OUTCOME_SLOTS))
    assert outcome_slot("host:1:x") == outcome_slot("host:1:x")
