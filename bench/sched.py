"""Where one sequential client's time goes, as the kernel's scheduler saw it.

.venv/bin/python -m bench.sched            # 3,000 leads a run, 2 s recorded, 2 rounds
.venv/bin/python -m bench.sched 5000 3     # 5,000 leads, 3 rounds

A sequential client waits for each answer before it sends the next request: its rate is set by
a chain of two processes taking turns, the client and the server. Each round runs the skeleton
(`bench/baselines/skeleton_app.py`) and `leadhook serve` with one subscription (its delivery
process and a receiver beside it, as the sequential goal measures it), records two seconds of
scheduler events in the middle of each run (`perf sched record`) and reads them back (`perf
sched timehist`):

- per request, each process's time on a CPU and the time it waited, runnable, for one
  (scheduling delay);
- for the two processes of the chain, what held the CPU each of them waited for: another
  process of the run (serve's delivery process, the receiver), or nothing (a CPU waking up).

The chain's run times and its delays add up to the wall time of the requests: what is left
to a design is either less CPU in one of the chain's processes or fewer delays. Needs `perf`
(Debian's `linux-perf`) and the right to trace the scheduler (root). It prints each run and
writes bench/results/sched-<time>.json; bench/profiles.md (the thirtieth round) reads it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import scenarios as sc
from bench.harness import ROOT, child_pids, receiver

RECORD_S = 2.0  # seconds of scheduler events recorded in the middle of a run
SETTLE_S = 1.0  # seconds of the run before recording starts


@dataclass(frozen=True)
class Switch:
    """One `perf sched timehist` line: a task's time on a CPU, ended at `end`."""

    end: float
    cpu: str
    pid: int
    task: str
    delay_ms: float  # how long it had waited, runnable, before this run
    run_ms: float


def parse_timehist(text: str) -> list[Switch]:
    """The runs in `perf sched timehist` output (its wake-up lines skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or "awakened:" in line:
            continue
        try:
            end = float(parts[0])
            wait, delay, run = (float(x) for x in parts[-3:])
        except ValueError:
            continue
        del wait
        # `name[tid/pid]` for a thread, `name[pid]` for a process's main thread, `<idle>`
        found = re.search(r"\[(?:\d+/)?(\d+)\]$", parts[2])
        pid = int(found.group(1)) if found else 0
        out.append(Switch(end, parts[1], pid, parts[2], delay, run))
    return out


def account(switches: list[Switch], names: dict[int, str], chain: set[str]) -> dict[str, Any]:
    """Run time and scheduling delay by process, and who held the CPUs the chain waited for."""
    run: defaultdict[str, float] = defaultdict(float)
    delay: defaultdict[str, float] = defaultdict(float)
    by_cpu: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for s in switches:
        name = names.get(s.pid, "idle" if s.task == "<idle>" else "other")
        run[name] += s.run_ms
        delay[name] += s.delay_ms
        by_cpu[s.cpu].append((s.end - s.run_ms / 1000, s.end, name))
    held: defaultdict[str, float] = defaultdict(float)
    for s in switches:
        name = names.get(s.pid, "")
        if name not in chain or s.delay_ms <= 0:
            continue
        start = s.end - (s.run_ms + s.delay_ms) / 1000
        stop = s.end - s.run_ms / 1000
        for a, b, other in by_cpu[s.cpu]:
            overlap = min(b, stop) - max(a, start)
            if overlap > 0 and other != name:
                held[other] += overlap * 1000
    return {
        "run_ms": {k: round(v, 1) for k, v in run.items()},
        "delay_ms": {k: round(v, 1) for k, v in delay.items()},
        "chain_waited_behind_ms": {
            k: round(v, 1) for k, v in sorted(held.items(), key=lambda kv: -kv[1])
        },
    }


def _pid_of(module: str, port: int) -> int:
    """The pid of the bench process `python -m module port ...` (the receiver)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if module.encode() in cmd and str(port).encode() in cmd:
                return int(entry.name)
    raise LookupError(f"no {module} on port {port}")


def _record(out: Path) -> threading.Thread:
    def run() -> None:
        time.sleep(SETTLE_S)
        cmd = ["perf", "sched", "record", "-o", str(out), "--", "sleep", str(RECORD_S)]
        subprocess.run(cmd, capture_output=True, check=True)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _timehist(data: Path) -> str:
    cmd = ["perf", "sched", "timehist", "-i", str(data)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def measure(base: str, key: str, leads: int, names: dict[int, str], tmp: Path) -> dict[str, Any]:
    """One sequential run of `leads` against `base`, two seconds of it recorded."""
    asyncio.run(sc._behaviours(base, key, 50, 0, 1, None))  # warm up
    data = tmp / f"sched-{time.time_ns()}.data"
    recorder = _record(data)
    emitted, seconds = asyncio.run(sc._behaviours(base, key, leads, 0, 1, None))
    recorder.join()
    rate = emitted / seconds
    got = account(parse_timehist(_timehist(data)), names, {"client", "server"})
    requests = rate * RECORD_S
    per_request = {
        kind: {k: round(v / requests, 3) for k, v in got[kind].items()}
        for kind in ("run_ms", "delay_ms", "chain_waited_behind_ms")
    }
    return {"leads_per_s": round(rate), "per_request_ms": per_request, "totals_ms": got}


def main() -> None:
    """Run the rounds, print them, write the JSON."""
    leads = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-sched-"))
    me = os.getpid()
    results: list[dict[str, Any]] = []
    for _ in range(rounds):
        row: dict[str, Any] = {}
        with sc.Skeleton(tmp) as app:
            names = {me: "client", app.proc.pid: "server"}
            row["skeleton"] = measure(app.base, "none", leads, names, tmp)
        url = sc.new_database("sqlite", tmp)
        try:
            with receiver(tmp) as hook, sc.Api(url, tmp) as api:
                key = api.tenant([hook + "/hook"])
                names = {me: "client", api.proc.pid: "server"}
                names |= {pid: "delivery" for pid in child_pids(api.proc.pid)}
                names[_pid_of("bench.receiver", int(hook.rsplit(":", 1)[1]))] = "receiver"
                row["leadhook"] = measure(api.base, key, leads, names, tmp)
        finally:
            sc.drop_database(url)
        results.append(row)
        print(json.dumps(row), flush=True)
    out = ROOT / "bench" / "results" / f"sched-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"leads": leads, "record_s": RECORD_S, "rounds": results}, indent=1))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
