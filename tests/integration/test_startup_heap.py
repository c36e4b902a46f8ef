"""`serve` and `worker` freeze the heap start-up built, once everything runs (`gc.freeze`).

Run in a child process: freezing is for the whole process, and this one runs many apps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, gc, json, sys
from leadhook.bootstrap import build
from leadhook.cli.runtime import bind, run_service
from leadhook.settings import Settings


async def main(url, freeze):
    container = build(Settings(database_url=url))
    shutdown = asyncio.Event()
    seen = {}

    def started():
        seen["frozen"] = gc.get_freeze_count()
        cycle = []
        cycle.append(cycle)  # garbage made after the freeze is still collected
        del cycle
        seen["collected"] = gc.collect()
        shutdown.set()

    try:
        await run_service(
            container, sock=bind("127.0.0.1", 0), deliver="inline", shutdown=shutdown,
            on_started=started, handle_signals=False, freeze_heap=freeze,
        )
    finally:
        container.close()
    print(json.dumps(seen))


asyncio.run(main(sys.argv[1], sys.argv[2] == "1"))
"""


def _run(tmp_path: Path, freeze: bool) -> dict[str, int]:
    url = f"sqlite:///{tmp_path / 'heap.db'}"
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, "1" if freeze else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("freeze", [True, False])
def test_the_startup_heap_is_frozen_only_when_asked(tmp_path: Path, freeze: bool) -> None:
    seen = _run(tmp_path, freeze)
    if freeze:
        # The app, its models and the libraries' schemas: far more than a handful.
        assert seen["frozen"] > 50_000
    else:
        assert seen["frozen"] == 0
    assert seen["collected"] >= 1


COMMAND = """
import gc, os, signal, sys
import leadhook.cli.runtime as runtime

freeze = runtime.freeze_startup_heap


def frozen_then_stop():
    freeze()
    print("frozen", gc.get_freeze_count(), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the command's own graceful stop


runtime.freeze_startup_heap = frozen_then_stop
signal.alarm(30)  # never frozen: the command dies here instead of serving on
sys.argv = ["leadhook", *sys.argv[1:]]
from leadhook.cli import main

main()
"""


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_serve_and_worker_freeze_it_once_started(tmp_path: Path, command: str) -> None:
    args = [command, "--database-url", f"sqlite:///{tmp_path / 'cmd.db'}"]
    if command == "serve":
        args += ["--port", "0"]
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, *args],
        capture_output=True,
        text=True,
        timeout=120,
        # A clean environment: the key file is made beside the database.
        env={k: v for k, v in os.environ.items() if not k.startswith("LEADHOOK_")},
    )
    assert done.returncode == 0, done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("frozen ")]
    assert int(line.split()[1]) > 50_000
