"""serve's pause before it starts its delivery process again (`DeliveryProcess.next_pause`)."""

from __future__ import annotations

from leadhook.cli.runtime import DeliveryProcess

pause = DeliveryProcess.next_pause


def test_a_child_that_ran_long_is_started_again_after_the_shortest_pause() -> None:
    # It was 10 s, the longest: a healthy child killed once (an OOM, a kill -9) stopped
    # delivery for ten seconds (seen in an integrator's trial).
    assert pause(0, 3600.0) == (1, 0.5)
    assert pause(4, 3600.0) == (1, 0.5)  # however many exits came before a long run


def test_a_child_that_keeps_exiting_soon_waits_longer_each_time_up_to_the_longest() -> None:
    exits, waits = 0, []
    for _ in range(7):
        exits, wait = pause(exits, 1.0)
        waits.append(wait)
    assert waits == [0.5, 1.0, 2.0, 5.0, 10.0, 10.0, 10.0]
    assert exits == 7


def test_the_series_starts_again_after_a_run_past_a_minute() -> None:
    exits, _ = pause(0, 1.0)
    exits, _ = pause(exits, 1.0)
    assert pause(exits, DeliveryProcess.STABLE_AFTER + 1) == (1, 0.5)
    assert pause(exits, DeliveryProcess.STABLE_AFTER) == (3, 2.0)
