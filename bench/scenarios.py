"""The benchmark scenarios of issue 6; each returns a dict of measurements."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.harness import (
    BIN,
    RssSampler,
    child,
    child_pids,
    cpu_seconds,
    free_port,
    percentile,
    receipts,
    receiver,
    stats,
    wait_count,
    wait_http,
)
from leadhook.bootstrap import build
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest
from leadhook.settings import Settings

PG_ADMIN = os.environ.get(
    "LEADHOOK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
ADMIN = "bench-admin-token"
# No rate limit: the benchmarks measure capacity with one tenant's key, not the limiter.
ENV = {
    "LEADHOOK_ALLOW_PRIVATE_TARGETS": "1",
    "LEADHOOK_ADMIN_TOKEN": ADMIN,
    "LEADHOOK_RATE_LIMIT": "off",
}
LEAD_FIELDS = {
    "name": "赵拥晨",
    "mobile": "13800000000",
    "email": "zhao@example.com",
    "company_id": "中山大学",
    "title": "技术总监",
}


# ---- databases ---------------------------------------------------------------------------


def new_database(kind: str, tmp: Path) -> str:
    """Return the URL of a fresh, empty database of `kind` (sqlite or postgresql)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:8]}.db"
    name = f"leadhook_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a PostgreSQL database made by `new_database` (SQLite files stay in the temp dir)."""
    if not url.startswith("postgresql"):
        return
    engine = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.dispose()


def prepare_backlog(url: str, hooks: list[tuple[str, int]], events: int) -> None:
    """Commit `events` object_create events with a pending delivery to each hook URL."""
    container = build(Settings(database_url=url, allow_private_targets=True))
    try:
        mid = container.tenants.create("bench", "bench").tenant.mid
        for hook, max_in_flight in hooks:
            container.subscriptions.create(
                mid, {"url": hook, "event_types": ["*"], "max_in_flight": max_in_flight}
            )
        req = BehaviourRequest(mid=mid, operator=Operator())
        for start in range(0, events, 1000):
            n = min(1000, events - start)
            container.leads.create_many(req, [{"fields": LEAD_FIELDS}] * n)
    finally:
        container.close()


def delivery_times(url: str) -> dict[str, float]:
    """Return event_id → commit time of its delivery row (when the outbox got it)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id, MIN(created_at) FROM deliveries GROUP BY event_id")
        )
        out = {r[0]: float(r[1]) for r in rows}
    engine.dispose()
    return out


def rate_of(recs: list[tuple[str, str, float]], path: str | None = None) -> float:
    """Deliveries per second between the first and the last receipt (on `path`)."""
    times = sorted(t for _, p, t in recs if path is None or p == path)
    if len(times) < 2:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def worker_cmd(url: str, concurrency: int = 64) -> list[str]:
    """The command line of a delivery worker."""
    return [
        str(BIN / "leadhook"),
        "worker",
        "--database-url",
        url,
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warning",
    ]


# ---- 1. drain ------------------------------------------------------------------------------


def drain(kind: str, events: int, workers: int, tmp: Path, concurrency: int = 64) -> dict[str, Any]:
    """Deliveries/s draining `events` pending deliveries with `workers` worker processes,
    each with `concurrency` deliveries in flight."""
    url = new_database(kind, tmp)
    try:
        with receiver(tmp) as base:
            prepare_backlog(url, [(base + "/hook", 256)], events)
            procs = []
            samplers = []
            pids = []
            try:
                for i in range(workers):
                    cmd = worker_cmd(url, concurrency)
                    ctx = child(cmd, env=ENV, log=tmp / f"worker-{kind}-{i}.log")
                    proc = ctx.__enter__()
                    procs.append(ctx)
                    pids.append(proc.pid)
                    samplers.append(RssSampler(proc.pid).__enter__())
                wait_count(base, events, timeout=600)
                # The workers' CPU for the whole drain (start-up included: the same for every
                # run): what a change to the delivery path moves, where the rate is noisy.
                cpu = sum(cpu_seconds(pid) for pid in pids)
                time.sleep(0.5)  # anything sent twice would arrive now
                s = stats(base)
                recs = receipts(base)
            finally:
                for sampler in samplers:
                    sampler.__exit__()
                for ctx in procs:
                    ctx.__exit__(None, None, None)
        return {
            "deliveries_per_s": rate_of(recs),
            "worker_cpu_ms_per_delivery": cpu / events * 1000,
            "received": s["count"],
            "unique": s["unique"],
            "duplicates": s["duplicates"],
            "peak_rss_mb": max(x.peak_mb for x in samplers),
        }
    finally:
        drop_database(url)


# ---- 6. baselines --------------------------------------------------------------------------


def sample_body() -> bytes:
    """A realistic event body (the object_create of the golden tests, ~1.5 KB)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "golden" / "object_create.json"
    return json.dumps(
        json.loads(path.read_text()), ensure_ascii=False, separators=(",", ":")
    ).encode()


