"""The delivery loop over an in-memory queue and sender: order, limits, decisions, stopping."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from leadhook.adapters.http.answers import http_answer
from leadhook.adapters.memory.queue import MemoryDeliveryQueue
from leadhook.adapters.memory.state import DeliveryRow, SubscriptionRow
from leadhook.adapters.memory.uow import MemoryStore
from leadhook.domain.attempts import TURNED_AWAY, SendResult, no_answer
from leadhook.domain.retry import RetryPolicy
from leadhook.domain.signing import generate_secret
from leadhook.services.dispatcher import Dispatcher, batch_of, failure_logged
from leadhook.services.lanes import MAX_IN_FLIGHT
from leadhook.services.ports import DeliveryStatus, Job, StoredEvent, Subscription, Verdict
from leadhook.services.wakeup import Wakeup

SECRET = generate_secret(bytes(range(32)))
OLD_SECRET = generate_secret(b"\x07" * 32)


@dataclass
class Sub:
    """A subscription to seed the queue with (its URL: http://<id>.test/hook)."""

    id: str
    max_in_flight: int = 8
    mid: str = "acme"
    rate: float | None = None
    enabled: bool = True
    first_failure_at: float | None = None
    disabled_reason: str | None = None
    previous_secret: str | None = None
    previous_expires: float | None = None

    def subscription(self) -> Subscription:
        return Subscription(
            self.id, self.mid, f"http://{self.id}.test/hook", ("*",), "", self.enabled, SECRET,
            self.max_in_flight, self.rate, 0.0, 0.0, self.disabled_reason, self.previous_secret,
            self.previous_expires, self.first_failure_at,
        )  # fmt: skip


class MemoryQueue(MemoryDeliveryQueue):
    """The in-memory queue (adapters/memory/queue.py: the claim rules of the SQL queue, held to
    the same queue contract tests), seeded here and watched: it counts the claims and keeps
    what was recorded, released and renewed. `fail_records` is the one fault it adds: the next
    so many `record` calls raise, as a database that is down would."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        super().__init__(self.store)
        self.outcomes: list[Verdict] = []
        self.released: list[int] = []
        self.claims = 0
        self.limits: list[int] = []  # what each claim asked for
        self.fail_records = 0
        self.renewals: list[tuple[list[int], float]] = []

    def add(self, sub: Sub, lead: str, version: int, at: float = 0.0) -> DeliveryRow:
        """Add a pending delivery of lead `lead` at `version` to `sub` (added if new), due `at`."""
        with self.store.lock:
            state = self.store.state
            if sub.id not in state.subscriptions:
                state.subscriptions[sub.id] = SubscriptionRow(sub.subscription())
            state.event_seq += 1
            event = StoredEvent(
                seq=state.event_seq, event_id=f"ev{state.event_seq}", mid=sub.mid,
                entity_id=lead, entity_version=version, event_type="object_update",
                create_time=0, is_follow_up=0, payload=json.dumps({"lead": lead, "v": version}),
            )  # fmt: skip
            state.event_index[event.event_id] = len(state.events)
            state.events.append(event)
            state.delivery_seq += 1
            row = DeliveryRow(
                state.delivery_seq, f"d{state.delivery_seq}", sub.mid, sub.id, event.seq,
                event.event_id, lead, version, event.event_type, DeliveryStatus.PENDING, 0, at,
                0.0, 0.0,
            )  # fmt: skip
            state.deliveries[row.seq] = row
        return row

    @property
    def rows(self) -> list[DeliveryRow]:
        """Every delivery as the store holds it now, in the order they were added."""
        deliveries = self.store.state.deliveries
        return [deliveries[seq] for seq in sorted(deliveries)]

    def row(self, seq: int) -> DeliveryRow:
        return self.store.state.deliveries[seq]

    def subscription(self, sub_id: str) -> Subscription:
        return self.store.state.subscriptions[sub_id].sub

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]:
        self.claims += 1
        self.limits.append(limit)
        return super().claim(
            worker_id=worker_id, limit=limit, now=now, lease_until=lease_until, exclude=exclude
        )

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        if self.fail_records:
            self.fail_records -= 1
            raise RuntimeError("database is down")
        super().record(worker_id=worker_id, verdicts=verdicts, now=now)
        self.outcomes.extend(verdicts)

    def release(self, *, worker_id: str, seqs: Sequence[int], now: float) -> None:
        self.released.extend(seqs)
        super().release(worker_id=worker_id, seqs=seqs, now=now)

    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]:
        self.renewals.append((list(seqs), lease_until))
        return super().renew(worker_id=worker_id, seqs=seqs, lease_until=lease_until)


def http(
    status: int, latency_ms: float, body: str = "", retry_after: str | None = None
) -> SendResult:
    """Return what the HTTP sender answers when the endpoint answers `status`."""
    return http_answer(status, latency_ms, body, retry_after, time.time())


Behaviour = Callable[[str, bytes, Mapping[str, str]], Awaitable[SendResult]]


class FakeSender:
    """Record every POST and answer with `behaviour` (200 at once by default)."""

    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour
        self.sent: list[tuple[float, str, bytes, dict[str, str]]] = []
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.closed = False

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        self.sent.append((time.monotonic(), url, body, dict(headers)))
        self.active[url] += 1
        self.peak[url] = max(self.peak[url], self.active[url])
        try:
            if self.behaviour is None:
                return http(200, 1.0, body="ok")
            return await self.behaviour(url, body, headers)
        finally:
            self.active[url] -= 1

    async def aclose(self) -> None:
        self.closed = True

    def bodies(self, url: str | None = None) -> list[dict[str, object]]:
        return [json.loads(b) for _, u, b, _ in self.sent if url is None or u == url]


def make(
    queue: MemoryQueue,
    sender: FakeSender,
    *,
    schedule: str = "0.05,0.05,0.05",
    concurrency: int = 16,
    wakeup: Wakeup | None = None,
    poll: float = 0.02,
    auto_disable_after: float = 86400.0,
) -> Dispatcher:
    return Dispatcher(
        queue,
        lambda: sender,
        policy=RetryPolicy.from_env_value(schedule),
        clock=time.time,
        wakeup=wakeup,
        concurrency=concurrency,
        lease_seconds=5.0,
        timeout=1.0,
        auto_disable_after=auto_disable_after,
        worker_id="w1",
        poll_interval=poll,
        rand=random.Random(7).random,
    )


async def run_until(
    dispatcher: Dispatcher, done: Callable[[], bool], timeout: float = 10.0
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        assert not task.done(), task
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)


def finished(queue: MemoryQueue) -> Callable[[], bool]:
    return lambda: all(r.status in ("delivered", "dead") for r in queue.rows)


def backlogs(queue: MemoryQueue, first: tuple[Sub, int], then: tuple[Sub, int]) -> None:
    """Queue one lead's delivery each: `first`'s, then `then`'s, due after every one of them."""
    for (sub, count), at in ((first, 0.0), (then, 0.001)):
        for i in range(count):
            queue.add(sub, f"{sub.id}-{i}", 1, at=at)


def delivered_to(queue: MemoryQueue, sub: Sub) -> Callable[[], bool]:
    """Tell, when called, whether every delivery to `sub` is delivered."""
    return lambda: all(r.status == "delivered" for r in queue.rows if r.subscription_id == sub.id)


async def test_delivers_everything_signed_and_counts_it() -> None:
    queue, sender = MemoryQueue(), FakeSender()
    sub = Sub("s1", previous_secret=OLD_SECRET, previous_expires=time.time() + 60)
    for i in range(50):
        queue.add(sub, f"L{i % 5}", i // 5 + 1)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, finished(queue))
    assert {r.status for r in queue.rows} == {"delivered"}
    assert dispatcher.stats.delivered == 50 and dispatcher.stats.claimed == 50
    assert sender.closed
    for _, _, body, headers in sender.sent:
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("leadhook/")
        # Both secrets sign during a rotation; the receiver library accepts either.
        assert len(headers["webhook-signature"].split()) == 2
        for secret in (SECRET, OLD_SECRET):
            Webhook(secret).verify(body, headers)


async def test_each_lead_is_sent_in_order_while_attempts_fail_at_random() -> None:
    rng = random.Random(3)
    failed_once: set[bytes] = set()

    async def flaky(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(rng.random() / 200)
        if body not in failed_once and rng.random() < 0.4:
            failed_once.add(body)
            return http(500, 1.0)
        return http(200, 1.0)

    queue, sender = MemoryQueue(), FakeSender(flaky)
    subs = [Sub("a", max_in_flight=4), Sub("b", max_in_flight=16)]
    for version in range(1, 9):
        for lead in range(6):
            for sub in subs:
                queue.add(sub, f"L{lead}", version)
    await run_until(make(queue, sender, schedule="0.01,0.01,0.01,0.01"), finished(queue))
    assert {r.status for r in queue.rows} == {"delivered"}
    for sub in subs:
        delivered: dict[str, list[int]] = defaultdict(list)
        for o in queue.outcomes:
            if o.job.subscription_id == sub.id and o.status == "delivered":
                delivered[o.job.entity_id].append(o.job.entity_version)
        assert all(versions == list(range(1, 9)) for versions in delivered.values())
        # Never two events of one lead in flight to one subscription at a time.
        starts: dict[str, list[int]] = defaultdict(list)
        for _, url, body, _ in sender.sent:
            if url.startswith(f"http://{sub.id}."):
                starts[json.loads(body)["lead"]].append(json.loads(body)["v"])
        assert all(v == sorted(v) for v in starts.values())


async def test_a_slow_endpoint_keeps_its_limit_and_delays_no_one_else() -> None:
    async def slow_or_fast(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.3 if "slow" in url else 0.001)
        return http(200, 1.0)

    queue, sender = MemoryQueue(), FakeSender(slow_or_fast)
    slow, fast = Sub("slow", max_in_flight=2), Sub("fast", max_in_flight=8)
    backlogs(queue, (slow, 40), (fast, 200))
    dispatcher = make(queue, sender, concurrency=8)
    start = time.monotonic()

    await run_until(dispatcher, delivered_to(queue, fast))
    assert time.monotonic() - start < 2.0  # the 40 slow ones alone take 6 s at 2 at a time
    assert sender.peak["http://slow.test/hook"] == 2
    assert sender.peak["http://fast.test/hook"] <= 8
    assert sum(r.status == "delivered" for r in queue.rows if r.subscription_id == slow.id) < 40
    # What was claimed for the slow endpoint but not sent went back to the queue unsent.
    unsent = [r for r in queue.rows if r.subscription_id == slow.id and r.status == "pending"]
    assert unsent and all(r.locked_by is None for r in unsent), [
        (r.seq, r.locked_by, r.locked_until) for r in unsent if r.locked_by
    ]


async def test_rate_limit_spaces_the_attempts() -> None:
    queue, sender = MemoryQueue(), FakeSender()
    sub = Sub("r", max_in_flight=4, rate=20.0)
    for i in range(40):
        queue.add(sub, f"L{i}", 1)
    start = time.monotonic()
    await run_until(make(queue, sender), finished(queue))
    times = sorted(t for t, *_ in sender.sent)
    # Bursts of a tenth of a second's worth (2), then one every 50 ms: 40 take about 1.9 s.
    assert times[-1] - start >= 1.8
    for i in range(len(times)):
        in_window = [t for t in times if times[i] <= t < times[i] + 1.0]
        assert len(in_window) <= 20 + 2


async def test_decisions_failed_dead_retry_after_and_410(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="leadhook.dispatcher")

    async def answer(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        if "gone" in url:
            return http(410, 1.0, body="bye")
        if "busy" in url:
            return http(429, 1.0, retry_after="30")
        return no_answer(1000.0, "timeout after 1s")

    queue, sender = MemoryQueue(), FakeSender(answer)
    gone, busy, down = Sub("gone", max_in_flight=1), Sub("busy"), Sub("down")
    seqs = {
        s.id: [queue.add(s, "L1", 1).seq, queue.add(s, "L2", 1).seq] for s in (gone, busy, down)
    }

    def rows(sub_id: str) -> list[DeliveryRow]:
        return [queue.row(seq) for seq in seqs[sub_id]]

    dispatcher = make(queue, sender, schedule="0.01")
    await run_until(
        dispatcher,
        lambda: (
            all(r.status == "dead" for r in rows("down"))
            and all(r.status == "failed" for r in rows("busy"))
            and any(r.status == "dead" for r in rows("gone"))
        ),
    )
    now = time.time()
    assert all(25 < (r.next_attempt_at or 0) - now <= 30 for r in rows("busy"))
    assert all(
        r.attempt_count == 1 and "Retry-After 30" in (r.last_error or "") for r in rows("busy")
    )
    assert all(
        r.attempt_count == 2 and "retries exhausted" in (r.last_error or "") for r in rows("down")
    )
    gone_now = queue.subscription("gone")
    assert not gone_now.enabled and gone_now.disabled_reason == "endpoint answered HTTP 410 Gone"
    # The other delivery of the gone endpoint is not sent to it: it stays for a re-enable.
    assert sorted(r.status for r in rows("gone")) == ["dead", "pending"]
    assert sum(url == "http://gone.test/hook" for _, url, _, _ in sender.sent) == 1
    assert dispatcher.stats.disabled == 1
    # A delivery given up is a warning naming its tenant and subscription (an operator's
    # way back to it); a retry is information; the disable is a warning of its own.
    records = [r for r in caplog.records if r.name == "leadhook.dispatcher"]
    dead = [r for r in records if r.getMessage() == "delivery given up: dead"]
    assert {(r.levelno, r.subscription_id, r.mid) for r in dead} == {  # type: ignore[attr-defined]
        (logging.WARNING, s.id, queue.row(seqs[s.id][0]).mid) for s in (down, gone)
    }
    retried = [r for r in records if r.getMessage() == "delivery attempt failed"]
    assert retried and all(r.levelno == logging.INFO for r in retried)
    disabling = [r for r in records if r.getMessage() == "disabling the subscription"]
    assert [(r.levelno, r.subscription_id) for r in disabling] == [  # type: ignore[attr-defined]
        (logging.WARNING, gone.id)
    ]


async def test_an_endpoint_failing_for_days_is_auto_disabled() -> None:
    queue = MemoryQueue()
    sub = Sub("old", first_failure_at=time.time() - 3 * 86400)
    queue.add(sub, "L1", 1)
    queue.add(sub, "L2", 1)

    async def boom(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        return http(500, 1.0, body="no")

    sender = FakeSender(boom)
    await run_until(
        make(queue, sender, auto_disable_after=86400.0),
        lambda: not queue.subscription("old").enabled,
    )
    assert "auto-disabled" in (queue.subscription("old").disabled_reason or "")
    outcome = queue.outcomes[0]
    assert outcome.status == "failed" and outcome.disable is not None
    assert outcome.disable.failing_before is not None
    assert outcome.disable.failing_before <= time.time() - 86400 + 1


async def test_graceful_stop_finishes_in_flight_and_releases_the_rest() -> None:
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.3)
        return http(200, 300.0)

    queue, sender = MemoryQueue(), FakeSender(slow)
    sub = Sub("s", max_in_flight=3)
    for i in range(20):
        queue.add(sub, f"L{i}", 1)
    dispatcher = make(queue, sender, concurrency=4)  # a tenant alone leaves one slot free
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while len(sender.sent) < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    delivered = [r for r in queue.rows if r.status == "delivered"]
    assert len(delivered) == len(sender.sent) == 3  # in-flight ones finished and were recorded
    assert all(r.locked_by is None for r in queue.rows)  # nothing stays leased
    assert len(queue.released) == dispatcher.stats.claimed - 3
    assert sender.closed


async def test_a_job_whose_lease_ran_out_is_released_not_sent() -> None:
    class StaleQueue(MemoryQueue):
        def claim(self, **kwargs: object) -> list[Job]:
            kwargs["lease_until"] = time.time() + 0.5  # less than timeout + margin
            return super().claim(**kwargs)  # type: ignore[arg-type]

    queue, sender = StaleQueue(), FakeSender()
    queue.add(Sub("s"), "L1", 1)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, lambda: bool(queue.released))
    assert sender.sent == [] and queue.rows[0].status == "pending"


async def test_a_sender_that_raises_is_a_failed_attempt() -> None:
    async def broken(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        raise RuntimeError("kaput")

    queue = MemoryQueue()
    queue.add(Sub("s"), "L1", 1)
    await run_until(make(queue, FakeSender(broken), schedule="5"), lambda: bool(queue.outcomes))
    row = queue.rows[0]
    assert row.status == "failed" and "kaput" in (queue.outcomes[0].attempt.error or "")


async def test_outcomes_survive_a_failed_write_and_are_recorded_later() -> None:
    queue, sender = MemoryQueue(), FakeSender()
    queue.fail_records = 1
    for i in range(5):
        queue.add(Sub("s"), f"L{i}", 1)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, finished(queue))
    assert len(sender.sent) == 5 and dispatcher.stats.delivered == 5


async def test_wakeup_claims_at_once_instead_of_waiting_for_the_poll() -> None:
    queue, sender, wakeup = MemoryQueue(), FakeSender(), Wakeup()
    dispatcher = make(queue, sender, wakeup=wakeup, poll=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await asyncio.sleep(0.1)
    queue.add(Sub("s"), "L1", 1)
    started = time.monotonic()
    # Notified from another thread, as the API's worker threads do after a commit.
    await asyncio.to_thread(wakeup.notify)
    while not sender.sent:
        assert time.monotonic() - started < 2.0
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(task, 5)


@pytest.mark.parametrize("bad", [{"concurrency": 0}, {"lease_seconds": 0.5}])
def test_nonsense_settings_are_refused(bad: dict[str, float]) -> None:
    args: dict[str, object] = {"policy": RetryPolicy.default(), "clock": time.time, **bad}
    with pytest.raises(ValueError):
        Dispatcher(MemoryQueue(), lambda: FakeSender(), **args)  # type: ignore[arg-type]


# ---- fairness, circuit, leases ---------------------------------------------------------------


async def test_a_tenant_never_starts_beyond_its_share_while_another_waits() -> None:
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    a_when_b_starts: list[tuple[float, int]] = []
    a_attempts: list[tuple[float, float]] = []  # (started, ended) of each of A's attempts

    async def answer(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        tenant = "b" if "b0" in url else "a"
        started = time.monotonic()
        if tenant == "b":
            a_when_b_starts.append((started, active["a"]))
        active[tenant] += 1
        peak[tenant] = max(peak[tenant], active[tenant])
        await asyncio.sleep(0.3 if tenant == "a" else 0.03)  # B's endpoint is the quick one
        active[tenant] -= 1
        if tenant == "a":
            a_attempts.append((started, time.monotonic()))
        return http(200, 1.0)

    queue, sender = MemoryQueue(), FakeSender(answer)
    for i in range(3):
        sub = Sub(f"a{i}", max_in_flight=100, mid="A")
        for n in range(60):
            queue.add(sub, f"A{i}-{n}", 1)
    dispatcher = make(queue, sender, concurrency=16)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while active["a"] < 14:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert peak["a"] == 14  # alone: every slot but the reserve (16 // 8)
    b = Sub("b0", max_in_flight=100, mid="B")
    for n in range(300):
        queue.add(b, f"B{n}", 1, at=time.time())
    arrived = time.monotonic()
    while sum(r.status == "delivered" for r in queue.rows if r.subscription_id == b.id) < 300:
        assert time.monotonic() - arrived < 6.0, "tenant B waited behind tenant A"
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    # B started at once in the reserve, before any of A's attempts ended.
    assert a_when_b_starts[0][0] - arrived < 0.2 and a_when_b_starts[0][1] == 14
    # Once A's attempts in flight when B arrived had all ended, A started nothing beyond half
    # the slots while B waited. (Counted from their end, not from a fixed delay or the 14th
    # end: on a loaded machine some of A's first attempts ended before B arrived, and the
    # alone-again A refilled its slots with attempts that were still running after them.)
    first_wave_over = max(ended for started, ended in a_attempts if started < arrived)
    later = [a for at, a in a_when_b_starts if at > first_wave_over]
    # "While B waited" is while B had jobs on hand. They come from the queue a claim at a
    # time, and in the moment between two claims (a loaded machine widens it) B has none, so
    # A may take a free slot as a lone tenant would: one run in about eight here, a few of B's
    # ~280 starts then found A at 10 or 12. Without the share, every one would find A at 14.
    within = sum(a <= 8 for a in later)
    assert later and within >= 0.9 * len(later) and max(later) <= 14, sorted(later)[-20:]
    assert peak["b"] >= 8


async def test_a_slow_endpoint_cannot_take_every_slot_of_its_tenant() -> None:
    # One tenant, two endpoints: A answers slowly and allows 100 in flight, B answers at once.
    # A may not hold the tenant's slots while B has jobs: B gets its share at once, and its
    # deliveries are claimed although A's backlog alone fills a claim.
    a_active = 0
    a_peak_while_b: list[int] = []

    async def answer(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        nonlocal a_active
        if "slow" in url:
            a_active += 1
            try:
                await asyncio.sleep(0.4)
            finally:
                a_active -= 1
        else:
            a_peak_while_b.append(a_active)
            await asyncio.sleep(0.002)
        return http(200, 1.0)

    queue, sender = MemoryQueue(), FakeSender(answer)
    slow, fast = Sub("slow", max_in_flight=100, mid="T"), Sub("fast", max_in_flight=100, mid="T")
    backlogs(queue, (slow, 300), (fast, 300))
    dispatcher = make(queue, sender, concurrency=16)
    start = time.monotonic()

    await run_until(dispatcher, delivered_to(queue, fast))
    # A's 300 alone take 300 / 14 * 0.4 = 8.6 s; B's 300 at 8 at a time, well under 2 s.
    assert time.monotonic() - start < 3.0
    # Once B had jobs, A held at most half the tenant's slots (ceil(14 / 2)) beyond the
    # attempts it had started before B's first claim.
    settled = a_peak_while_b[len(a_peak_while_b) // 2 :]
    assert settled and max(settled) <= 7, max(settled)


async def test_after_a_claim_one_tenant_filled_the_next_takes_the_others_first() -> None:
    # A tenant whose endpoints answer 500 at once never fills its slots and is never skipped:
    # its backlog, due before everyone else's, filled every claim. After a full claim that
    # one tenant had most of, the next claim skips its subscriptions, then fills what is left
    # with them (a second claim at the same instant); when nobody else had anything due, it
    # does not skip them again before a commit or the poll interval.
    async def fail(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.001)
        return http(500, 1.0)

    class Watched(MemoryQueue):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[float, frozenset[str], int, list[str]]] = []

        def claim(self, **kwargs: Any) -> list[Job]:
            jobs = super().claim(**kwargs)
            got = [j.mid for j in jobs]
            self.calls.append((kwargs["now"], frozenset(kwargs["exclude"]), kwargs["limit"], got))
            return jobs

    queue, sender = Watched(), FakeSender(fail)
    failing = Sub("a0", max_in_flight=64, mid="A")
    for n in range(3_000):
        queue.add(failing, f"A{n}", 1, at=0.0)
    healthy = Sub("b", mid="B")
    queue.add(healthy, "B0", 1, at=0.001)  # due after A's whole backlog
    dispatcher = make(queue, sender, schedule="60", concurrency=16, poll=0.25)
    await run_until(dispatcher, lambda: len(sender.sent) >= 1_000)
    calls = queue.calls
    first_b = next(i for i, (_, _, _, mids) in enumerate(calls) if "B" in mids)
    assert "a0" in calls[first_b][1]  # B's came in a claim that skipped A's subscription
    assert all(set(mids) == {"A"} and len(mids) == limit for _, _, limit, mids in calls[:first_b])
    assert first_b == 1  # right after the first full claim of A's, not after its backlog
    # Deferred alone (nobody else due): the rest filled at the same instant, then no deferral
    # until the poll interval.
    pairs = [
        i for i in range(1, len(calls))
        if calls[i][0] == calls[i - 1][0] and "a0" in calls[i - 1][1] and "a0" not in calls[i][1]
    ]  # fmt: skip
    assert pairs
    span = calls[-1][0] - calls[0][0]
    assert len(pairs) <= 2 + span / 0.25, (len(pairs), span)


async def test_an_endpoint_that_never_answers_trips_and_its_waiting_jobs_go_back() -> None:
    async def silence(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.05)
        return no_answer(50.0, "timeout after 0.05s")

    queue, sender = MemoryQueue(), FakeSender(silence)
    hole = Sub("hole", max_in_flight=2)
    for n in range(30):
        queue.add(hole, f"L{n}", 1)
    dispatcher = make(queue, sender, schedule="30")
    await run_until(dispatcher, lambda: dispatcher.stats.tripped == 1 and bool(queue.released))
    sent = len(sender.sent)
    await asyncio.sleep(0.3)
    # Five silent attempts (and whatever was already in flight), then nothing more is sent.
    assert 5 <= sent <= 6 and len(sender.sent) == sent
    waiting = [r for r in queue.rows if r.status == "pending"]
    assert len(waiting) == 30 - sent and all(r.locked_by is None for r in waiting)


def short_leases(queue: MemoryQueue, sender: FakeSender, lease_seconds: float) -> Dispatcher:
    """A dispatcher whose heartbeat (a third of the lease) comes within the test's seconds."""
    return Dispatcher(
        queue,
        lambda: sender,
        policy=RetryPolicy.from_env_value("1"),
        clock=time.time,
        concurrency=8,
        lease_seconds=lease_seconds,
        timeout=3.0,
        worker_id="w1",
        poll_interval=0.02,
    )


async def test_the_heartbeat_renews_every_held_lease_in_one_call() -> None:
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(2.5)  # longer than a lease of 2 s: only the heartbeat keeps it
        return http(200, 2500.0)

    queue, sender = MemoryQueue(), FakeSender(slow)
    sub = Sub("s", max_in_flight=2)
    for n in range(4):
        queue.add(sub, f"L{n}", 1)
    dispatcher = short_leases(queue, sender, 2.0)
    await run_until(dispatcher, finished(queue), timeout=15)
    assert {r.status for r in queue.rows} == {"delivered"} and len(sender.sent) == 4
    assert queue.released == []  # no job was given up for a short lease
    assert len(queue.renewals) >= 3
    first_seqs, _ = queue.renewals[0]
    assert sorted(first_seqs) == [1, 2, 3, 4]  # in flight and waiting, in one statement


async def disabled_once_sending(queue: MemoryQueue, sender: FakeSender) -> None:
    """Wait for the first send, then disable subscription "s" through the store, as the API
    does."""
    deadline = time.monotonic() + 5
    while not sender.sent:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    with queue.store.lock:
        queue.store.state.subscriptions["s"] = SubscriptionRow(
            Sub("s", max_in_flight=1, enabled=False).subscription()
        )


async def test_a_subscription_disabled_meanwhile_gets_none_of_the_jobs_on_hand() -> None:
    # A worker holds up to LANE_DEPTH times max_in_flight of a subscription; an API disable
    # used to reach it only through the claims, so everything on hand was still sent.
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.6)
        return http(200, 600.0)

    queue, sender = MemoryQueue(), FakeSender(slow)
    sub = Sub("s", max_in_flight=1)
    for n in range(20):
        queue.add(sub, f"L{n}", 1)
    dispatcher = short_leases(queue, sender, 1.5)  # a heartbeat every 0.5 s
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await disabled_once_sending(queue, sender)
    await asyncio.sleep(2.5)
    stop.set()
    await asyncio.wait_for(task, 10)
    # The attempt in flight ended (and at most one that started before the next heartbeat);
    # the rest of what the worker held went back, pending and unleased: nothing lost.
    assert len(sender.sent) <= 2, len(sender.sent)
    assert len(queue.released) >= 2
    pending = [r for r in queue.rows if r.status == "pending"]
    assert len(pending) == 20 - len(sender.sent)
    assert all(r.locked_by is None for r in pending)


async def test_a_stopped_subscription_s_jobs_on_hand_go_back_when_told() -> None:
    # The API tells the dispatcher of a disable or a delete (`Wakeup.notify_stopped`): what it
    # holds for the subscription goes back at once, not at the next heartbeat (5 s here).
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.3)
        return http(200, 300.0)

    queue, sender, wakeup = MemoryQueue(), FakeSender(slow), Wakeup()
    sub = Sub("s", max_in_flight=1)
    for n in range(20):
        queue.add(sub, f"L{n}", 1)
    dispatcher = Dispatcher(
        queue,
        lambda: sender,
        policy=RetryPolicy.from_env_value("1"),
        clock=time.time,
        wakeup=wakeup,
        concurrency=8,
        lease_seconds=15.0,  # a heartbeat every 5 s: after the test
        worker_id="w1",
        poll_interval=0.02,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    await disabled_once_sending(queue, sender)
    wakeup.notify_stopped()
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert len(sender.sent) <= 2, len(sender.sent)  # the one in flight, at most one more
    assert len(queue.released) >= 2
    assert all(r.locked_by is None for r in queue.rows if r.status == "pending")


async def test_max_in_flight_is_clamped_to_the_cap() -> None:
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.3)
        return http(200, 300.0)

    queue, sender = MemoryQueue(), FakeSender(slow)
    wide = Sub("wide", max_in_flight=1000)  # a row written before the API refused it
    for n in range(MAX_IN_FLIGHT + 40):
        queue.add(wide, f"L{n}", 1)
    # Slots enough for more than the cap, even after the reserve.
    dispatcher = make(queue, sender, concurrency=MAX_IN_FLIGHT + 60)
    await run_until(dispatcher, finished(queue), timeout=20)
    assert sender.peak["http://wide.test/hook"] == MAX_IN_FLIGHT


class SettlingMemoryQueue(MemoryQueue):
    """The memory queue with the SQL queue's settling claim: what finished is recorded in the
    claim's own transaction (the store is put back as it was if the call fails). It counts
    the claims that carried verdicts and the `record` calls the recorder made on its own;
    `fail_settles`: the next so many settling claims raise, as a database that is down."""

    def __init__(self, fail_settles: int = 0) -> None:
        super().__init__()
        self.fail_settles = fail_settles
        self.settles = 0
        self.carried = 0
        self.alone = 0

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        self.alone += 1
        super().record(worker_id=worker_id, verdicts=verdicts, now=now)

    def settle_and_claim(
        self,
        *,
        worker_id: str,
        verdicts: Sequence[Verdict],
        releases: Sequence[int],
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]:
        with self.store.lock:
            if self.fail_settles:
                self.fail_settles -= 1
                raise RuntimeError("database is down")
            if verdicts:
                MemoryQueue.record(self, worker_id=worker_id, verdicts=verdicts, now=now)
            if releases:
                self.release(worker_id=worker_id, seqs=releases, now=now)
            jobs = self.claim(
                worker_id=worker_id, limit=limit, now=now, lease_until=lease_until, exclude=exclude
            )
        self.settles += 1
        self.carried += len(verdicts)
        return jobs


def test_a_claim_takes_up_to_twice_the_slots_within_bounds() -> None:
    """Catches: claims that stop growing with the slots (a PostgreSQL drain's rounds are
    mostly fixed cost: 100 at a time on 128 slots drained ~3,800/s, 256 ~4,500/s), or that
    grow without bound (one transaction holding SQLite's write lock for a whole backlog)."""
    assert [batch_of(n) for n in (1, 16, 50, 64, 128, 256, 1000)] == [
        100, 100, 100, 128, 256, 512, 512,
    ]  # fmt: skip


async def test_a_backlog_is_claimed_two_slots_worth_at_a_time() -> None:
    """Catches: the dispatcher not taking its claim size from its slots (`batch_of`), or a
    claim asking for more than that."""
    queue, sender = MemoryQueue(), FakeSender()
    sub = Sub("s1", max_in_flight=256)
    for n in range(1000):
        queue.add(sub, f"L{n}", 1)
    dispatcher = make(queue, sender, concurrency=128)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while sum(r.status == "delivered" for r in queue.rows) < 1000:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert queue.limits[0] == batch_of(128) == 256  # nothing held yet: a whole batch
    assert max(queue.limits) <= 256 and len(sender.sent) == 1000


async def test_what_finished_rides_on_the_next_claim_and_is_recorded_once() -> None:
    """Catches: a settling queue's verdicts recorded twice (by the claim and by the recorder),
    never (left behind when no claim came), or a lead's next event waiting a round for them."""
    queue, sender = SettlingMemoryQueue(), FakeSender()
    sub = Sub("s1")
    for version in (1, 2, 3):
        for lead in range(4):
            queue.add(sub, f"L{lead}", version)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, finished(queue))
    assert {r.status for r in queue.rows} == {"delivered"}
    assert Counter(o.job.seq for o in queue.outcomes) == {r.seq: 1 for r in queue.rows}
    assert queue.carried >= 8  # versions 1 and 2 of every lead unblocked their successor
    order = defaultdict(list)
    for body in sender.bodies():
        order[body["lead"]].append(body["v"])
    assert all(v == [1, 2, 3] for v in order.values())


async def test_a_settling_claim_that_fails_loses_and_repeats_nothing() -> None:
    """Catches: the verdicts a failed settling claim carried dropped (their deliveries would
    be sent again when the leases ran out) or kept twice."""
    queue, sender = SettlingMemoryQueue(fail_settles=2), FakeSender()
    sub = Sub("s1")
    for version in (1, 2):
        for lead in range(3):
            queue.add(sub, f"L{lead}", version)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, finished(queue))
    assert queue.fail_settles == 0
    assert Counter(o.job.seq for o in queue.outcomes) == {r.seq: 1 for r in queue.rows}
    assert len(sender.sent) == 6 and dispatcher.stats.delivered == 6


async def test_a_stop_while_a_claim_is_planned_still_records_what_finished() -> None:
    """Catches: the recorder waiting for a claim that the stop cancelled (shutdown would
    hang, and the last verdicts would be lost until their leases ran out)."""
    queue, sender = SettlingMemoryQueue(), FakeSender()
    wakeup = Wakeup()
    queue.add(Sub("s1"), "L1", 1)
    dispatcher = make(queue, sender, wakeup=wakeup, poll=5.0)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while not sender.sent:
        await asyncio.sleep(0.005)
    wakeup.notify()  # the loop now gathers before a claim that should carry the verdict
    await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [r.status for r in queue.rows] == ["delivered"]
    assert len(queue.outcomes) == 1


class ProbeCountingQueue(SettlingMemoryQueue):
    """Counts the claims that skipped a subscription and found nothing (fruitless probes)."""

    def __init__(self) -> None:
        super().__init__()
        self.fruitless = 0

    def claim(self, **kwargs: Any) -> list[Job]:
        jobs = super().claim(**kwargs)
        self.fruitless += bool(kwargs["exclude"]) and not jobs
        return jobs


async def test_a_lone_tenants_backlog_is_not_probed_for_other_tenants_after_every_attempt() -> None:
    """Catches: a claim after every finished attempt while the only tenant with deliveries
    was full (its share leaves slots for a tenant that may arrive): each such claim skipped
    that tenant's due rows, found nothing, and on SQLite walked them all (a third of a
    drain's time went there). Once a probe found nothing, the same probe waits for a commit,
    a change in what it skips, or the poll interval."""
    queue, sender = ProbeCountingQueue(), FakeSender()

    async def quick(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.002)
        return http(200, 2.0)

    sender.behaviour = quick
    sub = Sub("s1", max_in_flight=256)
    for n in range(600):
        queue.add(sub, f"L{n}", 1)
    dispatcher = make(queue, sender, concurrency=16, poll=30.0)
    await run_until(dispatcher, finished(queue))
    assert dispatcher.stats.delivered == 600
    # One fruitless probe at most each time the tenant fills its share again after a
    # productive claim that skipped nothing would be ~40; after every attempt, ~600.
    assert queue.fruitless <= 3, queue.fruitless


async def test_a_commit_lets_a_fruitless_probe_run_again_at_once() -> None:
    """Catches: the memo of a fruitless probe outliving a commit: a tenant whose deliveries
    a commit just enqueued would wait for the poll interval behind a full tenant."""
    queue, sender, wakeup = ProbeCountingQueue(), FakeSender(), Wakeup()
    gate = asyncio.Event()

    async def held(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        if "a0" in url:
            await gate.wait()  # tenant A's attempts hang until the end: A stays full
        return http(200, 1.0)

    sender.behaviour = held
    a = Sub("a0", max_in_flight=256, mid="A")
    for n in range(100):
        queue.add(a, f"A{n}", 1)
    dispatcher = make(queue, sender, concurrency=16, wakeup=wakeup, poll=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while queue.fruitless < 1:  # A filled its share; a probe found nothing else
        await asyncio.sleep(0.01)
    b = Sub("b0", mid="B")
    queue.add(b, "B1", 1)
    started = time.monotonic()
    await asyncio.to_thread(wakeup.notify)
    while not any("b0" in url for _, url, _, _ in sender.sent):
        assert time.monotonic() - started < 2.0, "tenant B waited for the poll interval"
        await asyncio.sleep(0.005)
    gate.set()
    stop.set()
    await asyncio.wait_for(task, 10)


class InlineMemoryQueue(SettlingMemoryQueue):
    """A settling queue that, like SQLite's, may be called on the loop (`try_now`): it notes
    the thread of each call and, with `busy`, declines as a held write gate would."""

    def __init__(self, busy: bool = False) -> None:
        super().__init__()
        self.busy = busy
        self.threads: list[tuple[str, int]] = []
        self.inline = 0

    def try_now(self, call: str, /, **kwargs: Any) -> tuple[bool, Any]:
        if self.busy:
            return False, None
        self.inline += 1
        return True, getattr(self, call)(**kwargs)

    def stop_waiting(self) -> None:
        self.told_to_stop_waiting = True

    def claim(self, **kwargs: Any) -> list[Job]:
        self.threads.append(("claim", threading.get_ident()))
        return super().claim(**kwargs)

    def record(self, **kwargs: Any) -> None:
        self.threads.append(("record", threading.get_ident()))
        super().record(**kwargs)


@pytest.mark.parametrize("busy", [False, True])
async def test_a_queue_that_answers_at_once_is_called_on_the_loop_else_on_a_thread(
    busy: bool,
) -> None:
    """Catches: SQLite's claims and records handed to a thread (they waited 5-13 ms for the
    GIL the sending loop held, against 0.8-2 ms on the loop), or run on the loop when the
    queue declined (the loop would wait for another process's write gate)."""
    queue, sender = InlineMemoryQueue(busy=busy), FakeSender()
    sub = Sub("s1")
    for version in (1, 2, 3):
        for lead in range(10):
            queue.add(sub, f"L{lead}", version)
    dispatcher = make(queue, sender)
    loop_thread = threading.get_ident()
    await run_until(dispatcher, finished(queue))
    assert {r.status for r in queue.rows} == {"delivered"}
    assert Counter(o.job.seq for o in queue.outcomes) == {r.seq: 1 for r in queue.rows}
    on_loop = {thread == loop_thread for _, thread in queue.threads}
    assert on_loop == ({False} if busy else {True})
    assert (queue.inline > 0) is not busy


async def test_a_backlog_is_recorded_in_fewer_larger_transactions() -> None:
    """Catches: a drain recording every few verdicts in a transaction of their own (2 ms of
    gathering: a commit per handful of deliveries), where a backlog can wait for a batch's
    worth (or 20 ms); and a verdict recorded twice or lost on the way."""
    queue = SettlingMemoryQueue()
    rand = random.Random(3)

    async def spread(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(rand.uniform(0.001, 0.006))  # attempts end at different times
        return http(200, 3.0)

    sender = FakeSender(spread)
    sub = Sub("s1", max_in_flight=256)
    for n in range(1600):
        queue.add(sub, f"L{n}", 1)
    dispatcher = make(queue, sender, concurrency=32, poll=30.0)
    await run_until(dispatcher, finished(queue))
    assert Counter(o.job.seq for o in queue.outcomes) == {r.seq: 1 for r in queue.rows}
    writes = queue.settles + queue.alone
    # Verdicts per transaction: 6 with 2 ms of gathering throughout; 12-20 measured here.
    assert 1600 / writes >= 10, (queue.settles, queue.alone)


async def test_a_database_outage_logs_one_traceback_then_a_line_a_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class DownQueue(MemoryQueue):
        down = 2  # claims that fail, as a database that is down fails them

        def claim(self, **kwargs: Any) -> list[Job]:
            if self.down:
                self.down -= 1
                raise RuntimeError("database is down")
            return super().claim(**kwargs)

    queue, sender = DownQueue(), FakeSender()
    queue.add(Sub("s"), "L1", 1)
    with caplog.at_level("WARNING", logger="leadhook.dispatcher"):
        await run_until(make(queue, sender), finished(queue))
    failed = [r for r in caplog.records if r.getMessage().startswith("claim failed")]
    assert [bool(r.exc_info) for r in failed] == [True, False]
    assert failed[1].getMessage().startswith("claim failed again (2 times in a row)")
    assert failed[1].getMessage().endswith(": database is down")  # the cause, in one line
    assert any(r.getMessage() == "claims work again" for r in caplog.records)


async def test_a_failing_claim_waits_its_second_whatever_wakes_the_loop() -> None:
    # Under load a commit wakes the loop every few milliseconds: a claim that kept failing
    # (secrets the keys no longer open) was tried again at once, 8 times in 44 ms, while
    # its log line said "retrying in 1s" (an operator's review).
    class Failing(MemoryQueue):
        claims = 0

        def claim(self, **kwargs: Any) -> list[Job]:
            self.claims += 1
            raise RuntimeError("the secret keys open no secret")

    queue, sender, wakeup = Failing(), FakeSender(), Wakeup()
    dispatcher = make(queue, sender, wakeup=wakeup)
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    started = time.monotonic()
    while time.monotonic() - started < 1.5:
        wakeup.notify()  # a behaviour's commit
        await asyncio.sleep(0.005)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert 1 <= queue.claims <= 2, queue.claims  # at 0 s and 1 s, not a claim a wake-up


async def test_records_failing_through_an_outage_are_logged_thinned_and_written_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A traceback a try (every 0.5-5 s) made an outage a thousand-line log (an operator's
    # review): the same thinning as the claims', and tried again at the claims' pace.
    class DownRecords(MemoryQueue):
        down = 3

        def record(self, **kwargs: Any) -> None:
            if self.down:
                self.down -= 1
                raise RuntimeError("database is down")
            super().record(**kwargs)

    queue, sender = DownRecords(), FakeSender()
    queue.add(Sub("s"), "L1", 1)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="leadhook.dispatcher"):
        await run_until(make(queue, sender), finished(queue))
    said = [r for r in caplog.records if r.getMessage().startswith("recording outcomes failed")]
    assert [r.attempts for r in said] == [1, 2]  # type: ignore[attr-defined]  # not the 3rd
    # The first with its traceback, the next in one line with its cause.
    assert [bool(r.exc_info) for r in said] == [True, False]
    assert said[1].getMessage() == (
        "recording outcomes failed (2 times in a row): database is down"
    )
    assert {r.status for r in queue.rows} == {"delivered"}  # written once it could be
    assert time.monotonic() - started < 5  # 0.5 + 1 + 1 s of waiting, not 1 + 2 + 4


def test_a_long_outage_logs_fewer_and_fewer_lines() -> None:
    # A line a second filled the log through an outage only an operator ends.
    logged = [n for n in range(1, 3601) if failure_logged(n)]
    assert logged[:8] == [1, 2, 4, 8, 16, 32, 64, 120]
    assert len(logged) == 7 + 3600 // 60 - 1  # an hour: 66 lines, not 3,600


class OpenCircuitQueue(MemoryQueue):
    """The memory queue, with the circuit of the subscriptions in `open_until` open: their
    jobs come claimed as the SQL queue claims them then (`Job.circuit_open_until` set)."""

    def __init__(self) -> None:
        super().__init__()
        self.open_until: dict[str, float] = {}

    def claim(self, **kwargs: Any) -> list[Job]:
        jobs = super().claim(**kwargs)
        return [replace(j, circuit_open_until=self.open_until.get(j.subscription_id)) for j in jobs]


async def test_an_open_circuit_turns_jobs_away_on_the_schedule_without_sending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches: a job of an open circuit sent anyway, held without spending an attempt (a dead
    endpoint's backlog then outlived its retry schedule), taking a sending slot, or recorded
    as the endpoint's silence (`Verdict.sent`, which would reopen the circuit for longer)."""
    caplog.set_level(logging.DEBUG, logger="leadhook.dispatcher")
    queue, sender = OpenCircuitQueue(), FakeSender()
    down, up = Sub("down"), Sub("up")
    for lead in range(5):
        queue.add(down, f"D{lead}", 1)
        queue.add(up, f"U{lead}", 1)
    queue.add(down, "D0", 2)  # waits behind D0's first, turned away or not
    queue.open_until["down"] = time.time() + 3600
    dispatcher = make(queue, sender, schedule="0.05,0.05")
    await run_until(dispatcher, finished(queue))
    assert {url for _, url, _, _ in sender.sent} == {"http://up.test/hook"}
    mine = [o for o in queue.outcomes if o.job.subscription_id == "down"]
    assert len(mine) == 6 * 3  # three attempts each: the schedule's, none sent
    assert {(o.sent, o.attempt.status_code, o.attempt.error) for o in mine} == {
        (False, None, TURNED_AWAY)
    }
    assert all(o.attempt.latency_ms == 0.0 for o in mine)
    assert {o.status for o in mine if o.job.attempt_count < 2} == {"failed"}
    assert {o.status for o in mine if o.job.attempt_count == 2} == {"dead"}
    assert all(o.last_error and o.last_error.startswith(TURNED_AWAY) for o in mine)
    # Per-lead order held: D0's second event was turned away only after its first was dead.
    d0 = [(o.job.entity_version, o.status) for o in mine if o.job.entity_id == "D0"]
    assert d0 == [(1, "failed"), (1, "failed"), (1, "dead"), (2, "failed"), (2, "failed"),
                  (2, "dead")]  # fmt: skip
    assert {r.status for r in queue.rows if r.subscription_id == "up"} == {"delivered"}
    # A line per turned-away attempt at DEBUG (the opening was the warning); dead, a warning.
    lines = [r for r in caplog.records if r.name == "leadhook.dispatcher"]
    assert {r.levelno for r in lines if "turned away" in r.getMessage()} == {logging.DEBUG}
    assert not [r for r in lines if r.getMessage() == "delivery attempt failed"]
    dead = [r for r in lines if r.getMessage() == "delivery given up: dead"]
    assert len(dead) == 6 and {r.levelno for r in dead} == {logging.WARNING}


async def test_a_turned_away_attempt_ends_a_long_failing_streak_in_an_auto_disable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches: an endpoint down for days whose attempts were all turned away never reaching
    the auto-disable, or reaching it without the log line an operator looks for."""
    queue, sender = OpenCircuitQueue(), FakeSender()
    down = Sub("down", first_failure_at=time.time() - 100)
    queue.add(down, "D0", 1)
    queue.open_until["down"] = time.time() + 3600
    caplog.set_level(logging.WARNING, logger="leadhook.dispatcher")
    dispatcher = make(queue, sender, auto_disable_after=10.0)
    await run_until(dispatcher, lambda: bool(queue.outcomes))
    verdict = queue.outcomes[0]
    assert not verdict.sent and verdict.disable is not None
    assert verdict.disable.reason.startswith("auto-disabled: every attempt has failed since")
    assert not queue.subscription("down").enabled
    assert [
        r.__dict__["subscription_id"]
        for r in caplog.records
        if r.getMessage() == "disabling the subscription"
    ] == ["down"]
    assert sender.sent == []
