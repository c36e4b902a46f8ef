"""Profile leadhook's processes under load with py-spy (raw collapsed stacks).

.venv/bin/python -m bench.profile_child sequential 3000 /tmp/prof
    `leadhook serve` with one subscription and one sequential client: /tmp/prof-api.txt
    (the API process) and /tmp/prof-child.txt (its delivery process)
.venv/bin/python -m bench.profile_child concurrent 10000 /tmp/prof
    the same with 16 concurrent clients
.venv/bin/python -m bench.profile_child drain 20000 /tmp/prof
    one `leadhook worker` draining a backlog: /tmp/prof-worker.txt (`drain-postgresql`,
    `concurrent-postgresql`: the same on PostgreSQL)

These stacks are what the profiles in docs/benchmarks.md were read from (py-spy samples wall
time: a thread blocked in a system call counts as busy).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench.harness import child, child_pids
from bench.scenarios import (
    ENV,
    Api,
    _behaviours,
    new_database,
    prepare_backlog,
    receiver,
    wait_count,
    worker_cmd,
)


def _spy(out: str, pid: int) -> subprocess.Popen[bytes]:
    spy = str(Path(sys.executable).with_name("py-spy"))
    # BENCH_SPY_GIL=1: only samples that hold the GIL (where the CPU goes, not where it waits).
    gil = ["--gil"] if os.environ.get("BENCH_SPY_GIL") == "1" else []
    # Without pausing the process for each sample: paused, a sample lands on a system call's
    # line far more often than its share (os.urandom's getrandom took 7% of a batch import's
    # samples, 0.3 us of its ~100 us a lead by the clock: bench/profiles.md, sixteenth round).
    return subprocess.Popen(
        [spy, "record", "--nonblocking", "-r", "300", "-f", "raw", *gil, "-o", out,
         "-p", str(pid)],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(spies: list[subprocess.Popen[bytes]]) -> None:
    for s in spies:
        s.send_signal(2)
        s.wait()


def sequential(n: int, out: str, tmp: Path, clients: int = 1, kind: str = "sqlite") -> None:
    """serve + `clients` clients; py-spy on the API and on its delivery process."""
    url = new_database(kind, tmp)
    with receiver(tmp) as base, Api(url, tmp) as api:
        key = api.tenant([base + "/hook"])
        asyncio.run(_behaviours(api.base, key, 50, 0, 1, None))
        wait_count(base, 50, timeout=120)
        spies = [
            _spy(f"{out}-api.txt", api.proc.pid),
            _spy(f"{out}-child.txt", child_pids(api.proc.pid)[0]),
        ]
        emitted, seconds = asyncio.run(_behaviours(api.base, key, n, 0, clients, None))
        wait_count(base, emitted + 50, timeout=600)
        _stop(spies)
        print(f"{emitted / seconds:.0f} leads/s")


def concurrent(n: int, out: str, tmp: Path, kind: str = "sqlite") -> None:
    """serve + 16 concurrent clients; py-spy on the API and on its delivery process."""
    sequential(n, out, tmp, clients=16, kind=kind)


def drain(n: int, out: str, tmp: Path, kind: str = "sqlite") -> None:
    """One worker draining `n` due deliveries; py-spy on the worker."""
    url = new_database(kind, tmp)
    with receiver(tmp) as base:
        prepare_backlog(url, [(base + "/hook", 256)], n)
        with child(worker_cmd(url), env=ENV, log=tmp / "worker.log") as proc:
            spies = [_spy(f"{out}-worker.txt", proc.pid)]
            start = time.monotonic()
            wait_count(base, n, timeout=600)
            seconds = time.monotonic() - start
            _stop(spies)
        print(f"{n / seconds:.0f} deliveries/s (under py-spy)")


def main() -> None:
    """Run the chosen load under py-spy."""
    mode, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        modes = {
            "sequential": sequential,
            "concurrent": concurrent,
            "drain": drain,
            "drain-postgresql": partial(drain, kind="postgresql"),
            "concurrent-postgresql": partial(concurrent, kind="postgresql"),
        }
        modes[mode](n, out, Path(tmp))


if __name__ == "__main__":
    main()
