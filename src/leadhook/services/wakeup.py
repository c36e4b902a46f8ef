"""Tell the delivery loop what changed in the queue, so it need not wait to poll or beat."""

from __future__ import annotations

import threading
from collections.abc import Callable


class _Channel:
    """A thread-safe fan-out of one kind of news to whoever listens."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Callable[[], None]] = []

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(callback)

        def stop() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return stop

    def notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()


class Wakeup:
    """Two kinds of news for the dispatcher: "work is waiting" (a commit enqueued deliveries,
    or let waiting ones flow again) and "a subscription stopped" (disabled or deleted: the
    jobs a worker holds for it and has not started go back now, not at its next heartbeat).
    A listener must be cheap and must not raise."""

    def __init__(self) -> None:
        self._waiting = _Channel()
        self._stopped = _Channel()

    def listen(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on every `notify` until the returned function is called."""
        return self._waiting.listen(callback)

    def notify(self) -> None:
        """Work is waiting: wake every listener."""
        self._waiting.notify()

    def listen_stopped(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` on every `notify_stopped` until the returned function is called."""
        return self._stopped.listen(callback)

    def notify_stopped(self) -> None:
        """A subscription was disabled or deleted: tell every listener."""
        self._stopped.notify()
