"""Soak: a million events, every list endpoint timed, then retention day after day.

.venv/bin/python -m bench.soak                                   # SQLite, 1,000,000 events
.venv/bin/python -m bench.soak --events 100000                   # smaller
.venv/bin/python -m bench.soak --database-url postgresql://postgres@127.0.0.1/leadhook_soak

1. History: `--days` (60) days of `--events` events over 100,000 leads of one tenant, each with a
   delivered delivery and its attempt, and an idempotency key per ten events, inserted directly
   in bulk (the write path is measured by bench.run, not here).
2. Every list endpoint of the API, through the ASGI app in process: median and slowest of 20
   calls, against the 50 ms goal.
3. Retention at its defaults for keys (24 h) and deliveries (30 days), events kept 45 days; then
   `--steady-days` (10) simulated days, each adding one day's worth of rows and purging: the
   database size per day shows whether it stays flat once retention applies.

Prints a JSON summary (and writes it to bench/results/soak-<backend>.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, insert, select, text

from leadhook.adapters.db import tables as t
from leadhook.adapters.db.retention import SqlRetention
from leadhook.api.app import create_app
from leadhook.bootstrap import Container, build
from leadhook.services.retention import Retention, RetentionPolicy
from leadhook.settings import Settings

DAY = 86400.0
LEADS = 100_000
CHUNK = 10_000
ADMIN = "soak-admin"
MID = "soak"


def db_size(engine: Engine) -> dict[str, int]:
    """The database's size in bytes (and, on SQLite, its pages in use and free)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            free = conn.exec_driver_sql("PRAGMA freelist_count").scalar_one()
            return {"bytes": page * pages, "used_bytes": page * (pages - free)}
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        return {"bytes": int(size)}


def analyze(engine: Engine) -> None:
    """Refresh PostgreSQL's planner statistics, as autovacuum does some time after a bulk load
    or a large purge (until then the planner may think a subscription has a few deliveries and
    sort all of them instead of reading the newest through the index)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def vacuum(engine: Engine) -> None:
    """Let PostgreSQL reuse the space of deleted rows, as autovacuum does within a minute or so
    of a purge: simulated days pass in seconds here, faster than autovacuum wakes up."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM")


def counts(engine: Engine) -> dict[str, int]:
    tables = (t.events, t.deliveries, t.delivery_attempts, t.idempotency_keys)
    with engine.connect() as conn:
        return {
            tb.name: int(conn.execute(select(func.count()).select_from(tb)).scalar_one())
            for tb in tables
        }


