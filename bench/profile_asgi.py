"""Drive the ASGI app in-process (no network, no client) and report CPU per request.

.venv/bin/python -m bench.profile_asgi leadhook 3000     # POST /v1/leads with one subscription
.venv/bin/python -m bench.profile_asgi skeleton 3000     # the hand-written baseline
.venv/bin/python -m bench.profile_asgi leadhook 3000 --profile   # + cProfile, by own time
.venv/bin/python -m bench.profile_asgi leadhook 100 --batch 500 --no-subscriber --freeze

Client and network costs drop out, so the figure moves only with the server's own work: what
the profiles in docs/benchmarks.md were read from.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
import time
from typing import Any

import uvloop

from bench.scenarios import LEAD_FIELDS

BODY = json.dumps({"fields": LEAD_FIELDS}).encode()
PATH = "/v1/leads"


async def _one(app: Any, headers: list[tuple[bytes, bytes]]) -> None:
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    if sent[0]["status"] != 201:
        raise AssertionError(sent)


async def _drive(
    app: Any, headers: list[tuple[bytes, bytes]], n: int, profile: bool, sort: str
) -> float:
    for _ in range(min(100, n)):
        await _one(app, headers)
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    cpu = time.process_time()
    for _ in range(n):
        await _one(app, headers)
    cpu = time.process_time() - cpu
    if prof:
        prof.disable()
        top = int(os.environ.get("BENCH_TOP", "45"))  # how many functions to list
        pstats.Stats(prof).sort_stats(sort).print_stats(top)
    return cpu / n * 1000


def main() -> None:
    """Parse arguments, build the app, drive it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("app", choices=("leadhook", "skeleton"))
    parser.add_argument("n", type=int, nargs="?", default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--batch", type=int, default=0, help="POST /v1/leads/batch with this many leads each"
    )
    parser.add_argument("--sort", default="tottime", help="cProfile order: tottime, cumulative")
    parser.add_argument(
        "--no-subscriber", action="store_true", help="no subscription: no delivery rows"
    )
    parser.add_argument(
        "--freeze", action="store_true", help="gc.freeze() once the app is built, as serve does"
    )
    args = parser.parse_args()
    if args.batch:
        global BODY, PATH
        BODY = json.dumps({"leads": [{"fields": LEAD_FIELDS}] * args.batch}).encode()
        PATH = "/v1/leads/batch"
    tmp = tempfile.mkdtemp(prefix="bench-asgi-")
    headers: list[tuple[bytes, bytes]] = []
    if args.app == "skeleton":
        from bench.baselines.skeleton_app import create_app as skeleton

        app: Any = skeleton(f"{tmp}/skeleton.db")
    else:
        from leadhook.api.app import create_app
        from leadhook.bootstrap import build
        from leadhook.settings import Settings

        container = build(
            Settings(database_url=f"sqlite:///{tmp}/x.db", allow_private_targets=True)
        )
        tenant = container.tenants.create("bench", "bench")
        hook = {"url": "http://127.0.0.1:9/hook", "event_types": ["*"]}
        if not args.no_subscriber:
            container.subscriptions.create(tenant.tenant.mid, hook)
        app = create_app(container)
        headers = [(b"authorization", f"Bearer {tenant.api_key}".encode())]
    if args.freeze:
        from leadhook.cli.runtime import freeze_startup_heap

        freeze_startup_heap()
    ms = uvloop.run(_drive(app, headers, args.n, args.profile, args.sort))
    print(f"{args.app}: {ms:.3f} ms of CPU per POST {PATH} (in-process, {args.n} requests)")


if __name__ == "__main__":
    main()
