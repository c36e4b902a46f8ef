"""Awaiting a behaviour's commit from the API: on the loop directly, from a thread safely."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from leadhook.api.routes.leads import committed


async def test_a_commit_on_the_loop_is_copied_over_without_a_thread_safe_call() -> None:
    """Catches: every request going through call_soon_threadsafe (a self-pipe write and one
    more turn of the loop) although the SQLite writer commits on the loop itself."""
    loop = asyncio.get_running_loop()
    calls: list[object] = []
    original = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> asyncio.Handle:
        calls.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        pending: Future[tuple[int, str]] = Future()
        waiter = committed(pending)
        loop.call_soon(pending.set_result, (201, "{}"))
        assert await waiter == (201, "{}")
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert calls == []


async def test_a_commit_on_a_writer_thread_reaches_the_loop() -> None:
    pending: Future[tuple[int, str]] = Future()
    waiter = committed(pending)
    threading.Timer(0.01, pending.set_result, ((200, "ok"),)).start()
    assert await asyncio.wait_for(waiter, 5) == (200, "ok")


async def test_a_failed_commit_raises_where_it_is_awaited() -> None:
    pending: Future[tuple[int, str]] = Future()
    waiter = committed(pending)
    threading.Timer(0.01, pending.set_exception, (RuntimeError("database is locked"),)).start()
    with pytest.raises(RuntimeError, match="locked"):
        await asyncio.wait_for(waiter, 5)


async def test_a_request_that_stopped_waiting_leaves_the_writer_unharmed() -> None:
    """Catches: cancelling the wait cancelling the writer's future (its later set_result
    would then raise inside the writer's batch)."""
    pending: Future[tuple[int, str]] = Future()
    waiter = committed(pending)
    waiter.cancel()
    pending.set_result((201, "{}"))  # would raise InvalidStateError if it had been cancelled
    await asyncio.sleep(0)
    assert pending.result() == (201, "{}")


async def test_a_cancelled_commit_cancels_the_wait_rather_than_hanging_it() -> None:
    pending: Future[tuple[int, str]] = Future()
    waiter = committed(pending)
    threading.Timer(0.01, pending.cancel).start()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 5)
