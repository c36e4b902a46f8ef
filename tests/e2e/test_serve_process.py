"""`leadhook serve` delivers from a child process: supervised, restarted, stopped in order."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from delivery_support import Receiver
from sqlalchemy import create_engine, text
from test_cli import ADMIN_TOKEN, Running, free_port, post, wait_until


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z"


def _serve(
    tmp_path: Path, start: Callable[..., Running], name: str, url: str = "", **env: str
) -> tuple[Running, str]:
    """Start `leadhook serve` on a SQLite file (or `url`); return it and its base URL."""
    port = free_port()
    serve = start(
        "serve",
        "--port",
        str(port),
        "--database-url",
        url or f"sqlite:///{tmp_path}/{name}.db",
        name=name,
        LEADHOOK_ADMIN_TOKEN=ADMIN_TOKEN,
        LEADHOOK_ALLOW_PRIVATE_TARGETS="1",
        **env,
    )
    serve.wait_for("Ctrl-C")
    return serve, f"http://127.0.0.1:{port}"


def _one_child(serve: Running) -> int:
    found: list[int] = []

    def has_child() -> bool:
        found[:] = _children(serve.proc.pid)
        return len(found) == 1

    wait_until(has_child)
    return found[0]


def test_a_killed_delivery_process_is_restarted_and_nothing_is_lost(
    tmp_path: Path,
    start: Callable[..., Running],
    receiver: Receiver,
) -> None:
    serve, base = _serve(tmp_path, start, "serve")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    sub = post(f"{base}/v1/subscriptions", {"url": receiver.url(), "event_types": ["*"]}, key)
    receiver.secrets.append(sub["secret"])
    first = _one_child(serve)
    # The database URL (which may hold a password) reaches the child in its environment, not
    # on its command line, which anyone on the machine reads (`ps`).
    cmdline = Path(f"/proc/{first}/cmdline").read_bytes()
    assert b"worker" in cmdline and b"serve.db" not in cmdline
    environ = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
    assert f"LEADHOOK_DATABASE_URL=sqlite:///{tmp_path}/serve.db".encode() in environ

    def lead() -> str:
        created = post(f"{base}/v1/leads", {"fields": {"name": "Ada"}}, key)
        event_id: str = created["events"][0]["event_id"]
        return event_id

    sent = [lead() for _ in range(10)]
    wait_until(lambda: {r.msg_id for r in receiver.acked()} >= set(sent))

    os.kill(first, signal.SIGKILL)
    killed_at = time.monotonic()
    sent += [lead() for _ in range(20)]  # committed while nobody delivers: they wait
    wait_until(lambda: not _alive(first))
    second = _one_child(serve)
    assert second != first
    wait_until(lambda: {r.msg_id for r in receiver.acked()} >= set(sent))
    recovered_in = time.monotonic() - killed_at
    assert recovered_in < 30, recovered_in
    assert all(r.verified_with for r in receiver.all())
    assert "delivery process exited; starting another" in serve.output()

    # SIGTERM stops serve and, in order, its delivery process: nothing left running.
    assert serve.terminate() == 0
    assert not _alive(second)
    assert "leadhook stopped." in serve.output()


def test_serve_wakes_its_delivery_process_on_commit(
    tmp_path: Path,
    start: Callable[..., Running],
    receiver: Receiver,
) -> None:
    """With polling slowed to two minutes, only the commit's wake-up can deliver in time."""
    serve, base = _serve(tmp_path, start, "wake", LEADHOOK_POLL_INTERVAL="120")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    post(f"{base}/v1/subscriptions", {"url": receiver.url(), "event_types": ["*"]}, key)
    _one_child(serve)
    for i in range(5):
        post(f"{base}/v1/leads", {"fields": {"name": f"L{i}"}}, key)
        wait_until(lambda n=i + 1: len(receiver.acked()) == n, timeout=60)
    assert serve.terminate() == 0


