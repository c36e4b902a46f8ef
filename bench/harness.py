"""Process plumbing for the benchmarks: free ports, child processes, receivers, RSS sampling."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up in {timeout} s")


@contextlib.contextmanager
def child(
    args: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a child process for the duration of the block, then stop it (SIGTERM, then KILL)."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        list(args),
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextlib.contextmanager
def receiver(log_dir: Path) -> Iterator[str]:
    """Start the benchmark receiver in its own process; yield its base URL."""
    port = free_port()
    with child(
        [str(BIN / "python"), "-m", "bench.receiver", str(port)],
        log=log_dir / f"receiver-{port}.log",
    ):
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/stats")
        yield base


def stats(base: str) -> dict[str, Any]:
    """Return the receiver's counters."""
    data: dict[str, Any] = httpx.get(base + "/stats", timeout=10).json()
    return data


def receipts(base: str) -> list[tuple[str, str, float]]:
    """Return every (webhook-id, path, receipt time) the receiver saw."""
    return [tuple(r) for r in httpx.get(base + "/dump", timeout=60).json()]  # type: ignore[misc]


def wait_count(base: str, count: int, timeout: float, path: str | None = None) -> float:
    """Wait until the receiver counted `count` POSTs (on `path`); return the time it happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = stats(base)
        got = s["by_path"].get(path, 0) if path else s["count"]
        if got >= count:
            return time.time()
        time.sleep(0.02)
    raise TimeoutError(f"receiver saw {stats(base)} of {count} in {timeout} s")


class RssSampler:
    """Sample a process's resident memory every 100 ms; keep the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            self._stop.wait(0.1)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        """Peak RSS in MiB."""
        return self.peak_kib / 1024


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and relative spread of several runs."""
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread_pct": 100 * (max(values) - min(values)) / med if med else 0.0,
        "runs": len(values),
    }


def percentile(values: Sequence[float], p: float) -> float:
    """Return the p-th percentile (0–100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The pids of the direct children of `pid`."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    out.append(int(entry.name))
    return out
