"""Run one delivery worker from `LEADHOOK_*` variables until SIGTERM (used by the e2e tests).

Prints the dispatcher's counters as one JSON line when it stops. `LEADHOOK_TEST_LEASE_SECONDS`
and `LEADHOOK_TEST_CONCURRENCY` set the lease and the concurrency (tests want short leases).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal

from leadhook.bootstrap import build
from leadhook.settings import Settings


def main() -> None:
    settings = Settings.from_env(
        lease_seconds=float(os.environ.get("LEADHOOK_TEST_LEASE_SECONDS", "15")),
    )
    container = build(settings, run_migrations=False)
    concurrency = int(os.environ.get("LEADHOOK_TEST_CONCURRENCY", "32"))
    dispatcher = container.make_dispatcher(concurrency=concurrency)

    async def run() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await dispatcher.run(stop)

    try:
        asyncio.run(run())
    finally:
        container.close()
    print(json.dumps(vars(dispatcher.stats)), flush=True)


if __name__ == "__main__":
    main()
