"""Run the benchmarks and write bench/results/*.json and docs/benchmarks.md (+ a plot).

.venv/bin/python -m bench.run                 # everything, 3 runs each (~15 minutes)
.venv/bin/python -m bench.run --quick         # smaller loads, 1 run (~3 minutes)
.venv/bin/python -m bench.run --only drain    # one scenario
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench.baselines.pgqueuer_drain import IN_FLIGHT as PGQUEUER_IN_FLIGHT
from bench.harness import ROOT, summary
from bench.report import write_report

Scenario = Callable[[Path], dict[str, Any]]


def plan(quick: bool) -> dict[str, tuple[Scenario, int]]:
    """Name → (scenario, how many runs). Each goal compares figures of the same run."""
    n = 5_000 if quick else 20_000
    runs = 1 if quick else 3
    steady_s = 15 if quick else 60
    seq = 1_000 if quick else 3_000
    many = 3_000 if quick else 10_000
    return {
        # The write path against the hand-written skeleton, with the same client.
        "skeleton_sequential": (lambda t: sc.skeleton_ingest(seq, 1, t), runs),
        "sequential_sqlite": (lambda t: sc.sequential("sqlite", seq, t), runs),
        "skeleton_16_clients": (lambda t: sc.skeleton_ingest(many, 16, t), runs),
        "end_to_end_16_sqlite": (
            lambda t: sc.end_to_end("sqlite", many, 0, t, concurrency=16),
            runs,
        ),
        "end_to_end_16_postgresql": (
            lambda t: sc.end_to_end("postgresql", many, 0, t, concurrency=16),
            runs,
        ),
        # Three runs like the others: one 60 s run's p99 swung from 30 to 112 ms with the
        # machine's load (the same code, an hour apart).
        "steady_300_per_s_sqlite": (
            lambda t: sc.end_to_end("sqlite", 300 * steady_s, 0, t, pace=1 / 300),
            runs,
        ),
        # The delivery path against a raw sender and two queues a Python team would pick.
        "drain_sqlite": (lambda t: sc.drain("sqlite", n, 1, t), runs),
        # For information, not a goal: two workers on one SQLite file, as Celery's two
        # prefork processes (the goals compare the one-worker drain).
        "drain_sqlite_2_workers": (lambda t: sc.drain("sqlite", n, 2, t), runs),
        # Each worker with as many requests in flight as each of PgQueuer's workers has HTTP
        # connections (`IN_FLIGHT`, its best setting): the comparison is of the queues.
        "drain_postgresql_2_workers": (
            lambda t: sc.drain("postgresql", n, 2, t, concurrency=PGQUEUER_IN_FLIGHT),
            runs,
        ),
        "raw_aiohttp": (lambda t: sc.raw_aiohttp(n, t), runs),
        # The median of three like every other goal's figures, taking turns with the drains.
        "celery_redis": (lambda t: sc.celery_drain(n if quick else 10_000, t), runs),
        "pgqueuer_postgresql_2_workers": (lambda t: sc.pgqueuer(n, t), runs),
        "bulk_import_sqlite": (
            lambda t: sc.bulk_import("sqlite", 5 if quick else 20, t, False),
            runs,
        ),
        "bulk_import_sqlite_subscribed": (
            lambda t: sc.bulk_import("sqlite", 5 if quick else 20, t, True),
            runs,
        ),
        "slow_neighbour_sqlite": (lambda t: sc.slow_neighbour("sqlite", n // 4, t), runs),
    }


# Scenarios measured in turns, run by run: each goal's subject with its baseline.
ROUNDS: tuple[tuple[str, ...], ...] = (
    ("skeleton_sequential", "sequential_sqlite"),
    ("skeleton_16_clients", "end_to_end_16_sqlite", "end_to_end_16_postgresql"),
    ("steady_300_per_s_sqlite",),
    (
        "drain_sqlite",
        "raw_aiohttp",
        "celery_redis",
        "drain_sqlite_2_workers",
        "drain_postgresql_2_workers",
        "pgqueuer_postgresql_2_workers",
    ),
    ("bulk_import_sqlite", "bulk_import_sqlite_subscribed"),
    ("slow_neighbour_sqlite",),
)


def rounds(chosen: dict[str, tuple[Scenario, int]]) -> list[list[str]]:
    """The chosen scenarios in groups that take turns (every chosen one in exactly one)."""
    groups = [[name for name in group if name in chosen] for group in ROUNDS]
    placed = {name for group in groups for name in group}
    groups += [[name] for name in chosen if name not in placed]
    return [group for group in groups if group]


def main() -> None:
    """Parse arguments, run, write results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller loads, one run each")
    parser.add_argument("--only", action="append", help="run only these scenarios (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    chosen = plan(args.quick)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if any(k.startswith(o) for o in args.only)}
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            # Which interpreter (every process of a run uses the one of `.venv`): builds of one
            # version differ in speed (bench/profiles.md, nineteenth round).
            "python_executable": os.path.realpath(sys.executable),
            "sqlite": sqlite3.sqlite_version,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "quick": args.quick,
        "scenarios": {},
    }
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    for group in rounds(chosen):
        # A goal's scenario and its baseline take turns (skeleton, leadhook, skeleton, …):
        # this machine's speed drifts by tens of percent over minutes, and three runs of one
        # followed by three of the other measured the drift as much as the difference.
        for i in range(max(chosen[name][1] for name in group)):
            for name in group:
                scenario, runs = chosen[name]
                if i >= runs:
                    continue
                with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                    print(f"[bench] {name} run {i + 1}/{runs} …", flush=True)
                    measured[name].append(scenario(Path(tmp)))
                    print(f"[bench] {name}: {measured[name][-1]}", flush=True)
        for name in group:
            got = measured[name]
            keys = [k for k, v in got[0].items() if isinstance(v, (int, float))]
            results["scenarios"][name] = {
                "runs": got,
                "summary": {k: summary([float(m[k]) for m in got]) for k in keys},
            }
        # Kept as it goes: a scenario that fails later does not lose the figures measured.
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "partial.json").write_text(json.dumps(results, indent=2) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    suffix = "-quick" if args.quick else ""
    path = args.out / f"results-{stamp}{suffix}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"latest{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"[bench] wrote {path}")
    if not args.quick and not args.only:
        write_report(results, ROOT / "docs")


if __name__ == "__main__":
    main()
