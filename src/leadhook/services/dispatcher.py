"""The delivery loop: claim due deliveries in batches, sign and POST them, record the outcomes.

Ordering per lead and the lease live in the queue (the claim query); the limits per subscription
(in flight, rate) and the global concurrency live here, in memory, per worker process.

Fairness: the sending slots are shared round-robin over tenants, then over each tenant's
subscriptions. While another tenant waits for a slot, a tenant starts no attempt beyond its
share (the slots divided by the busy tenants); alone, it may use every slot but a reserve
(an eighth), kept free for the next tenant to arrive, because an attempt in flight cannot be
taken back and a black-holed endpoint holds its slot for the whole timeout. A tenant holding a
full set of slots' worth of jobs is not claimed for, so others' deliveries get claimed. One
level down the same holds within a tenant: while another of its subscriptions has jobs
waiting, a subscription starts no attempt beyond its share of the tenant's slots (divided by
the tenant's busy subscriptions), and a full tenant is still claimed for on behalf of its
subscriptions below their share: one slow endpoint with a high `max_in_flight` cannot take
every slot of its tenant from the tenant's other endpoints.

Leases: short, and renewed by a heartbeat for every job this worker holds (waiting, in flight,
or awaiting its record), so a killed worker's deliveries are free again within one lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from leadhook.domain import circuit
from leadhook.domain.attempts import Gone, SendResult, no_answer, turned_away
from leadhook.domain.retry import (
    DEFAULT_DELIVERY_TIMEOUT,
    DEFAULT_DISABLE_AFTER,
    RetryPolicy,
    decide,
    should_auto_disable,
)
from leadhook.domain.signing import webhook_headers
from leadhook.domain.times import rfc3339
from leadhook.services.lanes import MAX_IN_FLIGHT, Lane, burst
from leadhook.services.ports import (
    USER_AGENT,
    Attempt,
    Clock,
    DeliveryQueue,
    DeliveryStatus,
    Disable,
    InlineQueue,
    Job,
    SenderFactory,
    SettlingQueue,
    Verdict,
)
from leadhook.services.retention import Retention
from leadhook.services.wakeup import Wakeup

log = logging.getLogger("leadhook.dispatcher")
DELIVERED, FAILED, DEAD = DeliveryStatus.DELIVERED, DeliveryStatus.FAILED, DeliveryStatus.DEAD


def default_worker_id() -> str:
    """Name this worker for the `locked_by` column: host, pid and a random suffix."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def failure_logged(failures: int) -> bool:
    """Whether the `failures`-th failure in a row of something tried again and again is
    logged: the 1st, 2nd, 4th, 8th, ... 64th, then every 60th (a claim tried every second:
    one a minute; a worker's start waiting 10 s for its database: one every ten minutes).

    A line a try filled a log through an outage that lasts until an operator acts (a
    database down for the night, secret keys that no longer open the secrets).
    """
    return failures & (failures - 1) == 0 if failures <= 64 else failures % 60 == 0


def said_failed(
    what: str, exc: BaseException, failures: int, extra: dict[str, Any], again: str = ""
) -> None:
    """Log the `failures`-th failure in a row of something tried again and again, if it is
    one `failure_logged` lets through: the first (`what`) with its traceback, a later one
    (`again`, with the count) in one line ending with the error: an outage's repeats were a
    hundred-line traceback each, all of the same cause (an operator's review)."""
    if not failure_logged(failures):
        return
    if failures == 1:
        log.error(what, exc_info=exc, extra=extra)
        return
    error = " ".join(str(exc).split())[:300] or type(exc).__name__
    said = (again or f"{what} (%d times in a row)") % failures
    log.warning("%s: %s", said, error, extra=extra)


@dataclass
class DispatcherStats:
    """Counters since start, for metrics; the delivery counters count recorded verdicts."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    released: int = 0
    disabled: int = 0
    renewed: int = 0
    recovered: int = 0
    tripped: int = 0


@dataclass
class TenantTurn:
    """One tenant's place in the round robin: its subscriptions with jobs, its attempts."""

    ring: deque[str] = field(default_factory=deque)
    queued: bool = False
    in_flight: int = 0
    ready: int = 0  # the sum of its lanes' `ready`
    subs: set[str] = field(default_factory=set)  # its subscriptions that have a lane

    def idle(self) -> bool:
        """Tell whether forgetting this tenant would change nothing."""
        return not (self.ring or self.queued or self.in_flight or self.ready)


TRIP_HOLD = 1.0
"""Seconds a worker stops sending to (and claiming for) an endpoint whose attempts just went
unanswered `circuit.THRESHOLD` times in a row in its lane: long enough for those attempts to
be recorded, which opens the stored circuit; from then on the claim turns away what comes due
(domain/circuit.py), on every worker alike."""

_RECORD_GATHER = 0.002  # seconds the recorder waits for more verdicts to share a transaction
_RECORD_GATHER_BACKLOG = 0.02  # the longest it waits while a backlog is drained


