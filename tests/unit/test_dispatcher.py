"""The delivery loop over an in-memory queue and sender: order, limits, decisions, stopping."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
from standardwebhooks.webhooks import Webhook

from leadhook.adapters.http.answers import http_answer
from leadhook.domain.attempts import SendResult, no_answer
from leadhook.domain.retry import RetryPolicy
from leadhook.domain.signing import generate_secret
from leadhook.services.dispatcher import Dispatcher
from leadhook.services.lanes import LANE_DEPTH, MAX_IN_FLIGHT
from leadhook.services.ports import Job, Verdict
from leadhook.services.wakeup import Wakeup

SECRET = generate_secret(bytes(range(32)))
OLD_SECRET = generate_secret(b"\x07" * 32)


@dataclass
class Sub:
    id: str
    max_in_flight: int = 8
    mid: str = "acme"
    rate: float | None = None
    enabled: bool = True
    first_failure_at: float | None = None
    disabled_reason: str | None = None
    previous_secret: str | None = None
    previous_expires: float | None = None


@dataclass
class Row:
    seq: int
    sub: Sub
    lead: str
    version: int
    status: str = "pending"
    attempts: int = 0
    next_at: float = 0.0
    locked_until: float | None = None
    locked_by: str | None = None
    last_error: str | None = None


@dataclass
class FakeQueue:
    """The claim rules of the SQL queue, in memory."""

    rows: list[Row] = field(default_factory=list)
    outcomes: list[Verdict] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    claims: int = 0
    fail_records: int = 0
    renewals: list[tuple[list[int], float]] = field(default_factory=list)

    def add(self, sub: Sub, lead: str, version: int, at: float = 0.0) -> Row:
        row = Row(len(self.rows) + 1, sub, lead, version, next_at=at)
        self.rows.append(row)
        return row

    def _blocked(self, row: Row) -> bool:
        return any(
            r.sub is row.sub
            and r.lead == row.lead
            and r.version < row.version
            and r.status in ("pending", "failed")
            for r in self.rows
        )

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
        taken: Counter[str] = Counter()
        jobs: list[Job] = []
        for row in sorted(self.rows, key=lambda r: (r.next_at, r.seq)):
            sub = row.sub
            cap = sub.max_in_flight * LANE_DEPTH if sub.rate is None else max(1, int(sub.rate))
            if (
                row.status not in ("pending", "failed")
                or row.next_at > now
                or (row.locked_until is not None and row.locked_until >= now)
                or not sub.enabled
                or sub.id in exclude
                or taken[sub.id] >= min(cap, sub.max_in_flight * LANE_DEPTH)
                or self._blocked(row)
            ):
                continue
            taken[sub.id] += 1
            row.locked_until, row.locked_by = lease_until, worker_id
            body = json.dumps({"lead": row.lead, "v": row.version}).encode()
            jobs.append(
                Job(
                    row.seq,
                    f"d{row.seq}",
                    sub.mid,
                    sub.id,
                    f"ev{row.seq}",
                    row.lead,
                    row.version,
                    row.attempts,
                    body,
                    f"http://{sub.id}.test/hook",
                    SECRET,
                    sub.max_in_flight,
                    sub.rate,
                    lease_until,
                    sub.previous_secret,
                    sub.previous_expires,
                    sub.first_failure_at,
                )
            )
            if len(jobs) == limit:
                break
        return jobs

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        if self.fail_records:
            self.fail_records -= 1
            raise RuntimeError("database is down")
        by_seq = {r.seq: r for r in self.rows}
        for o in verdicts:
            row = by_seq[o.job.seq]
            self.outcomes.append(o)
            if row.locked_by != worker_id:
                continue
            row.status, row.attempts = o.status, o.job.attempt_count + 1
            row.next_at = o.next_attempt_at or 0.0
            row.last_error, row.locked_until, row.locked_by = o.last_error, None, None
            if o.disable is not None:
                row.sub.enabled, row.sub.disabled_reason = False, o.disable.reason

    def release(self, *, worker_id: str, seqs: Sequence[int]) -> None:
        self.released.extend(seqs)
        for row in self.rows:
            if row.seq in seqs and row.locked_by == worker_id:
                row.locked_until = row.locked_by = None

    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]:
        self.renewals.append((list(seqs), lease_until))
        kept = set()
        for row in self.rows:
            if row.seq in seqs and row.locked_by == worker_id:
                row.locked_until = lease_until
                kept.add(row.seq)
        return kept

    def recover(self, *, worker_id: str) -> int:
        return 0


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
    queue: FakeQueue,
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


def finished(queue: FakeQueue) -> Callable[[], bool]:
    return lambda: all(r.status in ("delivered", "dead") for r in queue.rows)


async def test_delivers_everything_signed_and_counts_it() -> None:
    queue, sender = FakeQueue(), FakeSender()
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

    queue, sender = FakeQueue(), FakeSender(flaky)
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

    queue, sender = FakeQueue(), FakeSender(slow_or_fast)
    slow, fast = Sub("slow", max_in_flight=2), Sub("fast", max_in_flight=8)
    for i in range(40):
        queue.add(slow, f"S{i}", 1)
    for i in range(200):
        queue.add(fast, f"F{i}", 1, at=0.001)  # due after every slow one
    dispatcher = make(queue, sender, concurrency=8)
    start = time.monotonic()
    fast_done = lambda: all(r.status == "delivered" for r in queue.rows if r.sub is fast)  # noqa: E731
    await run_until(dispatcher, fast_done)
    assert time.monotonic() - start < 2.0  # the 40 slow ones alone take 6 s at 2 at a time
    assert sender.peak["http://slow.test/hook"] == 2
    assert sender.peak["http://fast.test/hook"] <= 8
    assert sum(r.status == "delivered" for r in queue.rows if r.sub is slow) < 40
    # What was claimed for the slow endpoint but not sent went back to the queue unsent.
    unsent = [r for r in queue.rows if r.sub is slow and r.status == "pending"]
    assert unsent and all(r.locked_by is None for r in unsent), [
        (r.seq, r.locked_by, r.locked_until) for r in unsent if r.locked_by
    ]


async def test_rate_limit_spaces_the_attempts() -> None:
    queue, sender = FakeQueue(), FakeSender()
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


async def test_decisions_failed_dead_retry_after_and_410() -> None:
    async def answer(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        if "gone" in url:
            return http(410, 1.0, body="bye")
        if "busy" in url:
            return http(429, 1.0, retry_after="30")
        return no_answer(1000.0, "timeout after 1s")

    queue, sender = FakeQueue(), FakeSender(answer)
    gone, busy, down = Sub("gone", max_in_flight=1), Sub("busy"), Sub("down")
    rows = {s.id: [queue.add(s, "L1", 1), queue.add(s, "L2", 1)] for s in (gone, busy, down)}
    dispatcher = make(queue, sender, schedule="0.01")
    await run_until(
        dispatcher,
        lambda: (
            all(r.status == "dead" for r in rows["down"])
            and all(r.status == "failed" for r in rows["busy"])
            and any(r.status == "dead" for r in rows["gone"])
        ),
    )
    now = time.time()
    assert all(25 < r.next_at - now <= 30 for r in rows["busy"])
    assert all(r.attempts == 1 and "Retry-After 30" in (r.last_error or "") for r in rows["busy"])
    assert all(
        r.attempts == 2 and "retries exhausted" in (r.last_error or "") for r in rows["down"]
    )
    assert not gone.enabled and "410" in (gone.disabled_reason or "")
    # The other delivery of the gone endpoint is not sent to it: it stays for a re-enable.
    assert sorted(r.status for r in rows["gone"]) == ["dead", "pending"]
    assert sum(url == "http://gone.test/hook" for _, url, _, _ in sender.sent) == 1
    assert dispatcher.stats.disabled == 1


async def test_an_endpoint_failing_for_days_is_auto_disabled() -> None:
    queue = FakeQueue()
    sub = Sub("old", first_failure_at=time.time() - 3 * 86400)
    queue.add(sub, "L1", 1)
    queue.add(sub, "L2", 1)

    async def boom(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        return http(500, 1.0, body="no")

    sender = FakeSender(boom)
    await run_until(make(queue, sender, auto_disable_after=86400.0), lambda: not sub.enabled)
    assert "auto-disabled" in (sub.disabled_reason or "")
    outcome = queue.outcomes[0]
    assert outcome.status == "failed" and outcome.disable is not None
    assert outcome.disable.failing_before is not None
    assert outcome.disable.failing_before <= time.time() - 86400 + 1


async def test_graceful_stop_finishes_in_flight_and_releases_the_rest() -> None:
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.3)
        return http(200, 300.0)

    queue, sender = FakeQueue(), FakeSender(slow)
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
    class StaleQueue(FakeQueue):
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

    queue = FakeQueue()
    queue.add(Sub("s"), "L1", 1)
    await run_until(make(queue, FakeSender(broken), schedule="5"), lambda: bool(queue.outcomes))
    row = queue.rows[0]
    assert row.status == "failed" and "kaput" in (queue.outcomes[0].attempt.error or "")


async def test_outcomes_survive_a_failed_write_and_are_recorded_later() -> None:
    queue, sender = FakeQueue(), FakeSender()
    queue.fail_records = 1
    for i in range(5):
        queue.add(Sub("s"), f"L{i}", 1)
    dispatcher = make(queue, sender)
    await run_until(dispatcher, finished(queue))
    assert len(sender.sent) == 5 and dispatcher.stats.delivered == 5


async def test_wakeup_claims_at_once_instead_of_waiting_for_the_poll() -> None:
    queue, sender, wakeup = FakeQueue(), FakeSender(), Wakeup()
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
        Dispatcher(FakeQueue(), lambda: FakeSender(), **args)  # type: ignore[arg-type]


# ---- fairness, circuit, leases ---------------------------------------------------------------


async def test_a_tenant_never_starts_beyond_its_share_while_another_waits() -> None:
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    a_when_b_starts: list[tuple[float, int]] = []

    async def answer(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        tenant = "b" if "b0" in url else "a"
        if tenant == "b":
            a_when_b_starts.append((time.monotonic(), active["a"]))
        active[tenant] += 1
        peak[tenant] = max(peak[tenant], active[tenant])
        await asyncio.sleep(0.3 if tenant == "a" else 0.03)  # B's endpoint is the quick one
        active[tenant] -= 1
        return http(200, 1.0)

    queue, sender = FakeQueue(), FakeSender(answer)
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
    while sum(r.status == "delivered" for r in queue.rows if r.sub is b) < 300:
        assert time.monotonic() - arrived < 6.0, "tenant B waited behind tenant A"
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    # B started at once in the reserve, before any of A's attempts ended.
    assert a_when_b_starts[0][0] - arrived < 0.2 and a_when_b_starts[0][1] == 14
    # Once A's first attempts ended, A started nothing beyond half the slots while B waited.
    later = [a for at, a in a_when_b_starts if at - arrived > 0.4]
    assert later and max(later) <= 8 and peak["b"] >= 8


async def test_an_endpoint_that_never_answers_trips_and_its_waiting_jobs_go_back() -> None:
    async def silence(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.05)
        return no_answer(50.0, "timeout after 0.05s")

    queue, sender = FakeQueue(), FakeSender(silence)
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


async def test_the_heartbeat_renews_every_held_lease_in_one_call() -> None:
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(2.5)  # longer than a lease of 2 s: only the heartbeat keeps it
        return http(200, 2500.0)

    queue, sender = FakeQueue(), FakeSender(slow)
    sub = Sub("s", max_in_flight=2)
    for n in range(4):
        queue.add(sub, f"L{n}", 1)
    dispatcher = Dispatcher(
        queue,
        lambda: sender,
        policy=RetryPolicy.from_env_value("1"),
        clock=time.time,
        concurrency=8,
        lease_seconds=2.0,
        timeout=3.0,
        worker_id="w1",
        poll_interval=0.02,
    )
    await run_until(dispatcher, finished(queue), timeout=15)
    assert {r.status for r in queue.rows} == {"delivered"} and len(sender.sent) == 4
    assert queue.released == []  # no job was given up for a short lease
    assert len(queue.renewals) >= 3
    first_seqs, _ = queue.renewals[0]
    assert sorted(first_seqs) == [1, 2, 3, 4]  # in flight and waiting, in one statement


async def test_max_in_flight_is_clamped_to_the_cap() -> None:
    async def slow(url: str, body: bytes, headers: Mapping[str, str]) -> SendResult:
        await asyncio.sleep(0.3)
        return http(200, 300.0)

    queue, sender = FakeQueue(), FakeSender(slow)
    wide = Sub("wide", max_in_flight=1000)  # a row written before the API refused it
    for n in range(MAX_IN_FLIGHT + 40):
        queue.add(wide, f"L{n}", 1)
    # Slots enough for more than the cap, even after the reserve.
    dispatcher = make(queue, sender, concurrency=MAX_IN_FLIGHT + 60)
    await run_until(dispatcher, finished(queue), timeout=20)
    assert sender.peak["http://wide.test/hook"] == MAX_IN_FLIGHT


# The fault-path tests (test_dispatcher_faults.py) build on the same queue under this name.
MemoryQueue = FakeQueue