@pytest.mark.parametrize("how", ["delete", "disable"])
def test_a_stopped_subscription_gets_no_new_attempt_from_serve(
    tmp_path: Path, start: Callable[..., Running], receiver: Receiver, how: str
) -> None:
    """Catches (a review): after a DELETE or a disable had answered, serve's delivery process
    kept starting the attempts it held for the subscription until its next heartbeat (5 s):
    20 to 64 more requests began up to 1.5 s later. Now the API tells it through its pipe."""
    receiver.behaviour = lambda r, n: (200, {}, 0.4)  # a slow endpoint: the jobs wait on hand
    serve, base = _serve(tmp_path, start, f"stop-{how}")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    hook = {"url": receiver.url(), "event_types": ["*"], "max_in_flight": 1}
    sub = post(f"{base}/v1/subscriptions", hook, key)["id"]
    for i in range(12):
        post(f"{base}/v1/leads", {"fields": {"name": f"L{i}"}}, key)
    wait_until(lambda: len(receiver.received) >= 2, timeout=60)
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth) as client:
        if how == "delete":
            answer = client.delete(f"/v1/subscriptions/{sub}")
        else:
            answer = client.patch(f"/v1/subscriptions/{sub}", json={"enabled": False})
    assert answer.is_success, answer.text
    stopped_at = time.monotonic()
    time.sleep(2.5)  # half a heartbeat: the old way sent five or six more meanwhile
    late = [r for r in receiver.received if r.at > stopped_at + 0.2]
    assert late == [], [r.at - stopped_at for r in late]
    assert len(receiver.received) < 12
    assert serve.terminate() == 0