def _majority(jobs: Sequence[Job]) -> str | None:
    """Return the tenant that has more than half of `jobs`, if one has."""
    if not jobs:
        return None
    mid, n = Counter(job.mid for job in jobs).most_common(1)[0]
    return mid if 2 * n > len(jobs) else None


def batch_of(concurrency: int) -> int:
    """Return how many deliveries one claim (and one record) takes at most: two slots' worth,
    so one claim refills every slot with as many again on hand, between 100 and 512.

    A claim's round is mostly fixed cost on PostgreSQL (its transaction's round trips, the
    walk of the due index): 128 slots claiming 100 at a time drained ~3,800/s on two
    workers, 256 at a time ~4,500/s; larger claims would hold SQLite's one write lock longer.
    """
    return min(512, max(100, 2 * concurrency))


def reserve_of(concurrency: int) -> int:
    """Return the slots a tenant alone leaves free for the next tenant to arrive."""
    return max(1, concurrency // 8) if concurrency > 1 else 0


GATHER = 0.016
"""Seconds a claim loop woken by a commit waits for the commits of the next moments to join
its claim (`Dispatcher`); serve's delivery process also stops listening to its wake-up pipe for
as long after each wake-up (`cli.runtime.watch_wake_fd`)."""


class Dispatcher:
    """Run the delivery loop of one worker; several workers may share one PostgreSQL queue."""

    def __init__(
        self,
        queue: DeliveryQueue,
        sender_factory: SenderFactory,
        *,
        policy: RetryPolicy,
        clock: Clock,
        wakeup: Wakeup | None = None,
        concurrency: int = 64,
        lease_seconds: float = 15.0,
        timeout: float = DEFAULT_DELIVERY_TIMEOUT,
        auto_disable_after: float = DEFAULT_DISABLE_AFTER,
        worker_id: str | None = None,
        batch_size: int | None = None,
        poll_interval: float = 0.25,
        gather: float = GATHER,
        rand: Callable[[], float] = random.random,
        retention: Retention | None = None,
    ) -> None:
        if batch_size is None:
            batch_size = batch_of(concurrency)
        if concurrency < 1 or batch_size < 1:
            raise ValueError("concurrency and batch_size must be at least 1")
        if lease_seconds < 1.0:
            raise ValueError(f"a lease ({lease_seconds}s) must last at least a second")
        self._queue, self._make_sender, self._policy = queue, sender_factory, policy
        self._clock, self._wakeup, self._rand = clock, wakeup, rand
        self._claim_failures = 0  # claims failed in a row (a database outage)
        self._concurrency, self._batch, self._poll = concurrency, batch_size, poll_interval
        self._gather = gather
        self._lease, self._timeout, self._disable_after = lease_seconds, timeout, auto_disable_after
        # The heartbeat renews every held lease three times per lease: one missed beat is
        # survived. An attempt starts only if its lease lasts until the next beat and a margin.
        self._heartbeat = lease_seconds / 3
        self._margin = min(2.0, lease_seconds / 6)
        # Claim no more than the slots can start soon: at most one batch beyond the slots.
        self._prefetch = concurrency + min(batch_size, concurrency)
        self._refill = max(1, min(batch_size, concurrency) // 2)  # a claim worth its round trip
        self._reserve = reserve_of(concurrency)
        self.worker_id = worker_id or default_worker_id()
        self.retention = retention
        self.stats = DispatcherStats()
        self._lanes: dict[str, Lane] = {}
        self._tenants: dict[str, TenantTurn] = {}
        self._turns: deque[str] = deque()  # tenants whose subscriptions have jobs to start
        self._held: dict[int, float] = {}  # seq -> lease_until of every job not yet written
        self._renew_failures = 0  # renewals failed in a row (their log is thinned)
        self._tasks: set[asyncio.Task[None]] = set()
        self._verdicts: list[Verdict] = []
        self._releases: list[int] = []
        # A queue that records in its claims' transactions: the recorder leaves what finished
        # to the claim coming next (`_claim_soon`) and writes alone only when none is coming.
        self._settling = queue if isinstance(queue, SettlingQueue) else None
        # A queue that answers in microseconds when its write gate is free (SQLite) is called
        # on the loop then: through a thread, the claims and records of a drain took 5-13 ms
        # each, waiting for the GIL the sending loop held, where on the loop they took 0.8-2.
        self._inline = queue if isinstance(queue, InlineQueue) else None
        self._claim_soon = False
        self._backlog = False  # the last claim took all it asked for: more is likely due
        # (what a claim skipped, until when) after a claim that skipped some and found nothing
        self._fruitless: tuple[set[str], float] | None = None
        self._hog: str | None = None  # the tenant with most of the last claim, if it was full
        # (what a claim deferred, until when) after the others had nothing due (`_deferred`)
        self._alone: tuple[set[str], float] | None = None
        self._active = 0
        self._ready = 0
        self._next_due: float | None = None
        self._done = False  # stopping: claim nothing more, release what arrives
        self._drained = False  # stopped: no attempt is running any more

    @property
    def in_flight(self) -> int:
        """Return how many attempts are being sent right now."""
        return self._active

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then finish in-flight attempts and release the rest."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._wake, self._flush = asyncio.Event(), asyncio.Event()
        self._claimed = asyncio.Event()  # a claim has returned (see `_recorder`)
        self._sender = self._make_sender()
        self._done = self._drained = self._stopping = False

        def poke() -> None:
            with contextlib.suppress(RuntimeError):  # a closing loop has nothing left to wake
                loop.call_soon_threadsafe(self._poked)

        def stopped() -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stopped_poked)

        unlisten = self._wakeup.listen(poke) if self._wakeup is not None else None
        unlisten_stopped = (
            self._wakeup.listen_stopped(stopped) if self._wakeup is not None else None
        )
        self._stop_check: asyncio.Task[None] | None = None
        self._stop_again = False
        relay = asyncio.create_task(self._relay(stop))
        recorder = asyncio.create_task(self._recorder())
        heartbeat = asyncio.create_task(self._beat())
        purging = asyncio.create_task(self.retention.run(stop)) if self.retention else None
        log.info("dispatcher started", extra={"worker_id": self.worker_id})
        try:
            await self._recover()
            await self._claim_loop(stop)
        finally:
            if unlisten is not None:
                unlisten()
            if unlisten_stopped is not None:
                unlisten_stopped()
            if self._stop_check is not None:
                self._stop_check.cancel()
            relay.cancel()
            await self._shutdown(recorder)
            heartbeat.cancel()
            if purging is not None:
                purging.cancel()
                await asyncio.gather(purging, return_exceptions=True)
            await self._sender.aclose()
            log.info("dispatcher stopped", extra={"worker_id": self.worker_id, **vars(self.stats)})

    def _poked(self) -> None:
        """A commit enqueued deliveries: wake the claim loop; a fruitless claim may not be."""
        self._fruitless = self._alone = None
        self._wake.set()

    def _stopped_poked(self) -> None:
        """A subscription was disabled or deleted: give back what is held for it now."""
        if self._stop_check is not None and not self._stop_check.done():
            self._stop_again = True  # one more look once the running one ends
            return
        self._stop_check = asyncio.create_task(self._check_stopped())

    async def _check_stopped(self) -> None:
        while True:
            self._stop_again = False
            await self._drop_stopped()
            if not self._stop_again:
                return

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        if self._inline is not None:
            # A claim or record waiting on a thread for a write lock another program holds
            # gives up now: a stop waited for that program (SQLite's 30 s busy timeout).
            self._inline.stop_waiting()
        self._wake.set()

    # ---- leases ------------------------------------------------------------------------------

    async def _recover(self) -> None:
        """Free the leases of dead workers of this host, where the queue can tell (SQLite)."""
        try:
            freed = await asyncio.to_thread(
                self._queue.recover, worker_id=self.worker_id, now=self._clock()
            )
        except Exception:
            log.exception("recovering dead workers' leases failed; they expire on their own")
            return
        if freed:
            self.stats.recovered += freed
            log.warning(
                "released the leases of dead workers",
                extra={"worker_id": self.worker_id, "deliveries": freed},
            )

    async def _beat(self) -> None:
        """Renew the lease of every job held, in one statement, every third of a lease."""
        while True:
            await asyncio.sleep(self._heartbeat)
            seqs = list(self._held)
            if not seqs:
                continue
            lease_until = self._clock() + self._lease
            try:
                kept = await asyncio.to_thread(
                    self._queue.renew, worker_id=self.worker_id, seqs=seqs, lease_until=lease_until
                )
            except Exception as exc:
                self._renew_failures += 1
                said_failed(  # not a traceback every 5 s
                    "renewing leases failed",
                    exc,
                    self._renew_failures,
                    {"worker_id": self.worker_id, "failures": self._renew_failures},
                )
                continue
            self._renew_failures = 0
            self.stats.renewed += len(kept)
            for seq in seqs:
                if seq in self._held:  # not written meanwhile
                    # A lease lost (it ran out and another worker took the job) reads as
                    # expired: the job is then released instead of sent.
                    self._held[seq] = lease_until if seq in kept else 0.0
            await self._drop_stopped()

    async def _drop_stopped(self) -> None:
        """Give back the waiting jobs of subscriptions disabled or deleted since they were
        claimed: a worker learns of an API's disable at the next heartbeat (serve's delivery
        process, and a dispatcher in the API's own process, at once: `Wakeup.notify_stopped`),
        not after sending everything it had on hand (a 3 s endpoint disabled with 64 on hand
        got 48 more attempts over 8 s). Attempts already in flight end as they would; their
        leases are still renewed, so a quick re-enable cannot send one twice."""
        subs = [sub for sub, lane in self._lanes.items() if lane.waiting]
        if not subs:
            return
        try:
            stopped = await asyncio.to_thread(self._queue.stopped, subscription_ids=subs)
        except Exception:
            log.exception("checking subscriptions failed", extra={"worker_id": self.worker_id})
            return
        for sub in stopped:
            lane = self._lanes.get(sub)
            if lane is not None and lane.waiting:
                self._drop_waiting(lane)
                log.info(
                    "subscription stopped: its jobs on hand given back",
                    extra={"subscription_id": sub},
                )

    def _drop_waiting(self, lane: Lane) -> None:
        """Release the lane's waiting jobs (they stay pending: nothing lost)."""
        self._releases.extend(j.seq for j in lane.waiting)
        lane.waiting.clear()
        self._tally(lane)
        self._flush.set()

    # ---- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        last_sweep = self._loop.time()
        while not stop.is_set():
            self._wake.clear()
            limit = self._claim_limit()
            if not limit:
                self._claim_is_off()
            else:
                self._claim_soon = True
                try:
                    got = await self._claim(limit)
                finally:
                    self._claim_is_off()
                if got == limit and not stop.is_set():
                    continue  # more may be due right now
                if got < 0:
                    # A full second, not cut short by wake-ups: under load a commit wakes the
                    # loop every few milliseconds, and a claim that fails (a database down,
                    # secrets the keys no longer open) was tried again at once, in a tight
                    # loop that said "retrying in 1s" (an operator's review).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await stop.wait()
                    continue
            if self._loop.time() - last_sweep > 5.0:
                last_sweep = self._loop.time()
                self._sweep()
            if await self._sleep(self._idle_timeout()) and self._gather and not self._backlog:
                # Woken by a commit: let the commits of the next moments join this claim, so
                # that a steady trickle of behaviours is claimed in batches, not one by one.
                # What finishes meanwhile rides on that claim (see `_recorder`). Not when the
                # last claim took all it asked for: more is due already, and waiting only
                # leaves the slots that just came free idle (a drain spent most of its time
                # there: 64 slots, 0 sending at the median).
                self._claim_soon = self._claim_limit() > 0
                await asyncio.sleep(self._gather)

    def _claim_is_off(self) -> None:
        """No claim is coming: the recorder writes what finished on its own."""
        self._claim_soon = False
        self._claimed.set()

    def _claim_limit(self) -> int:
        # Jobs waiting on their own subscription's limits, or on their tenant's share, do not
        # count: a slow endpoint's or a noisy tenant's backlog must not keep the others from
        # being claimed.
        held = self._active + self._startable()
        room = min(self._batch, self._prefetch - held)
        if room <= 0 or (held >= self._concurrency and room < self._refill):
            return 0  # enough on hand: wait for room for a good-sized batch
        return room

    def _idle_timeout(self) -> float:
        due = self._next_due
        if due is None:
            return self._poll
        wait = due - self._clock()
        if wait <= 0:
            self._next_due = None
        return max(0.0, min(self._poll, wait))

    async def _sleep(self, seconds: float) -> bool:
        """Sleep until woken or `seconds` have passed; tell whether it was a wake-up."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()
                return True
        return False

    async def _claim(self, limit: int) -> int:
        now = self._clock()
        mono = self._loop.time()
        exclude = self._excluded(mono)
        skipped = set(exclude)
        fruitless = self._fruitless
        if fruitless is not None and fruitless[0] == skipped and mono < fruitless[1]:
            # The same claim found nothing a moment ago: the subscriptions it would skip (their
            # tenant full, here by the share of the slots kept for a tenant that arrives) are
            # still the ones with deliveries due. Asking again after every finished attempt
            # walked their due rows each time for nothing: a single tenant's drain spent a
            # third of its time there. A commit, a change of what is skipped or the poll
            # interval ends this.
            return 0
        deferred = self._deferred(skipped, mono)
        verdicts: list[Verdict] = []
        releases: list[int] = []
        settle = self._settling
        if settle is not None and (self._verdicts or self._releases):
            # What finished since the last claim is recorded in this claim's transaction.
            verdicts, self._verdicts = self._verdicts[: self._batch], self._verdicts[self._batch :]
            releases, self._releases = self._releases, []
        args: dict[str, Any] = {
            "worker_id": self.worker_id,
            "limit": limit,
            "now": now,
            "lease_until": now + self._lease,
            "exclude": exclude + deferred,
        }
        call = "claim"
        if settle is not None and (verdicts or releases):
            call = "settle_and_claim"
            args.update(verdicts=verdicts, releases=releases)
        try:
            jobs: list[Job] = await self._call(call, args)
        except Exception as exc:
            # Nothing of the transaction was written: what it carried is recorded again.
            self._verdicts[:0], self._releases[:0] = verdicts, releases
            if verdicts or releases:
                self._flush.set()
            if self._stopping:  # given up for the stop (`_relay`): nothing was taken
                log.info("claim given up: stopping", extra={"worker_id": self.worker_id})
                return -1
            # The first failure of a run with its traceback; then fewer and fewer lines
            # until a claim succeeds again (`failure_logged`).
            self._claim_failures += 1
            failures = self._claim_failures
            said_failed(
                "claim failed; retrying in 1s",
                exc,
                failures,
                {"worker_id": self.worker_id, "failures": failures},
                "claim failed again (%d times in a row); retrying every 1s",
            )
            return -1
        if self._claim_failures:
            log.warning(
                "claims work again",
                extra={"worker_id": self.worker_id, "failures": self._claim_failures},
            )
            self._claim_failures = 0
        if verdicts or releases:
            self._recorded(verdicts, releases)
        if deferred and len(jobs) < limit:
            jobs += await self._fill(args, limit - len(jobs), exclude, deferred, mono, bool(jobs))
        self.stats.claimed += len(jobs)
        self._backlog = len(jobs) >= limit
        self._hog = _majority(jobs) if self._backlog else None
        if skipped:  # a claim that skips nothing says nothing about the others' deliveries
            self._fruitless = None if jobs else (skipped, mono + self._poll)
        self._accept(jobs)
        return len(jobs)

    def _deferred(self, skipped: set[str], mono: float) -> list[str]:
        """Return the subscriptions whose deliveries this claim takes only after everyone
        else's: those of the tenant that had most of the last claim, when that claim was full.

        A claim takes due deliveries oldest first, and a tenant whose endpoints fail at once
        never fills its slots, so nothing else keeps its backlog from filling every claim:
        another tenant's deliveries, due later, waited behind all of it (PostgreSQL: p50 0.5 s,
        up to 1.6 s behind 20,000 failing to four subscriptions). Its rows still fill whatever
        the others leave (`_fill`). Not while that set was found alone a moment ago (nobody
        else had anything due): until a commit or the poll interval, as for `_fruitless`.
        """
        hog = self._hog
        turn = self._tenants.get(hog) if hog is not None else None
        if turn is None:
            return []
        subs = sorted(turn.subs - skipped)
        alone = self._alone
        if not subs or (alone is not None and alone[0] == set(subs) and mono < alone[1]):
            return []
        return subs

    async def _fill(
        self,
        args: dict[str, Any],
        room: int,
        exclude: list[str],
        deferred: list[str],
        mono: float,
        found: bool,
    ) -> list[Job]:
        """Claim what the others left room for from the deferred subscriptions (a claim of
        its own: what the first one leased is kept whatever happens to this one)."""
        if not found:  # nobody else had anything due: don't defer them again for a while
            self._alone = (set(deferred), mono + self._poll)
        more = {key: args[key] for key in ("worker_id", "now", "lease_until")}
        more.update(limit=room, exclude=exclude)
        try:
            jobs: list[Job] = await self._call("claim", more)
        except Exception:
            log.warning(
                "claim of the deferred subscriptions failed; they are claimed next time",
                extra={"worker_id": self.worker_id},
                exc_info=True,
            )
            return []
        return jobs

    def _excluded(self, mono: float) -> list[str]:
        """Return the subscriptions a claim should skip: their lane, or their tenant, is full.

        A tenant is full with a set of slots' worth of jobs in flight or ready to start; jobs
        waiting on their own subscription's limits do not count (see `_claim_limit`).
        """
        full = {
            m: self._share(turn, self._concurrency)
            for m, turn in self._tenants.items()
            if turn.in_flight + turn.ready >= self._concurrency
        }
        # A full tenant's subscription is still claimed for while it holds less than its
        # share of the tenant's slots (another of the tenant's subscriptions holds the rest).
        return [
            sub
            for sub, lane in self._lanes.items()
            if lane.saturated(mono)
            or (lane.mid in full and lane.in_flight + lane.ready >= full[lane.mid])
        ]

    def _accept(self, jobs: Sequence[Job]) -> None:
        now = self._loop.time()
        for job in jobs:
            self._held[job.seq] = job.lease_until
            if job.circuit_open_until is not None and not self._done:
                # Its endpoint's circuit is open: nothing is sent, the attempt is spent on
                # the schedule at once (domain/circuit.py). No slot, lane or rate is used.
                self._verdicts.append(self._turn_away(job))
                self._flush.set()
                continue
            lane = self._lanes.get(job.subscription_id)
            rate = job.rate_limit_per_s
            # Clamped here too: a row written before the API refused larger values.
            limit = max(1, min(job.max_in_flight, MAX_IN_FLIGHT))
            if lane is None:
                lane = Lane(limit, rate, burst(rate or 1.0), now, job.mid)
                self._lanes[job.subscription_id] = lane
                self._tenant(job.mid).subs.add(job.subscription_id)
            lane.refill(now)
            lane.max_in_flight, lane.rate = limit, rate
            if lane.gone or self._done or lane.tripped_until > now:
                self._releases.append(job.seq)
                continue
            lane.waiting.append(job)
            self._tally(lane)
            self._enqueue(job.subscription_id, lane)
        if self._releases:
            self._flush.set()
        self._pump()

    def _sweep(self) -> None:
        now = self._loop.time()
        for sub in [s for s, lane in self._lanes.items() if lane.idle(now)]:
            lane = self._lanes.pop(sub)
            turn = self._tenants.get(lane.mid)
            if turn is not None:
                turn.subs.discard(sub)
        for mid in [m for m, turn in self._tenants.items() if turn.idle()]:
            del self._tenants[mid]

    # ---- sending -----------------------------------------------------------------------------

    def _tally(self, lane: Lane) -> None:
        """Recount the lane's jobs that could be sent as soon as a global slot is free."""
        ready = 0
        if lane.timer is None and not lane.gone:
            ready = min(len(lane.waiting), max(0, lane.max_in_flight - lane.in_flight))
        self._ready += ready - lane.ready
        self._tenant(lane.mid).ready += ready - lane.ready
        lane.ready = ready

    def _tenant(self, mid: str) -> TenantTurn:
        turn = self._tenants.get(mid)
        if turn is None:
            turn = self._tenants[mid] = TenantTurn()
        return turn

    def _enqueue(self, sub: str, lane: Lane) -> None:
        if not lane.queued and lane.timer is None and lane.waiting:
            lane.queued = True
            turn = self._tenant(lane.mid)
            turn.ring.append(sub)
            if not turn.queued:
                turn.queued = True
                self._turns.append(lane.mid)

    def _census(self) -> tuple[int, int]:
        """Count the busy tenants (jobs to start or in flight) and those with jobs to start."""
        busy = wanting = 0
        for turn in self._tenants.values():
            wanting += bool(turn.ring)
            busy += bool(turn.ring or turn.in_flight)
        return busy, wanting

    def _cap(self, turn: TenantTurn, busy: int, wanting: int) -> int:
        """Return how many attempts a tenant may have in flight (see the module docstring)."""
        if wanting - bool(turn.ring) <= 0:  # nobody else waits for a slot
            return self._concurrency - self._reserve
        return max(1, -(-self._concurrency // max(1, busy)))  # ceil(slots / busy tenants)

    def _share(self, turn: TenantTurn, slots: int) -> int:
        """Return the in-flight share of `slots` (the tenant's) each of its busy subscriptions
        gets: ceil(slots / busy subscriptions)."""
        busy = 0
        for sub in turn.subs:
            lane = self._lanes.get(sub)
            busy += lane is not None and bool(lane.in_flight or lane.waiting)
        return max(1, -(-slots // max(1, busy)))

    def _others_wait(self, turn: TenantTurn, sub: str) -> bool:
        """Tell whether another of the tenant's subscriptions has jobs that could start now."""
        for other in turn.subs:
            lane = self._lanes.get(other)
            if other != sub and lane is not None and lane.ready:
                return True
        return False

    def _startable(self) -> int:
        """Count the jobs on hand that could start as soon as a slot is free."""
        busy, wanting = self._census()
        return sum(
            min(turn.ready, max(0, self._cap(turn, busy, wanting) - turn.in_flight))
            for turn in self._tenants.values()
            if turn.ready
        )

    def _pump(self) -> None:
        """Start attempts while there are free slots: round-robin over tenants, then over
        each tenant's subscriptions, one attempt per turn."""
        now = self._loop.time()
        parked: list[str] = []  # tenants at their share: queued again for the next pump
        busy, wanting = self._census()
        while self._active < self._concurrency and self._turns:
            mid = self._turns.popleft()
            turn = self._tenants[mid]
            turn.queued = False
            if not turn.ring:
                continue
            cap = self._cap(turn, busy, wanting)
            if turn.in_flight >= cap:
                parked.append(mid)
                continue
            self._start_one(turn, now, cap)
            if turn.ring and not turn.queued:  # more to start: back of the line
                turn.queued = True
                self._turns.append(mid)
        for mid in parked:
            turn = self._tenants[mid]
            if turn.ring and not turn.queued:
                turn.queued = True
                self._turns.append(mid)

    def _start_one(self, turn: TenantTurn, now: float, cap: int) -> None:
        """Start one attempt of the first of the tenant's subscriptions that may send now
        (`cap`: the tenant's slots)."""
        while turn.ring:
            sub = turn.ring.popleft()
            lane = self._lanes.get(sub)
            if lane is None:
                continue  # swept while queued
            lane.queued = False
            if not lane.waiting or lane.in_flight >= lane.max_in_flight:
                continue  # re-queued when one of its attempts ends
            if (
                lane.in_flight
                and self._others_wait(turn, sub)
                and (lane.in_flight >= self._share(turn, cap))
            ):
                continue  # at its share of the tenant's slots: re-queued when one ends
            if lane.tripped_until > now:
                continue  # its circuit opened: nothing more is sent for now
            if lane.rate is not None:
                lane.refill(now)
                if lane.tokens < 1.0:
                    delay = (1.0 - lane.tokens) / lane.rate
                    lane.timer = self._loop.call_later(delay, self._tick, sub)
                    self._tally(lane)
                    continue
                lane.tokens -= 1.0
            job = lane.waiting.popleft()
            lane.in_flight += 1
            turn.in_flight += 1
            self._active += 1
            self._tally(lane)
            task = asyncio.create_task(self._attempt(job, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self._enqueue(sub, lane)
            return

    def _tick(self, sub: str) -> None:
        lane = self._lanes.get(sub)
        if lane is not None:
            lane.timer = None
            self._tally(lane)
            self._enqueue(sub, lane)
            self._pump()

    async def _attempt(self, job: Job, lane: Lane) -> None:
        try:
            start = self._clock()
            if self._held.get(job.seq, 0.0) - start < self._heartbeat + self._margin:
                # The lease may end before the heartbeat renews it (or it was lost): another
                # worker may claim the job then; don't race it.
                self._releases.append(job.seq)
                self._flush.set()
                return
            headers = webhook_headers(
                job.signing_secrets(start), job.event_id, int(start), job.body, USER_AGENT
            )
            try:
                result = await self._sender.send(job.url, job.body, headers)
            except Exception as exc:  # a Sender should not raise; never let it kill the loop
                log.exception("sender raised", extra={"delivery_id": job.id})
                result = no_answer((self._clock() - start) * 1000, f"sender error: {exc!r}")
            self._verdicts.append(self._judge(job, lane, start, result))
            self._flush.set()
        except asyncio.CancelledError:
            self._releases.append(job.seq)
            raise
        finally:
            lane.in_flight -= 1
            self._tenant(lane.mid).in_flight -= 1
            self._active -= 1
            self._tally(lane)
            self._enqueue(job.subscription_id, lane)
            self._pump()
            if self._claim_limit():
                self._wake.set()  # room for another claim

    def _watch(self, job: Job, lane: Lane, result: SendResult) -> None:
        """Count attempts that got no answer; enough in a row trip the lane's circuit here at
        once (the queue opens it for every worker when the outcome is recorded)."""
        if result.status_code is not None:
            lane.silent, lane.tripped_until = 0, 0.0
            return
        lane.silent += 1
        mono = self._loop.time()
        if lane.silent < circuit.THRESHOLD or lane.tripped_until > mono:
            return
        lane.tripped_until = mono + TRIP_HOLD
        self.stats.tripped += 1
        self._drop_waiting(lane)
        # The warning comes from the queue when it records these attempts and opens the
        # stored circuit (which one delivery's retries open too, with no burst in a lane).
        log.debug(
            "stopped sending to the endpoint: attempts in a row got no answer",
            extra={"subscription_id": job.subscription_id, "silent_attempts": lane.silent},
        )

    def _judge(self, job: Job, lane: Lane, start: float, result: SendResult) -> Verdict:
        self._watch(job, lane, result)
        return self._verdict(job, lane, start, result)

    def _turn_away(self, job: Job) -> Verdict:
        """The verdict of an attempt not made: the endpoint's circuit is open."""
        lane = self._lanes.get(job.subscription_id)
        return self._verdict(job, lane, self._clock(), turned_away(), sent=False)

    def _verdict(
        self, job: Job, lane: Lane | None, start: float, result: SendResult, *, sent: bool = True
    ) -> Verdict:
        now = self._clock()
        attempt = Attempt(start, result.status_code, result.latency_ms, result.error, result.body)
        decision = decide(self._policy, result, job.attempt_count + 1, now, self._rand)
        if decision.kind == "delivered":
            return Verdict(job, attempt, DELIVERED, None, None)
        disable: Disable | None = None
        status = FAILED if decision.kind == "retry" else DEAD
        if isinstance(result, Gone):
            disable = Disable(f"endpoint answered {result.why}")
        elif should_auto_disable(job.first_failure_at, now, self._disable_after):
            since = rfc3339(job.first_failure_at or now)  # as every time in an answer
            disable = Disable(
                f"auto-disabled: every attempt has failed since {since}",
                failing_before=now - self._disable_after,
            )
        if disable is not None and (lane is None or not lane.gone):
            if lane is not None:  # a turned-away job has none of its own
                lane.gone = True  # stop sending its waiting jobs: pending until a re-enable
                self._drop_waiting(lane)
            log.warning(
                "disabling the subscription",
                extra={"mid": job.mid, "subscription_id": job.subscription_id,
                       "reason": disable.reason},
            )  # fmt: skip
        # Each line names the tenant and the subscription: an operator can find the delivery
        # (GET /v1/deliveries/{id} with one of the tenant's keys) from the log alone. A
        # delivery given up (dead) is a warning: no further attempt will be made. An attempt
        # the open circuit turned away is a debug line: the circuit's opening was the warning,
        # and a line per delivery coming due made a third of an outage's log (a review).
        if status != FAILED:
            level, message = logging.WARNING, "delivery given up: dead"
        elif sent:
            level, message = logging.INFO, "delivery attempt failed"
        else:
            level, message = logging.DEBUG, "delivery attempt turned away: circuit open"
        log.log(
            level,
            message,
            extra={
                "delivery_id": job.id,
                "mid": job.mid,
                "subscription_id": job.subscription_id,
                "event_id": job.event_id,
                "attempt": job.attempt_count + 1,
                "status": status,
                "reason": decision.reason,
            },
        )
        return Verdict(
            job, attempt, status, decision.next_attempt_at, decision.reason, disable, sent
        )

    # ---- recording ---------------------------------------------------------------------------

    async def _recorder(self) -> None:
        while True:
            await self._flush.wait()
            self._flush.clear()
            # Let attempts ending together share a transaction: 2 ms, or while a backlog is
            # being drained, until a batch's worth finished or 20 ms went by. A drain of
            # 20,000 wrote 500 records of ~30 verdicts each (a commit apiece); with the longer
            # wait, ~55, and its claims carry ~70 verdicts each: +9% deliveries/s. Only a
            # backlog waits longer, and a lead's next event waits for its predecessor's
            # record: at most 20 ms more, while the worker is busy anyway.
            waited = 0.0
            longest = _RECORD_GATHER_BACKLOG if self._backlog else _RECORD_GATHER
            while not self._done and len(self._verdicts) < self._batch and waited < longest:
                await asyncio.sleep(_RECORD_GATHER)
                waited += _RECORD_GATHER
            while self._claim_soon and not self._done and self._settling is not None:
                # A claim is about to run (or running): it carries these in its transaction.
                # Whatever it leaves (more than a batch, or what finished during it) is
                # looked at again once it returned.
                self._claimed.clear()
                await self._claimed.wait()
            await self._write_all()
            if self._drained and not (self._verdicts or self._releases):
                return

    async def _write_all(self) -> None:
        failures = 0
        while self._verdicts or self._releases:
            verdicts, self._verdicts = self._verdicts[: self._batch], self._verdicts[self._batch :]
            releases, self._releases = self._releases, []
            try:
                if verdicts:
                    args = {"worker_id": self.worker_id, "verdicts": verdicts, "now": self._clock()}
                    await self._call("record", args)
                    # Recorded: a failure of the release below must not write these again.
                    self._recorded(verdicts, [])
                    verdicts = []
                if releases:
                    args = {"worker_id": self.worker_id, "seqs": releases, "now": self._clock()}
                    await self._call("release", args)
            except Exception as exc:
                failures += 1
                # Thinned as the claims' are (an outage: not one a try).
                said_failed("recording outcomes failed", exc, failures, {"attempts": failures})
                self._verdicts[:0], self._releases[:0] = verdicts, releases
                if self._drained and failures >= 3:
                    # Giving up is safe: the leases expire and the deliveries are sent again.
                    self._verdicts, self._releases = [], []
                    return
                # Tried again as often as a claim is (every second at most): waiting up to 5 s,
                # the outcomes of sends made before an outage were still unwritten when the
                # first claims after it took their expired leases, and sent them again.
                await asyncio.sleep(min(1.0, 0.25 * 2**failures))
                continue
            self._recorded(verdicts, releases)

    async def _call(self, call: str, args: dict[str, Any]) -> Any:
        """Call the queue's method `call`: on the loop if the queue can answer at once, else
        on a thread (PostgreSQL's round trips; SQLite's write gate held by another process)."""
        if self._inline is not None:
            done, answer = self._inline.try_now(call, **args)
            if done:
                return answer
        return await asyncio.to_thread(getattr(self._queue, call), **args)

    def _recorded(self, verdicts: list[Verdict], releases: list[int]) -> None:
        stats = self.stats
        stats.released += len(releases)
        for seq in releases:
            self._held.pop(seq, None)
        for o in verdicts:
            self._held.pop(o.job.seq, None)
        for o in verdicts:
            if o.status == DELIVERED:
                stats.delivered += 1
            elif o.status == FAILED:
                stats.failed += 1
                due = o.next_attempt_at
                if due is not None and (self._next_due is None or due < self._next_due):
                    self._next_due = due
            else:
                stats.dead += 1
            if o.disable is not None:
                stats.disabled += 1
                lane = self._lanes.get(o.job.subscription_id)
                if lane is not None:
                    lane.gone = False  # the database now says disabled: claims skip it
                    self._tally(lane)
        self._wake.set()  # finished deliveries unblock the next event of their lead

    # ---- stopping ----------------------------------------------------------------------------

    async def _shutdown(self, recorder: asyncio.Task[None]) -> None:
        self._done = True
        self._claim_is_off()
        for lane in self._lanes.values():
            self._releases.extend(j.seq for j in lane.waiting)
            lane.waiting.clear()
            if lane.timer is not None:
                lane.timer.cancel()
                lane.timer = None
            lane.ready = 0
        self._ready = 0
        for turn in self._tenants.values():
            turn.ready = 0
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._timeout + 5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._drained = True
        self._flush.set()
        try:
            await asyncio.wait_for(recorder, self._timeout + 30.0)
        except Exception:
            log.exception("gave up recording on shutdown; the leases expire and resend")
