"""The SQL schema, shared by SQLite and PostgreSQL (migrations mirror it)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
# SQLite only gives AUTOINCREMENT-style rowids to INTEGER PRIMARY KEY; BigInteger there is not.
BigId = BigInteger().with_variant(Integer(), "sqlite")

tenants = Table(
    "tenants",
    metadata,
    Column("mid", String(64), primary_key=True),
    Column("catalog", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("mid", String(64), ForeignKey("tenants.mid"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

leads = Table(
    "leads",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("mid", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("owner", String(64)),
    Column("lead_pool", String(64)),
    Column("life_status", String(64)),
    Column("voided", Boolean, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # Pool automation (migration 0004): the reclaim clocks and the duplicate-check keys,
    # written with the state by the one write path (adapters/db/pools.py `lead_columns`).
    Column("owner_since", Float),
    Column("last_follow_up_at", Float),
    Column("mobile_key", String(255)),
    Column("email_key", String(255)),
    Index("ix_leads_mid_seq", "mid", "seq"),
    # The reclaim rule's due query: owned leads of one pool, longest owned first.
    Index(
        "ix_leads_reclaim",
        "mid",
        "lead_pool",
        "owner_since",
        postgresql_where=text("owner IS NOT NULL"),
        sqlite_where=text("owner IS NOT NULL"),
    ),
    Index(
        "ix_leads_mobile_key",
        "mid",
        "mobile_key",
        postgresql_where=text("mobile_key IS NOT NULL"),
        sqlite_where=text("mobile_key IS NOT NULL"),
    ),
    Index(
        "ix_leads_email_key",
        "mid",
        "email_key",
        postgresql_where=text("email_key IS NOT NULL"),
        sqlite_where=text("email_key IS NOT NULL"),
    ),
    # The listing's filters: a filter matching few leads must not walk all of a tenant's.
    # Only owned leads are in the owner's index (a filter names an owner; no filter asks for
    # "no owner"), and it also serves least-loaded allocation and claim limits, which count a
    # member's leads: a lead created or returned without an owner writes no entry in it
    # (migration 0006).
    Index(
        "ix_leads_mid_owner_seq",
        "mid",
        "owner",
        "seq",
        postgresql_where=text("owner IS NOT NULL"),
        sqlite_where=text("owner IS NOT NULL"),
    ),
    Index("ix_leads_mid_lead_pool_seq", "mid", "lead_pool", "seq"),
    Index("ix_leads_mid_life_status_seq", "mid", "life_status", "seq"),
    # `voided=true` walks the few voided leads here; `voided=false` walks `ix_leads_mid_seq`,
    # skipping them (0006: before, every lead had an entry, written by every create). `voided`
    # stays a column of it: with it SQLite (no statistics) rates this index above
    # `ix_leads_mid_seq` for `voided=true`, which it otherwise rated alike.
    Index(
        "ix_leads_voided_seq",
        "mid",
        "voided",
        "seq",
        postgresql_where=text("voided"),
        sqlite_where=text("voided = 1"),
    ),
)

# Where each pool's automatic allocation stands; its row is locked while a lead is allocated,
# so concurrent creates never hand out the same turn twice.
pool_turns = Table(
    "pool_turns",
    metadata,
    Column("mid", String(64), primary_key=True),
    Column("lead_pool", String(64), primary_key=True),
    Column("last_member", String(64)),
    Column("turns", BigInteger, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# One row per batch of an automatic rule that moved leads (GET /v1/automation/runs).
automation_runs = Table(
    "automation_runs",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("mid", String(64), nullable=False),
    Column("rule", String(32), nullable=False),
    Column("lead_pool", String(64), nullable=False),
    Column("trigger", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=False),
    Column("lead_ids", Text, nullable=False),
    Index("ix_automation_runs_mid_seq", "mid", "seq"),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(32), nullable=False, unique=True),
    Column("mid", String(64), nullable=False),
    Column("entity_id", String(32), nullable=False),
    Column("entity_version", Integer, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("create_time", BigInteger, nullable=False),
    Column("is_follow_up", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    # A lead's versions, gapless; also the index of the log's `entity_id=` filter and of the
    # timeline: a lead's events are logged in the order of their versions (each behaviour
    # holds its lead from reading the version to its commit), so walking a lead's versions
    # walks its events in log order (0006 dropped `(mid, entity_id, seq)`, one more entry
    # every event wrote for the same order).
    UniqueConstraint("entity_id", "entity_version", name="uq_events_entity_version"),
    # Retention walks the log by `seq` (the table's own order), not by `create_time`: 0006
    # dropped that index, which every event wrote an entry in (adapters/db/retention.py).
    Index("ix_events_mid_seq", "mid", "seq"),
    # The log's `event_type=` filter, in log order.
    Index("ix_events_mid_event_type_seq", "mid", "event_type", "seq"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("mid", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("event_types", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", Text),
    # Encrypted: "fernet:" + a Fernet token (adapters/secretbox.py), about 170 characters.
    Column("secret", String(512), nullable=False),
    Column("previous_secret", String(512)),
    Column("previous_secret_expires_at", Float),
    Column("max_in_flight", Integer, nullable=False),
    Column("rate_limit_per_s", Float),
    Column("first_failure_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("deleted_at", Float),
    # The circuit breaker (domain/circuit.py): closed while circuit_retry_at is null.
    Column("circuit_failures", Integer, nullable=False, server_default="0"),
    Column("circuit_opened_at", Float),
    Column("circuit_retry_at", Float),
    Column("circuit_cooldown", Float),
    # While half open: the probe a worker took, until its lease ends (one probe at a time).
    Column("circuit_probe_until", Float),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("mid", String(64), nullable=False),
    Column("subscription_id", String(32), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("event_id", String(32), nullable=False),
    Column("entity_id", String(32), nullable=False),
    Column("entity_version", Integer, nullable=False),
    Column("event_type", String(40), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float),
    Column("locked_until", Float),
    Column("locked_by", String(64)),
    Column("last_error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_deliveries_subscription_seq", "subscription_id", "seq"),
    # The listing across a tenant's subscriptions (GET /v1/deliveries), newest first, by each
    # filter that narrows it most (migration 0005).
    Index("ix_deliveries_mid_seq", "mid", "seq"),
    Index("ix_deliveries_mid_status_seq", "mid", "status", "seq"),
    Index("ix_deliveries_mid_entity_id_seq", "mid", "entity_id", "seq"),
    Index("ix_deliveries_mid_created_at", "mid", "created_at"),
    # The claim reads only due, unfinished rows: this partial index stays small as history grows.
    Index(
        "ix_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status IN ('pending', 'failed')"),
        sqlite_where=text("status IN ('pending', 'failed')"),
    ),
    # Per-lead order: is there an earlier unfinished delivery of this lead to this subscription?
    Index(
        "ix_deliveries_lead_order",
        "subscription_id",
        "entity_id",
        "entity_version",
        postgresql_where=text("status IN ('pending', 'failed')"),
        sqlite_where=text("status IN ('pending', 'failed')"),
    ),
    # A listing filtered by status walks only that status (a few dead among millions delivered).
    Index("ix_deliveries_subscription_status_seq", "subscription_id", "status", "seq"),
    # Retention: the oldest delivered rows first (only delivered ones are in it: a delivery
    # gets its entry when it is delivered, not a pending one when it is created, 0006), and
    # the deliveries of an event.
    Index(
        "ix_deliveries_delivered_at",
        "updated_at",
        postgresql_where=text("status = 'delivered'"),
        sqlite_where=text("status = 'delivered'"),
    ),
    Index("ix_deliveries_event_seq", "event_seq"),
    # The leases held by one worker (crash recovery): only leased rows are in it, so it is tiny.
    Index(
        "ix_deliveries_locked_by",
        "locked_by",
        postgresql_where=text("locked_by IS NOT NULL"),
        sqlite_where=text("locked_by IS NOT NULL"),
    ),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("delivery_seq", BigInteger, nullable=False, index=True),
    Column("attempted_at", Float, nullable=False),
    Column("status_code", Integer),
    Column("latency_ms", Float, nullable=False),
    Column("error", Text),
    Column("response_body", Text, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("mid", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", Float, nullable=False, index=True),  # purged by age
)

# What the delivery loops did, counted in the transaction that records it (`/metrics`): a row
# per outcome and slot (a hash of the worker's id, 16 slots), written last before the commit,
# so that two workers sharing a slot on PostgreSQL wait at most each other's COMMIT, and the
# table stays a few dozen rows however many workers come and go.
delivery_outcomes = Table(
    "delivery_outcomes",
    metadata,
    Column("outcome", String(32), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# Rows purged by retention since the database was created, per table (shown in /metrics):
# kept in the database because the purging worker and the API may be different processes.
purge_counts = Table(
    "purge_counts",
    metadata,
    Column("table_name", String(64), primary_key=True),
    Column("rows", BigInteger, nullable=False),
    Column("last_purge_at", Float, nullable=False),
    # The newest time a purge of this table deleted rows created before (0008): the API reads
    # the events' to resume a listing from a purged event, whatever its own settings say.
    Column("horizon", Float),
)

# One row: a value encrypted with the secret key, so a process started with another key
# refuses to start instead of writing secrets the others cannot read (adapters/secretbox.py).
key_check = Table(
    "key_check",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("token", Text, nullable=False),
)
