"""A scrape whose database read fails: logged when it begins to fail and when it reads again."""

from __future__ import annotations

import logging

import pytest

from leadhook.api.metrics import PurgeCounts


def test_a_failing_read_is_logged_once_an_outage_not_once_a_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches: two warnings a scrape for as long as the database was down (a scraper every
    0.1 s wrote twenty lines a second), where docs/operations.md promises one line when an
    outage starts and one when it ends."""
    down = True

    def read() -> dict[str, int]:
        if down:
            raise ConnectionError("gone")
        return {"events": 3}

    counts = PurgeCounts(read)
    with caplog.at_level(logging.WARNING, logger="leadhook.api"):
        for _ in range(5):
            list(counts.collect())  # the scrape still answers, without the figures
        down = False
        samples = [s for m in counts.collect() for s in m.samples]
        list(counts.collect())
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "reading purge counts failed",
        "reading purge counts failed before: it reads again",
    ]
    assert any(s.value == 3 for s in samples)
