"""A PostgreSQL outbox built the way a Python team would build it: PgQueuer + aiohttp (issue 9).

The writing transaction inserts the event row and enqueues a PgQueuer job naming it, so the
job commits (or rolls back) with the data — the transactional outbox. Then worker processes,
each a PgQueuer ``QueueManager`` on asyncpg, load the event and POST it signed with one shared
aiohttp session on uvloop. Measured like leadhook's drain: deliveries/s between the first and
the last receipt of a backlog committed before the workers start, every event once.

Only the stdlib, psycopg and aiohttp are imported at module level, so the benchmark plan can
import `pgqueuer_drain` without PgQueuer installed; it is needed only when the drain runs.

Run a worker by hand with:
    python -m bench.baselines.pgqueuer_drain worker DSN RECEIVER_URL [BATCH MAX_TASKS IN_FLIGHT]
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from bench.harness import BIN, child, receipts, receiver, stats, wait_count
from leadhook.domain.signing import webhook_headers

ENTRYPOINT = "deliver_webhook"
SECRET = "whsec_" + "QUJD" * 8
USER_AGENT = "pgqueuer-baseline"
CHUNK = 1000  # events per writing transaction, as leadhook's backlog is prepared
WORKERS = 2  # compared with leadhook's drain on PostgreSQL with 2 workers

# The knobs are PgQueuer's `batch_size` (jobs a dequeue round trip takes; also the size of
# its completion buffer), the worker's `max_concurrent_tasks` (jobs it holds picked at once;
# 0 = no cap, PgQueuer's default; a cap must be >= 2 x batch_size) and the HTTP connections
# per worker. Tried on the shared 2-core machine, 10,000-20,000 events, deliveries/s:
#   batch 10, no cap, 64 conns:    469, 680, 582       batch 20, cap 100, 64 conns:  315
#   batch 50, cap 200, 64 conns:   430, 2290, 1761, 525 batch 50, no cap, 64 conns:  575
#   batch 100, no cap, 128 conns:  985, 2059, 562      batch 100, cap 400, 128 conns: 344, 644
#   batch 200, cap 800, 256 conns: 912
# The machine's load swings the figures more than the knobs do; batch 100 with no cap and
# 128 connections won both back-to-back pairs at 20,000 events (2059 vs 1761, 562 vs 525),
# so it is the default. The entrypoint keeps PgQueuer's default `concurrency_limit=0`
# (unlimited): a limit is enforced in the dequeue SQL across workers and only adds work.
BATCH_SIZE = 100
MAX_CONCURRENT_TASKS = 0
IN_FLIGHT = 128
LOADERS = 4  # pooled connections per worker that load event payloads

SCHEMA = "CREATE TABLE events (id bigserial PRIMARY KEY, payload text NOT NULL)"


def psycopg_dsn(url: str) -> str:
    """The libpq form of a SQLAlchemy `postgresql+psycopg://` URL from `new_database`."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# ---- the writing side ----------------------------------------------------------------------


async def prepare_outbox(dsn: str, body: str, events: int) -> None:
    """Install PgQueuer, then commit `events` event rows, each with its job, 1,000 a transaction.

    PgQueuer's psycopg driver needs an autocommit connection; `connection.transaction()` then
    opens the explicit transaction its README shows for enqueueing with your own data, and
    `Queries.enqueue` runs on that same connection, so it is inside it.
    """
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        await queries.install()  # what `pgq install` does
        await conn.execute(SCHEMA)
        for start in range(0, events, CHUNK):
            n = min(CHUNK, events - start)
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO events (payload) SELECT unnest(%s::text[]) RETURNING id",
                    ([body] * n,),
                )
                ids = [row[0] for row in await cur.fetchall()]
                await queries.enqueue([ENTRYPOINT] * n, [str(i).encode() for i in ids], [0] * n)


# ---- the sending side (one worker process) -------------------------------------------------


