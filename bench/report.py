"""Write docs/benchmarks.md and docs/benchmarks.png from a results dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCENARIOS: dict[str, tuple[str, str]] = {
    # scenario: (metric shown in the table, label)
    "skeleton_sequential": ("leads_per_s", "skeleton, 1 sequential client (leads/s)"),
    "sequential_sqlite": ("leads_per_s", "leadhook, 1 sequential client, SQLite (leads/s)"),
    "skeleton_16_clients": ("leads_per_s", "skeleton, 16 clients (leads/s)"),
    "end_to_end_16_sqlite": (
        "delivered_events_per_s",
        "leadhook end to end, 16 clients, SQLite (events/s)",
    ),
    "end_to_end_16_postgresql": (
        "delivered_events_per_s",
        "leadhook end to end, 16 clients, PostgreSQL (events/s)",
    ),
    "steady_300_per_s_sqlite": ("latency_ms_p99", "steady 300/s: p99 commit→receipt (ms)"),
    "drain_sqlite": ("deliveries_per_s", "drain, SQLite, 1 worker, 64 in flight (deliveries/s)"),
    "drain_sqlite_2_workers": (
        "deliveries_per_s",
        "drain, SQLite, 2 workers, 64 in flight each (deliveries/s; not a goal)",
    ),
    "drain_postgresql_2_workers": (
        "deliveries_per_s",
        "drain, PostgreSQL, 2 workers, 128 in flight each (deliveries/s)",
    ),
    "raw_aiohttp": ("deliveries_per_s", "raw aiohttp + uvloop sender (deliveries/s)"),
    "celery_redis": ("deliveries_per_s", "Celery 5 + Redis, prefork 2 (deliveries/s)"),
    "pgqueuer_postgresql_2_workers": (
        "deliveries_per_s",
        "pgqueuer + aiohttp, 2 workers, 128 connections each (deliveries/s)",
    ),
    "bulk_import_sqlite": ("leads_per_s", "bulk import, no subscriber (leads/s)"),
    "bulk_import_sqlite_subscribed": ("leads_per_s", "bulk import, one subscriber (leads/s)"),
    "slow_neighbour_sqlite": (
        "fast_deliveries_per_s",
        "fast subscriber beside a 2 s one (deliveries/s)",
    ),
}

# goal label, (scenario, metric), baseline (scenario, metric) or None, comparison, target, unit
GOALS: list[tuple[str, tuple[str, str], tuple[str, str] | None, str, float, str]] = [
    (
        "1 sequential client, SQLite, one subscription: leadhook / skeleton",
        ("sequential_sqlite", "leads_per_s"),
        ("skeleton_sequential", "leads_per_s"),
        ">=",
        0.60,
        "%",
    ),
    (
        "16 clients end to end (delivered) / skeleton ingest with 16 clients",
        ("end_to_end_16_sqlite", "delivered_events_per_s"),
        ("skeleton_16_clients", "leads_per_s"),
        ">=",
        0.50,
        "%",
    ),
    (
        "16 clients end to end, SQLite (events/s)",
        ("end_to_end_16_sqlite", "delivered_events_per_s"),
        None,
        ">=",
        1000,
        "",
    ),
    (
        "steady 300 behaviours/s for 60 s: p99 commit → receipt (ms)",
        ("steady_300_per_s_sqlite", "latency_ms_p99"),
        None,
        "<=",
        50,
        "",
    ),
    (
        "drain of 20,000: leadhook SQLite / raw aiohttp + uvloop",
        ("drain_sqlite", "deliveries_per_s"),
        ("raw_aiohttp", "deliveries_per_s"),
        ">=",
        0.80,
        "%",
    ),
    (
        "drain of 20,000: leadhook SQLite / Celery + Redis",
        ("drain_sqlite", "deliveries_per_s"),
        ("celery_redis", "deliveries_per_s"),
        ">=",
        10,
        "x",
    ),
    (
        "drain of 20,000: leadhook PostgreSQL 2 workers / pgqueuer 2 workers",
        ("drain_postgresql_2_workers", "deliveries_per_s"),
        ("pgqueuer_postgresql_2_workers", "deliveries_per_s"),
        ">=",
        1.5,
        "x",
    ),
    (
        "POST /v1/leads/batch, no subscriber (leads/s)",
        ("bulk_import_sqlite", "leads_per_s"),
        None,
        ">=",
        10000,
        "",
    ),
    (
        "POST /v1/leads/batch, one subscriber (leads/s)",
        ("bulk_import_sqlite_subscribed", "leads_per_s"),
        None,
        ">=",
        6000,
        "",
    ),
    (
        "end to end, PostgreSQL (serve + 1 worker) / SQLite",
        ("end_to_end_16_postgresql", "delivered_events_per_s"),
        ("end_to_end_16_sqlite", "delivered_events_per_s"),
        ">=",
        0.70,
        "%",
    ),
]


def _median(results: dict[str, Any], scenario: str, metric: str) -> float | None:
    s = results["scenarios"].get(scenario)
    if not s or metric not in s["summary"]:
        return None
    return float(s["summary"][metric]["median"])


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0%}"
    if unit == "x":
        return f"{value:.1f}×"
    return f"{value:,.1f}"


def table(results: dict[str, Any]) -> list[str]:
    """The Markdown table of every scenario measured: median, spread, runs."""
    lines = [
        "| scenario | median | min – max | spread | runs |",
        "|---|---:|---:|---:|---:|",
    ]
    for scenario, (metric, label) in SCENARIOS.items():
        s = results["scenarios"].get(scenario)
        if not s or metric not in s["summary"]:
            continue
        m = s["summary"][metric]
        lines.append(
            f"| {label} | {m['median']:,.1f} | {m['min']:,.1f} – {m['max']:,.1f} |"
            f" {m['spread_pct']:.0f}% | {m['runs']} |"
        )
    return lines


def goals(results: dict[str, Any]) -> list[str]:
    """Every goal, met or missed, against its baseline measured in the same run."""
    lines = ["| goal | measured | target | verdict |", "|---|---:|---:|---|"]
    for label, (scenario, metric), base, cmp, target, unit in GOALS:
        value = _median(results, scenario, metric)
        if value is None:
            continue
        if base is not None:
            baseline = _median(results, *base)
            if not baseline:
                continue
            value = value / baseline
        ok = value >= target if cmp == ">=" else value <= target
        verdict = "**met**" if ok else "**missed**"
        lines.append(f"| {label} | {_fmt(value, unit)} | {cmp} {_fmt(target, unit)} | {verdict} |")
    rss = [
        r["peak_rss_mb"]
        for s in results["scenarios"].values()
        for r in s["runs"]
        if "peak_rss_mb" in r
    ]
    if rss:
        verdict = "**met**" if max(rss) < 200 else "**missed**"
        lines.append(
            f"| peak RSS of any leadhook process (MB) | {max(rss):.0f} | < 200 | {verdict} |"
        )
    runs = [r for s in results["scenarios"].values() for r in s["runs"] if "duplicates" in r]
    if runs:
        twice = sum(r["duplicates"] for r in runs)
        lost = sum(max(0, r.get("events", r.get("received", 0)) - r["unique"]) for r in runs)
        verdict = "**met**" if twice == 0 and lost == 0 else "**missed**"
        lines.append(
            f"| events lost / sent twice over {len(runs)} runs | {lost} / {twice} | 0 / 0 |"
            f" {verdict} |"
        )
    return lines


def plot(results: dict[str, Any], path: Path) -> None:
    """A bar chart of throughput (left) and the latency percentiles (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names, values = [], []
    for scenario, (metric, label) in SCENARIOS.items():
        v = _median(results, scenario, metric)
        if v is not None and metric.endswith("_per_s"):
            names.append(label.split(" (")[0])
            values.append(v)
    left.barh(names, values, color="#3b7dd8")
    left.set_xlabel("per second (median)")
    left.set_title("Throughput")
    left.invert_yaxis()
    lat_names, p50, p99 = [], [], []
    latency = {
        "end_to_end_16_sqlite": "16 clients\nSQLite",
        "end_to_end_16_postgresql": "16 clients\nPostgreSQL",
        "steady_300_per_s_sqlite": "steady 300/s\nSQLite",
    }
    for scenario, short in latency.items():
        s = results["scenarios"].get(scenario)
        if s:
            lat_names.append(short)
            p50.append(s["summary"]["latency_ms_p50"]["median"])
            p99.append(s["summary"]["latency_ms_p99"]["median"])
    xs = range(len(lat_names))
    right.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    right.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    right.set_xticks(list(xs), lat_names)
    right.set_ylabel("commit → receipt (ms)")
    right.set_title("Latency")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _interpreter(machine: dict[str, Any]) -> str:
    # Runs before the nineteenth round did not record which interpreter ran them.
    if "python_executable" not in machine:
        return ""
    return f" (`{machine['python_executable']}`), SQLite {machine['sqlite']}"


def write_report(results: dict[str, Any], docs: Path) -> None:
    """Write docs/benchmarks.md (table, ratios, how to reproduce) and docs/benchmarks.png."""
    docs.mkdir(parents=True, exist_ok=True)
    plot(results, docs / "benchmarks.png")
    m = results["machine"]
    text = [
        "# Benchmarks",
        "",
        f"Measured {results['started']} on this project's machine: {m['cpus']} cores,"
        f" Python {m['python']}{_interpreter(m)}, {m['platform']}. Each leadhook process, the"
        " receiver (uvicorn + httptools, its own process) and the load generator share the two"
        " cores.",
        "",
        "Reproduce: `.venv/bin/pip install -e '.[dev,bench]' && .venv/bin/python -m bench.run`"
        " (needs PostgreSQL and Redis on 127.0.0.1; `--quick` for a smaller run).",
        "",
        *([f"Note: {results['note']}.", ""] if results.get("note") else []),
        "## Goals (issue 9), each against its baseline in this run",
        "",
        *goals(results),
        "",
        "## Every scenario",
        "",
        *table(results),
        "",
        "![throughput and latency](benchmarks.png)",
        "",
        "Scenarios: see `bench/scenarios.py`. The skeleton is `bench/baselines/skeleton_app.py`"
        " (FastAPI, one sqlite3 connection, lead + event + delivery row in one transaction per"
        " request, the same server and the same client code as leadhook). Drains count from the"
        " first to the last receipt; end to end counts from the first commit to the last"
        " receipt; latency is from the commit of the delivery row to its receipt. A goal's"
        " scenario and its baseline are measured in turns (baseline, leadhook, baseline, …;"
        " `ROUNDS` in `bench/run.py`): this machine's speed drifts by tens of percent over"
        " minutes, and the medians of runs taken far apart measured the drift.",
        "",
    ]
    notes = Path(__file__).with_name("profiles.md")
    if notes.exists():
        text += [notes.read_text()]
    (docs / "benchmarks.md").write_text("\n".join(text))
