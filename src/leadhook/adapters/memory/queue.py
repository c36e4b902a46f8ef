"""The delivery queue over the in-memory store: the claim rules of the SQL queue, in Python.

It implements `services.ports.DeliveryQueue` with the same rules as
`adapters.db.queue.SqlDeliveryQueue` (the queue contract tests run both): a claim takes due,
unleased, unfinished deliveries of enabled subscriptions, earliest due first, never a lead's
event before that lead's earlier unfinished one, nor beside another of the lead's in flight
(per subscription), at most `claim_cap` per
subscription, and leases them; `record` stores attempts and verdicts for the lease holder only;
`release` gives a worker's leases back. Each call is one "transaction": it works on a copy of
the store and publishes it whole, under the store's lock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from leadhook.adapters.memory.state import DeliveryRow, MemoryState, SubscriptionRow
from leadhook.adapters.memory.uow import MemoryStore
from leadhook.services.lanes import claim_cap
from leadhook.services.ports import UNFINISHED, DeliveryStatus, Job, Verdict, tally


class MemoryDeliveryQueue:
    """Claim, finish and release the deliveries of a `MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    @contextmanager
    def _tx(self) -> Iterator[MemoryState]:
        """Work on a copy of the store; publish it only if the block ends without error."""
        with self._store.lock:
            state = self._store.state.copy()
            yield state
            self._store.state = state
            self._store.commits += 1

    def claim(
        self,
        *,
        worker_id: str,
        limit: int,
        now: float,
        lease_until: float,
        exclude: Collection[str],
    ) -> list[Job]:
        """Lease up to `limit` due deliveries to `worker_id`, earliest due first."""
        with self._tx() as state:
            _sweep(state, now)
            picked = _pick(state, now, limit, frozenset(exclude))
            jobs: list[Job] = []
            for row in picked:
                state.deliveries[row.seq] = row.with_(
                    locked_until=lease_until, next_attempt_at=lease_until, locked_by=worker_id
                )
                jobs.append(_job(state, row, lease_until))
        return jobs

    def record(self, *, worker_id: str, verdicts: Sequence[Verdict], now: float) -> None:
        """Store the attempts and the deliveries' new states; track failing subscriptions."""
        if not verdicts:
            return
        every = verdicts
        with self._tx() as state:
            dead = 0
            for o in verdicts:
                seq = o.job.seq
                # The attempt happened, whoever holds the lease now: it is always kept.
                state.attempts[seq] = (*state.attempts.get(seq, ()), o.attempt)
                row = state.deliveries.get(seq)
                if row is None or row.locked_by != worker_id:
                    continue  # a late record must not overwrite the next lease holder's work
                dead += o.status == DeliveryStatus.DEAD
                state.deliveries[seq] = row.with_(
                    status=o.status,
                    attempt_count=o.job.attempt_count + 1,
                    next_attempt_at=o.next_attempt_at,
                    last_error=o.last_error,
                    locked_until=None,
                    locked_by=None,
                    updated_at=now,
                )
            _keep_lead_order(state, verdicts, now)
            # An attempt to a URL the subscription no longer has says nothing of its endpoint.
            verdicts = [
                o for o in verdicts if _current_url(state, o.job.subscription_id) == o.job.url
            ]
            succeeded = {
                o.job.subscription_id for o in verdicts if o.status == DeliveryStatus.DELIVERED
            }
            failing = {o.job.subscription_id for o in verdicts} - succeeded
            for sub_id in succeeded:  # a success ends the failure streak
                _set_streak(state, sub_id, None)
            for sub_id in failing:  # a failure starts one, unless it has started already
                _set_streak(state, sub_id, now)
            _disable(state, verdicts, now)
            for name, n in tally(every, dead=dead).items():  # no circuits here to open
                state.outcomes[name] = state.outcomes.get(name, 0) + n

    def release(self, *, worker_id: str, seqs: Sequence[int], now: float) -> None:
        """Give leased deliveries back unsent, so any worker can claim them at once."""
        if not seqs:
            return
        with self._tx() as state:
            for seq in seqs:
                row = state.deliveries.get(seq)
                if row is not None and row.locked_by == worker_id:
                    state.deliveries[seq] = row.with_(
                        locked_until=None, locked_by=None, next_attempt_at=now
                    )

    def renew(self, *, worker_id: str, seqs: Sequence[int], lease_until: float) -> set[int]:
        """Extend the leases `worker_id` still holds on `seqs`; return the seqs it still holds."""
        held: set[int] = set()
        with self._tx() as state:
            for seq in seqs:
                row = state.deliveries.get(seq)
                if row is not None and row.locked_by == worker_id:
                    state.deliveries[seq] = row.with_(
                        locked_until=lease_until, next_attempt_at=lease_until
                    )
                    held.add(seq)
        return held

    def stopped(self, *, subscription_ids: Sequence[str]) -> set[str]:
        """Return those of `subscription_ids` that are disabled or deleted."""
        with self._store.lock:
            subs = self._store.state.subscriptions
            return {s for s in subscription_ids if not _claimable(subs.get(s))}

    def recover(self, *, worker_id: str, now: float) -> int:
        """Nothing to recover: an in-memory queue dies with the only process that holds it."""
        return 0


def _pick(state: MemoryState, now: float, limit: int, exclude: frozenset[str]) -> list[DeliveryRow]:
    # The lowest unfinished version of each (subscription, lead): only it may be sent, and
    # only while no other delivery of that lead to that subscription is in flight (a replayed
    # or retried earlier version waits for the later one being sent).
    first: dict[tuple[str, str], int] = {}
    busy: set[tuple[str, str]] = set()
    for d in state.deliveries.values():
        if d.status in UNFINISHED:
            key = (d.subscription_id, d.entity_id)
            first[key] = min(first.get(key, d.entity_version), d.entity_version)
            if d.locked_until is not None and d.locked_until >= now:
                busy.add(key)
    due = sorted(
        (
            d
            for d in state.deliveries.values()
            if d.status in UNFINISHED
            and d.next_attempt_at is not None
            and d.next_attempt_at <= now
            and (d.locked_until is None or d.locked_until < now)
            and d.subscription_id not in exclude
            and _claimable(state.subscriptions.get(d.subscription_id))
            and first[(d.subscription_id, d.entity_id)] == d.entity_version
            and (d.subscription_id, d.entity_id) not in busy
        ),
        key=lambda d: (d.next_attempt_at, d.seq),
    )
    # As in SQL: cap each subscription's share of the claim; a subscription at its cap does
    # not keep the others' due rows behind its backlog (SQL's claim passes).
    taken: dict[str, int] = defaultdict(int)
    picked: list[DeliveryRow] = []
    for d in due:
        sub = state.subscriptions[d.subscription_id].sub
        if taken[sub.id] < claim_cap(sub.max_in_flight, sub.rate_limit_per_s):
            taken[sub.id] += 1
            picked.append(d)
            if len(picked) == limit:
                break
    return picked


def _unfinished(state: MemoryState, sub_id: str, lead: str) -> list[DeliveryRow]:
    """A lead's unfinished deliveries to a subscription, in version order."""
    rows = [
        d
        for d in state.deliveries.values()
        if d.subscription_id == sub_id and d.entity_id == lead and d.status in UNFINISHED
    ]
    return sorted(rows, key=lambda d: d.entity_version)


def _free_pending(d: DeliveryRow) -> bool:
    return d.status == DeliveryStatus.PENDING and d.locked_until is None


def _keep_lead_order(state: MemoryState, verdicts: Sequence[Verdict], now: float) -> None:
    """As SQL's `wait_behind` and `come_due`: a failed delivery's later versions wait for its
    next attempt (while it is still failed, unleased and waiting that long); a finished one's
    next version is due at once."""
    for o in verdicts:
        job, until = o.job, o.next_attempt_at
        rows = _unfinished(state, job.subscription_id, job.entity_id)
        later = [d for d in rows if d.entity_version > job.entity_version]
        if o.status == DeliveryStatus.FAILED and until is not None:
            head = state.deliveries.get(job.seq)
            if (
                head is None
                or head.status != DeliveryStatus.FAILED
                or head.locked_until is not None
                or head.next_attempt_at is None
                or head.next_attempt_at < until
            ):
                continue
            for d in later:
                if _free_pending(d) and d.next_attempt_at != until:
                    state.deliveries[d.seq] = d.with_(next_attempt_at=until)
        elif o.status in (DeliveryStatus.DELIVERED, DeliveryStatus.DEAD) and later:
            d = later[0]
            if _free_pending(d) and d.next_attempt_at is not None and d.next_attempt_at > now:
                state.deliveries[d.seq] = d.with_(next_attempt_at=now)


def _sweep(state: MemoryState, now: float) -> None:
    """As SQL's `wait_sweep`: a pending, unleased delivery due behind its lead's earliest
    unfinished one, when that one is unleased and waits past `now`, takes that one's time."""
    heads: dict[tuple[str, str], DeliveryRow] = {}
    for d in state.deliveries.values():
        if d.status in UNFINISHED:
            key = (d.subscription_id, d.entity_id)
            if key not in heads or d.entity_version < heads[key].entity_version:
                heads[key] = d
    for d in list(state.deliveries.values()):
        if not _free_pending(d) or d.next_attempt_at is None or d.next_attempt_at > now:
            continue
        head = heads[(d.subscription_id, d.entity_id)]
        if (
            head.entity_version < d.entity_version
            and head.locked_until is None
            and head.next_attempt_at is not None
            and head.next_attempt_at > now
        ):
            state.deliveries[d.seq] = d.with_(next_attempt_at=head.next_attempt_at)


def _claimable(row: SubscriptionRow | None) -> bool:
    return row is not None and row.sub.enabled and row.deleted_at is None


def _job(state: MemoryState, row: DeliveryRow, lease_until: float) -> Job:
    sub = state.subscriptions[row.subscription_id].sub
    event = state.events[state.event_index[row.event_id]]
    return Job(
        row.seq, row.id, row.mid, sub.id, row.event_id, row.entity_id, row.entity_version,
        row.attempt_count, event.payload.encode(), sub.url, sub.secret, sub.max_in_flight,
        sub.rate_limit_per_s, lease_until, sub.previous_secret, sub.previous_secret_expires_at,
        sub.first_failure_at,
    )  # fmt: skip


def _current_url(state: MemoryState, sub_id: str) -> str | None:
    row = state.subscriptions.get(sub_id)
    return None if row is None else row.sub.url


def _set_streak(state: MemoryState, sub_id: str, since: float | None) -> None:
    row = state.subscriptions.get(sub_id)
    if row is None or (since is not None and row.sub.first_failure_at is not None):
        return
    changed = replace(row.sub, first_failure_at=since)
    state.subscriptions[sub_id] = SubscriptionRow(changed, row.deleted_at)


def _disable(state: MemoryState, verdicts: Sequence[Verdict], now: float) -> None:
    reasons: dict[str, list[tuple[str, float | None]]] = defaultdict(list)
    for o in verdicts:
        if o.disable is not None:
            reasons[o.job.subscription_id].append((o.disable.reason, o.disable.failing_before))
    for sub_id, items in reasons.items():
        unconditional = [r for r, before in items if before is None]
        reason, before = (unconditional[0], None) if unconditional else items[0]
        row = state.subscriptions.get(sub_id)
        if row is None or not row.sub.enabled:
            continue
        streak = row.sub.first_failure_at
        # Auto-disable only if no success has reset the failure streak meanwhile.
        if before is not None and (streak is None or streak > before):
            continue
        gone = replace(row.sub, enabled=False, disabled_reason=reason, updated_at=now)
        state.subscriptions[sub_id] = SubscriptionRow(gone, row.deleted_at)
