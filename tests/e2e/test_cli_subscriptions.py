"""`leadhook subscriptions` and `leadhook deliveries`: a tenant's webhooks from the shell."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient
from test_cli import clean_env, run

from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.settings import Settings


class _Hook(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        type(self).seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    _Hook.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


def test_a_tenants_webhooks_from_the_shell(tmp_path: Path, hook: str) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    env = clean_env(LEADHOOK_DATABASE_URL=url, LEADHOOK_ALLOW_PRIVATE_TARGETS="1")

    def cli(*args: str) -> tuple[int, str, str]:
        done = run(*args, cwd=tmp_path, env=env)
        return done.returncode, done.stdout, done.stderr

    code, out, err = cli("tenants", "create", "acme", "--json")
    assert code == 0, err
    key = json.loads(out)["api_key"]
    code, out, err = cli(
        "subscriptions", "create", "acme", "--url", hook, "--event-type", "object_create",
        "--event-type", "object_add_notes", "--description", "CRM", "--json",
    )  # fmt: skip
    assert code == 0, err
    made = json.loads(out)
    assert made["secret"].startswith("whsec_") and made["description"] == "CRM"
    assert made["event_types"] == ["object_create", "object_add_notes"]

    # What the API answers is what the shell made (the same services, the same body).
    container = build(Settings(database_url=url, allow_private_targets=True))
    try:
        with TestClient(create_app(container)) as api:
            auth = {"Authorization": f"Bearer {key}"}
            listed = api.get("/v1/subscriptions", headers=auth).json()["data"]
            assert [s["id"] for s in listed] == [made["id"]]
            lead = api.post("/v1/leads", json={"fields": {"name": "张三"}}, headers=auth)
            assert lead.status_code == 201, lead.text
    finally:
        container.close()

    code, out, err = cli("subscriptions", "list", "acme", "--json")
    assert code == 0, err
    (sub,) = json.loads(out)["data"]
    assert sub["id"] == made["id"] and "secret" not in sub
    assert sub["circuit"]["state"] == "closed"
    code, out, err = cli("subscriptions", "list", "acme")  # the table shows whole ids
    assert code == 0 and made["id"] in out, out

    # A test event, signed, answered 200 by the endpoint: exit 0.
    code, out, err = cli("subscriptions", "test", "acme", made["id"])
    assert code == 0 and "HTTP 200" in out and "acknowledged" in out, out + err
    (received,) = _Hook.seen
    assert received["webhook-signature"].startswith("v1,")

    code, out, err = cli("deliveries", "list", "acme", "--json")
    assert code == 0, err
    (delivery,) = json.loads(out)["data"]
    assert delivery["status"] == "pending" and delivery["event_type"] == "object_create"
    code, out, err = cli("deliveries", "list", "acme")
    assert code == 0 and delivery["id"] in out, err
    # Its attempts count the current schedule, and the table says so.
    assert "attempts*" in out and "starts again at 0" in out, out
    code, out, err = cli("deliveries", "list", "acme", "--status", "dead", "--json")
    assert json.loads(out)["data"] == []
    code, out, err = cli("deliveries", "list", "acme", "--status", "dead")
    assert code == 0 and out.strip() == "Deliveries of acme: none", out  # not an empty box
    code, out, err = cli("deliveries", "retry", "acme", delivery["id"])
    assert code == 1 and "already pending" in err, out + err

    code, out, err = cli("subscriptions", "disable", "acme", made["id"])
    assert code == 0 and "disabled via the command line" in out, err
    assert "via the API" not in out
    code, out, err = cli("subscriptions", "enable", "acme", made["id"])
    assert code == 0 and "enabled" in out, err
    code, out, err = cli(
        "subscriptions", "replay", "acme", made["id"], "--since", "2020-01-01T00:00:00Z"
    )
    assert code == 0 and "0 deliveries" in out, err  # nothing finished yet
    # Unix seconds too, as the API's `since` takes them (it was refused: "must be RFC 3339").
    code, out, err = cli("subscriptions", "replay", "acme", made["id"], "--since", "0")
    assert code == 0 and "0 deliveries" in out, err
    replay_failed = ("subscriptions", "replay", "acme", made["id"], "--since", "0")
    code, out, err = cli(*replay_failed, "--status", "failed")
    assert code == 0 and "0 deliveries" in out and "sent now" in out, err
    code, out, err = cli(*replay_failed, "--status", "pending")
    assert code == 2 and "status:" in err, (out, err)
    # What it never got: nothing (its lead's create was queued); a subscription made now gets
    # the lead's create from the log, once.
    missing = ("subscriptions", "replay-missing", "acme")
    code, out, err = cli(*missing, made["id"], "--since", "0")
    assert code == 0 and "0 missing events queued" in out, (out, err)
    code, out, err = cli("subscriptions", "create", "acme", "--url", hook, "--json")
    late = json.loads(out)["id"]
    code, out, err = cli(
        *missing, late, "--since", "2020-01-01T00:00:00Z", "--until", "2999-01-01T00:00:00Z"
    )
    assert code == 0 and f"1 missing event queued for {late}." in out, (out, err)
    assert "More are missing" not in out and "Nothing more is missing." in out
    code, out, err = cli(*missing, late, "--since", "0")
    assert code == 0 and "0 missing events queued" in out, (out, err)
    code, out, err = cli(*missing, late, "--since", "10", "--until", "5")
    assert code == 2 and "until: must be later than since" in err, (out, err)


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (("subscriptions", "create", "acme", "--url", "ftp://x/h"), 2, "url:"),
        (("subscriptions", "create", "nope", "--url", "https://example.com/h"), 1, "not found"),
        (("subscriptions", "test", "acme", "sub_nope"), 1, "not found"),
        (("subscriptions", "replay", "acme", "sub_nope", "--since", "yesterday"), 2, "since:"),
        (("deliveries", "list", "acme", "--status", "bogus"), 2, "status:"),
        (
            (
                "subscriptions",
                "replay",
                "acme",
                "sub_nope",
                "--since",
                "2020-01-01T00:00:00Z",
                "--status",
                "pending",
            ),
            2,
            "status: must be dead, delivered, failed, or omitted (dead and delivered)",
        ),
        (("deliveries", "list", "acme", "--limit", "0"), 2, "--limit"),
        (("deliveries", "retry", "acme", "dlv_nope"), 1, "not found"),
        (("subscriptions", "list", "acmee"), 1, "tenant 'acmee' not found"),
        (("deliveries", "list", "acmee"), 1, "tenant 'acmee' not found"),
    ],
)
def test_a_bad_call_says_why_and_exits_non_zero(
    tmp_path: Path, args: tuple[str, ...], code: int, said: str
) -> None:
    env = clean_env(LEADHOOK_DATABASE_URL=f"sqlite:///{tmp_path}/cli.db")
    assert run("tenants", "create", "acme", cwd=tmp_path, env=env).returncode == 0
    done = run(*args, cwd=tmp_path, env=env)
    assert done.returncode == code, done.stdout + done.stderr
    assert said in done.stderr, done.stderr
