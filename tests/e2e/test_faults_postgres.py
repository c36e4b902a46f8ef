"""Faults on a PostgreSQL this test owns, against a real `leadhook serve` over HTTP.

- The database stops: every request answers 503 problem+json with Retry-After (the process
  stays up, one log line for the outage); it starts again: requests succeed, no restart.
- A backend is terminated while a secret is rotated or a subscription created: 503, nothing
  changed, and no log line carries a webhook secret, an API key or the secret key.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from own_postgres import OwnPostgres
from sqlalchemy import create_engine, text
from test_cli import ADMIN_TOKEN, Running, free_port, post
from test_cli import start as start  # the fixture

from leadhook.adapters.secretbox import generate_key

pytestmark = pytest.mark.slow
SECRET_KEY = generate_key()
LEAKS = re.compile(r"whsec_|lh_[A-Za-z0-9_-]{16}")


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    yield pg
    pg.close()


@pytest.fixture
def served(own_pg: OwnPostgres, start: Callable[..., Running], tmp_path: Path) -> Iterator[Any]:
    """`leadhook serve` on the owned cluster (a database of its own), with a tenant."""
    name = f"db_{tmp_path.name[-20:].lower().replace('-', '_')}"
    admin = create_engine(own_pg.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    port = free_port()
    proc = start(
        "serve", "--port", str(port), "--database-url", own_pg.url(name), "--access-log",
        name="serve", LEADHOOK_ADMIN_TOKEN=ADMIN_TOKEN, LEADHOOK_SECRET_KEY=SECRET_KEY,
        LEADHOOK_ALLOW_PRIVATE_TARGETS="1",
    )  # fmt: skip
    proc.wait_for("Press Ctrl-C")
    api = f"http://127.0.0.1:{port}"
    key = post(f"{api}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    yield api, key, proc, own_pg.url(name)
    assert proc.proc.poll() is None, "leadhook exited during the test"


def _assert_no_secret_in(output: str, *values: str) -> None:
    assert LEAKS.search(output) is None, LEAKS.search(output)
    for value in values:
        assert value not in output
    assert SECRET_KEY not in output


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    assert int(resp.headers["retry-after"]) > 0
    body: dict[str, Any] = resp.json()
    return body


def test_an_outage_answers_503_and_leadhook_recovers_without_restart(
    served: Any, own_pg: OwnPostgres
) -> None:
    api, key, proc, _ = served
    auth = {"Authorization": f"Bearer {key}"}
    sub = post(f"{api}/v1/subscriptions", {"url": "http://127.0.0.1:9/", "event_types": ["*"]}, key)
    lead = post(f"{api}/v1/leads", {"fields": {"name": "before"}}, key)["lead"]["id"]

    own_pg.stop()
    stopped = time.monotonic()
    with httpx.Client(base_url=api, headers=auth, timeout=20) as client:
        for i in range(10):
            body = _problem(client.post("/v1/leads", json={"fields": {"name": f"x{i}"}}), 503)
            assert body["type"].endswith("/unavailable") and "retry" in body["detail"]
            _problem(client.get(f"/v1/leads/{lead}"), 503)
            _problem(client.post(f"/v1/subscriptions/{sub['id']}/rotate-secret"), 503)
        assert client.get("/readyz").status_code == 503
        assert client.get("/healthz").status_code == 200  # the process itself is fine
    assert proc.proc.poll() is None
    outage = time.monotonic() - stopped

    own_pg.start()
    restarted = time.monotonic()
    with httpx.Client(base_url=api, headers=auth, timeout=20) as client:
        while True:
            resp = client.post("/v1/leads", json={"fields": {"name": "after"}})
            if resp.status_code == 201:
                break
            _problem(resp, 503)
            assert time.monotonic() - restarted < 30, "not recovered 30 s after the restart"
            time.sleep(0.1)
        recovery = time.monotonic() - restarted
        leads = client.get("/v1/leads", params={"limit": 100}).json()["data"]
        # Nothing written during the outage: the lead from before and the one after only.
        assert sorted(lead["fields"]["name"] for lead in leads) == ["after", "before"]
        assert client.get(f"/v1/subscriptions/{sub['id']}/secret").json()["secret"] == sub["secret"]
    print(f"\noutage of {outage:.1f} s: 30 requests answered 503; recovered {recovery:.2f} s"
          " after PostgreSQL accepted connections again")  # fmt: skip

    metrics = httpx.get(f"{api}/metrics", timeout=10).text
    assert 'status="503"' in metrics  # the refused requests are counted
    _assert_no_secret_in(metrics, key, sub["secret"])
    out = proc.output()
    # One line for the outage, one for its end; never a traceback of a request.
    assert out.count("database unavailable") == 1, out
    assert out.count("database available again") == 1, out
    assert "Exception in ASGI application" not in out and "unhandled error" not in out
    _assert_no_secret_in(out, key, sub["secret"])


def test_the_first_write_after_the_server_dropped_its_connections_succeeds(
    served: Any, own_pg: OwnPostgres
) -> None:
    """The writer keeps its connection between groups: once the server had ended it (a
    restart, `idle_session_timeout`, a pooler's recycle), the next write answered 503 on a
    healthy database, while `/readyz` said ready (an operator's review)."""
    api, key, proc, url = served
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api, headers=auth, timeout=20) as client:
        assert client.post("/v1/leads", json={"fields": {"name": "warm"}}).status_code == 201
        killer = create_engine(url, isolation_level="AUTOCOMMIT")
        with killer.connect() as k:
            ended = k.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND state = 'idle'"
                )
            ).scalar_one()
        killer.dispose()
        assert ended >= 1
        for name in ("after idle sessions ended", "and again"):
            resp = client.post("/v1/leads", json={"fields": {"name": name}})
            assert resp.status_code == 201, resp.text
        own_pg.stop()
        own_pg.start()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready 30 s after the restart"
            time.sleep(0.1)
        resp = client.post("/v1/leads", json={"fields": {"name": "after a restart"}})
        assert resp.status_code == 201, resp.text
        names = [x["fields"]["name"] for x in client.get("/v1/leads").json()["data"]]
        assert sorted(names) == sorted(
            ["warm", "after idle sessions ended", "and again", "after a restart"]
        )  # each written once
    assert "the writer's connection was gone" in proc.output()