def raw_aiohttp(events: int, tmp: Path) -> dict[str, Any]:
    """The ceiling: one process POSTing signed bodies with aiohttp + uvloop, 50 in flight."""
    import uvloop

    from bench.baselines.raw_sender import send_all

    with receiver(tmp) as base:
        body = sample_body()
        uvloop.run(send_all(base + "/hook", [body] * events, "whsec_" + "QUJD" * 8))
        return {"deliveries_per_s": rate_of(receipts(base))}


def celery_drain(events: int, tmp: Path) -> dict[str, Any]:
    """The same drain through Celery 5 + Redis, prefork with 2 processes."""
    import redis

    from bench.baselines import celery_dispatcher as cd

    redis.Redis.from_url(cd.BROKER).flushdb()
    with receiver(tmp) as base:
        body = sample_body().decode()
        for i in range(events):
            cd.deliver.delay(base + "/hook", f"evt_{i}", body, "whsec_" + "QUJD" * 8)
        cmd = [
            str(BIN / "celery"),
            "-A",
            "bench.baselines.celery_dispatcher",
            "worker",
            "--pool",
            "prefork",
            "-c",
            "2",
            "--loglevel",
            "warning",
        ]
        with child(cmd, log=tmp / "celery.log"):
            wait_count(base, events, timeout=900)
        return {"deliveries_per_s": rate_of(receipts(base))}


# ---- 2/3. end to end through the API -------------------------------------------------------


