"""The SQL floor of a behaviour: leadhook's three inserts on its own schema, nothing else.

.venv/bin/python -m bench.sql_floor 5000

A `POST /v1/leads` with one subscription writes a lead, its event and one delivery. This runs
exactly those three inserts (rows copied from a real behaviour) in one `BEGIN IMMEDIATE …
COMMIT` per lead, on a database migrated by leadhook, with the connection settings leadhook
uses (WAL, synchronous=NORMAL, mmap), and reports the CPU per lead:

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
import uuid
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


def _run(template: Path, n: int, bare: bool) -> float:
    path = template.with_name("bare.db" if bare else "full.db")
    shutil.copy(template, path)
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "mmap_size=268435456"):
        db.execute(f"PRAGMA {pragma}")
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
    for _ in range(n):
        lead_id = uuid.uuid4().hex
        db.execute("BEGIN IMMEDIATE")
        db.execute(inserts["leads"], row("leads", seq=None, id=lead_id))
        seq = db.execute(
            inserts["events"],
            row("events", seq=None, event_id=uuid.uuid4().hex, entity_id=lead_id),
        ).lastrowid
        db.execute(
            inserts["deliveries"],
            row("deliveries", seq=None, id=uuid.uuid4().hex, event_seq=seq, entity_id=lead_id),
        )
        db.execute("COMMIT")
    cpu = time.process_time() - start
    db.close()
    return cpu / n * 1000


def main() -> None:
    """Print the CPU per lead of the three inserts, with and without the secondary indexes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("n", type=int, nargs="?", default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        template = _template(Path(tmp))
        full = _run(template, args.n, bare=False)
        bare = _run(template, args.n, bare=True)
    print(
        json.dumps({"with_leadhook_indexes_ms": round(full, 3), "bare_tables_ms": round(bare, 3)})
    )


if __name__ == "__main__":
    main()