def test_a_write_still_waiting_when_serve_stops_is_refused_unwritten(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    # Another program holds SQLite's write lock; a create waits for it; serve is told to stop.
    # The request is answered 503 (retry) before the grace period cancels it, and the lead is
    # not written afterwards (it was answered a bare 500, then written as serve closed).
    serve, base = _serve(tmp_path, start, "stopping", LEADHOOK_RETRY_SCHEDULE="1,1,1,1,1,1")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    # A delivery retried every second: the delivery process claims while the lock is held.
    post(f"{base}/v1/subscriptions", {"url": "http://127.0.0.1:9/x", "event_types": ["*"]}, key)
    post(f"{base}/v1/leads", {"fields": {"name": "before"}}, key)
    time.sleep(2.0)
    holder = sqlite3.connect(tmp_path / "stopping.db", isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    answers: list[httpx.Response] = []

    def create() -> None:
        answers.append(
            httpx.post(
                f"{base}/v1/leads",
                json={"fields": {"name": "waited"}},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
        )

    waiting = threading.Thread(target=create)
    waiting.start()
    time.sleep(3.0)  # the create is waiting for the lock, and so is the delivery process
    serve.proc.send_signal(signal.SIGTERM)
    waiting.join(timeout=15)
    # Serve stops with the lock still held: its delivery process waited for SQLite's busy
    # timeout (30 s) in a claim before it (a review; the lock was let go first here before).
    stopping = time.monotonic()
    assert serve.proc.wait(timeout=15) == 0
    assert time.monotonic() - stopping < 10
    holder.execute("ROLLBACK")
    holder.close()
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == "5"
    assert "not written" in answer.json()["detail"]
    with sqlite3.connect(tmp_path / "stopping.db") as db:
        assert db.execute("SELECT count(*) FROM leads").fetchone() == (1,)  # "before"
    assert "waiting writes refused" in serve.output()


@pytest.mark.postgres
def test_a_write_waiting_on_a_row_lock_when_serve_stops_is_refused_unwritten(
    tmp_path: Path, start: Callable[..., Running], postgres_url: str
) -> None:
    # PostgreSQL: another session holds a lead's row lock; an update of that lead waits for it
    # on the writer thread, and a create waits behind it in the thread's queue. At SIGTERM both
    # are answered 503 before the grace period ends, neither is written when the lock goes
    # (both were answered a bare 500, then written), and serve stops without waiting for it.
    serve, base = _serve(tmp_path, start, "stopping-pg", postgres_url)
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    lead = post(f"{base}/v1/leads", {"fields": {"name": "first"}}, key)["lead"]["id"]
    holder = create_engine(postgres_url)
    held = holder.connect()
    held.execute(text("SELECT id FROM leads WHERE id = :id FOR UPDATE"), {"id": lead})
    answers: dict[str, httpx.Response] = {}

    def send(name: str, method: str, path: str) -> None:
        answers[name] = httpx.request(
            method,
            f"{base}{path}",
            json={"fields": {"name": name}},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    senders = [
        threading.Thread(target=send, args=("update", "PATCH", f"/v1/leads/{lead}")),
        threading.Thread(target=send, args=("create", "POST", "/v1/leads")),
    ]
    for sender in senders:
        sender.start()
        time.sleep(0.5)
    time.sleep(0.5)  # the update waits for the lock, the create behind it
    stopped = time.monotonic()
    serve.proc.send_signal(signal.SIGTERM)
    try:
        assert serve.proc.wait(timeout=20) == 0
        took = time.monotonic() - stopped
    finally:
        held.rollback()
        held.close()
    for sender in senders:
        sender.join(timeout=15)
    assert took < 15  # it did not wait for the lock
    assert sorted(answers) == ["create", "update"]
    for answer in answers.values():
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["retry-after"] == "5"
        assert "not written" in answer.json()["detail"]
    with holder.connect() as conn:
        rows = conn.execute(text("SELECT version, state FROM leads")).all()
    holder.dispose()
    assert [(version, json.loads(state)["fields"]["name"]) for version, state in rows] == [
        (1, "first")
    ]
    assert "2 waiting writes refused" in serve.output()
    assert "Event loop is closed" not in serve.output()


def test_an_upgrade_behind_a_behaviour_is_refused_after_its_answer(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    """No route is a WebSocket: a WebSocket upgrade pipelined behind a behaviour took the
    connection over (a 403 from uvicorn's WebSocket handler) while the behaviour ran, whose
    201 was then never sent, although its lead was created. The refusal waits its turn."""
    import socket

    serve, base = _serve(tmp_path, start, "upgrade")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    body = json.dumps({"fields": {"name": "up"}}).encode()
    lead = (
        b"POST /v1/leads HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + key.encode() + b"\r\n"
        b"content-length: %d\r\n\r\n" % len(body) + body
    )
    upgrade = (
        b"GET /ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(lead + upgrade)
        client.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := client.recv(65536):
            got += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)
    assert statuses == [b"201", b"400"], got
    assert b"a WebSocket upgrade was sent behind requests" in got
    leads = httpx.get(f"{base}/v1/leads", headers={"Authorization": f"Bearer {key}"}).json()
    assert [lead["fields"]["name"] for lead in leads["data"]] == ["up"]
    assert serve.terminate() == 0


def test_an_open_console_stream_does_not_hold_up_a_graceful_stop(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    # A live stream lasts 30 s; the grace period is 5 s. It held every stop for the whole
    # grace period, then was cancelled with an ERROR and a traceback in the log (a review).
    serve, base = _serve(tmp_path, start, "live")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    with httpx.Client(base_url=base, timeout=30) as client:
        login = client.get("/console/login").text
        token = re.search(r'name="csrf_token" value="([^"]+)"', login)
        assert token is not None
        signed = client.post("/console/login", data={"api_key": key, "csrf_token": token[1]})
        assert signed.status_code == 303, signed.text
        with client.stream("GET", "/console/events/stream") as live:
            assert live.status_code == 200
            chunks = live.iter_bytes()
            assert next(chunks).startswith(b"retry:")
            stopping = time.monotonic()
            serve.proc.send_signal(signal.SIGTERM)
            for _ in chunks:  # the stream ends (the server closes it) well before 5 s
                pass
            ended = time.monotonic() - stopping
    assert serve.proc.wait(timeout=15) == 0
    took = time.monotonic() - stopping
    assert ended < 2.5 and took < 4.5, (ended, took)
    output = serve.output()
    assert "timeout graceful shutdown exceeded" not in output, output
    assert "Traceback" not in output and "ERROR" not in output, output
