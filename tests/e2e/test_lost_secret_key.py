"""A secret key lost for good: `leadhook forget-secret-key`, run as an operator runs it.

Without its key a database is refused at every start (a new key too: it is "not the key"),
so rotate-secret, the way to give subscriptions new secrets, could not be reached. The command
forgets the lost key; leadhook then starts on a new key with every row kept.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import httpx
from delivery_support import Receiver
from test_cli import ADMIN_TOKEN, Running, clean_env, free_port, post, run, wait_until


def test_a_lost_key_is_forgotten_and_leadhook_serves_again(
    tmp_path: Path, start: Callable[..., Running], receiver: Receiver
) -> None:
    db = tmp_path / "leadhook.db"
    env = {
        "LEADHOOK_DATABASE_URL": f"sqlite:///{db}",
        "LEADHOOK_ADMIN_TOKEN": ADMIN_TOKEN,
        "LEADHOOK_ALLOW_PRIVATE_TARGETS": "1",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = start("serve", "--port", str(port), name="serve", **env)
    serve.wait_for("Ctrl-C")
    key = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    body = {"url": receiver.url(), "event_types": ["*"]}
    subs = [post(f"{base}/v1/subscriptions", body, key)["id"] for _ in range(2)]
    gone = post(f"{base}/v1/subscriptions", body, key)["id"]
    assert (
        httpx.delete(
            f"{base}/v1/subscriptions/{gone}", headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 204
    )
    post(f"{base}/v1/leads", {"fields": {"name": "Ada"}}, key)
    assert serve.terminate() == 0
    with closing(sqlite3.connect(db)) as conn:
        before = conn.execute("SELECT secret FROM subscriptions ORDER BY id").fetchall()

    # The key is still there: nothing to forget, and nothing is changed.
    kept = run("forget-secret-key", "--yes", cwd=tmp_path, env=clean_env(**env))
    assert kept.returncode == 2 and "is not lost" in kept.stderr, kept.stderr
    (tmp_path / "leadhook.db.key").unlink()  # lost, and no backup of it
    new_key = run("secret-key", cwd=tmp_path).stdout.strip()
    for keys in ({}, {"LEADHOOK_SECRET_KEY": new_key}):
        refused = run("tenants", "keys", "list", "acme", cwd=tmp_path, env=clean_env(**env, **keys))
        assert refused.returncode == 2, refused.stderr  # no key but the lost one will do
    unsure = run("forget-secret-key", cwd=tmp_path, env=clean_env(**env))
    assert unsure.returncode == 2 and "--yes" in unsure.stderr, unsure.stderr
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT secret FROM subscriptions ORDER BY id").fetchall() == before

    # Not while anything has the database open (a service, a sqlite3 shell): a running
    # service keeps writing under its key, and the new secrets are plaintext until a start.
    holder = sqlite3.connect(db)
    try:
        busy = run("forget-secret-key", "--yes", cwd=tmp_path, env=clean_env(**env))
    finally:
        holder.close()
    assert busy.returncode == 2, busy.stderr
    assert f"other processes still use this database (pid {os.getpid()} " in busy.stderr
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT secret FROM subscriptions ORDER BY id").fetchall() == before

    forgot = run("forget-secret-key", "--yes", cwd=tmp_path, env=clean_env(**env))
    assert forgot.returncode == 0, forgot.stderr
    assert all(sub in forgot.stdout for sub in subs) and gone not in forgot.stdout
    assert new_key not in forgot.stdout + forgot.stderr

    again = start(
        "serve", "--port", str(port), name="serve-again", **env, LEADHOOK_SECRET_KEY=new_key
    )
    again.wait_for("Ctrl-C")
    auth = {"Authorization": f"Bearer {key}"}
    for sub in subs:
        rotated = httpx.post(f"{base}/v1/subscriptions/{sub}/rotate-secret", headers=auth)
        assert rotated.status_code == 200, rotated.text
        receiver.secrets.append(rotated.json()["secret"])
    lead = post(f"{base}/v1/leads", {"fields": {"name": "Grace"}}, key)["lead"]["id"]

    def for_lead() -> list[object]:
        return [r for r in receiver.acked() if r.event["extra_data"]["entity_id"] == lead]

    wait_until(lambda: len(for_lead()) == len(subs))
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM leads").fetchone()[0] == 2
        stored = [row[0] for row in conn.execute("SELECT secret FROM subscriptions")]
        assert conn.execute("SELECT count(*) FROM key_check").fetchone()[0] == 1
    assert all(s.startswith("fernet:") for s in stored)  # encrypted under the new key
    assert again.terminate() == 0
    # Now the new key opens it: forgetting is refused again.
    refused = run(
        "forget-secret-key",
        "--yes",
        cwd=tmp_path,
        env=clean_env(**env, LEADHOOK_SECRET_KEY=new_key),
    )
    assert refused.returncode == 2 and "is not lost" in refused.stderr, refused.stderr
