"""The SQL floor of a behaviour: leadhook's three inserts on its own schema, nothing else.

.venv/bin/python -m bench.sql_floor 5000
.venv/bin/python -m bench.sql_floor 20000 --batch 500    # as POST /v1/leads/batch writes
.venv/bin/python -m bench.sql_floor 20000 --batch 500 --no-delivery    # and with no subscriber

A `POST /v1/leads` with one subscription writes a lead, its event and one delivery. This runs
exactly those three inserts (rows copied from a real behaviour) in one `BEGIN IMMEDIATE …
COMMIT` per lead, on a database migrated by leadhook, with the connection settings leadhook
uses (`adapters.db.engine.configure_sqlite`: WAL, synchronous=NORMAL, pages read with read(),
foreign keys checked, the writers' own checkpoint bound), and reports the CPU per lead:

- with every index leadhook keeps (the listings' filters, the claim, per-lead order,
  retention, pool automation): what no amount of Python can take away;
- with the same tables and no secondary index: what the hand-written skeleton's three bare
  tables cost.

Each secondary index is one more B-tree whose page a commit writes to the WAL, which is why
the first figure is about twice the second, and already above the skeleton's whole request.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.scenarios import LEAD_FIELDS

TABLES = ("leads", "events", "deliveries")


def _template(tmp: Path) -> Path:
    """A leadhook database with one tenant, one subscription and one behaviour written."""
    from leadhook.bootstrap import build
    from leadhook.domain.operator import Operator
    from leadhook.services.leads import BehaviourRequest
    from leadhook.settings import Settings

    path = tmp / "template.db"
    container = build(Settings(database_url=f"sqlite:///{path}", allow_private_targets=True))
    try:
        mid = container.tenants.create("floor", "floor").tenant.mid
        container.subscriptions.create(mid, {"url": "http://127.0.0.1:9/h", "event_types": ["*"]})
        request = BehaviourRequest(mid=mid, operator=Operator())
        container.leads.create(request, {"fields": LEAD_FIELDS})
    finally:
        container.close()
    return path


def _run(template: Path, n: int, bare: bool, batch: int = 0, delivery: bool = True) -> float:
    from leadhook.adapters.db.engine import configure_sqlite
    from leadhook.adapters.system import SystemIds

    # The ids leadhook mints (time-ordered shortuuids, ULIDs for events): where an index keyed
    # by them takes each new key decides how many pages a commit writes.
    minted = SystemIds()
    short = minted.short

    def event_id() -> str:
        return minted.event_id(time.time())

    path = template.with_name("bare.db" if bare else "full.db")
    shutil.copy(template, path)
    db = sqlite3.connect(path, isolation_level=None)
    configure_sqlite(db)  # exactly as leadhook's engine sets up its own connections
    if bare:
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN {TABLES}"
        ).fetchall():
            db.execute(f"DROP INDEX {name}")
    columns = {t: [r[1] for r in db.execute(f"PRAGMA table_info({t})")] for t in TABLES}
    rows = {t: list(db.execute(f"SELECT * FROM {t} LIMIT 1").fetchone()) for t in TABLES}
    inserts = {t: f"INSERT INTO {t} VALUES ({', '.join('?' * len(columns[t]))})" for t in TABLES}

    def row(table: str, **values: Any) -> list[Any]:
        out = list(rows[table])
        for name, value in values.items():
            out[columns[table].index(name)] = value
        return out

    start = time.process_time()
    if batch:
        # As `POST /v1/leads/batch` writes: `batch` leads per transaction, each table's rows
        # in one executemany (the event seqs are known up front: the table is new).
        (next_seq,) = db.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()
        for first in range(0, n, batch):
            ids = [short() for _ in range(min(batch, n - first))]
            seqs = range(next_seq, next_seq + len(ids))
            next_seq += len(ids)
            db.execute("BEGIN IMMEDIATE")
            db.executemany(inserts["leads"], [row("leads", seq=None, id=i) for i in ids])
            db.executemany(
                inserts["events"],
                [
                    row("events", seq=s, event_id=event_id(), entity_id=i)
                    for i, s in zip(ids, seqs, strict=True)
                ],
            )
            db.executemany(
                inserts["deliveries"],
                [
                    row("deliveries", seq=None, id=short(), event_seq=s, entity_id=i)
                    for i, s in zip(ids, seqs, strict=True)
                    if delivery
                ],
            )
            db.execute("COMMIT")
    for _ in range(0 if batch else n):
        lead_id = short()
        db.execute("BEGIN IMMEDIATE")
        db.execute(inserts["leads"], row("leads", seq=None, id=lead_id))
        seq = db.execute(
            inserts["events"],
            row("events", seq=None, event_id=event_id(), entity_id=lead_id),
        ).lastrowid
        if delivery:
            db.execute(
                inserts["deliveries"],
                row("deliveries", seq=None, id=short(), event_seq=seq, entity_id=lead_id),
            )
        db.execute("COMMIT")
    cpu = time.process_time() - start
    db.close()
    return cpu / n * 1000


def main() -> None:
    """Print the CPU per lead of the three inserts, with and without the secondary indexes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", type=int, nargs="?", default=5000)
    parser.add_argument(
        "--batch", type=int, default=0, help="leads per transaction, rows by executemany"
    )
    parser.add_argument(
        "--no-delivery", action="store_true", help="lead and event only (no subscriber)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        template = _template(Path(tmp))
        how = {"batch": args.batch, "delivery": not args.no_delivery}
        full = _run(template, args.n, bare=False, **how)
        bare = _run(template, args.n, bare=True, **how)
    print(
        json.dumps(
            {
                "with_leadhook_indexes_ms": round(full, 3),
                "bare_tables_ms": round(bare, 3),
                "ceiling_leads_per_s_with_indexes": round(1000 / full),
            }
        )
    )


if __name__ == "__main__":
    main()