class History:
    """Bulk rows modelled on one real lead, event and delivery made through the services."""

    def __init__(self, c: Container, client: TestClient, key: str, sub_id: str) -> None:
        self.c, self.sub_id = c, sub_id
        auth = {"Authorization": f"Bearer {key}"}
        lead = client.post("/v1/leads", json={"fields": {"name": "模板"}}, headers=auth)
        assert lead.status_code == 201, lead.text
        with c.engine.connect() as conn:
            self.lead_row = dict(conn.execute(select(t.leads)).mappings().one())
            self.event_row = dict(conn.execute(select(t.events)).mappings().one())
        self.template_id = self.lead_row["id"]
        self.next_event = 0
        self.next_delivery = 0

    def middle(self) -> str:
        """An event id in the middle of the log as it is now."""
        with self.c.engine.connect() as conn:
            low, high = conn.execute(
                select(func.min(t.events.c.seq), func.max(t.events.c.seq))
            ).one()
            return str(
                conn.execute(
                    select(t.events.c.event_id).where(t.events.c.seq >= (low + high) // 2).limit(1)
                ).scalar_one()
            )

    def leads(self, n: int) -> None:
        state = self.lead_row["state"]
        rows = []
        for i in range(n):
            lead_id = f"L{i:020d}"[:22]
            row = {k: v for k, v in self.lead_row.items() if k != "seq"}
            row.update(id=lead_id, state=state.replace(self.template_id, lead_id))
            rows.append(row)
        self._insert(t.leads, rows)

    def day(self, n: int, at: float) -> None:
        """Insert `n` events of day `at`, each delivered, and a key per ten events."""
        events, deliveries, keys = [], [], []
        payload = self.event_row["payload"]
        for _ in range(n):
            i = self.next_event
            self.next_event += 1
            lead = f"L{i % LEADS:020d}"[:22]
            when = at + (i % 86_000)
            event_id = f"E{i:025d}"
            events.append(
                {
                    "event_id": event_id,
                    "mid": MID,
                    "entity_id": lead,
                    "entity_version": 2 + i // LEADS,
                    "event_type": self.event_row["event_type"],
                    "create_time": int(when),
                    "is_follow_up": 0,
                    "payload": payload,
                }
            )
            if i % 10 == 0:
                keys.append(
                    {
                        "mid": MID,
                        "key": f"k{i}",
                        "fingerprint": "f" * 64,
                        "status_code": 201,
                        "body": "{}",
                        "created_at": when,
                    }
                )
        first_seq = self._insert(t.events, events)
        for j, ev in enumerate(events):
            self.next_delivery += 1
            deliveries.append(
                {
                    "id": f"D{self.next_delivery:021d}",
                    "mid": MID,
                    "subscription_id": self.sub_id,
                    "event_seq": first_seq + j,
                    "event_id": ev["event_id"],
                    "entity_id": ev["entity_id"],
                    "entity_version": ev["entity_version"],
                    "event_type": ev["event_type"],
                    "status": "delivered",
                    "attempt_count": 1,
                    "next_attempt_at": ev["create_time"],
                    "created_at": float(ev["create_time"]),
                    "updated_at": float(ev["create_time"]) + 0.05,
                }
            )
        first_delivery = self._insert(t.deliveries, deliveries)
        attempts = [
            {
                "delivery_seq": first_delivery + j,
                "attempted_at": d["updated_at"],
                "status_code": 200,
                "latency_ms": 12.0,
                "error": None,
                "response_body": "ok",
            }
            for j, d in enumerate(deliveries)
        ]
        self._insert(t.delivery_attempts, attempts)
        self._insert(t.idempotency_keys, keys)

    def _insert(self, table: Any, rows: list[dict[str, Any]]) -> int:
        """Insert in chunks; return the first new row's sequence number (seq tables)."""
        engine = self.c.engine
        with engine.begin() as conn:
            pk = next(iter(table.primary_key.columns))
            before = conn.execute(select(func.max(pk))).scalar() if pk.name in ("seq", "id") else 0
            for k in range(0, len(rows), CHUNK):
                conn.execute(insert(table), rows[k : k + CHUNK])
        return int(before or 0) + 1


def time_endpoints(
    client: TestClient, key: str, sub_id: str, middle: str, calls: int = 20
) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}"}
    lead = f"L{12_345:020d}"[:22]
    paths = {
        "GET /v1/leads": "/v1/leads",
        "GET /v1/leads?owner=": "/v1/leads?owner=nobody",
        "GET /v1/events": "/v1/events",
        "GET /v1/events?after= (middle)": f"/v1/events?after={middle}",
        "GET /v1/events?entity_id=": f"/v1/events?entity_id={lead}",
        "GET /v1/events?event_type= (rare)": "/v1/events?event_type=object_voids",
        "GET /v1/leads/{id}/timeline": f"/v1/leads/{lead}/timeline",
        "GET /v1/subscriptions": "/v1/subscriptions",
        "GET /v1/subscriptions/{id}/deliveries": f"/v1/subscriptions/{sub_id}/deliveries",
        "GET …/deliveries?status=dead": f"/v1/subscriptions/{sub_id}/deliveries?status=dead",
        "GET …/deliveries?status=delivered": (
            f"/v1/subscriptions/{sub_id}/deliveries?status=delivered"
        ),
    }
    out: dict[str, Any] = {}
    for name, path in paths.items():
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            resp = client.get(path, headers=auth)
            times.append((time.perf_counter() - start) * 1000)
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
        out[name] = {
            "median_ms": round(statistics.median(times), 1),
            "max_ms": round(max(times), 1),
        }
    keys = []
    for _ in range(calls):
        start = time.perf_counter()
        resp = client.get(f"/v1/tenants/{MID}/keys", headers={"Authorization": f"Bearer {ADMIN}"})
        keys.append((time.perf_counter() - start) * 1000)
    out["GET /v1/tenants/{mid}/keys"] = {
        "median_ms": round(statistics.median(keys), 1),
        "max_ms": round(max(keys), 1),
    }
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--steady-days", type=int, default=10)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="leadhook-soak-"))
    url = args.database_url or f"sqlite:///{workdir}/soak.db"
    settings = Settings(database_url=url, admin_token=ADMIN, allow_private_targets=True)
    c = build(settings)
    report: dict[str, Any] = {"database": c.engine.dialect.name, "events": args.events}
    try:
        with TestClient(create_app(c)) as client:
            tenant = client.post(
                "/v1/tenants", json={"mid": MID}, headers={"Authorization": f"Bearer {ADMIN}"}
            ).json()
            key = tenant["api_key"]
            sub = client.post(
                "/v1/subscriptions",
                json={"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "enabled": False},
                headers={"Authorization": f"Bearer {key}"},
            ).json()
            history = History(c, client, key, sub["id"])
            history.leads(LEADS)
            per_day = args.events // args.days
            now = time.time()
            start_day = now - args.days * DAY

            def fill() -> None:
                for d in range(args.days):
                    history.day(per_day, start_day + d * DAY)

            _, report["insert_s"] = timed(fill)
            analyze(c.engine)
            report["rows"] = counts(c.engine)
            report["size_before"] = db_size(c.engine)
            report["endpoints"] = time_endpoints(client, key, sub["id"], history.middle())
            clock = {"now": now}
            policy = RetentionPolicy(event_retention=45 * DAY)
            retention = Retention(SqlRetention(c.engine, c.gate), policy, lambda: clock["now"])
            purged, report["first_purge_s"] = timed(retention.purge_all)
            report["first_purge"] = purged
            analyze(c.engine)
            report["rows_after_purge"] = counts(c.engine)
            steady = []
            for d in range(args.steady_days):
                history.day(per_day, clock["now"])
                clock["now"] += DAY
                done, seconds = timed(retention.purge_all)
                vacuum(c.engine)
                steady.append(
                    {"day": d + 1, "purge_s": seconds, "purged": done, **db_size(c.engine)}
                )
            report["steady_days"] = steady
            report["rows_at_end"] = counts(c.engine)
            report["endpoints_at_end"] = time_endpoints(client, key, sub["id"], history.middle())
            report["purge_counts"] = c.purge_counts()
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)
    text_out = json.dumps(report, indent=2, ensure_ascii=False)
    print(text_out)
    out = Path(__file__).parent / "results" / f"soak-{report['database']}.json"
    out.write_text(text_out + "\n")


if __name__ == "__main__":
    main()
