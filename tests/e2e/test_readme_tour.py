"""The README's curl tour, run as printed, twice in a row against one server and database.

The tour's code blocks are taken from README.md as they are, with only the addresses moved to
free ports and the `leadhook` executable named by its path. Between blocks the harness waits
as a reader would (for the receiver to start, for the deliveries to arrive); it types nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
LEADHOOK = Path(sys.executable).parent / "leadhook"
ADMIN = "admin-secret"  # the token the README starts the server with


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tour_script(api_port: int, hook_port: int) -> str:
    """Return the README tour's shell blocks, the server's own block left out."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A five-minute tour with curl", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    assert "./scripts/serve" in blocks[0] and len(blocks) >= 8, blocks
    # At most 30 s each, so that a broken tour fails rather than hangs.
    until = "for i in $(seq 300); do {} && break; sleep 0.1; done"
    waits = {
        # A reader sees the receiver start before going on ...
        "leadhook listen": until.format(f"curl -s -o /dev/null http://127.0.0.1:{hook_port}/"),
        # ... and the deliveries arrive before listing them.
        "/v1/event-types/": until.format(
            'curl -s "$API/v1/deliveries?lead_id=$LEAD&status=delivered" -H "$AUTH"'
            " | python3 -c 'import json, sys;"
            ' sys.exit(len(json.load(sys.stdin)["data"]) < 8)\''
        ),
    }
    out: list[str] = []
    for block in blocks[1:]:
        out.append(block)
        out.extend(wait for marker, wait in waits.items() if marker in block)
    script = "\n".join(out)
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{api_port}")
    script = script.replace("127.0.0.1:8787", f"127.0.0.1:{hook_port}")
    script = script.replace(
        ".venv/bin/leadhook listen", f".venv/bin/leadhook listen --port {hook_port}"
    )
    return script.replace(".venv/bin/leadhook", str(LEADHOOK))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """`leadhook serve` as the README starts it, on a free port and a database of its own."""
    if shutil.which("curl") is None or shutil.which("bash") is None:
        pytest.skip("the tour needs bash and curl")
    port, db = _free_port(), tmp_path / "tour.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHOOK_")}
    env.update(LEADHOOK_ADMIN_TOKEN=ADMIN, LEADHOOK_ALLOW_PRIVATE_TARGETS="1")
    log = (tmp_path / "serve.out").open("w")
    proc = subprocess.Popen(
        [str(LEADHOOK), "serve", "--port", str(port), "--database-url", f"sqlite:///{db}"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while "Ctrl-C" not in (tmp_path / "serve.out").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.05)
        yield port, db
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.mark.slow
def test_the_tour_runs_twice_and_leaves_nothing_failing(
    server: tuple[int, Path], tmp_path: Path
) -> None:
    port, db = server
    script = tour_script(port, _free_port())
    for run in (1, 2):
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=90
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, f"run {run}:\n{out}"
        assert "error:" not in out and "Traceback" not in out, f"run {run}:\n{out}"
        # 8 events of the first lead, 5 of the lead pool section, and the test event.
        assert out.count("✔ verified") == 14, f"run {run}:\n{out}"
        assert '"success":true' in out and '{"replayed":0}' in out, f"run {run}:\n{out}"
        # Nothing is missing: the subscription was made before the tour's first lead.
        assert '{"replayed":0,"more":false}' in out, f"run {run}:\n{out}"
        # The subscription it made is deleted at the end (DELETE answers 204).
        assert re.search(r"(^|\})204$", out, re.MULTILINE), f"run {run}:\n{out}"
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))
        live = conn.execute("SELECT COUNT(*) FROM subscriptions WHERE deleted_at IS NULL")
        assert live.fetchone() == (0,)
        tenants = conn.execute("SELECT COUNT(*) FROM tenants").fetchone()
    assert statuses == {"delivered": 26}, statuses  # 13 events a run, twice
    assert tenants == (2,)
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
