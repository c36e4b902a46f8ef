"""Named SQL of the write path, run on the driver (sqlite3 / psycopg) without SQLAlchemy.

A behaviour is a handful of short statements; through SQLAlchemy Core, compiling them and
handling their results cost more than SQLite took to run them. These are the same statements
as plain text with bind parameters, one set per dialect, so that the driver prepares each once
(sqlite3's statement cache; psycopg prepares a statement after a few executions).

The two dialects differ only where they must: the placeholder style (`?` and `%s`), row locks
(`FOR UPDATE`, PostgreSQL only), the tenant's event-log locks (advisory locks on PostgreSQL;
SQLite has a single writer and needs none) and how a batch of events learns its seqs
(`RETURNING` per row on PostgreSQL, the last rowid on SQLite). Both are spelled out in full
below, and nowhere else: the stores run whichever set their connection's dialect names.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

# The class of the advisory locks on a tenant's event log; two-key advisory locks never collide
# with the one-key lock that migrations take.
EVENT_LOG_LOCK = 7_340_212


@dataclass(frozen=True)
class Statements:
    """The hot statements of one dialect."""

    tenant: str
    tenant_for_update: str
    lead: str
    lead_for_update: str
    insert_lead: str
    mark: str  # the placeholder: `?` or `%s` (`update_lead`)
    log_lock_shared: str | None
    log_lock: str | None
    insert_event: str
    insert_events: str
    last_rowid: str | None
    enabled_subscriptions: str
    insert_delivery: str
    # PostgreSQL in a deferred pipeline (adapters/db/pipeline.py): an event inserted without
    # reading its seq back, and its deliveries finding that seq by the event's id.
    insert_event_unread: str | None
    insert_delivery_by_event: str | None
    idempotency_get: str
    idempotency_put: str


SQLITE = Statements(
    # SQLite has no row locks: its write transactions are serialised whole (BEGIN IMMEDIATE).
    tenant="SELECT catalog, created_at FROM tenants WHERE mid = ?",
    tenant_for_update="SELECT catalog, created_at FROM tenants WHERE mid = ?",
    lead="SELECT state FROM leads WHERE id = ? AND mid = ?",
    lead_for_update="SELECT state FROM leads WHERE id = ? AND mid = ?",
    insert_lead="""INSERT INTO leads (id, mid, version, owner, lead_pool, life_status, voided,
        state, created_at, updated_at, owner_since, last_follow_up_at, mobile_key, email_key)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
    mark="?",
    log_lock_shared=None,
    log_lock=None,
    # A version or event id already written answers no row (and leaves the transaction usable).
    insert_event="""INSERT INTO events (event_id, mid, entity_id, entity_version, event_type,
        create_time, is_follow_up, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT DO NOTHING RETURNING seq""",
    insert_events="""INSERT INTO events (event_id, mid, entity_id, entity_version, event_type,
        create_time, is_follow_up, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
    # The seq of the last row inserted: a batch's rows get consecutive seqs ending there.
    last_rowid="SELECT last_insert_rowid()",
    enabled_subscriptions="""SELECT id, event_types FROM subscriptions
        WHERE mid = ? AND enabled AND deleted_at IS NULL""",
    insert_delivery="""INSERT INTO deliveries (id, mid, subscription_id, event_seq, event_id,
        entity_id, entity_version, event_type, status, attempt_count, next_attempt_at,
        created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)""",
    insert_event_unread=None,
    insert_delivery_by_event=None,
    idempotency_get="""SELECT fingerprint, status_code, body FROM idempotency_keys
        WHERE mid = ? AND key = ?""",
    idempotency_put="""INSERT INTO idempotency_keys (mid, key, fingerprint, status_code, body,
        created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING""",
)

POSTGRES = Statements(
    tenant="SELECT catalog, created_at FROM tenants WHERE mid = %s",
    tenant_for_update="SELECT catalog, created_at FROM tenants WHERE mid = %s FOR UPDATE",
    lead="SELECT state FROM leads WHERE id = %s AND mid = %s",
    lead_for_update="SELECT state FROM leads WHERE id = %s AND mid = %s FOR UPDATE",
    insert_lead="""INSERT INTO leads (id, mid, version, owner, lead_pool, life_status, voided,
        state, created_at, updated_at, owner_since, last_follow_up_at, mobile_key, email_key)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
    mark="%s",
    log_lock_shared=f"SELECT pg_advisory_xact_lock_shared({EVENT_LOG_LOCK}, hashtext(%s))",
    log_lock=f"SELECT pg_advisory_xact_lock({EVENT_LOG_LOCK}, hashtext(%s))",
    insert_event="""INSERT INTO events (event_id, mid, entity_id, entity_version, event_type,
        create_time, is_follow_up, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT DO NOTHING RETURNING seq""",
    insert_events="""INSERT INTO events (event_id, mid, entity_id, entity_version, event_type,
        create_time, is_follow_up, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING seq""",
    last_rowid=None,  # psycopg returns each row's seq (executemany with returning)
    enabled_subscriptions="""SELECT id, event_types FROM subscriptions
        WHERE mid = %s AND enabled AND deleted_at IS NULL""",
    insert_delivery="""INSERT INTO deliveries (id, mid, subscription_id, event_seq, event_id,
        entity_id, entity_version, event_type, status, attempt_count, next_attempt_at,
        created_at, updated_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'pending', 0, %s, %s, %s)""",
    # No ON CONFLICT: a version already written fails the statement, and with it the deferred
    # group, which the writer then runs again statement by statement (adapters/db/writer.py).
    insert_event_unread="""INSERT INTO events (event_id, mid, entity_id, entity_version,
        event_type, create_time, is_follow_up, payload)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
    insert_delivery_by_event="""INSERT INTO deliveries (id, mid, subscription_id, event_seq,
        event_id, entity_id, entity_version, event_type, status, attempt_count,
        next_attempt_at, created_at, updated_at)
        VALUES (%s, %s, %s, (SELECT seq FROM events WHERE event_id = %s), %s, %s, %s, %s,
        'pending', 0, %s, %s, %s)""",
    idempotency_get="""SELECT fingerprint, status_code, body FROM idempotency_keys
        WHERE mid = %s AND key = %s""",
    idempotency_put="""INSERT INTO idempotency_keys (mid, key, fingerprint, status_code, body,
        created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
)


# The columns of `leads` that are in an index, in `insert_lead`'s order: an update sets each
# only when its value changed (`update_lead`).
LEAD_INDEXED = (
    "owner",
    "lead_pool",
    "life_status",
    "voided",
    "owner_since",
    "mobile_key",
    "email_key",
)


@lru_cache(maxsize=256)
def update_lead(mark: str, changed: tuple[str, ...]) -> str:
    """The UPDATE of a lead's version, state, `updated_at` and `last_follow_up_at` (in no
    index), and of the indexed columns `changed` (of `LEAD_INDEXED`), with its version check;
    `mark` is the placeholder.

    SQLite rewrites the entry of every index whose column a SET names, changed or not: setting
    every column made each update of a title write the pages of seven indexes (the owner's,
    the pool's, the stage's, the reclaim clock's, the duplicate keys'...) that it left as they
    were. PostgreSQL compares the values itself (a HOT update), so the text changes nothing
    there but its length. Its parameters: version, state, updated_at, last_follow_up_at, the
    `changed` values, then the id and the expected version."""
    always = ("version", "state", "updated_at", "last_follow_up_at")
    sets = ", ".join(f"{c} = {mark}" for c in (*always, *changed))
    return f"UPDATE leads SET {sets} WHERE id = {mark} AND version = {mark}"


@lru_cache(maxsize=512)
def many_rows(statement: str, n: int) -> str:
    """`statement`, an `INSERT ... VALUES (row)` that ends with its row, inserting `n` rows:
    `VALUES (row), (row), ...`, each row's parameters in turn. PostgreSQL inserts the rows
    in the order they are listed (an event's seq follows it).

    In PostgreSQL's own numbered parameters (`$1`, `$2`, ...), for a `psycopg.RawCursor`: a
    cursor converts `%s` by parsing the statement's whole text, and caches what it parsed
    only for statements of at most 50 parameters, so a group's multi-row inserts (a lead row
    has 14) were parsed again on every execute: a third of PostgreSQL's writer thread
    (bench/profiles.md, eighteenth round). Here a text is made once for each `n`.
    """
    head, values, row = statement.rpartition("VALUES")
    if not values or not row.strip().endswith(")"):
        raise ValueError("not an INSERT that ends with its VALUES row")
    if "%" in head or "%" in row.replace("%s", ""):
        raise ValueError("only the VALUES row takes parameters, and only as %s")
    parts = row.strip().split("%s")
    k = len(parts) - 1
    rows = []
    for i in range(n):
        text = [parts[0]]
        for j in range(k):
            text += (f"${i * k + j + 1}", parts[j + 1])
        rows.append("".join(text))
    return f"{head}{values} " + ", ".join(rows)


def statements(dialect: str) -> Statements:
    """Return the statements of `dialect` (`sqlite` or `postgresql`)."""
    return SQLITE if dialect == "sqlite" else POSTGRES
