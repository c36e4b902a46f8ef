"""The floor under leadhook's write path: its own domain and schema with none of its layers.

Not a goal's baseline: a measuring instrument (`python -m bench.floor`, bench/profiles.md,
the twenty-seventh round). Like the skeleton (`skeleton_app.py`) it is one FastAPI route over
ONE sqlite3 connection, but it writes what leadhook writes, on a database that leadhook
itself migrated and set up (a tenant, its key, optionally one subscription):

- the tenant from its API key (a SHA-256 looked up once, then kept, as leadhook keeps it for
  two seconds), its catalog and its enabled subscriptions read in the transaction;
- the lead and its `object_create` event built by leadhook's domain (`create_lead`, the
  contract's event validated and serialised once), or, with `template=True`, the least Python
  imaginable: the first request's lead and event copied with new ids and times;
- leadhook's own named SQL (`adapters/db/sql.py`) inserting the lead, the event and one
  delivery row a subscription, on every index leadhook's schema has (or on fewer, if the
  caller dropped some), then the commit;
- the answer leadhook gives: the lead and its events.

Missing on purpose, so that what it costs is the least any code could pay for the same rows
and answer: no idempotency, no group commit, no metrics, no wake-up of a delivery process and
no delivery at all, no checks beyond the domain's.

Its connection is set up as leadhook's are (`configure_sqlite`: WAL, `synchronous=NORMAL`,
foreign keys, the checkpoint bound), and the WAL is copied into the database file by
leadhook's own checkpointer in a process of its own, as serve's delivery process does it: the
commits of the floor only append, as leadhook's do.

Run: `python -m bench.baselines.floor_app PORT DB_PATH [--template]` (uvicorn, httptools,
uvloop, as the skeleton and leadhook run), and beside it `python -m
bench.baselines.floor_app checkpoint DB_PATH`.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from bench.baselines.skeleton_app import serve
from leadhook.adapters.db.checkpoint import WalCheckpointer
from leadhook.adapters.db.engine import configure_sqlite

# Private names of leadhook on purpose: the exact row and catalog parse leadhook uses.
from leadhook.adapters.db.repositories import _lead_row, _parse_catalog
from leadhook.adapters.db.sql import SQLITE
from leadhook.adapters.system import SystemIds
from leadhook.domain import behaviours as b
from leadhook.domain.operator import Operator
from leadhook.services.leads import behaviour_body, new_events

_OPERATOR = Operator()


def create_app(path: str, *, template: bool = False) -> FastAPI:
    """The floor app over the SQLite file `path` (migrated by leadhook)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    configure_sqlite(db)
    ids = SystemIds()
    tenants: dict[str, str] = {}
    first: dict[str, Any] = {}
    app = FastAPI()

    def tenant_of(request: Request) -> str:
        token = request.headers["authorization"].removeprefix("Bearer ")
        mid = tenants.get(token)
        if mid is None:
            digest = hashlib.sha256(token.encode()).hexdigest()
            row = db.execute("SELECT mid FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
            mid = tenants[token] = row[0]
        return mid

    def copied(mid: str, now: float) -> str:
        # The first request's lead and event with new ids and times: no domain at all.
        lead_id, event_id, at = ids.short(), ids.event_id(now), int(now)
        lead = dict(first["lead"], id=lead_id, created_at=at, updated_at=at)
        event = dict(first["event"], event_id=event_id, create_time=at)
        event["extra_data"] = dict(event["extra_data"], entity_id=lead_id)
        state, payload = orjson.dumps(lead).decode(), orjson.dumps(event).decode()
        row = list(first["row"])
        row[0], row[7], row[8], row[9] = lead_id, state, at, at
        db.execute(SQLITE.insert_lead, row)
        insert_event(mid, lead_id, event_id, at, payload, now)
        return '{"lead":' + state + ',"events":[' + payload + "]}"

    def built(mid: str, now: float, fields: Any) -> str:
        catalog = _parse_catalog(db.execute(SQLITE.tenant, (mid,)).fetchone()[0])
        ctx = b.Context(
            catalog=catalog,
            now=int(now),
            next_event_id=lambda: ids.event_id(now),
            operator=_OPERATOR,
        )
        effect = b.create_lead(ctx, ids.short(), fields)
        (event,) = new_events(effect.events)
        row = _lead_row(effect.lead)
        db.execute(SQLITE.insert_lead, row)
        insert_event(mid, event.entity_id, event.event_id, event.create_time, event.payload, now)
        if template and not first:
            first.update(
                lead=json.loads(effect.lead.stored_text), event=json.loads(event.payload), row=row
            )
        return behaviour_body(effect.lead, [event.payload])

    def insert_event(
        mid: str, lead_id: str, event_id: str, at: int, payload: str, now: float
    ) -> None:
        seq = db.execute(
            SQLITE.insert_event,
            (event_id, mid, lead_id, 1, "object_create", at, 0, payload),
        ).fetchone()[0]
        for (sub_id,) in db.execute(
            "SELECT id FROM subscriptions WHERE mid = ? AND enabled AND deleted_at IS NULL",
            (mid,),
        ).fetchall():
            db.execute(
                SQLITE.insert_delivery,
                (ids.short(), mid, sub_id, seq, event_id, lead_id, 1, "object_create", *[now] * 3),
            )

    @app.post("/v1/leads", status_code=201)
    async def create_lead(request: Request) -> Response:
        mid = tenant_of(request)
        fields = json.loads(await request.body()).get("fields") or {}
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            text = copied(mid, now) if first else built(mid, now, fields)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Response(text, status_code=201, media_type="application/json")

    return app


def checkpoint(path: str) -> None:
    """Copy the WAL into the database file until killed, as serve's delivery process does."""
    WalCheckpointer(Path(path)).start()
    threading.Event().wait()


if __name__ == "__main__" and sys.argv[1] == "checkpoint":
    checkpoint(sys.argv[2])
elif __name__ == "__main__":
    serve(create_app(sys.argv[2], template="--template" in sys.argv[3:]), int(sys.argv[1]))