async def run_worker(dsn: str, hook: str, batch_size: int, max_tasks: int, in_flight: int) -> None:
    """Deliver jobs until SIGTERM: load the event, POST it signed, raise on a non-2xx answer.

    The worker runs on asyncpg, PgQueuer's primary driver (its README's examples): its psycopg
    driver's LISTEN watcher holds the queue connection for up to a second between
    notifications, so dequeues and completion flushes can wait behind it. (On a heavily
    loaded machine the two measured alike, 130 vs 143 deliveries/s; asyncpg is the path a
    PgQueuer user is steered to.) The writing side stays on psycopg, as leadhook's does.
    """
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries, QueueManager
    from pgqueuer.models import Job

    loaders = await asyncpg.create_pool(dsn, min_size=LOADERS, max_size=LOADERS)
    queue_conn = await asyncpg.connect(dsn)
    connector = aiohttp.TCPConnector(limit=in_flight)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        qm = QueueManager(Queries(AsyncpgDriver(queue_conn)))

        # on_failure="hold" keeps a job whose POST failed as `failed` for re-queueing,
        # rather than PgQueuer's default of deleting it: an outbox must not lose events.
        @qm.entrypoint(ENTRYPOINT, on_failure="hold")
        async def deliver(job: Job) -> None:
            assert job.payload is not None
            event_id = int(job.payload)
            payload = await loaders.fetchval("SELECT payload FROM events WHERE id = $1", event_id)
            assert payload is not None, f"event {event_id} has no row"
            body = str(payload).encode()
            now = int(time.time())
            headers = webhook_headers([SECRET], f"evt_{event_id}", now, body, USER_AGENT)
            async with session.post(hook, data=body, headers=headers) as resp:
                await resp.read()
                resp.raise_for_status()

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, qm.shutdown.set)
        await qm.run(
            dequeue_timeout=timedelta(seconds=1),
            batch_size=batch_size,
            max_concurrent_tasks=max_tasks,
        )
    await queue_conn.close()
    await loaders.close()


def worker_cmd(dsn: str, hook: str, batch_size: int, max_tasks: int, in_flight: int) -> list[str]:
    """The command line of one worker process."""
    return [
        str(BIN / "python"),
        "-m",
        "bench.baselines.pgqueuer_drain",
        "worker",
        dsn,
        hook,
        str(batch_size),
        str(max_tasks),
        str(in_flight),
    ]


# ---- the scenario --------------------------------------------------------------------------


def pgqueuer_drain(
    events: int,
    tmp: Path,
    *,
    batch_size: int = BATCH_SIZE,
    max_concurrent_tasks: int = MAX_CONCURRENT_TASKS,
    in_flight: int = IN_FLIGHT,
) -> dict[str, Any]:
    """Deliveries/s draining `events` PgQueuer outbox jobs with 2 worker processes."""
    from bench.scenarios import drop_database, new_database, rate_of, sample_body

    url = new_database("postgresql", tmp)
    try:
        dsn = psycopg_dsn(url)
        with receiver(tmp) as base:
            asyncio.run(prepare_outbox(dsn, sample_body().decode(), events))
            cmd = worker_cmd(dsn, base + "/hook", batch_size, max_concurrent_tasks, in_flight)
            procs = []
            try:
                for i in range(WORKERS):
                    ctx = child(cmd, log=tmp / f"pgqueuer-worker-{i}.log")
                    ctx.__enter__()
                    procs.append(ctx)
                wait_count(base, events, timeout=900)
                time.sleep(0.5)  # anything sent twice would arrive now
                s = stats(base)
                recs = receipts(base)
            finally:
                for ctx in procs:
                    ctx.__exit__(None, None, None)
        return {
            "deliveries_per_s": rate_of(recs),
            "received": s["count"],
            "unique": s["unique"],
            "duplicates": s["duplicates"],
        }
    finally:
        drop_database(url)


def main() -> None:
    """`worker DSN RECEIVER_URL [BATCH MAX_TASKS IN_FLIGHT]`: run one worker process."""
    import uvloop

    if len(sys.argv) < 4 or sys.argv[1] != "worker":
        raise SystemExit(__doc__)
    dsn, hook = sys.argv[2], sys.argv[3]
    knobs = [int(x) for x in sys.argv[4:7]]
    batch_size, max_tasks, in_flight = (
        knobs + [BATCH_SIZE, MAX_CONCURRENT_TASKS, IN_FLIGHT][len(knobs) :]
    )
    uvloop.run(run_worker(dsn, hook, batch_size, max_tasks, in_flight))


if __name__ == "__main__":
    main()
