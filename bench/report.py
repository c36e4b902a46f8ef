"""Write docs/benchmarks.md and docs/benchmarks.png from a results dict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

GOALS: dict[str, tuple[str, str, float, str]] = {
    # scenario: (metric, label, goal, comparison)
    "drain_sqlite": ("deliveries_per_s", "drain, SQLite, 1 worker (deliveries/s)", 3000, ">="),
    "drain_postgresql_2_workers": (
        "deliveries_per_s",
        "drain, PostgreSQL, 2 workers (deliveries/s)",
        0,
        "info",
    ),
    "raw_aiohttp": ("deliveries_per_s", "raw aiohttp + uvloop sender (deliveries/s)", 0, "info"),
    "celery_redis": ("deliveries_per_s", "Celery 5 + Redis, prefork 2 (deliveries/s)", 0, "info"),
    "end_to_end_sqlite": ("api_events_per_s", "end to end through the API (events/s)", 1000, ">="),
    "steady_200_per_s_sqlite": (
        "latency_ms_p99",
        "steady 200/s: p99 commit→receipt (ms)",
        50,
        "<=",
    ),
    "steady_50_per_s_sqlite": ("latency_ms_p99", "steady 50/s: p99 commit→receipt (ms)", 50, "<="),
    "bulk_import_sqlite": ("leads_per_s", "bulk import, no subscriber (leads/s)", 10000, ">="),
    "bulk_import_sqlite_subscribed": (
        "leads_per_s",
        "bulk import, one subscriber (leads/s)",
        0,
        "info",
    ),
    "slow_neighbour_sqlite": (
        "fast_deliveries_per_s",
        "fast subscriber beside a 2 s one (deliveries/s)",
        0,
        "info",
    ),
}


def _median(results: dict[str, Any], scenario: str, metric: str) -> float | None:
    s = results["scenarios"].get(scenario)
    if not s or metric not in s["summary"]:
        return None
    return float(s["summary"][metric]["median"])


def _verdict(value: float, goal: float, cmp: str) -> str:
    if cmp == "info":
        return ""
    ok = value >= goal if cmp == ">=" else value <= goal
    return ("met" if ok else "missed") + f" ({cmp} {goal:g})"


def table(results: dict[str, Any]) -> list[str]:
    """The Markdown table: median, spread and goal of every scenario measured."""
    lines = [
        "| scenario | median | min – max | spread | runs | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for scenario, (metric, label, goal, cmp) in GOALS.items():
        s = results["scenarios"].get(scenario)
        if not s:
            continue
        m = s["summary"][metric]
        lines.append(
            f"| {label} | {m['median']:,.1f} | {m['min']:,.1f} – {m['max']:,.1f} |"
            f" {m['spread_pct']:.0f}% | {m['runs']} | {_verdict(m['median'], goal, cmp)} |"
        )
    return lines


def ratios(results: dict[str, Any]) -> list[str]:
    """Ratios of the drain against its baselines and of PostgreSQL against SQLite."""
    out = []
    lh = _median(results, "drain_sqlite", "deliveries_per_s")
    raw = _median(results, "raw_aiohttp", "deliveries_per_s")
    cel = _median(results, "celery_redis", "deliveries_per_s")
    pg = _median(results, "drain_postgresql_2_workers", "deliveries_per_s")
    if lh and raw:
        out.append(f"- leadhook drain / raw aiohttp sender: **{lh / raw:.0%}** (goal ≥ 60%)")
    if lh and cel:
        out.append(f"- leadhook drain / Celery + Redis: **{lh / cel:.1f}×** (goal ≥ 10×)")
    if lh and pg:
        out.append(f"- PostgreSQL (2 workers) / SQLite drain: **{pg / lh:.0%}** (goal ≥ 80%)")
    for scenario in ("drain_postgresql_2_workers", "drain_sqlite"):
        s = results["scenarios"].get(scenario)
        if s:
            dup = max(r["duplicates"] for r in s["runs"])
            uniq = min(r["unique"] for r in s["runs"])
            out.append(f"- {scenario}: every run received {uniq:,} distinct events, {dup} twice")
    rss = [
        r["peak_rss_mb"]
        for s in results["scenarios"].values()
        for r in s["runs"]
        if "peak_rss_mb" in r
    ]
    if rss:
        out.append(
            f"- peak RSS of a leadhook process in any scenario: **{max(rss):.0f} MB**"
            " (goal < 200 MB)"
        )
    e2e = results["scenarios"].get("steady_200_per_s_sqlite")
    if e2e:
        r = e2e["runs"][0]
        out.append(
            f"- steady 200 behaviours/s: commit→receipt p50 {r['latency_ms_p50']:.1f} ms,"
            f" p99 {r['latency_ms_p99']:.1f} ms, max {r['latency_ms_max']:.1f} ms"
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    """A bar chart of throughput (left) and the latency percentiles (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    names, values = [], []
    for scenario, (metric, label, _goal, _cmp) in GOALS.items():
        v = _median(results, scenario, metric)
        if v is not None and metric.endswith("_per_s"):
            names.append(label.split(" (")[0])
            values.append(v)
    left.barh(names, values, color="#3b7dd8")
    left.set_xlabel("per second (median)")
    left.set_title("Throughput")
    left.invert_yaxis()
    lat_names, p50, p99 = [], [], []
    for scenario in ("end_to_end_sqlite", "steady_200_per_s_sqlite"):
        s = results["scenarios"].get(scenario)
        if s:
            lat_names.append(scenario.replace("_sqlite", ""))
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


def write_report(results: dict[str, Any], docs: Path) -> None:
    """Write docs/benchmarks.md (table, ratios, how to reproduce) and docs/benchmarks.png."""
    docs.mkdir(parents=True, exist_ok=True)
    plot(results, docs / "benchmarks.png")
    m = results["machine"]
    text = [
        "# Benchmarks",
        "",
        f"Measured {results['started']} on this project's machine: {m['cpus']} cores,"
        f" Python {m['python']}, {m['platform']}. Each leadhook process, the receiver"
        " (uvicorn + httptools, its own process) and the load generator share the two cores.",
        "",
        "Reproduce: `.venv/bin/pip install -e '.[dev,bench]' && .venv/bin/python -m bench.run`"
        " (needs PostgreSQL and Redis on 127.0.0.1; `--quick` for a smaller run).",
        "",
        *table(results),
        "",
        *ratios(results),
        "",
        "![throughput and latency](benchmarks.png)",
        "",
        "Scenarios: see `bench/scenarios.py`. Drains count from the first to the last receipt;"
        " latency is from the commit of the delivery row to its receipt.",
        "",
    ]
    (docs / "benchmarks.md").write_text("\n".join(text))
