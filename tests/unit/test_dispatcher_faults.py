"""The delivery loop's fault paths: a store that fails to claim, or to record at shutdown.

Each test names the breakage of `services/dispatcher.py` it catches; the real-database variant
of the failing claim is in tests/integration/test_delivery_faults.py.
"""

from __future__ import annotations

import asyncio
import time

from test_dispatcher import FakeSender, MemoryQueue, Sub, finished, make, run_until

from leadhook.services.ports import Job


class ClaimFailsFirst(MemoryQueue):
    """A queue whose first `failures` claims raise, as a database unreachable for a moment."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.raised = 0

    def claim(self, **kwargs: object) -> list[Job]:
        if self.raised < self.failures:
            self.raised += 1
            self.claims += 1
            raise ConnectionRefusedError("could not connect to the database")
        return super().claim(**kwargs)  # type: ignore[arg-type]


async def test_a_failing_claim_is_retried_and_the_loop_delivers_afterwards() -> None:
    """Catches: the claim loop's error branch turned into a crash (`_claim` re-raising, or the
    loop not going round again after it): the first failed claim would end `run`."""
    queue, sender = ClaimFailsFirst(failures=2), FakeSender()
    for i in range(3):
        queue.add(Sub("s"), f"L{i}", 1)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, finished(queue))  # fails at once if `run` ends early
    assert queue.raised == 2 and queue.claims > 2
    assert {r.status for r in queue.rows} == {"delivered"}
    assert dispatcher.stats.delivered == 3 and len(sender.sent) == 3


class RecordAlwaysFails(MemoryQueue):
    """A queue that cannot record: every `record` raises, and each call is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.record_calls = 0

    def record(self, **kwargs: object) -> None:
        self.record_calls += 1
        raise RuntimeError("database is down")


async def test_recording_that_keeps_failing_at_shutdown_is_given_up_within_bounds() -> None:
    """Catches: a recorder that never gives up on a failing store at shutdown (a SIGTERM would
    then wait for the full shutdown timeout, ~40 s by default, instead of ~3 s).

    After stop, the recorder tries three times in all (1 s, then 2 s apart) and gives up: the
    leases expire and the deliveries are sent again, so nothing is lost by stopping.
    """
    queue, sender = RecordAlwaysFails(), FakeSender()
    queue.add(Sub("s"), "L1", 1)
    dispatcher = make(queue, sender)  # timeout 1 s: a recorder that never gives up takes 31 s
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    deadline = time.monotonic() + 5
    while queue.record_calls == 0:  # delivered; its outcome could not be written
        assert time.monotonic() < deadline and not task.done()
        await asyncio.sleep(0.01)
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(task, 10)  # returns normally: giving up is not an error
    assert time.monotonic() - started < 8  # ~3 s of back-off; the bug would take 31 s
    assert queue.record_calls == 3  # the bound: three attempts, then give up
    assert len(sender.sent) == 1 and dispatcher.stats.delivered == 0
    assert queue.rows[0].status == "pending"  # unrecorded: its lease expires, it is sent again
    assert sender.closed
