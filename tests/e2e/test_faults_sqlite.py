"""SQLite faults, injected for real: a full filesystem (a small tmpfs) and a file locked by
another process past the busy timeout. The API answers 507 / 503 problem+json with
Retry-After, keeps what was written before intact, writes nothing half-way, and recovers
without a restart."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import Api, open_api
from sqlalchemy import event

from leadhook.adapters.db import writer

pytestmark = pytest.mark.slow


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB tmpfs: a filesystem that really fills up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a size-limited tmpfs here: {result.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(path: Path) -> None:
    """Write `path` until the filesystem refuses another byte (tmpfs: page by page)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) > 0
    body: dict[str, Any] = resp.json()
    assert body["status"] == status
    return body


def _counts(db: Path) -> tuple[int, int, str]:
    conn = sqlite3.connect(db)
    try:
        leads = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return leads, events, check


def test_a_full_disk_answers_507_keeps_what_was_written_and_recovers(small_fs: Path) -> None:
    db = small_fs / "leadhook.db"
    with open_api(f"sqlite:///{db}") as api:
        big = {"fields": {f: f[0] * 9000 for f in ("name", "email", "industry", "department")}}
        created = [_create(api, big) for _ in range(5)]
        filler = small_fs / "filler"
        _fill(filler)

        answers: list[int] = []
        started = time.monotonic()
        while 507 not in answers:
            assert len(answers) < 500, "the full disk never refused a write"
            resp = api.client.post("/v1/leads", json=big, headers=api.auth())
            answers.append(resp.status_code)
            if resp.status_code == 201:
                created.append(resp.json()["lead"]["id"])
            else:
                body = _problem(resp, 507)
                assert body["type"].endswith("/insufficient-storage")
        for _ in range(5):  # it keeps answering 507, not 500, while the disk stays full
            _problem(api.client.post("/v1/leads", json=big, headers=api.auth()), 507)
        # Everything written before is there and readable, while the disk is still full.
        for lead_id in created:
            assert api.client.get(f"/v1/leads/{lead_id}", headers=api.auth()).status_code == 200
        leads, events, check = _counts(db)
        assert check == "ok"
        assert leads == len(created) and events == len(created)  # no lead without its event

        filler.unlink()
        recovered = _create(api, big)
        took = time.monotonic() - started
        leads, events, check = _counts(db)
        assert (leads, events, check) == (len(created) + 1, len(created) + 1, "ok")
        assert api.client.get(f"/v1/leads/{recovered}", headers=api.auth()).status_code == 200
    print(
        f"\nfull disk: {answers.count(201)} writes fit in the WAL's room, then 507;"
        f" recovered on the first request after space was freed ({took:.1f} s in all)"
    )


def _create(api: Api, body: dict[str, Any]) -> str:
    resp = api.client.post("/v1/leads", json=body, headers=api.auth())
    assert resp.status_code == 201, resp.text
    lead_id: str = resp.json()["lead"]["id"]
    return lead_id


def test_a_file_locked_past_the_busy_timeout_answers_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "leadhook.db"
    with open_api(f"sqlite:///{db}") as api:
        first = _create(api, {"fields": {"name": "before"}})
        # The product waits 30 s for a lock; this test waits 0.5 s.
        monkeypatch.setattr(writer, "BUSY_TIMEOUT", 0.5)
        other = sqlite3.connect(db, isolation_level=None)  # another program's connection
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        try:
            started = time.monotonic()
            body = _problem(
                api.client.post("/v1/leads", json={"fields": {"name": "x"}}, headers=api.auth()),
                503,
            )
            assert 0.5 <= time.monotonic() - started < 5
            assert "locked" in body["detail"]
            # Readers are not blocked (WAL): what was written is still served, and the
            # service is ready (the readiness probe reads).
            assert api.client.get(f"/v1/leads/{first}", headers=api.auth()).status_code == 200
            started = time.monotonic()
            assert api.client.get("/readyz").status_code == 200
            assert time.monotonic() - started < 0.5
        finally:
            other.execute("ROLLBACK")
            other.close()
        _create(api, {"fields": {"name": "after"}})
        leads, events, check = _counts(db)
        assert (leads, events, check) == (2, 2, "ok")


def test_a_lock_shorter_than_the_busy_timeout_is_waited_out_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    db = tmp_path / "leadhook.db"
    with open_api(f"sqlite:///{db}") as api:
        _create(api, {"fields": {"name": "before"}})
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        answers: list[Any] = []
        post = threading.Thread(
            target=lambda: answers.append(
                api.client.post("/v1/leads", json={"fields": {"name": "x"}}, headers=api.auth())
            )
        )
        connects: list[int] = []
        event.listen(api.container.engine, "connect", lambda *_: connects.append(1))
        post.start()
        try:
            time.sleep(0.3)
            # The write waits for the lock on the event loop's terms: the loop goes on
            # serving, without sleeping in SQLite's busy handler (which would hold each of
            # these for the whole busy timeout, 30 s), on the connection it had.
            slowest = 0.0
            for _ in range(5):
                started = time.monotonic()
                assert api.client.get("/healthz").status_code == 200
                slowest = max(slowest, time.monotonic() - started)
            assert slowest < 1.0, slowest
            assert post.is_alive()
            assert len(connects) <= 1
        finally:
            # Always let go of the lock: a failed check above must fail the test, not leave
            # the POST waiting and the test client's exit waiting for it.
            other.execute("ROLLBACK")
            other.close()
            post.join(10)
        assert answers and answers[0].status_code == 201, answers
        assert _counts(db)[:2] == (2, 2)


def test_a_write_gate_held_past_the_busy_timeout_answers_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The delivery process holds leadhook's write gate while SQLite's busy handler waits out
    # another program's lock: the API's writes waited for the gate as long as that lasted.
    db = tmp_path / "leadhook.db"
    with open_api(f"sqlite:///{db}") as api:
        _create(api, {"fields": {"name": "before"}})
        monkeypatch.setattr(writer, "BUSY_TIMEOUT", 0.5)
        fd = os.open(f"{db}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process's hold on the gate
            resp = api.client.post("/v1/leads", json={"fields": {"name": "x"}}, headers=api.auth())
            assert "locked" in _problem(resp, 503)["detail"]
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        _create(api, {"fields": {"name": "after"}})
        assert _counts(db) == (2, 2, "ok")


def test_a_raw_driver_error_on_a_hot_path_is_an_outage_answer_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hot paths may use sqlite3 or psycopg directly: their errors map like SQLAlchemy's."""
    import psycopg

    db = tmp_path / "raw.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sqlite3.connect(db, timeout=0.05).execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        locked: BaseException = exc  # a real "database is locked", raised by the driver
    holder.execute("ROLLBACK")
    try:
        psycopg.connect("host=127.0.0.1 port=1 connect_timeout=2")
    except psycopg.OperationalError as exc:
        refused: BaseException = exc  # a real refused connection, raised by the driver
    with open_api(f"sqlite:///{tmp_path}/app.db") as api:
        for error in (locked, refused):

            def fail(*_args: Any, error: BaseException = error) -> Any:
                raise error

            monkeypatch.setattr(api.container.leads, "submit_create", fail)
            resp = api.client.post("/v1/leads", json={"fields": {}}, headers=api.auth())
            _problem(resp, 503)
