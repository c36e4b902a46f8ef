"""A clock that only moves when told and ids that repeat from run to run (fakes of the ports)."""

from __future__ import annotations

import threading
import uuid

import shortuuid
from ulid import ULID

from leadhook.domain.signing import generate_secret


class FakeClock:
    """Unix time that stands still until `advance` or `set` moves it."""

    def __init__(self, start: float = 1_676_962_253.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the time forward by `seconds`."""
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        """Jump to `now`."""
        with self._lock:
            self._now = now


class SequentialIds:
    """Deterministic ids: shortuuids from a counter, ULIDs strictly increasing, fixed secrets."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._n = seed
        self._last_event = 0

    def _next(self) -> int:
        with self._lock:
            self._n += 1
            return self._n

    def short(self) -> str:
        encoded: str = shortuuid.encode(uuid.UUID(int=self._next()))
        return encoded

    def event_id(self, at: float) -> str:
        # The millisecond of `at`, then a counter: time-ordered, unique, and repeatable.
        candidate = (int(at * 1000) << 80) | self._next()
        with self._lock:
            candidate = max(candidate, self._last_event + 1)
            self._last_event = candidate
        return str(ULID.from_int(candidate))

    def secret(self) -> str:
        return generate_secret(self._next().to_bytes(32, "big"))
