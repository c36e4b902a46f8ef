"""The scheme registry of senders: each URL goes to the sender mounted for its scheme."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from leadhook.domain.attempts import Delivered, Failed, SendResult
from leadhook.services.senders import SchemeSenders


class Sink:
    """A sender that is not HTTP: it keeps what it is given."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[str] = []
        self.closed = 0

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.got.append(url)
        return Delivered(latency_ms=0.5, body=self.name)

    async def aclose(self) -> None:
        self.closed += 1


async def test_each_url_goes_to_the_sender_of_its_scheme() -> None:
    web, queue = Sink("web"), Sink("queue")
    senders = SchemeSenders({"https": web, "HTTP": web, "amqp": queue})
    assert senders.schemes == {"https", "http", "amqp"}
    for url in ("https://a.test/x", "HTTP://b.test/", "amqp://broker/q", "https://a.test/x"):
        result = await senders.send(url, b"{}", {})
        assert isinstance(result, Delivered)
    assert web.got == ["https://a.test/x", "HTTP://b.test/", "https://a.test/x"]
    assert queue.got == ["amqp://broker/q"]
    await senders.aclose()
    assert (web.closed, queue.closed) == (1, 1)  # mounted twice, closed once


async def test_a_scheme_without_a_sender_is_a_failed_attempt_with_no_answer() -> None:
    web = Sink("web")
    result = await SchemeSenders({"https": web}).send("ftp://files.test/x", b"{}", {})
    assert isinstance(result, Failed) and result.status_code is None
    assert result.error == "no sender for URL scheme 'ftp'"
    assert result.why == "no response: no sender for URL scheme 'ftp'"
    assert web.got == []


def test_at_least_one_sender_is_mounted() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SchemeSenders({})
