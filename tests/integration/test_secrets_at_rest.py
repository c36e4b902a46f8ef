"""Webhook secrets at rest: encrypted in the row, decrypted to sign, keys rotate, a wrong key
is refused; on real SQLite files and PostgreSQL."""

from __future__ import annotations

import json
import logging
import stat
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from leadhook.adapters.db import migrate
from leadhook.adapters.db import tables as t
from leadhook.adapters.db.engine import make_engine
from leadhook.adapters.db.keycheck import key_opens, prepare_secrets
from leadhook.adapters.db.queue import SqlDeliveryQueue
from leadhook.adapters.secretbox import (
    PREFIX,
    SecretBox,
    SecretKeyError,
    generate_key,
    parse_keys,
)
from leadhook.bootstrap import Container, build
from leadhook.domain.operator import Operator
from leadhook.services.leads import BehaviourRequest
from leadhook.services.ports import Subscription
from leadhook.settings import Settings, SettingsError

MID = "acme"


def _stored(url: str) -> list[tuple[str, str | None]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(t.subscriptions.c.secret, t.subscriptions.c.previous_secret))
        out = [(r[0], r[1]) for r in rows]
    engine.dispose()
    return out


def _subscribe(c: Container) -> Subscription:
    c.tenants.create(MID)
    hook = {"url": "https://hooks.example.com/hook", "event_types": ["*"]}
    return c.subscriptions.create(MID, hook)


def _claimed_secrets(c: Container) -> set[tuple[str, ...]]:
    """Emit one event and claim its delivery: the secrets the dispatcher would sign with."""
    c.leads.create(BehaviourRequest(mid=MID, operator=Operator()), {"fields": {}})
    now = time.time()
    jobs = SqlDeliveryQueue(c.engine, c.gate).claim(
        worker_id="w", now=now + 1, limit=10, lease_until=now + 60, exclude=()
    )
    assert jobs
    return {job.signing_secrets(now) for job in jobs}


def test_the_row_holds_ciphertext_and_the_dispatcher_signs_with_the_secret(
    database_url: str,
) -> None:
    key = generate_key()
    c = build(Settings(database_url=database_url, secret_keys=(key,)))
    try:
        sub = _subscribe(c)
        secret = sub.secret
        assert secret.startswith("whsec_")
        [(stored, previous)] = _stored(database_url)
        assert stored.startswith(PREFIX) and "whsec_" not in stored and previous is None
        assert c.subscriptions.get(MID, sub.id).secret == secret
        assert _claimed_secrets(c) == {(secret,)}
        rotated = c.subscriptions.rotate_secret(MID, sub.id).secret
        [(stored, previous)] = _stored(database_url)
        assert previous is not None
        assert not any("whsec_" in v for v in (stored, previous))
        assert _claimed_secrets(c) == {(rotated, secret)}
    finally:
        c.close()


def test_key_rotation_reencrypts_every_secret_under_the_new_key(database_url: str) -> None:
    old, new = generate_key(), generate_key()
    c = build(Settings(database_url=database_url, secret_keys=(old,)))
    secret = _subscribe(c).secret
    c.close()
    before = _stored(database_url)

    # Step 2 of a rotation: the new key first, the old one still listed.
    c = build(Settings(database_url=database_url, secret_keys=(new, old)))
    c.close()
    after = _stored(database_url)
    assert after != before
    assert SecretBox([new]).decrypt(after[0][0]) == secret  # re-encrypted under the new key

    # Step 3: the old key dropped; everything still decrypts and signs.
    c = build(Settings(database_url=database_url, secret_keys=(new,)))
    try:
        assert _claimed_secrets(c) == {(secret,)}
    finally:
        c.close()


def test_a_command_line_job_with_the_keys_reordered_re_encrypts_nothing(
    database_url: str,
) -> None:
    # A listing run with `new,old` while services still run on `old` alone (a rotation's
    # step 2 done on one command before step 1 everywhere) must leave the secrets readable
    # by those services: only a service starting re-encrypts.
    old, new = generate_key(), generate_key()
    c = build(Settings(database_url=database_url, secret_keys=(old,)))
    secret = _subscribe(c).secret
    c.close()
    before = _stored(database_url)
    job = build(Settings(database_url=database_url, secret_keys=(new, old)), rewrite_secrets=False)
    assert len(job.subscriptions.list(MID, None, 50).data) == 1  # it read them
    job.close()
    assert _stored(database_url) == before
    c = build(Settings(database_url=database_url, secret_keys=(old,)))
    try:
        assert _claimed_secrets(c) == {(secret,)}
    finally:
        c.close()