def _terminate_when_waiting(url: str, statement: str, hold: str, request: Callable[[], Any]) -> Any:
    """Lock with `hold`, run `request` (it blocks on the lock), terminate its backend."""
    locker = create_engine(url)
    killer = create_engine(url, isolation_level="AUTOCOMMIT")
    result: list[Any] = []
    with locker.connect() as conn:
        conn.execute(text(hold))
        worker = threading.Thread(target=lambda: result.append(request()))
        worker.start()
        deadline = time.monotonic() + 20
        killed = 0
        with killer.connect() as k:
            while not killed:
                assert time.monotonic() < deadline, "the request never waited on the lock"
                killed = k.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query ILIKE :q"
                    ),
                    {"q": statement + "%"},
                ).scalar_one()
                time.sleep(0.05)
        worker.join(20)
        conn.rollback()
    locker.dispose()
    killer.dispose()
    return result[0]


def test_a_backend_terminated_mid_statement_leaks_no_secret(served: Any) -> None:
    api, key, proc, url = served
    auth = {"Authorization": f"Bearer {key}"}
    sub = post(f"{api}/v1/subscriptions", {"url": "http://127.0.0.1:9/", "event_types": ["*"]}, key)
    with httpx.Client(base_url=api, headers=auth, timeout=30) as client:
        rotation = _terminate_when_waiting(
            url,
            "UPDATE subscriptions",
            f"SELECT id FROM subscriptions WHERE id = '{sub['id']}' FOR UPDATE",
            lambda: client.post(f"/v1/subscriptions/{sub['id']}/rotate-secret"),
        )
        _problem(rotation, 503)
        # The rotation did not happen: the secret is the one from before.
        assert client.get(f"/v1/subscriptions/{sub['id']}/secret").json()["secret"] == sub["secret"]

        created = _terminate_when_waiting(
            url,
            "INSERT INTO subscriptions",
            "LOCK TABLE subscriptions IN SHARE ROW EXCLUSIVE MODE",
            lambda: client.post(
                "/v1/subscriptions", json={"url": "http://127.0.0.1:9/b", "event_types": ["*"]}
            ),
        )
        _problem(created, 503)
        assert len(client.get("/v1/subscriptions").json()["data"]) == 1
        # And it works again at once, on a new connection.
        rotated = client.post(f"/v1/subscriptions/{sub['id']}/rotate-secret")
        assert rotated.status_code == 200, rotated.text
    time.sleep(0.5)  # let the last log lines reach the file
    _assert_no_secret_in(proc.output(), key, sub["secret"], rotated.json()["secret"])
