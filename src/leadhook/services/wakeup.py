"""Tell the delivery loop that new deliveries were committed, so it need not wait to poll."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Wakeup:
    """A thread-safe fan-out of "work is waiting" to whoever listens (the dispatcher)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on every notify until the returned function is called."""
        with self._lock:
            self._listeners.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return stop

    def notify(self) -> None:
        """Wake every listener; a listener must be cheap and must not raise."""
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()