class Api:
    """A `leadhook serve` process for the duration of a scenario."""

    def __init__(self, url: str, tmp: Path) -> None:
        self.db = url
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Api:
        cmd = [
            str(BIN / "leadhook"),
            "serve",
            "--port",
            str(self.port),
            "--database-url",
            self.db,
            "--log-level",
            "warning",
        ]
        self._ctx = child(cmd, env=ENV, log=self.tmp / f"serve-{self.port}.log")
        self.proc = self._ctx.__enter__()
        wait_http(self.base + "/healthz", 60)
        self.rss = RssSampler(self.proc.pid).__enter__()
        deadline = time.monotonic() + 30
        while not child_pids(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.child_rss = [RssSampler(pid).__enter__() for pid in child_pids(self.proc.pid)]
        self.settle()
        return self

    def settle(self, quiet: float = 0.02, every: float = 0.2, timeout: float = 60) -> None:
        """Wait until serve's delivery process has started: its CPU grows by less than
        `quiet` seconds in `every`.

        `/healthz` answers once the API listens; the delivery process is still importing and
        setting up then, a core's worth of CPU for about a second. A scenario measured from
        that moment shares the machine with a start-up that a running service never pays:
        the batch scenarios (two or three seconds) lost a third of their window to it. The
        scenarios that wait for a first delivery before measuring waited it out already.
        """
        deadline = time.monotonic() + timeout
        before = self.cpu()[1]
        while time.monotonic() < deadline:
            time.sleep(every)
            now = self.cpu()[1]
            if now - before < quiet:
                return
            before = now
        raise TimeoutError(f"serve's delivery process still busy after {timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        self.rss.__exit__()
        for sampler in self.child_rss:
            sampler.__exit__()
        self._ctx.__exit__(None, None, None)

    def peak_rss_mb(self) -> float:
        """The peak RSS of serve and of its delivery process, whichever is larger."""
        return max([self.rss.peak_mb] + [s.peak_mb for s in self.child_rss])

    def cpu(self) -> tuple[float, float]:
        """CPU seconds used so far by the API process and by its delivery child(ren)."""
        return cpu_seconds(self.proc.pid), sum(cpu_seconds(p) for p in child_pids(self.proc.pid))

    def tenant(self, hooks: list[str]) -> str:
        """Create a tenant (and subscriptions to `hooks`); return its API key."""
        admin = {"Authorization": f"Bearer {ADMIN}"}
        key = httpx.post(
            self.base + "/v1/tenants", json={"mid": f"t{uuid.uuid4().hex[:8]}"}, headers=admin
        ).json()["api_key"]
        for hook in hooks:
            r = httpx.post(
                self.base + "/v1/subscriptions",
                json={"url": hook, "event_types": ["*"], "max_in_flight": 256},
                headers={"Authorization": f"Bearer {key}"},
            )
            r.raise_for_status()
        return str(key)


async def _behaviours(
    api: str, key: str, leads: int, updates: int, concurrency: int, pace: float | None
) -> tuple[int, float]:
    """Create `leads` leads and update each `updates` times; return (events, seconds)."""
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    emitted = 0
    async with aiohttp.ClientSession(api, connector=connector, headers=headers) as session:
        sem = asyncio.Semaphore(concurrency)

        async def life(i: int) -> None:
            nonlocal emitted
            async with sem:
                async with session.post("/v1/leads", json={"fields": LEAD_FIELDS}) as r:
                    body = await r.json()
                    assert r.status == 201, body
                lead_id = body["lead"]["id"]
                emitted += 1
            for u in range(updates):
                async with (
                    sem,
                    session.patch(
                        f"/v1/leads/{lead_id}", json={"fields": {"title": f"title {u}"}}
                    ) as r,
                ):
                    assert r.status == 200, await r.text()
                    emitted += 1

        start = time.perf_counter()
        if pace is None:
            await asyncio.gather(*(life(i) for i in range(leads)))
        else:
            # Paced by the clock, not by sleeping `pace` after each start: a sleep's own overhead
            # (about a millisecond) would lower the rate actually offered.
            tasks = []
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(leads):
                tasks.append(asyncio.create_task(life(i)))
                delay = t0 + (i + 1) * pace - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.gather(*tasks)
        return emitted, time.perf_counter() - start


def end_to_end(
    kind: str,
    leads: int,
    updates: int,
    tmp: Path,
    pace: float | None = None,
    concurrency: int = 32,
) -> dict[str, Any]:
    """Behaviours through the HTTP API → delivered events/s and commit→receipt latency.

    `serve` delivers from its own child process, on SQLite and on PostgreSQL alike (serve + 1
    worker). Every event must arrive, and once: the scenario fails otherwise.
    """
    url = new_database(kind, tmp)
    try:
        with receiver(tmp) as base, Api(url, tmp) as api:
            key = api.tenant([base + "/hook"])
            # Measure from the moment serve's delivery process delivers, not from its start.
            asyncio.run(_behaviours(api.base, key, 20, 0, 1, None))
            wait_count(base, 20, timeout=120)
            httpx.get(base + "/reset", timeout=10).raise_for_status()
            cpu = api.cpu()
            emitted, seconds = asyncio.run(
                _behaviours(api.base, key, leads, updates, concurrency, pace)
            )
            wait_count(base, emitted, timeout=600)
            api_cpu, delivery_cpu = (now - then for now, then in zip(api.cpu(), cpu, strict=True))
            time.sleep(0.5)  # anything sent twice would arrive now
            s = stats(base)
            recs = receipts(base)
            rss = api.peak_rss_mb()
        if s["unique"] != emitted or s["duplicates"]:
            raise AssertionError(f"{emitted} events emitted, receiver saw {s}")
        commits = delivery_times(url)
        lat = [(t - commits[i]) * 1000 for i, _, t in recs if i in commits]
        first = min(commits[i] for i, _, _ in recs if i in commits)
        last = max(t for _, _, t in recs)
        return {
            "events": emitted,
            "api_events_per_s": emitted / seconds,
            "delivered_events_per_s": emitted / (last - first),
            "latency_ms_p50": percentile(lat, 50),
            "latency_ms_p99": percentile(lat, 99),
            "latency_ms_max": max(lat),
            "api_cpu_ms_per_event": api_cpu / emitted * 1000,
            "delivery_cpu_ms_per_event": delivery_cpu / emitted * 1000,
            "unique": s["unique"],
            "duplicates": s["duplicates"],
            "peak_rss_mb": rss,
        }
    finally:
        drop_database(url)


# ---- 4. bulk import ------------------------------------------------------------------------


def bulk_import(kind: str, batches: int, tmp: Path, subscribed: bool) -> dict[str, Any]:
    """Leads/s through POST /v1/leads/batch (1,000 leads a request)."""
    url = new_database(kind, tmp)
    try:
        with receiver(tmp) as base, Api(url, tmp) as api:
            key = api.tenant([base + "/hook"] if subscribed else [])
            payload = {"leads": [{"fields": LEAD_FIELDS}] * 1000}
            with httpx.Client(
                base_url=api.base, headers={"Authorization": f"Bearer {key}"}, timeout=120
            ) as client:
                client.post(
                    "/v1/leads/batch", json={"leads": [{"fields": LEAD_FIELDS}]}
                ).raise_for_status()
                start = time.perf_counter()
                for _ in range(batches):
                    client.post("/v1/leads/batch", json=payload).raise_for_status()
                seconds = time.perf_counter() - start
            rss = api.peak_rss_mb()
        return {"leads_per_s": batches * 1000 / seconds, "peak_rss_mb": rss}
    finally:
        drop_database(url)


# ---- 5. one slow subscriber ----------------------------------------------------------------


def slow_neighbour(kind: str, events: int, tmp: Path) -> dict[str, Any]:
    """The fast subscription's deliveries/s while a 2 s subscription shares the worker."""
    url = new_database(kind, tmp)
    try:
        with receiver(tmp) as base:
            prepare_backlog(url, [(base + "/hook", 256), (base + "/slow", 16)], events)
            with child(worker_cmd(url), env=ENV, log=tmp / "worker-slow.log"):
                wait_count(base, events, timeout=600, path="/hook")
                recs = receipts(base)
        return {
            "fast_deliveries_per_s": rate_of(recs, "/hook"),
            "slow_received_meanwhile": sum(1 for _, p, _ in recs if p == "/slow"),
        }
    finally:
        drop_database(url)


# ---- 7. the write path against a hand-written skeleton -----------------------------------


class Skeleton:
    """The baseline app of `bench.baselines.skeleton_app` in its own process."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Skeleton:
        cmd = [
            str(BIN / "python"),
            "-m",
            "bench.baselines.skeleton_app",
            str(self.port),
            str(self.tmp / f"skeleton-{self.port}.db"),
        ]
        self._ctx = child(cmd, log=self.tmp / f"skeleton-{self.port}.log")
        self.proc = self._ctx.__enter__()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/openapi.json", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError("the skeleton app did not start")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(None, None, None)


def skeleton_ingest(leads: int, concurrency: int, tmp: Path) -> dict[str, Any]:
    """POST /v1/leads to the hand-written skeleton: leads/s with `concurrency` clients."""
    with Skeleton(tmp) as app:
        asyncio.run(_behaviours(app.base, "none", 50, 0, concurrency, None))  # warm up
        cpu = cpu_seconds(app.proc.pid)
        emitted, seconds = asyncio.run(_behaviours(app.base, "none", leads, 0, concurrency, None))
        cpu = cpu_seconds(app.proc.pid) - cpu
    return {"leads_per_s": emitted / seconds, "server_cpu_ms_per_lead": cpu / emitted * 1000}


def sequential(kind: str, leads: int, tmp: Path) -> dict[str, Any]:
    """One sequential client POSTing leads to `leadhook serve` with one subscription."""
    url = new_database(kind, tmp)
    try:
        with receiver(tmp) as base, Api(url, tmp) as api:
            key = api.tenant([base + "/hook"])
            asyncio.run(_behaviours(api.base, key, 50, 0, 1, None))  # warm up
            wait_count(base, 50, timeout=120)  # the delivery process is up and delivering
            cpu = api.cpu()
            emitted, seconds = asyncio.run(_behaviours(api.base, key, leads, 0, 1, None))
            wait_count(base, emitted + 50, timeout=600)
            api_cpu, delivery_cpu = (
                now - before for now, before in zip(api.cpu(), cpu, strict=True)
            )
            rss = api.peak_rss_mb()
        return {
            "leads_per_s": emitted / seconds,
            "api_cpu_ms_per_lead": api_cpu / emitted * 1000,
            "delivery_cpu_ms_per_lead": delivery_cpu / emitted * 1000,
            "peak_rss_mb": rss,
        }
    finally:
        drop_database(url)


def pgqueuer(events: int, tmp: Path) -> dict[str, Any]:
    """The same drain through pgqueuer on PostgreSQL, 2 worker processes (the baseline)."""
    from bench.baselines.pgqueuer_drain import pgqueuer_drain

    return pgqueuer_drain(events, tmp)
