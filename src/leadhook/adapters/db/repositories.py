"""SQL repositories over one connection; the unit of work owns the transaction."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    RowMapping,
    and_,
    delete,
    false,
    func,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.pipeline import deferring, flushed, held_writes, kept_cursor, send_held
from leadhook.adapters.db.pools import lead_columns
from leadhook.adapters.db.retention import purge_horizon
from leadhook.adapters.db.sql import LEAD_INDEXED, statements, update_lead
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import catalog_from_json, catalog_to_json
from leadhook.domain.errors import BadRequestError, ConflictError
from leadhook.domain.jsontext import dumps
from leadhook.domain.lead import Lead
from leadhook.services import cursor as cursors
from leadhook.services.ports import (
    ApiKey,
    LeadFilter,
    NewEvent,
    Page,
    StoredEvent,
    StoredResponse,
    Tenant,
)

_MAX_INT32 = 2**31 - 1


class _CatalogCache:
    """Each distinct catalog text parsed once, the least recently used forgotten past a
    budget of text (`CATALOG_CACHE_BYTES`), not past a count: 256 versions of a large
    catalog held gigabytes (a review). A Catalog is immutable (a change makes a new one), so
    sharing it between requests and threads is safe."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._held = 0
        self._parsed: OrderedDict[str, Catalog] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Catalog:
        found = self._parsed.get(text)  # the hit, on every behaviour: no lock (the GIL's)
        if found is not None:
            with suppress(KeyError):  # forgotten by another thread meanwhile: still valid
                self._parsed.move_to_end(text)
            return found
        catalog = catalog_from_json(json.loads(text))
        with self._lock:
            if text not in self._parsed:
                self._parsed[text] = catalog
                self._held += len(text)
                while self._held > self._budget and len(self._parsed) > 1:
                    gone, _ = self._parsed.popitem(last=False)
                    self._held -= len(gone)
        return catalog


CATALOG_CACHE_BYTES = 32 * 1024 * 1024
_parse_catalog = _CatalogCache(CATALOG_CACHE_BYTES)  # read on every behaviour, changed rarely


def driver_in_transaction(conn: Connection) -> Any:
    """Return the DB-API connection of `conn`, beginning its transaction as SQLAlchemy would.

    Named SQL goes to the driver directly; SQLAlchemy still owns the transaction (it begins
    it, with `BEGIN IMMEDIATE` on SQLite, and commits or rolls it back).
    """
    if not conn.in_transaction():
        conn.begin()
    send_held(conn)  # a deferred group's held inserts go out before what comes next
    return conn.connection.driver_connection


_UNREAD = "leadhook_unread_cursor"


def unread(conn: Connection) -> Any:
    """Where named SQL whose answer nobody reads runs on `conn` (inserts without `RETURNING`,
    savepoints, locks), in its transaction: `execute` and `executemany`.

    On SQLite the driver's connection (a cursor per statement costs next to nothing). On
    PostgreSQL one psycopg cursor kept with each DB-API connection instead of one made and
    dropped per statement (docs/write-path.md has the measurement). Only for answers nobody
    reads: in a pipeline, a statement's answer lands on its cursor whenever it arrives, and on
    a shared cursor it could land after the next statement was sent and be read as that one's;
    statements whose answers are read get a cursor of their own. In a deferred group, the
    group's `WriteBehind` instead, which holds the inserts and sends them a table at a time
    (adapters/db/writebehind.py).
    """
    if not conn.in_transaction():
        conn.begin()
    driver: Any = conn.connection.driver_connection  # held inserts stay held: nothing sent
    if conn.dialect.name != "postgresql":
        return driver
    cur = kept_cursor(conn, _UNREAD, driver.cursor)
    return held_writes(conn, cur, statements("postgresql")) or cur


