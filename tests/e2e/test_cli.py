"""The `leadhook` command, run as a user runs it: the installed executable in a subprocess."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leadhook.domain.events import EVENT_TYPES
from leadhook.domain.signing import webhook_headers

LEADHOOK = Path(sys.executable).parent / "leadhook"
ADMIN_TOKEN = "cli-test-admin-token"
STARTUP = 30.0  # seconds: generous, the suite may share two cores with other work


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADHOOK_")}
    return {**env, "COLUMNS": "160", **extra}


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LEADHOOK), *args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


class Running:
    """A `leadhook` process in the background, its output captured in a file."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str], name: str) -> None:
        self.log = cwd / f"{name}.out"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(LEADHOOK), *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout: float = STARTUP) -> str:
        """Wait until `text` is in the output; fail with the output if the process ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before printing {text!r}:\n{out}")
            time.sleep(0.05)
        pytest.fail(f"no {text!r} after {timeout}s:\n{self.output()}")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` and return the exit code, which must come within `timeout` seconds."""
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Start `leadhook` processes that are killed at the end of the test if still running."""
    procs: list[Running] = []

    def starter(*args: str, name: str, **env: str) -> Running:
        proc = Running(list(args), tmp_path, clean_env(**env), name)
        procs.append(proc)
        return proc

    yield starter
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


def wait_until(check: Callable[[], bool], timeout: float = STARTUP) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def post(url: str, body: dict[str, Any], token: str, status: int = 201) -> dict[str, Any]:
    resp = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert resp.status_code == status, resp.text
    data: dict[str, Any] = resp.json()
    return data


# ---- commands that finish ----------------------------------------------------------------


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = run("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "tenants", "subscriptions", "deliveries", "demo", "listen"):
        assert command in result.stdout
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("leadhook ")


def test_tenants_and_keys_without_http(tmp_path: Path) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path}/cli.db"]
    created = run("tenants", "create", "acme", "--name", "Acme 公司", *db, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert "shown once" in created.stdout
    first_key = next(w for w in created.stdout.split() if w.startswith("lh_"))

    issued = run("tenants", "keys", "issue", "acme", "--json", *db, cwd=tmp_path)
    assert issued.returncode == 0, issued.stderr
    second = json.loads(issued.stdout)
    assert second["api_key"].startswith("lh_") and second["api_key"] != first_key

    revoked = run("tenants", "keys", "revoke", "acme", second["id"], *db, cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked." in revoked.stdout and "already" not in revoked.stdout
    again = run("tenants", "keys", "revoke", "acme", second["id"], *db, cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # idempotent, and it says so
    assert "was already revoked, at" in again.stdout and "nothing changed" in again.stdout

    listed = run("tenants", "keys", "list", "acme", "--json", *db, cwd=tmp_path)
    keys = {k["id"]: k for k in json.loads(listed.stdout)["data"]}
    assert len(keys) == 2 and keys[second["id"]]["revoked_at"] is not None
    assert "api_key" not in json.dumps(keys)
    assert next(k for k in keys.values() if k["revoked_at"] is None)["prefix"] == first_key[:10]

    again = run("tenants", "create", "acme", *db, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr

    assert run("tenants", "create", "beta", *db, cwd=tmp_path).returncode == 0
    tenants = run("tenants", "list", "--json", *db, cwd=tmp_path)
    assert tenants.returncode == 0, tenants.stderr
    listed_tenants = json.loads(tenants.stdout)["data"]
    assert [x["mid"] for x in listed_tenants] == ["acme", "beta"]  # oldest first
    assert listed_tenants[0]["name"] == "Acme 公司"
    assert "api_key" not in tenants.stdout
    table = run("tenants", "list", *db, cwd=tmp_path)
    assert table.returncode == 0 and "acme" in table.stdout and "beta" in table.stdout


@pytest.mark.postgres
def test_a_command_on_what_a_postgres_database_holds_makes_nothing_in_an_empty_one(
    tmp_path: Path, postgres_url: str
) -> None:
    # On an empty PostgreSQL database a listing made every table and a ./leadhook.key in
    # whatever directory it ran from; the services, started with their own key, were then
    # refused as "not the key this database's webhook secrets were encrypted with".
    from sqlalchemy import create_engine, inspect

    url = postgres_url
    for args in (
        ("tenants", "list"),
        ("tenants", "keys", "list", "acme"),
        ("subscriptions", "list", "acme"),
        ("deliveries", "list", "acme"),
    ):
        result = run(*args, "--database-url", url, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "no leadhook database at" in result.stderr, args
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "leadhook.key").exists()
    engine = create_engine(url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    made = run("tenants", "create", "acme", "--database-url", url, cwd=tmp_path)
    assert made.returncode == 0, made.stderr  # the command that makes one still does
    listed = run("tenants", "list", "--database-url", url, cwd=tmp_path)
    assert listed.returncode == 0 and "acme" in listed.stdout, listed.stderr


def test_a_listing_reads_while_another_program_holds_the_write_lock(tmp_path: Path) -> None:
    # Every command migrated on open, taking SQLite's write lock even to list: behind a held
    # lock it waited 30 s, then printed a 100-line traceback.
    import sqlite3

    db = ["--database-url", f"sqlite:///{tmp_path}/locked.db"]
    assert run("tenants", "create", "acme", *db, cwd=tmp_path).returncode == 0
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        listed = run("tenants", "list", *db, cwd=tmp_path)
        assert listed.returncode == 0 and "acme" in listed.stdout, listed.stderr
        assert time.monotonic() - started < 15  # read at once, not after the busy timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    # A path SQLite cannot open is one line: the driver's reason and what to do, no
    # SQLAlchemy wrapping ("(sqlite3.OperationalError)", "Background on this error").
    folder = run(
        "tenants", "create", "acme", "--database-url", f"sqlite:///{tmp_path}", cwd=tmp_path
    )
    assert folder.returncode == 1, folder.stderr
    (line,) = folder.stderr.strip().splitlines()
    assert "unable to open database file: the file or its folder cannot be opened" in line
    assert "Background" not in line and "sqlite3." not in line


def test_a_command_on_what_a_database_holds_makes_no_database(tmp_path: Path) -> None:
    # A mistyped path made a new, migrated database and its key file, then said "tenant not
    # found": the typo hidden, the stray files left.
    missing = tmp_path / "typo" / "cli.db"
    db = ["--database-url", f"sqlite:///{missing}"]
    for args in (
        ("tenants", "list"),
        ("tenants", "keys", "list", "acme"),
        ("tenants", "keys", "issue", "acme"),
        ("tenants", "keys", "revoke", "acme", "k1"),
        ("forget-secret-key", "--yes"),
    ):
        result = run(*args, *db, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert f"no database at {missing}" in result.stderr, args
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "typo").exists()
    # A folder that cannot be made is one line and exit 2, for the commands that make one too.
    for args in (("tenants", "create", "acme"), ("worker",)):
        made = run(*args, "--database-url", "sqlite:////proc/nope/x.db", cwd=tmp_path)
        assert made.returncode == 2, (args, made.stderr)
        assert "cannot open sqlite:////proc/nope/x.db" in made.stderr
        assert "Traceback" not in made.stderr
    # A URI filename names the same file: found when it is there, refused when it is not.
    # (A URI filename has no key file beside it: the key comes from the environment.)
    from leadhook.adapters.secretbox import generate_key

    env = clean_env(LEADHOOK_SECRET_KEY=generate_key())
    real = tmp_path / "uri.db"
    url = f"sqlite:///{real}"
    made = run("tenants", "create", "acme", "--database-url", url, cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    for target, code in ((real, 0), (missing, 2)):
        url = f"sqlite:///file:{target}?uri=true"
        listed = run(
            "tenants", "keys", "list", "acme", "--database-url", url, cwd=tmp_path, env=env
        )
        assert listed.returncode == code, (target, listed.stdout, listed.stderr)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("listen", "--secret", "nope"), "whsec_"),  # base64, but not a leadhook secret
        (("listen", "--forward-to", "notaurl"), "--forward-to"),
        (("listen", "--forward-to", "ftp://127.0.0.1/x"), "--forward-to"),
        (("listen", "--forward-to", "http://[::1"), "--forward-to"),
    ],
)
def test_listen_refuses_a_bad_option_before_it_listens(
    tmp_path: Path, args: tuple[str, ...], said: str
) -> None:
    result = run(*args, "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert said in result.stderr
    # The port already taken: still the bad option that is named (checked before binding).
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run(*args, "--port", str(port), cwd=tmp_path)
    assert busy.returncode == 2, busy.stdout + busy.stderr
    assert said in busy.stderr and "cannot listen" not in busy.stderr


@pytest.mark.parametrize("command", ["listen", "serve"])
def test_a_host_that_is_no_name_is_a_clean_error(tmp_path: Path, command: str) -> None:
    # A name IDNA cannot encode made `bind` raise TypeError: a traceback, not an error line.
    db = ["--database-url", f"sqlite:///{tmp_path}/h.db"] if command == "serve" else []
    result = run(command, "--host", "\u202e\u200b", "--port", "0", *db, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot listen on" in result.stderr and "is not a host name or address" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_concurrency_is_bounded(tmp_path: Path, command: str) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path}/c.db"]
    result = run(command, "--concurrency", "10001", *db, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--concurrency" in result.stderr and "10000" in result.stderr


@pytest.mark.parametrize(
    ("option", "said"),
    [(("--timezone", "Mars/Olympus"), "timezone"), (("--object-id", ""), "object_id")],
)
def test_a_bad_option_of_tenants_create_is_exit_2(
    tmp_path: Path, option: tuple[str, ...], said: str
) -> None:
    db = ["--database-url", f"sqlite:///{tmp_path}/t.db"]
    result = run("tenants", "create", "acme", *option, *db, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: {said}" in result.stderr
    made = run("tenants", "create", "acme", *db, cwd=tmp_path)
    assert made.returncode == 0, made.stderr  # nothing was made by the refused call
    again = run("tenants", "create", "acme", *db, cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr  # a failure, not a typo


def test_a_bad_switch_in_the_environment_stops_serve(tmp_path: Path) -> None:
    env = clean_env(LEADHOOK_ALLOW_PRIVATE_TARGETS="maybe")
    result = run("serve", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "LEADHOOK_ALLOW_PRIVATE_TARGETS" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "garbage",
        "postgresql://u:secretpw@h:notaport/x",
        "mysql://u:secretpw@h/db",
        "postgresql+asyncpg://u@h/db",
        "sqlite+aiosqlite:///x.db",
        "sqlite:///:memory:",
        "sqlite://",
        # The driver drops options it does not read (with a warning): the file was opened
        # for writing all the same.
        "sqlite:///x.db?mode=ro",
        "sqlite:///x.db?timeout=1&uri=false",
    ],
)
def test_a_database_url_leadhook_cannot_use_is_one_line_and_exit_2(
    tmp_path: Path, url: str
) -> None:
    for args, env in (
        (("worker", "--database-url", url), clean_env()),
        (("serve", "--port", str(free_port())), clean_env(LEADHOOK_DATABASE_URL=url)),
    ):
        result = run(*args, cwd=tmp_path, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.startswith("error: the database URL"), result.stderr
        assert "Traceback" not in result.stderr and "secretpw" not in result.stderr
    assert not list(tmp_path.iterdir())  # nothing made: no key file, no database


def test_demo_delivers_and_verifies_every_event_type(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for event_type in EVENT_TYPES:
        assert f"✔ verified  {event_type}" in result.stdout
    assert "21 of 21 events delivered" in result.stdout
    # Team members show by name, as owners do.
    assert "members: 李四 (li_si), 张伟 (zhang_wei)" in result.stdout
    assert "owner: - → 王芳" in result.stdout
    assert time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == []  # temporary storage only
    assert "key file" not in result.stdout + result.stderr  # none made, none to keep


# ---- long-running commands ---------------------------------------------------------------


def test_serve_on_the_default_database_then_stop_cleanly(
    tmp_path: Path, start: Callable[..., Running]
) -> None:
    port = free_port()
    serve = start("serve", "--port", str(port), name="serve")
    out = serve.wait_for("Ctrl-C")
    base = f"http://127.0.0.1:{port}"
    assert f"{base}/docs" in out and f"{base}/metrics" in out
    assert "generated for this run" in out
    token = out.split("Admin token: ", 1)[1].split()[0]
    assert httpx.get(f"{base}/healthz").status_code == 200
    # The banner's commands run as printed, from where serve runs: the executable as it was
    # invoked (here by its absolute path), the admin token filled in.
    command, curl = _banner_commands(out)
    assert command == f"{LEADHOOK} tenants create acme"
    assert f"curl -X POST {base}/v1/tenants -H 'Authorization: Bearer {token}'" in curl
    created = subprocess.run(
        shlex.split(command), cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert created.returncode == 0 and "shown once" in created.stdout, created.stderr

    tenant = post(f"{base}/v1/tenants", {"mid": "acme-http"}, token)
    lead = post(f"{base}/v1/leads", {"fields": {"name": "Ada"}}, tenant["api_key"])
    events = httpx.get(
        f"{base}/v1/events", headers={"Authorization": f"Bearer {tenant['api_key']}"}
    )
    assert [e["event_id"] for e in events.json()["data"]] == [lead["events"][0]["event_id"]]
    assert (tmp_path / "leadhook.db").exists()

    assert serve.terminate() == 0
    assert "leadhook stopped." in serve.output()
    # Twice in a row on the same database: the banner names a tenant not taken yet.
    again = start("serve", "--port", str(free_port()), name="serve-again")
    command, _ = _banner_commands(again.wait_for("Ctrl-C"))
    assert command == f"{LEADHOOK} tenants create acme-2"
    assert again.terminate() == 0


def _banner_commands(out: str) -> tuple[str, str]:
    """Return the CLI command and the curl command that the serve banner prints."""
    lines = out.split("Create a tenant", 1)[1].splitlines()
    return lines[1].strip(), lines[2].strip().removeprefix("or: ")


def test_worker_delivers_until_interrupted(tmp_path: Path, start: Callable[..., Running]) -> None:
    worker = start(
        "worker",
        "--concurrency",
        "4",
        name="worker",
        LEADHOOK_DATABASE_URL=f"sqlite:///{tmp_path}/w.db",
    )
    worker.wait_for("Ctrl-C")
    assert "concurrency 4" in worker.output()
    assert worker.terminate(signal.SIGINT) == 0
    assert "worker stopped" in worker.output()


def test_listen_verifies_what_serve_delivers(tmp_path: Path, start: Callable[..., Running]) -> None:
    api_port, listen_port, downstream_port = free_port(), free_port(), free_port()
    serve = start(
        "serve",
        "--port",
        str(api_port),
        "--database-url",
        f"sqlite:///{tmp_path}/listen.db",
        name="serve",
        LEADHOOK_ADMIN_TOKEN=ADMIN_TOKEN,
        LEADHOOK_ALLOW_PRIVATE_TARGETS="1",
    )
    # The downstream receiver, without a secret: it shows deliveries unverified.
    downstream = start("listen", "--port", str(downstream_port), name="downstream")
    banner = serve.wait_for("Ctrl-C")
    # An admin token the operator set is never printed (a start's output goes to logs); the
    # banner's curl names its variable instead, and says where that runs as printed (a token
    # set on serve's command line is not in another terminal's environment).
    assert ADMIN_TOKEN not in banner and '"Authorization: Bearer $LEADHOOK_ADMIN_TOKEN"' in banner
    assert "or, with LEADHOOK_ADMIN_TOKEN exported in that shell: curl" in banner
    base = f"http://127.0.0.1:{api_port}"
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    hook = f"http://127.0.0.1:{listen_port}/hook"
    sub = post(f"{base}/v1/subscriptions", {"url": hook, "event_types": ["*"]}, key)

    # Two secrets in the environment, comma-separated, as during a rotation.
    retired = "whsec_" + "B" * 32
    listen = start(
        "listen",
        "--port",
        str(listen_port),
        "--forward-to",
        f"http://127.0.0.1:{downstream_port}/in",
        name="listen",
        LEADHOOK_LISTEN_SECRET=f"{retired},{sub['secret']}",
    )
    assert "Verifying signatures with 2 secret(s)" in listen.wait_for("Ctrl-C")
    assert "no --secret given" in downstream.wait_for("Ctrl-C")

    created = post(f"{base}/v1/leads", {"fields": {"name": "Ada Lovelace"}}, key)
    lead, event_id = created["lead"], created["events"][0]["event_id"]
    out = listen.wait_for(f"lead {lead['id']}  v1")
    assert "✔ verified  object_create" in out and "name = Ada Lovelace" in out
    assert f"forwarded {event_id} to http://127.0.0.1:{downstream_port}/in: 204" in (
        listen.wait_for("/in: 204")
    )
    assert "⚠ unverified  object_create" in downstream.wait_for(f"lead {lead['id']}")

    body = b'{"not": "an event"}'
    now = int(time.time())
    good = webhook_headers([sub["secret"]], "msg_1", now, body, "test")
    assert httpx.post(hook, content=body, headers=good).status_code == 400
    forged = webhook_headers(["whsec_" + "A" * 32], "msg_1", now, body, "test")
    assert httpx.post(hook, content=body, headers=forged).status_code == 401
    assert httpx.post(hook, content=body).status_code == 401
    # An event of a type newer than this leadhook: acknowledged (and passed on), not refused.
    newer = json.dumps({**created["events"][0], "event_type": "object_merge"}).encode()
    signed = webhook_headers([sub["secret"]], event_id, now, newer, "test")
    assert httpx.post(hook, content=newer, headers=signed).status_code == 204
    assert "object_merge" in listen.wait_for("does not know: acknowledged")

    def delivered() -> bool:
        url = f"{base}/v1/subscriptions/{sub['id']}/deliveries?status=delivered"
        resp = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
        return len(resp.json()["data"]) == 1

    wait_until(delivered)

    assert listen.terminate() == 0
    assert "5 received, 2 verified, 3 rejected" in listen.output()
    assert downstream.terminate() == 0
    assert serve.terminate() == 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_waits_for_a_postgresql_server_not_there_yet(
    start: Callable[..., Running], stop: int
) -> None:
    # A worker started before its database (a machine booting, a deploy) exited 1, with
    # nothing to start it again outside serve (a PostgreSQL operator's review).
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/leadhook"  # nothing listens there
    worker = start("worker", "--database-url", url, name="waiting")
    said = worker.wait_for("trying again in 2 s")
    assert "cannot open postgresql://postgres@127.0.0.1" in said and "yet" in said
    assert worker.proc.poll() is None
    assert worker.terminate(stop) == 0  # stopped while it waits: nothing to undo


@pytest.mark.postgres
def test_a_worker_set_up_wrong_does_not_wait(tmp_path: Path, postgres_url: str) -> None:
    # A database that does not exist does not come by waiting: one line, exit 1, at once.
    from sqlalchemy.engine import make_url

    missing = make_url(postgres_url).set(database="leadhook_no_such_database")
    url = missing.render_as_string(hide_password=False)
    started = time.monotonic()
    result = run("worker", "--database-url", url, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not exist" in result.stderr and time.monotonic() - started < 20
