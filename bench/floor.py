"""What bounds one sequential client: leadhook against its own floor, taking turns.

.venv/bin/python -m bench.floor            # 3 rounds of 3,000 leads a variant
.venv/bin/python -m bench.floor 5 2000     # 5 rounds of 2,000
.venv/bin/python -m bench.floor 3 3000 "floor, delivered" leadhook   # these variants only

Each round measures, one after the other with the same client as the sequential goal
(`bench.scenarios._behaviours`, one connection):

- the skeleton (the goal's baseline, `bench/baselines/skeleton_app.py`);
- the floor (`bench/baselines/floor_app.py`: leadhook's domain, schema and named SQL with
  none of its layers and no delivery), with one subscription and with none; on the full
  schema and with the seventeen listing and retention indexes dropped; with the domain and
  with the least Python imaginable (`--template`);
- `leadhook serve` as the goal measures it (one subscription, its delivery process and a
  receiver), and with no subscription.

It prints each round's rates, their ratios to the skeleton of that round and each server's CPU
a lead (the API process's, for leadhook), and writes them to bench/results/floor-<time>.json.
bench/profiles.md (the twenty-seventh round) reads what they say.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench import scenarios as sc
from bench.harness import ROOT, child, cpu_seconds, free_port, wait_count

# The secondary indexes of leads, events and deliveries that serve listings, filters and
# retention: a create needs none of them for its own checks. Kept: the primary and unique
# keys, the claim's and per-lead order's indexes, pool automation's duplicate keys (the
# mobile's and email's) and the partial indexes a new lead or delivery does not enter.
LISTING_INDEXES = (
    "ix_leads_mid_seq",
    "ix_leads_mid_owner_seq",
    "ix_leads_mid_lead_pool_seq",
    "ix_leads_mid_life_status_seq",
    "ix_leads_voided_seq",
    "ix_events_mid_seq",
    "ix_events_mid_event_type_seq",
    "ix_deliveries_subscription_seq",
    "ix_deliveries_subscription_status_seq",
    "ix_deliveries_delivered_at",
    "ix_deliveries_event_seq",
    "ix_deliveries_mid_seq",
    "ix_deliveries_mid_status_seq",
    "ix_deliveries_mid_entity_id_seq",
    "ix_deliveries_mid_created_at",
)


Rate = dict[str, float]


def floor(
    tmp: Path,
    leads: int,
    *,
    subscribed: bool,
    listing: bool,
    template: bool,
    delivered: bool = False,
) -> Rate:
    """One sequential client against the floor app on a database leadhook set up: leads/s and
    the app's CPU a lead. `delivered`: its subscription is the bench's receiver and a
    `leadhook worker` delivers the rows the floor writes, as serve's delivery process would
    (it also runs the WAL checkpointer); the run counts only once every lead is received."""
    from leadhook.bootstrap import build
    from leadhook.settings import Settings

    with contextlib.ExitStack() as stack:
        base = stack.enter_context(sc.receiver(tmp)) if delivered else "http://127.0.0.1:9"
        db = tmp / f"floor-{time.time_ns()}.db"
        container = build(Settings(database_url=f"sqlite:///{db}", allow_private_targets=True))
        tenant = container.tenants.create("bench", "bench")
        if subscribed:
            hook = {"url": base + "/hook", "event_types": ["*"]}
            container.subscriptions.create(tenant.tenant.mid, hook)
        container.close()
        return _floor_run(tmp, db, tenant.api_key, leads, listing, template, base, delivered)


def _floor_run(
    tmp: Path,
    db: Path,
    key: str,
    leads: int,
    listing: bool,
    template: bool,
    receiver: str,
    delivered: bool,
) -> Rate:
    if not listing:
        with sqlite3.connect(db) as conn:
            for name in LISTING_INDEXES:
                conn.execute(f"DROP INDEX {name}")
    port = free_port()
    cmd = [sys.executable, "-m", "bench.baselines.floor_app", str(port), str(db)]
    cmd += ["--template"] if template else []
    keeper = [sys.executable, "-m", "bench.baselines.floor_app", "checkpoint", str(db)]
    if delivered:
        keeper = [str(sc.BIN / "leadhook"), "worker", "--database-url", f"sqlite:///{db}"]
    with child(keeper, env=sc.ENV), child(cmd, log=tmp / f"floor-{port}.log") as proc:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.05)
        asyncio.run(sc._behaviours(base, key, 50, 0, 1, None))  # warm up
        if delivered:
            wait_count(receiver, 50, timeout=120)  # the worker is up and delivering
        cpu = cpu_seconds(proc.pid)
        emitted, seconds = asyncio.run(sc._behaviours(base, key, leads, 0, 1, None))
        cpu = cpu_seconds(proc.pid) - cpu
        if delivered:
            wait_count(receiver, emitted + 50, timeout=600)
    return {"leads_per_s": emitted / seconds, "server_cpu_ms_per_lead": cpu / emitted * 1000}


def leadhook(tmp: Path, leads: int, *, subscribed: bool) -> Rate:
    """One sequential client against `leadhook serve` (the goal's scenario): leads/s and the
    API process's CPU a lead."""
    if subscribed:
        got = sc.sequential("sqlite", leads, tmp)
        return {
            "leads_per_s": got["leads_per_s"],
            "server_cpu_ms_per_lead": got["api_cpu_ms_per_lead"],
        }
    url = sc.new_database("sqlite", tmp)
    try:
        with sc.Api(url, tmp) as api:
            key = api.tenant([])
            asyncio.run(sc._behaviours(api.base, key, 50, 0, 1, None))
            cpu = api.cpu()[0]
            emitted, seconds = asyncio.run(sc._behaviours(api.base, key, leads, 0, 1, None))
            cpu = api.cpu()[0] - cpu
        return {"leads_per_s": emitted / seconds, "server_cpu_ms_per_lead": cpu / emitted * 1000}
    finally:
        sc.drop_database(url)


VARIANTS = {
    "floor": dict(subscribed=True, listing=True, template=False),
    "floor, no subscription": dict(subscribed=False, listing=True, template=False),
    "floor, no listing indexes": dict(subscribed=True, listing=False, template=False),
    "floor, template": dict(subscribed=True, listing=True, template=True),
    "floor, template, no listing indexes": dict(subscribed=True, listing=False, template=True),
    # The same two with their deliveries sent, as a product with one subscription sends them.
    "floor, delivered": dict(subscribed=True, listing=True, template=False, delivered=True),
    "floor, template, no listing indexes, delivered": dict(
        subscribed=True, listing=False, template=True, delivered=True
    ),
}


def main() -> None:
    """Run the rounds, print them, write the JSON."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    leads = int(sys.argv[2]) if len(sys.argv) > 2 else 3_000
    only = [name.strip() for name in sys.argv[3:]]  # variants named exactly; all if none

    def wanted(name: str) -> bool:
        return not only or name in only

    tmp = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    results: list[dict[str, Rate]] = []
    for i in range(rounds):
        rates: dict[str, Rate] = {"skeleton": sc.skeleton_ingest(leads, 1, tmp)}
        for name, how in VARIANTS.items():
            if wanted(name):
                rates[name] = floor(tmp, leads, **how)
        if wanted("leadhook"):
            rates["leadhook"] = leadhook(tmp, leads, subscribed=True)
        if wanted("leadhook, no subscription"):
            rates["leadhook, no subscription"] = leadhook(tmp, leads, subscribed=False)
        results.append(rates)
        skeleton = rates["skeleton"]["leads_per_s"]
        print(f"round {i + 1}: leads/s, % of the skeleton, server CPU ms a lead", flush=True)
        for name, rate in rates.items():
            got = rate["leads_per_s"]
            print(
                f"  {name:38} {got:7,.0f}  {got / skeleton:4.0%}"
                f"  {rate['server_cpu_ms_per_lead']:.2f}",
                flush=True,
            )
    out = ROOT / "bench" / "results" / f"floor-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"leads": leads, "rounds": results}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