def execute_rows(runner: Any, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    """Run `statement` once for each of `rows` on `runner` (an `unread` cursor or connection):
    one `execute` for a single row (the hot path), one `executemany` for more."""
    if len(rows) == 1:
        runner.execute(statement, rows[0])
    else:
        runner.executemany(statement, rows)


class _Repo:
    """A repository over one connection: SQLAlchemy Core for the rest, named SQL for hot paths."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sql = statements(conn.dialect.name)

    @property
    def driver(self) -> Any:
        """The DB-API connection under `conn`, in its transaction (for named SQL)."""
        return driver_in_transaction(self.conn)

    @property
    def unread(self) -> Any:
        """Where named SQL whose answer nobody reads runs (see `unread`)."""
        return unread(self.conn)

    def _integrity_error(self) -> type[Exception]:
        error: type[Exception] = self.conn.dialect.loaded_dbapi.IntegrityError
        return error


class SqlTenants(_Repo):
    """Tenants, their catalogs and API keys."""

    memo: dict[str, Tenant | None] | None = None
    """Set by a unit of work whose transaction runs only behaviours (the group writer's): the
    tenants read in it, read once; any write here forgets them."""

    companion: Callable[[str], Callable[[], None] | None] | None = None
    """Set with the memo on PostgreSQL: sends the read every behaviour makes next (its tenant's
    subscriptions, `SqlSubscriptions.prefetch`) behind the tenant's, before the tenant's answer
    is waited for, and gives back what reads that answer. In a pipeline both answers then
    arrive in one round trip instead of two."""

    def get(self, mid: str, *, for_update: bool = False) -> Tenant | None:
        # Every behaviour reads its tenant's catalog: the hot path.
        memo = None if for_update else self.memo
        if memo is not None and mid in memo:
            return memo[mid]
        sql = self.sql.tenant_for_update if for_update else self.sql.tenant
        cursor = self.driver.execute(sql, (mid,))
        then = self.companion(mid) if memo is not None and self.companion else None
        found = cursor.fetchone()
        if then is not None:
            then()
        tenant = None if found is None else Tenant(mid, _parse_catalog(found[0]), found[1])
        if memo is not None:
            memo[mid] = tenant
        return tenant

    def page(self, cursor: str | None, limit: int) -> Page[Tenant]:
        c = t.tenants.c
        query = select(c.mid, c.catalog, c.created_at)
        after = cursors.decode_keyed(cursor)
        if after is not None:
            query = query.where(
                or_(c.created_at > after[0], and_(c.created_at == after[0], c.mid > after[1]))
            )
        rows = self.conn.execute(query.order_by(c.created_at, c.mid).limit(limit + 1)).all()
        tenants = [Tenant(r.mid, _parse_catalog(r.catalog), r.created_at) for r in rows[:limit]]
        last = tenants[-1] if len(rows) > limit else None
        return Page(
            tenants, None if last is None else cursors.encode_keyed(last.created_at, last.mid)
        )

    def _forget(self) -> None:
        if self.memo is not None:
            self.memo.clear()

    def add(self, tenant: Tenant) -> None:
        self._forget()
        try:
            with self.conn.begin_nested():
                self.conn.execute(
                    insert(t.tenants).values(
                        mid=tenant.mid,
                        catalog=dumps(catalog_to_json(tenant.catalog)),
                        created_at=tenant.created_at,
                    )
                )
        except IntegrityError as exc:
            raise ConflictError(f"tenant {tenant.mid!r} already exists") from exc

    def save_catalog(self, mid: str, catalog: Catalog) -> None:
        self._forget()
        self.conn.execute(
            update(t.tenants)
            .where(t.tenants.c.mid == mid)
            .values(catalog=dumps(catalog_to_json(catalog)))
        )

    def add_key(self, key: ApiKey, key_hash: str) -> None:
        self.conn.execute(
            insert(t.api_keys).values(
                id=key.id,
                mid=key.mid,
                key_hash=key_hash,
                prefix=key.prefix,
                created_at=key.created_at,
                revoked_at=key.revoked_at,
            )
        )

    @staticmethod
    def _key(row: RowMapping) -> ApiKey:
        return ApiKey(row["id"], row["mid"], row["prefix"], row["created_at"], row["revoked_at"])

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = (
            self.conn.execute(select(t.api_keys).where(t.api_keys.c.key_hash == key_hash))
            .mappings()
            .first()
        )
        return None if row is None else self._key(row)

    def get_key(self, mid: str, key_id: str) -> ApiKey | None:
        row = (
            self.conn.execute(
                select(t.api_keys).where(t.api_keys.c.mid == mid, t.api_keys.c.id == key_id)
            )
            .mappings()
            .first()
        )
        return None if row is None else self._key(row)

    def revoke_key(self, mid: str, key_id: str, at: float) -> None:
        self.conn.execute(
            update(t.api_keys)
            .where(t.api_keys.c.mid == mid, t.api_keys.c.id == key_id)
            .values(revoked_at=at)
        )

    def list_keys(self, mid: str) -> list[ApiKey]:
        rows = self.conn.execute(
            select(t.api_keys).where(t.api_keys.c.mid == mid).order_by(t.api_keys.c.created_at)
        ).mappings()
        return [self._key(r) for r in rows]


def _indexed(lead: Lead) -> dict[str, Any]:
    """The values of the indexed columns (`sql.LEAD_INDEXED`) of `lead`'s row."""
    pools = lead_columns(lead)  # the pool automation's columns, the lead's own attributes
    return {c: pools[c] if c in pools else getattr(lead, c) for c in LEAD_INDEXED}


def _lead_row(lead: Lead) -> tuple[Any, ...]:
    """The bind parameters of `insert_lead`, in its column order."""
    pools = lead_columns(lead)  # pool automation's columns: see adapters/db/pools.py
    return (
        lead.id,
        lead.mid,
        lead.version,
        lead.owner,
        lead.lead_pool,
        lead.life_status,
        lead.voided,
        lead.stored_text,
        lead.created_at,
        lead.updated_at,
        pools["owner_since"],
        pools["last_follow_up_at"],
        pools["mobile_key"],
        pools["email_key"],
    )


class SqlLeads(_Repo):
    """Leads: one row each, the whole state as JSON beside the columns that filter."""

    def get(self, mid: str, lead_id: str, *, for_update: bool = False) -> Lead | None:
        sql = self.sql.lead_for_update if for_update else self.sql.lead
        row = self.driver.execute(sql, (lead_id, mid)).fetchone()
        return None if row is None else Lead.from_json(json.loads(row[0]))

    def add(self, lead: Lead) -> None:
        self.unread.execute(self.sql.insert_lead, _lead_row(lead))

    def add_many(self, leads: Sequence[Lead]) -> None:
        if leads:
            self.unread.executemany(self.sql.insert_lead, [_lead_row(x) for x in leads])

    def update(self, lead: Lead, before: Lead) -> None:
        # The version, the state, updated_at and last_follow_up_at, the indexed columns whose
        # value changed (`sql.update_lead`), then the key and the version check. `before` is
        # compared by its indexed columns only: its state is not encoded again.
        new, old = _indexed(lead), _indexed(before)
        changed = tuple(c for c in LEAD_INDEXED if new[c] != old[c])
        statement = update_lead(self.sql.mark, changed)
        params = (lead.version, lead.stored_text, lead.updated_at, lead.last_follow_up_at)
        params += (*(new[c] for c in changed), lead.id, before.version)
        cur = self.driver.execute(statement, params)
        flushed(self.conn)  # its rowcount, in PostgreSQL's pipeline mode
        if cur.rowcount != 1:
            raise ConflictError(f"lead {lead.id} changed concurrently; retry the request")

    def page(self, mid: str, filters: LeadFilter, cursor: str | None, limit: int) -> Page[Lead]:
        c = t.leads.c
        conds = [c.mid == mid]
        after = cursors.decode(cursor)
        if after is not None:
            conds.append(c.seq > after)
        for column, value in (
            (c.owner, filters.owner),
            (c.lead_pool, filters.lead_pool),
            (c.life_status, filters.life_status),
        ):
            if value is not None:
                conds.append(column == value)
        if filters.voided is not None:
            # A literal, not a parameter: `voided = 1` (PostgreSQL: `voided = true`) is what
            # lets both planners read the partial index of voided leads, `ix_leads_voided_seq`,
            # also in a plan made once for any value (a prepared statement's generic plan).
            conds.append(c.voided == (true() if filters.voided else false()))
        rows = self.conn.execute(
            select(c.seq, c.state).where(and_(*conds)).order_by(c.seq).limit(limit + 1)
        ).all()
        leads = [Lead.from_json(json.loads(r.state)) for r in rows[:limit]]
        nxt = cursors.encode(rows[limit - 1].seq) if len(rows) > limit else None
        return Page(leads, nxt)


def _event(row: Any) -> StoredEvent:
    return StoredEvent(
        seq=row.seq,
        event_id=row.event_id,
        mid=row.mid,
        entity_id=row.entity_id,
        entity_version=row.entity_version,
        event_type=row.event_type,
        create_time=row.create_time,
        is_follow_up=row.is_follow_up,
        payload=row.payload,
    )


class SqlEvents(_Repo):
    """The append-only event log; `seq` orders it."""

    # The tenants whose log this transaction already holds the shared lock on: a group of
    # behaviours takes each tenant's once (one round trip to PostgreSQL less per behaviour).
    held: set[str] | None = None

    def _log_lock(self, mid: str, *, shared: bool) -> None:
        # Readers page by `seq` (`after=`), but a seq is handed out at insert and seen only at
        # commit: two writers may commit out of seq order, and a reader already past the later
        # event would never see the earlier one. So on PostgreSQL every writer holds a shared
        # lock on its tenant's log from its first event to its commit (writers never wait for
        # each other), and a page of the log is read under the exclusive lock: after every
        # writer holding a seq has committed (or rolled back), before any new one takes a seq.
        # SQLite has a single writer: nothing to do.
        lock = self.sql.log_lock_shared if shared else self.sql.log_lock
        if lock is None:
            return
        held = self.held if shared else None
        if held is not None and mid in held:
            return
        self.unread.execute(lock, (mid,))
        if held is not None:
            held.add(mid)

    def append(self, events: Sequence[NewEvent]) -> Sequence[int | None]:
        for mid in sorted({ev.mid for ev in events}):
            self._log_lock(mid, shared=True)
        if not events:
            return []
        rows = [
            (
                ev.event_id,
                ev.mid,
                ev.entity_id,
                ev.entity_version,
                ev.event_type,
                ev.create_time,
                ev.is_follow_up,
                ev.payload,
            )
            for ev in events
        ]
        first = events[0]
        conflict = ConflictError(
            f"lead {first.entity_id} already has version {first.entity_version}; retry"
        )
        if self.sql.insert_event_unread is not None and deferring(self.conn):
            # A deferred group (PostgreSQL): no round trip to read the seqs back; the
            # deliveries find them by event id, and a conflict fails the group at its end.
            execute_rows(self.unread, self.sql.insert_event_unread, rows)
            return [None] * len(rows)
        if len(rows) == 1:
            # The hot path: one statement, and a conflict leaves the transaction usable.
            found = self.driver.execute(self.sql.insert_event, rows[0]).fetchone()
            if found is None:
                raise conflict
            return [int(found[0])]
        # A batch in one savepoint: a duplicate undoes the batch only, the unit of work goes on.
        try:
            with self.conn.begin_nested():
                return self._insert_events(rows)
        except self._integrity_error() as exc:
            raise conflict from exc

    def _insert_events(self, rows: list[tuple[Any, ...]]) -> list[int]:
        cur = self.driver.cursor()
        if self.sql.last_rowid is None:
            # psycopg pipelines the statements and keeps each RETURNING result, in order.
            cur.executemany(self.sql.insert_events, rows, returning=True)
            seqs = []
            while True:
                seqs.append(int(cur.fetchone()[0]))
                if not cur.nextset():
                    return seqs
        # SQLite: one writer, and an INTEGER PRIMARY KEY takes max(seq) + 1, so the rows of one
        # executemany get consecutive seqs ending at the last one inserted.
        cur.executemany(self.sql.insert_events, rows)
        last = int(self.driver.execute(self.sql.last_rowid).fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))

    def get(self, mid: str, event_id: str) -> StoredEvent | None:
        row = self.conn.execute(
            select(t.events).where(t.events.c.mid == mid, t.events.c.event_id == event_id)
        ).first()
        return None if row is None else _event(row)

    def page(
        self,
        mid: str,
        *,
        after: str | None,
        event_type: str | None,
        entity_id: str | None,
        limit: int,
        purged_before: Callable[[], float | None] | None = None,
    ) -> Page[StoredEvent]:
        c = t.events.c
        conds = [c.mid == mid]
        self._log_lock(mid, shared=False)
        # One lead's events are in log order by their versions too: walked on the lead's
        # versions' index (tables.py, `uq_events_entity_version`).
        order = c.entity_version if entity_id else c.seq
        anchor = self.get(mid, after) if after else None
        if after and anchor is None:
            floor = cursors.purged_event_floor(after, self._purged_before(purged_before))
            if floor is None:
                raise BadRequestError(f"after={after!r} names no event of this tenant")
            # Purged: from the first event logged with an id minted since (the tenant's log
            # walked from its oldest event left, a few unsettled ones before it at most).
            start = self.conn.execute(
                select(c.seq).where(c.mid == mid, c.event_id >= floor).order_by(c.seq).limit(1)
            ).scalar()
            if start is None:
                return Page([], None)
            if entity_id:
                conds.append(c.entity_version > versions_through(entity_id, start - 1))
            else:
                conds.append(c.seq >= start)
        if anchor is not None:
            if entity_id == anchor.entity_id:
                conds.append(c.entity_version > anchor.entity_version)
            elif entity_id:
                conds.append(c.entity_version > versions_through(entity_id, anchor.seq))
            else:
                conds.append(c.seq > anchor.seq)
        if event_type:
            conds.append(c.event_type == event_type)
        if entity_id:
            conds.append(c.entity_id == entity_id)
        rows = self.conn.execute(
            select(t.events).where(and_(*conds)).order_by(order).limit(limit + 1)
        ).all()
        data = [_event(r) for r in rows[:limit]]
        nxt = data[-1].event_id if len(rows) > limit else None
        return Page(data, nxt)

    def _purged_before(self, own: Callable[[], float | None] | None) -> float | None:
        """The time before which retention may have purged events: this process's horizon
        (`own`), or the newest one a purge kept in the database (any process's, whatever this
        one's settings say), read on this transaction's own connection."""
        kept = purge_horizon(self.conn, "events")
        horizons = [h for h in ((own() if own else None), kept) if h is not None]
        return max(horizons) if horizons else None

    def timeline(
        self, mid: str, entity_id: str, *, is_follow_up: int | None, cursor: str | None, limit: int
    ) -> Page[StoredEvent]:
        c = t.events.c
        conds = [c.mid == mid, c.entity_id == entity_id]
        before = cursors.decode(cursor)
        # entity_version is a 32-bit column: a larger position is past every version (and
        # PostgreSQL would refuse to compare it).
        if before is not None and before <= _MAX_INT32:
            conds.append(c.entity_version < before)
        if is_follow_up is not None:
            conds.append(c.is_follow_up == is_follow_up)
        rows = self.conn.execute(
            select(t.events).where(and_(*conds)).order_by(c.entity_version.desc()).limit(limit + 1)
        ).all()
        data = [_event(r) for r in rows[:limit]]
        nxt = cursors.encode(data[-1].entity_version) if len(rows) > limit else None
        return Page(data, nxt)

    def for_entity(self, mid: str, entity_id: str) -> list[StoredEvent]:
        c = t.events.c
        rows = self.conn.execute(
            select(t.events)
            .where(c.mid == mid, c.entity_id == entity_id)
            .order_by(c.entity_version)
        ).all()
        return [_event(r) for r in rows]


def versions_through(entity_id: str, seq: int) -> ColumnElement[int]:
    """The last version of `entity_id` logged at or before `seq` (0: none), as a subquery.

    A position in the log as a bound on one lead's versions: the versions after it are those
    logged after `seq`, read on the index of the lead's versions. Stated as `seq > :seq`
    instead, SQLite (no statistics) walked the tenant's whole log by `(mid, seq)` and sorted."""
    e = t.events.alias("logged")
    return (
        select(func.coalesce(func.max(e.c.entity_version), 0))
        .where(e.c.entity_id == entity_id, e.c.seq <= seq)
        .scalar_subquery()
    )


def versions_from(entity_id: str, seq: int) -> ColumnElement[int]:
    """The first version of `entity_id` logged at or after `seq` (past every version: none),
    as a subquery: the lead's versions before it are those logged before `seq`."""
    e = t.events.alias("logged")
    return func.coalesce(
        select(func.min(e.c.entity_version))
        .where(e.c.entity_id == entity_id, e.c.seq >= seq)
        .scalar_subquery(),
        _MAX_INT32 + 1,
    )


class SqlIdempotency(_Repo):
    """Stored first responses of requests with an Idempotency-Key."""

    def get(self, mid: str, key: str) -> StoredResponse | None:
        row = self.driver.execute(self.sql.idempotency_get, (mid, key)).fetchone()
        return None if row is None else StoredResponse(row[0], row[1], row[2])

    def put(self, mid: str, key: str, response: StoredResponse, at: float) -> None:
        params = (mid, key, response.fingerprint, response.status_code, response.body, at)
        cur = self.driver.execute(self.sql.idempotency_put, params)
        flushed(self.conn)  # its rowcount, in PostgreSQL's pipeline mode
        if cur.rowcount != 1:
            raise ConflictError("a request with this Idempotency-Key is in progress")

    def purge_before(self, at: float) -> int:
        """Forget keys older than `at`."""
        result = self.conn.execute(
            delete(t.idempotency_keys).where(t.idempotency_keys.c.created_at < at)
        )
        return int(result.rowcount)
