"""Choose the sender of a URL by its scheme, as httpx mounts transports.

`SchemeSenders({"https": http, "http": http})` is itself a `Sender`: each `send` goes to the
sender mounted for the URL's scheme, so a sink that is not HTTP is just another adapter
mounted under its own scheme. A URL whose scheme has no sender is a failed attempt (the API
accepts http and https URLs only, so only a row written by hand could have one).
"""

from __future__ import annotations

from collections.abc import Coroutine, Mapping
from typing import Any

from leadhook.domain.attempts import SendResult, no_answer
from leadhook.services.ports import Sender

_REMEMBERED = 4096  # URLs whose sender is remembered (subscriptions have a handful of URLs)


class SchemeSenders:
    """A `Sender` that hands each attempt to the sender mounted for the URL's scheme."""

    def __init__(self, mounts: Mapping[str, Sender]) -> None:
        if not mounts:
            raise ValueError("mount at least one sender")
        self._mounts = {scheme.lower(): sender for scheme, sender in mounts.items()}
        self._by_url: dict[str, Sender] = {}

    @property
    def schemes(self) -> frozenset[str]:
        """The schemes a sender is mounted for."""
        return frozenset(self._mounts)

    def send(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> Coroutine[Any, Any, SendResult]:
        """Return the mounted sender's `send` of this attempt, to be awaited by the caller.

        Not a coroutine itself, so an attempt costs no extra frame: a dict lookup of the URL.
        """
        sender = self._by_url.get(url)
        if sender is None:
            scheme = url.partition(":")[0].lower()
            found = self._mounts.get(scheme)
            if found is None:
                return _refuse(f"no sender for URL scheme {scheme!r}")
            if len(self._by_url) >= _REMEMBERED:
                self._by_url.clear()
            self._by_url[url] = sender = found
        return sender.send(url, body, headers)

    async def aclose(self) -> None:
        """Close every mounted sender once (one may be mounted under several schemes)."""
        closed: set[int] = set()
        for sender in self._mounts.values():
            if id(sender) not in closed:
                closed.add(id(sender))
                await sender.aclose()


async def _refuse(why: str) -> SendResult:
    return no_answer(0.0, why)
