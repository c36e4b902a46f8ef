"""The write-path baseline: what a careful engineer writes by hand in 40 lines.

A FastAPI app with ONE sqlite3 connection (WAL, synchronous=NORMAL: the same durability as
leadhook's SQLite default) that, per `POST /v1/leads`, writes a lead, its event and one
delivery row in one transaction and answers the lead and the event. No authentication, no
catalog, no idempotency, no delivery: the floor that leadhook's write path is measured against.

Run: `python -m bench.baselines.skeleton_app PORT DB_PATH` (uvicorn, httptools, uvloop: the
same server leadhook runs on).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.responses import Response

SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (id TEXT PRIMARY KEY, version INTEGER, state TEXT);
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event_id TEXT, lead_id TEXT,
    payload TEXT);
CREATE TABLE IF NOT EXISTS deliveries (seq INTEGER PRIMARY KEY, event_seq INTEGER,
    status TEXT, next_attempt_at REAL);
"""


class LeadIn(BaseModel):
    """The request body: the lead's fields."""

    fields: dict[str, Any]


def create_app(path: str) -> FastAPI:
    """The skeleton app over the SQLite file `path`."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    app = FastAPI()

    @app.post("/v1/leads", status_code=201)
    async def create_lead(body: LeadIn) -> Response:
        lead_id = uuid.uuid4().hex
        lead = {"id": lead_id, "version": 1, **body.fields}
        event = {"event_id": uuid.uuid4().hex, "event_type": "object_create", "lead": lead}
        state, payload = json.dumps(lead), json.dumps(event)
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO leads VALUES (?, 1, ?)", (lead_id, state))
            seq = db.execute(
                "INSERT INTO events (event_id, lead_id, payload) VALUES (?, ?, ?)",
                (event["event_id"], lead_id, payload),
            ).lastrowid
            db.execute(
                "INSERT INTO deliveries (event_seq, status, next_attempt_at) VALUES (?, ?, ?)",
                (seq, "pending", time.time()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        body_text = '{"lead":' + state + ',"events":[' + payload + "]}"
        return Response(body_text, status_code=201, media_type="application/json")

    return app


def serve(app: FastAPI, port: int) -> None:
    """Serve `app` on 127.0.0.1:`port` as leadhook is served (uvicorn, httptools, uvloop);
    every baseline app of the write path runs through this, so they share the server."""
    import uvicorn

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
    )


if __name__ == "__main__":
    serve(create_app(sys.argv[2]), int(sys.argv[1]))
