"""`cli.runtime.watch_wake_fd` on a real pipe: serve's delivery process is woken by the first
commit's byte, not watched again for `hold` seconds, and never left unwoken by a byte written
meanwhile (tests/e2e/test_serve_process.py runs it inside serve)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

import pytest

from leadhook.cli.runtime import STOPPED, WAITING, watch_wake_fd
from leadhook.services.dispatcher import GATHER


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # closed by the test (its EOF)
            os.close(fd)


async def _settle() -> None:
    for _ in range(5):  # a few turns of the loop: the reader's callback has run
        await asyncio.sleep(0.01)


async def test_bytes_during_the_hold_wake_once_when_it_ends(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wakes: list[float] = []
    loop = asyncio.get_running_loop()
    watch_wake_fd(read_end, lambda: wakes.append(loop.time()), lambda: None, hold=0.5)

    os.write(write_end, b"!")
    await _settle()
    assert len(wakes) == 1  # the first commit wakes the loop at once

    for _ in range(20):  # the next commits' bytes: no wake-up while the pipe is not watched
        os.write(write_end, b"!")
    await _settle()
    assert len(wakes) == 1

    await asyncio.sleep(0.6)  # the hold ends: what was written meanwhile wakes it once
    assert len(wakes) == 2
    assert wakes[1] - wakes[0] >= 0.5

    await asyncio.sleep(0.6)  # nothing written since: no further wake-up
    assert len(wakes) == 2


async def test_a_lone_byte_after_the_hold_wakes_at_once(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wakes: list[int] = []
    watch_wake_fd(read_end, lambda: wakes.append(1), lambda: None, hold=0.05)
    os.write(write_end, b"!")
    await _settle()
    await asyncio.sleep(0.1)  # the hold is over and the pipe was empty
    assert len(wakes) == 1
    os.write(write_end, b"!")
    await _settle()
    assert len(wakes) == 2


async def test_end_of_file_during_the_hold_still_stops(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wakes: list[int] = []
    stopped = asyncio.Event()
    watch_wake_fd(read_end, lambda: wakes.append(1), stopped.set, hold=0.2)
    os.write(write_end, b"!")
    await _settle()
    os.close(write_end)  # serve is gone
    async with asyncio.timeout(2):
        await stopped.wait()
    assert wakes == [1]


async def test_no_hold_wakes_for_every_byte(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    wakes: list[int] = []
    watch_wake_fd(read_end, lambda: wakes.append(1), lambda: None, hold=0)
    for _ in range(3):
        os.write(write_end, b"!")
        await _settle()
    assert len(wakes) == 3


def test_the_hold_is_the_dispatchers_gather() -> None:
    # A longer hold would delay a commit's delivery past the claim the first wake-up makes.
    assert watch_wake_fd.__defaults__ is not None
    assert watch_wake_fd.__defaults__[0] == GATHER


async def test_a_stopped_byte_tells_of_a_stopped_subscription_and_wakes(
    pipe: tuple[int, int],
) -> None:
    read_end, write_end = pipe
    wakes: list[int] = []
    stops: list[int] = []
    watch_wake_fd(
        read_end, lambda: wakes.append(1), lambda: None, hold=0.05, stopped=lambda: stops.append(1)
    )
    os.write(write_end, WAITING)
    await _settle()
    assert (len(wakes), len(stops)) == (1, 0)
    os.write(write_end, WAITING + STOPPED + WAITING)  # among commits' bytes, during the hold
    await asyncio.sleep(0.15)
    assert (len(wakes), len(stops)) == (2, 1)