def test_a_service_whose_key_no_longer_opens_the_secrets_answers_503_and_is_not_ready(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A service running on `old` while another started with `new,old` re-encrypted every
    # secret: its requests that need a secret answer 503 (not a 500 with a traceback each),
    # and its readiness probe fails, so a load balancer takes it out.
    from fastapi.testclient import TestClient

    from leadhook.api.app import create_app

    old, new = generate_key(), generate_key()
    admin = "rotating-admin"
    running = build(Settings(database_url=database_url, secret_keys=(old,), admin_token=admin))
    try:
        sub = _subscribe(running)
        key = running.tenants.issue_key(MID).api_key
        with TestClient(create_app(running)) as client:
            assert client.get("/readyz").status_code == 200
            build(Settings(database_url=database_url, secret_keys=(new, old))).close()
            auth = {"Authorization": f"Bearer {key}"}
            read = client.get(f"/v1/subscriptions/{sub.id}", headers=auth)
            assert read.status_code == 503, read.text
            assert read.headers["retry-after"] == "5"
            assert read.headers["content-type"] == "application/problem+json"
            assert "secret keys do not open" in read.json()["detail"]
            assert ".key" not in read.text  # no server path in an answer
            ready = client.get("/readyz")
            assert ready.status_code == 503
            # The database answers: the probe says what is wrong instead.
            assert ready.json()["detail"].startswith("this service's secret keys do not open")
            # A behaviour needs no secret: it commits, and its delivery waits in the outbox
            # for a process that has the key.
            caplog.set_level(logging.INFO, logger="leadhook.api")
            for _ in range(3):
                created = client.post("/v1/leads", json={"fields": {}}, headers=auth)
                assert created.status_code == 201, created.text
                again = client.get(f"/v1/subscriptions/{sub.id}", headers=auth)
                assert again.status_code == 503
            lead_id = created.json()["lead"]["id"]
            waiting = client.get(f"/v1/deliveries?lead_id={lead_id}", headers=auth)
            assert [d["status"] for d in waiting.json()["data"]] == ["pending"], waiting.text
            # A behaviour's success is no news of the key: one outage, logged once (it was
            # logged over and over, each time "available again" between).
            said = [r.getMessage() for r in caplog.records if r.name == "leadhook.api"]
            assert not any("again" in line for line in said), said
            # The secrets written back with the key this service holds: ready, and said so.
            build(Settings(database_url=database_url, secret_keys=(old, new))).close()
            assert client.get("/readyz").status_code == 200
            assert client.get(f"/v1/subscriptions/{sub.id}", headers=auth).status_code == 200
            said = [r.getMessage() for r in caplog.records if r.name == "leadhook.api"]
            assert [line for line in said if "again" in line] == [
                next(line for line in said if line.startswith("the secret keys open"))
            ], said
    finally:
        running.close()


def test_a_wrong_key_is_refused_at_start_with_a_clear_message(database_url: str) -> None:
    c = build(Settings(database_url=database_url, secret_keys=(generate_key(),)))
    c.close()  # no subscription yet: the key check alone catches the wrong key
    with pytest.raises(SecretKeyError, match="is not the key this database"):
        build(Settings(database_url=database_url, secret_keys=(generate_key(),)))


def test_the_quick_start_makes_a_private_key_file_beside_sqlite(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/leadhook.db"
    caplog.set_level(logging.DEBUG)
    c = build(Settings(database_url=url))
    secret = _subscribe(c).secret
    c.close()
    key_file = tmp_path / "leadhook.db.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    parse_keys(key)
    assert key not in caplog.text and "leadhook.db.key" in caplog.text
    assert "whsec_" not in json.dumps(_stored(url))
    # A restart reads the same file; the secret is intact.
    c = build(Settings(database_url=url))
    try:
        assert _claimed_secrets(c) == {(secret,)}
    finally:
        c.close()
    # The database without its key file (copied elsewhere) is refused, not silently re-keyed,
    # and no new key file is left behind, nor announced, for the next start to trip on.
    key_file.rename(tmp_path / "elsewhere.key")
    caplog.clear()
    with pytest.raises(SecretKeyError, match=r"key file .*leadhook\.db\.key is missing"):
        build(Settings(database_url=url))
    assert not key_file.exists()
    assert "new file" not in caplog.text
    (tmp_path / "elsewhere.key").rename(key_file)  # put back: it starts as before
    build(Settings(database_url=url)).close()


def test_a_new_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    # Its leads' personal data and the API keys' hashes were in a file made with the umask
    # (0644: anyone on the machine read it), beside a key file made 0600.
    url = f"sqlite:///{tmp_path}/leadhook.db"
    c = build(Settings(database_url=url))
    try:
        _subscribe(c)
        for name in ("leadhook.db", "leadhook.db-wal", "leadhook.db-shm", "leadhook.db.key"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        c.close()
    # A file that exists keeps the permissions its owner gave it.
    shared = tmp_path / "shared.db"
    shared.touch(mode=0o640)
    shared.chmod(0o640)
    build(Settings(database_url=f"sqlite:///{shared}")).close()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640


def test_migration_0002_encrypts_existing_plaintext_secrets(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine, "0001")
    plain, previous = "whsec_" + "A" * 43 + "=", "whsec_" + "B" * 43 + "="
    now = time.time()
    with engine.begin() as conn:
        conn.execute(insert(t.tenants).values(mid=MID, catalog=_catalog_json(), created_at=now))
        conn.execute(
            text(
                "INSERT INTO subscriptions (id, mid, url, event_types, description, enabled,"
                " secret, previous_secret, previous_secret_expires_at, max_in_flight,"
                " created_at, updated_at) VALUES ('s1', :mid, 'http://127.0.0.1:9/', '[\"*\"]',"
                " '', :yes, :secret, :previous, :expires, 1, :now, :now)"
            ),
            {"mid": MID, "yes": True, "secret": plain, "previous": previous,
             "expires": now + 3600, "now": now},
        )  # fmt: skip
    engine.dispose()
    with pytest.raises(RuntimeError, match="needs the secret key"):
        bare = make_engine(database_url)  # the bare alembic path knows no key: it refuses
        try:
            migrate.upgrade(bare)
        finally:
            bare.dispose()
    key = generate_key()
    upgraded = make_engine(database_url)
    try:
        migrate.upgrade(upgraded, secret_box=SecretBox((key,)))
        # The key's check value came with the secrets it encrypted (written at start, a
        # process upgrading at the same moment with another key could write its own in
        # between): that other key is refused now and changes nothing.
        assert key_opens(upgraded, SecretBox((key,)))
        with pytest.raises(SecretKeyError, match="is not the key"):
            prepare_secrets(upgraded, SecretBox((generate_key(),)))
    finally:
        upgraded.dispose()
    c = build(Settings(database_url=database_url, secret_keys=(key,)))
    try:
        [(stored, stored_previous)] = _stored(database_url)
        assert stored.startswith(PREFIX) and stored_previous and stored_previous.startswith(PREFIX)
        assert c.subscriptions.get(MID, "s1").secret == plain
        assert _claimed_secrets(c) == {(plain, previous)}
    finally:
        c.close()


def _catalog_json() -> str:
    from leadhook.domain.catalog import Catalog
    from leadhook.domain.catalog_entries import catalog_to_json

    return json.dumps(catalog_to_json(Catalog.default(MID, "bt1")))


def test_settings_refuse_a_malformed_key_without_echoing_it() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"LEADHOOK_SECRET_KEY": f"{generate_key()},not-a-key-at-all"})
    assert "key 2" in str(caught.value) and "not-a-key-at-all" not in str(caught.value)
    keys = (generate_key(), generate_key())
    settings = Settings.from_env({"LEADHOOK_SECRET_KEY": " , ".join(keys)})
    assert settings.secret_keys == keys
    assert keys[0] not in repr(settings)


def test_a_postgres_url_without_a_key_uses_a_key_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leadhook.adapters.secretbox import default_key_file

    monkeypatch.chdir(tmp_path)
    url = "postgresql+psycopg://u@db.internal/leadhook"
    assert default_key_file(url) == tmp_path / "leadhook.key"
    assert default_key_file("sqlite:///:memory:") is None
    assert make_url(url).database == "leadhook"


@pytest.mark.postgres
def test_forgetting_a_key_is_refused_while_another_leadhook_session_uses_the_database(
    postgres_url: str,
) -> None:
    from leadhook.bootstrap import forget_lost_key

    c = build(Settings(database_url=postgres_url, secret_keys=(generate_key(),)))
    _subscribe(c)
    c.close()
    c.engine.dispose()
    lost = Settings(database_url=postgres_url, secret_keys=(generate_key(),))  # not the key
    holder = make_engine(postgres_url)  # a service's engine: named "leadhook" to PostgreSQL
    try:
        with holder.connect() as conn:
            assert conn.execute(text("SELECT current_setting('application_name')")).scalar() == (
                "leadhook"
            )
            with pytest.raises(SecretKeyError, match="other processes still use this database"):
                forget_lost_key(lost)
            before = _stored(postgres_url)
        holder.dispose()
        assert _stored(postgres_url) == before  # refused: nothing changed
        forgotten = forget_lost_key(lost)  # nobody else on it now: it goes through
        assert [mid for mid, _ in forgotten] == [MID]
    finally:
        holder.dispose()
