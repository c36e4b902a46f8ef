"""`cli.runtime.run_async`: what the loop's default executor still has queued when the
service's coroutine ends is dropped, not run (the process would wait for all of it)."""

from __future__ import annotations

import asyncio
import threading

from leadhook.cli.runtime import run_async


def test_queued_blocking_work_is_dropped_when_main_returns() -> None:
    # A stopped worker with a thousand name lookups queued (each `getaddrinfo` in the default
    # executor) did not exit for over 45 s after its dispatcher stopped.
    started: list[int] = []
    release = threading.Event()

    def lookup(i: int) -> None:
        started.append(i)
        release.wait(5)  # a resolver that does not answer

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for i in range(200):
            loop.run_in_executor(None, lookup, i)  # queued behind the running ones
        await asyncio.sleep(0.2)
        return len(started)

    running = threading.Timer(0.5, release.set)  # the running lookups answer after 0.5 s
    running.start()
    try:
        assert run_async(main()) >= 1
    finally:
        running.cancel()
        release.set()
    # Only the lookups that had started ran; the loop's close ran every queued one before
    # (here quickly, once the running ones answered; behind a resolver that does not, for as
    # long as each lookup waits).
    assert len(started) < 200
