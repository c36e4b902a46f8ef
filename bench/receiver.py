"""A minimal webhook receiver for benchmarks, run in its own process (uvicorn + httptools).

POST /hook answers 200 at once; POST /slow answers after SLOW_SECONDS. Every POST records
(webhook-id, path, receipt time). GET /stats gives counts; GET /dump gives the records.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

SLOW_SECONDS = float(os.environ.get("BENCH_SLOW_SECONDS", "2"))
records: list[tuple[str, str, float]] = []
seen: dict[str, int] = {}


async def _read_body(receive: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def _send(send: Any, status: int, body: bytes = b"") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if scope["method"] == "POST":
        await _read_body(receive)
        hook_id = ""
        for name, value in scope["headers"]:
            if name == b"webhook-id":
                hook_id = value.decode()
                break
        records.append((hook_id, path, time.time()))
        seen[hook_id] = seen.get(hook_id, 0) + 1
        if path == "/slow":
            await asyncio.sleep(SLOW_SECONDS)
        await _send(send, 200, b"{}")
        return
    if path == "/stats":
        by_path: dict[str, int] = {}
        for _, p, _ in records:
            by_path[p] = by_path.get(p, 0) + 1
        dupes = sum(1 for n in seen.values() if n > 1)
        body = {"count": len(records), "unique": len(seen), "duplicates": dupes, "by_path": by_path}
        await _send(send, 200, json.dumps(body).encode())
        return
    if path == "/dump":
        await _send(send, 200, json.dumps(records).encode())
        return
    if path == "/reset":
        records.clear()
        seen.clear()
        await _send(send, 200, b"{}")
        return
    await _send(send, 404)


if __name__ == "__main__":
    import uvicorn

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9900
    uvicorn.run(
        "bench.receiver:app",
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        backlog=4096,
    )
