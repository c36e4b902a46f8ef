"""The web console's read-only queries (services/console.py, `ConsoleQueries`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, Table, and_, cast, func, or_, select
from sqlalchemy import text as sql_text
from sqlalchemy.dialects.postgresql import JSONB

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.outbox import listing_conditions
from leadhook.adapters.db.repositories import SqlEvents, _event, versions_from
from leadhook.domain.catalog import NamedMatches
from leadhook.domain.lead import Lead
from leadhook.services.console import AttemptSample, DeliveryQuery
from leadhook.services.ports import Delivery, StoredEvent, delivery_of

# A lead matches a search when one of its field values (`fields` and `source`: a name, a
# mobile, a company) contains the text, read out of the stored JSON by the database. A
# substring search over the JSON's own text also matched its keys (`fields`, `mobile`: every
# lead) and missed text that JSON escapes (a quote, a backslash).
_VALUE_MATCH = {
    "sqlite": " OR ".join(
        f"EXISTS (SELECT 1 FROM json_each(leads.state, '$.{part}') AS v"
        " WHERE lower(v.value) LIKE lower(:pattern) ESCAPE '\\')"
        for part in ("fields", "source")
    ),
    "postgresql": " OR ".join(
        f"EXISTS (SELECT 1 FROM jsonb_each_text(CAST(leads.state AS jsonb) -> '{part}') AS v"
        " WHERE v.value ILIKE :pattern ESCAPE '\\')"
        for part in ("fields", "source")
    ),
}


def _named(dialect: str, named: NamedMatches) -> list[ColumnElement[bool]]:
    """A lead holds a code the catalog names by the searched text: its owner, pool, stage or
    status (columns, or the stored JSON's `leads_status`), or an option field's value."""
    c = t.leads.c
    found: list[ColumnElement[bool]] = []
    for column, codes in (
        (c.owner, named.owners),
        (c.lead_pool, named.lead_pools),
        (c.life_status, named.life_stages),
    ):
        if codes:
            found.append(column.in_(codes))
    if named.lead_statuses:
        found.append(
            _json_text(dialect, "$.leads_status", ("leads_status",)).in_(named.lead_statuses)
        )
    for field, code in named.options:
        for group in ("fields", "source"):
            # Field codes are catalog keys (letters, digits, _ and -): safe in a JSON path.
            found.append(_json_text(dialect, f'$.{group}."{field}"', (group, field)) == code)
    return found


def _json_text(dialect: str, path: str, keys: tuple[str, ...]) -> ColumnElement[Any]:
    """The text at a path of a lead's stored JSON (`path` for SQLite, `keys` for PostgreSQL)."""
    state = t.leads.c.state
    if dialect == "sqlite":
        return func.json_extract(state, path)
    document: Any = cast(state, JSONB)
    text: ColumnElement[Any] = (document[keys] if len(keys) > 1 else document[keys[0]]).astext
    return text


def _like(text: str) -> str:
    """A LIKE pattern that matches `text` literally anywhere (escape char `\\`)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _newest(
    conn: Connection,
    table: Table,
    conds: list[ColumnElement[bool]],
    before_seq: int | None,
    limit: int,
    *,
    order: ColumnElement[Any] | None = None,
) -> Sequence[Row[Any]]:
    """The rows of `table` that match `conds`, newest (highest `seq`) first, and only those
    older than `before_seq` when it is given: one page of a console listing. `order`: a
    column in the same order as `seq` among the rows `conds` match, to sort by instead."""
    if before_seq is not None:
        conds = [*conds, table.c.seq < before_seq]
    newest = (table.c.seq if order is None else order).desc()
    return conn.execute(select(table).where(and_(*conds)).order_by(newest).limit(limit)).all()


class SqlConsoleQueries:
    """Each query in a read-only transaction of its own."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _conn(self) -> Iterator[Connection]:
        with self._engine.connect() as raw:
            conn = raw.execution_options(leadhook_readonly=True)
            with conn.begin():
                yield conn

    def search_leads(
        self, mid: str, text: str, named: NamedMatches, offset: int, limit: int
    ) -> list[Lead]:
        c = t.leads.c
        conds = [c.mid == mid]
        with self._conn() as conn:
            if text:
                # The id exactly, or any field value containing the text (`_VALUE_MATCH`),
                # without regard to case on both backends (ASCII case only, on SQLite), or a
                # code the catalog names by the text (`Catalog.named`).
                match = "(" + _VALUE_MATCH[conn.dialect.name] + ")"
                values = sql_text(match).bindparams(pattern=_like(text))
                conds.append(or_(c.id == text, values, *_named(conn.dialect.name, named)))
            rows = conn.execute(
                select(c.state)
                .where(and_(*conds))
                .order_by(c.seq.desc())
                .offset(offset)
                .limit(limit)
            ).all()
        return [Lead.from_json(json.loads(r.state)) for r in rows]

    def events(
        self,
        mid: str,
        *,
        event_type: str | None,
        entity_id: str | None,
        before_seq: int | None,
        limit: int,
    ) -> list[StoredEvent]:
        c = t.events.c
        conds = [c.mid == mid]
        if event_type:
            conds.append(c.event_type == event_type)
        if entity_id:
            conds.append(c.entity_id == entity_id)
            # One lead's events, newest first: by its versions (the log's order for a lead),
            # on the index of the lead's versions, the cursor a bound on them too.
            if before_seq is not None:
                conds.append(c.entity_version < versions_from(entity_id, before_seq))
            with self._conn() as conn:
                rows = _newest(conn, t.events, conds, None, limit, order=c.entity_version)
            return [_event(r) for r in rows]
        with self._conn() as conn:
            return [_event(r) for r in _newest(conn, t.events, conds, before_seq, limit)]

    def latest_event_id(self, mid: str) -> str | None:
        c = t.events.c
        with self._conn() as conn:
            # Under the log's exclusive lock, like any page of the log: every event with a
            # lower seq has committed, so a live view that starts after this one misses none.
            SqlEvents(conn)._log_lock(mid, shared=False)
            row = conn.execute(
                select(c.event_id).where(c.mid == mid).order_by(c.seq.desc()).limit(1)
            ).first()
        return None if row is None else str(row.event_id)

    def deliveries(
        self, mid: str, query: DeliveryQuery, before_seq: int | None, limit: int
    ) -> list[tuple[int, Delivery]]:
        with self._conn() as conn:
            conds = listing_conditions(
                conn,
                mid,
                status=query.status or None,
                event_type=query.event_type or None,
                entity_id=query.entity_id or None,
                subscription_id=query.subscription_id or None,
                created_after=query.since,
                created_before=query.until,
            )
            rows = _newest(conn, t.deliveries, conds, before_seq, limit)
        # The listing shows the attempt count and last error; attempts are on the detail page.
        return [(int(r.seq), delivery_of(r, ())) for r in rows]

    def attempts_since(self, mid: str, since: float, limit: int) -> list[AttemptSample]:
        a = t.delivery_attempts.c
        d = t.deliveries.c
        with self._conn() as conn:
            rows = conn.execute(
                select(d.subscription_id, a.attempted_at, a.status_code, a.latency_ms, a.error)
                .select_from(t.delivery_attempts.join(t.deliveries, d.seq == a.delivery_seq))
                # A delivery attempted since `since` was updated since then too: this bounds
                # the deliveries joined before the attempts are looked at.
                .where(d.mid == mid, d.updated_at >= since, a.attempted_at >= since)
                .order_by(a.attempted_at.desc())
                .limit(limit)
            ).all()
        return [
            AttemptSample(r.subscription_id, r.attempted_at, r.status_code, r.latency_ms, r.error)
            for r in rows
        ]

    def deleted_subscriptions(self, mid: str, ids: Collection[str]) -> dict[str, str]:
        c = t.subscriptions.c
        with self._conn() as conn:
            rows = conn.execute(
                select(c.id, c.description, c.url).where(
                    c.mid == mid, c.id.in_(sorted(ids)), c.deleted_at.is_not(None)
                )
            ).all()
        return {r.id: r.description or r.url for r in rows}
