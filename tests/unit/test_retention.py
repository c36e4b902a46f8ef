"""Retention: its settings, and the purge loop over an in-memory store."""

from __future__ import annotations

import asyncio

import pytest

from leadhook.services.retention import Kind, Retention, RetentionPolicy
from leadhook.settings import Settings, SettingsError

DAY = 86400.0


def test_durations_from_the_environment() -> None:
    default = Settings.from_env({}).retention
    assert (default.idempotency_ttl, default.delivery_retention) == (DAY, 30 * DAY)
    assert default.event_retention is None  # the log is kept unless asked
    env = {
        "LEADHOOK_IDEMPOTENCY_TTL": "90m",
        "LEADHOOK_DELIVERY_RETENTION": "off",
        "LEADHOOK_EVENT_RETENTION": "365d",
    }
    policy = Settings.from_env(env).retention
    assert (policy.idempotency_ttl, policy.delivery_retention) == (5400.0, None)
    assert policy.event_retention == 365 * DAY
    assert Settings.from_env({"LEADHOOK_IDEMPOTENCY_TTL": "3600"}).retention.idempotency_ttl == 3600
    assert Settings.from_env({"LEADHOOK_EVENT_RETENTION": "12h"}).retention.event_retention == (
        12 * 3600
    )
    # Zero in any unit is off (0s once meant "purge at once": 0d for "off" lost the log).
    for zero in ("0", "0s", "0d", "0.0", "0h"):
        policy = Settings.from_env({"LEADHOOK_EVENT_RETENTION": zero}).retention
        assert policy.event_retention is None, zero


@pytest.mark.parametrize("bad", ["soon", "-1d", "1w", "nan", "inf"])
def test_nonsense_durations_are_refused_by_name(bad: str) -> None:
    with pytest.raises(SettingsError, match="LEADHOOK_DELIVERY_RETENTION"):
        Settings.from_env({"LEADHOOK_DELIVERY_RETENTION": bad})
    with pytest.raises(SettingsError, match="LEADHOOK_EVENT_RETENTION"):
        Settings.from_env({"LEADHOOK_EVENT_RETENTION": bad})


@pytest.mark.parametrize("long", ["36501d", "99999d", "1e15d"])
def test_a_duration_past_a_hundred_years_is_a_hundred_years(long: str) -> None:
    # 1e15d was taken, then overflowed SQLite's integers at every purge; refusing it would
    # stop a process an operator had told to keep rows "almost forever".
    env = {"LEADHOOK_EVENT_RETENTION": long, "LEADHOOK_IDEMPOTENCY_TTL": long}
    settings = Settings.from_env(env)
    assert settings.retention.event_retention == 36500 * 86400
    assert settings.retention.idempotency_ttl == 36500 * 86400


class FakeStore:
    """Rows as their ages; purges the oldest first, `limit` at a time."""

    def __init__(self, ages: dict[str, list[float]]) -> None:
        self.rows = ages
        self.calls: list[tuple[str, float, int]] = []
        self.total: dict[str, int] = {}

    def purge(self, kind: Kind, *, before: float, limit: int, now: float) -> dict[str, int]:
        self.calls.append((kind, before, limit))
        old = sorted(t for t in self.rows[kind] if t < before)[:limit]
        for t in old:
            self.rows[kind].remove(t)
        self.total[kind] = self.total.get(kind, 0) + len(old)
        return {kind: len(old)}

    def counts(self) -> dict[str, int]:
        return dict(self.total)


def test_purges_past_each_horizon_in_batches() -> None:
    now = 100 * DAY
    store = FakeStore(
        {
            "idempotency_keys": [now - 2 * DAY] * 5 + [now - 60.0],
            "deliveries": [now - 31 * DAY] * 7 + [now - DAY],
            "events": [now - 400 * DAY] * 3,
        }
    )
    retention = Retention(store, RetentionPolicy(batch=2), lambda: now)
    assert retention.purge_all() == {"idempotency_keys": 5, "deliveries": 7}
    assert len(store.rows["idempotency_keys"]) == 1 and len(store.rows["deliveries"]) == 1
    assert len(store.rows["events"]) == 3  # kept: no horizon for events by default
    assert all(limit == 2 for _, _, limit in store.calls)
    assert [k for k, _, _ in store.calls].count("deliveries") == 4  # 2+2+2+1
    assert retention.purged == {"idempotency_keys": 5, "deliveries": 7}


async def test_the_loop_purges_a_batch_at_a_time_and_stops_when_asked() -> None:
    now = 100 * DAY
    store = FakeStore({"idempotency_keys": [0.0] * 25, "deliveries": [], "events": []})
    policy = RetentionPolicy(batch=10, pause=0.01, interval=30.0)
    retention = Retention(store, policy, lambda: now)
    stop = asyncio.Event()
    task = asyncio.create_task(retention.run(stop))
    while store.rows["idempotency_keys"]:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)  # wakes from its interval at once
    assert [len(c) for c in store.calls] == [3] * len(store.calls)
    assert [limit for _, _, limit in store.calls][:3] == [10, 10, 10]


async def test_nothing_to_keep_short_means_no_loop() -> None:
    policy = RetentionPolicy(idempotency_ttl=None, delivery_retention=None, event_retention=None)
    retention = Retention(FakeStore({}), policy, lambda: 0.0)
    assert not retention.enabled
    await asyncio.wait_for(retention.run(asyncio.Event()), 1)
