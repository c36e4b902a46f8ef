"""The real clock and id factory (the domain and services take them as ports)."""

from __future__ import annotations

import os
import threading
import time

import shortuuid
from ulid import ULID

from leadhook.domain.signing import generate_secret


class SystemClock:
    """Unix time from the system clock."""

    def __call__(self) -> float:
        return time.time()


class SystemIds:
    """Shortuuids for objects; ULIDs for events, strictly increasing within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def short(self) -> str:
        return str(shortuuid.uuid())

    def event_id(self, at: float) -> str:
        candidate = int(ULID.from_timestamp(at))
        with self._lock:
            # Same millisecond (or a clock step back): keep order by incrementing the last id.
            if candidate <= self._last:
                candidate = self._last + 1
            self._last = candidate
        return str(ULID.from_int(candidate))

    def secret(self) -> str:
        return generate_secret(os.urandom(32))
