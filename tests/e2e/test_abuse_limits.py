"""Abuse limits on a real `leadhook serve` (uvicorn, h11) over loopback: a per-key rate limit
answering 429 with Retry-After, and oversized request heads answering 431 / 414."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from test_cli import ADMIN_TOKEN, Running, free_port, post
from test_cli import start as start  # the fixture

from leadhook.api.limits import TokenBuckets
from leadhook.bootstrap import build
from leadhook.domain.errors import ConflictError
from leadhook.settings import DEFAULT_RATE_LIMIT, Settings, SettingsError

pytestmark = pytest.mark.slow


def _serve(start: Callable[..., Running], tmp_path: Path, **env: str) -> str:
    port = free_port()
    proc = start(
        "serve", "--port", str(port), "--database-url", f"sqlite:///{tmp_path}/limits.db",
        name="serve", LEADHOOK_ADMIN_TOKEN=ADMIN_TOKEN, **env,
    )  # fmt: skip
    proc.wait_for("Press Ctrl-C")
    return f"http://127.0.0.1:{port}"


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_do_not(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    api = _serve(start, tmp_path, LEADHOOK_RATE_LIMIT="5,5")
    noisy = post(f"{api}/v1/tenants", {"mid": "noisy"}, ADMIN_TOKEN)["api_key"]
    calm = post(f"{api}/v1/tenants", {"mid": "calm"}, ADMIN_TOKEN)["api_key"]
    with httpx.Client(base_url=api, timeout=10) as client:
        statuses = []
        for _ in range(20):
            resp = client.get("/v1/leads", headers={"Authorization": f"Bearer {noisy}"})
            statuses.append(resp.status_code)
        assert statuses.count(200) >= 5 and statuses.count(429) >= 10, statuses
        assert set(statuses) == {200, 429}
        assert resp.status_code == 429
        # Padded copies of the key are no key at all (they once authenticated as it, each
        # with a bucket of its own), on the short way (a create) and the long one alike.
        for pad in (b"\xa0", b"\xa0\xa0", b"\x85"):
            token = b"Bearer " + noisy.encode() + pad
            for method, path in (("GET", "/v1/leads"), ("POST", "/v1/leads")):
                padded = client.request(
                    method, path, headers={"Authorization": token}, json={"fields": {}}
                )
                assert padded.status_code == 401, (pad, method, padded.status_code)
        assert resp.headers["content-type"] == "application/problem+json"
        assert resp.json()["type"].endswith("/rate-limited")
        wait = int(resp.headers["retry-after"])
        assert 1 <= wait <= 2
        # Another tenant's key is not slowed down by the noisy one.
        calm_resp = client.get("/v1/leads", headers={"Authorization": f"Bearer {calm}"})
        assert calm_resp.status_code == 200
        time.sleep(wait)
        again = client.get("/v1/leads", headers={"Authorization": f"Bearer {noisy}"})
        assert again.status_code == 200


def test_oversized_headers_get_431_and_long_urls_414(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    api = _serve(start, tmp_path)
    key = post(f"{api}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api, timeout=10) as client:
        assert client.get("/v1/leads", headers={**auth, "X-Pad": "p" * 8000}).status_code == 200
        big = client.get("/v1/leads", headers={**auth, "X-Pad": "p" * 40_000})
        assert big.status_code == 431
        assert big.headers["content-type"] == "application/problem+json"
        long_url = client.get("/v1/leads", params={"cursor": "c" * 10_000}, headers=auth)
        assert long_url.status_code == 414
    # Past uvicorn's own cap on a request head, h11 refuses it: a 4xx, never a 5xx.
    host, port = api.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /v1/leads HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 100_000 + b"\r\n\r\n")
        head = sock.recv(100)
    assert head.startswith(b"HTTP/1.1 4"), head


def test_the_rate_limit_setting() -> None:
    assert Settings.from_env({}).rate_limit == DEFAULT_RATE_LIMIT
    assert Settings.from_env({"LEADHOOK_RATE_LIMIT": "off"}).rate_limit is None
    assert Settings.from_env({"LEADHOOK_RATE_LIMIT": "0"}).rate_limit is None
    assert Settings.from_env({"LEADHOOK_RATE_LIMIT": "20"}).rate_limit == (20.0, 40.0)
    assert Settings.from_env({"LEADHOOK_RATE_LIMIT": "20,5"}).rate_limit == (20.0, 5.0)
    for bad in ("fast", "-1", "1,2,3", "nan"):
        with pytest.raises(SettingsError, match="LEADHOOK_RATE_LIMIT"):
            Settings.from_env({"LEADHOOK_RATE_LIMIT": bad})


def test_token_buckets_refill_at_the_rate_and_forget_old_keys() -> None:
    now = [0.0]
    buckets = TokenBuckets(rate=2, burst=3, clock=lambda: now[0])
    assert [buckets.take(b"k") for _ in range(3)] == [0, 0, 0]
    assert buckets.take(b"k") == pytest.approx(0.5)
    now[0] += 0.5
    assert buckets.take(b"k") == 0
    assert buckets.take(b"other") == 0  # keys are independent
    for i in range(20_000):
        buckets.take(str(i).encode())
    assert len(buckets._buckets) <= 10_000


def test_the_command_refuses_a_wrong_secret_key_clearly_without_printing_it(
    tmp_path: Path,
) -> None:
    from test_cli import clean_env, run

    from leadhook.adapters.secretbox import generate_key

    db = ["--database-url", f"sqlite:///{tmp_path}/keys.db"]
    first = run("tenants", "create", "acme", *db, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "keys.db.key").stat().st_mode & 0o777 == 0o600
    made = run("secret-key", cwd=tmp_path)
    assert made.returncode == 0
    wrong = made.stdout.strip()
    assert len(wrong) == 44 and wrong != generate_key()
    refused = run("tenants", "create", "b", *db, cwd=tmp_path,
                  env=clean_env(LEADHOOK_SECRET_KEY=wrong))  # fmt: skip
    assert refused.returncode == 2
    assert "is not the key this database" in refused.stderr
    assert wrong not in refused.stderr + refused.stdout
    malformed = run("tenants", "create", "b", *db, cwd=tmp_path,
                    env=clean_env(LEADHOOK_SECRET_KEY="x" * 44))  # fmt: skip
    assert malformed.returncode == 2 and "not a Fernet key" in malformed.stderr
    assert "x" * 44 not in malformed.stderr


def test_a_tenant_has_at_most_max_subscriptions_live_ones(
    start: Callable[..., Running], tmp_path: Path
) -> None:
    # Each event is copied to every subscription in the behaviour's transaction: a tenant with
    # 1,000 of them held every other tenant's writes for 10 s with one batch of 200 leads.
    base = _serve(start, tmp_path, LEADHOOK_MAX_SUBSCRIPTIONS="2")
    acme = post(f"{base}/v1/tenants", {"mid": "acme"}, ADMIN_TOKEN)["api_key"]
    other = post(f"{base}/v1/tenants", {"mid": "other"}, ADMIN_TOKEN)["api_key"]
    body = {"url": "https://hooks.example.com/in", "event_types": ["*"]}
    first, _ = (post(f"{base}/v1/subscriptions", body, acme)["id"] for _ in range(2))
    refused = httpx.post(
        f"{base}/v1/subscriptions", json=body, headers={"Authorization": f"Bearer {acme}"}
    )
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/conflict")
    assert (
        "has 2 subscriptions, the most it may have (LEADHOOK_MAX_SUBSCRIPTIONS=2)"
        in (problem["detail"])
    )
    listed = httpx.get(f"{base}/v1/subscriptions", headers={"Authorization": f"Bearer {acme}"})
    assert len(listed.json()["data"]) == 2  # nothing was made
    post(f"{base}/v1/subscriptions", body, other)  # another tenant's bound is its own
    # A deleted subscription no longer counts.
    gone = httpx.delete(
        f"{base}/v1/subscriptions/{first}", headers={"Authorization": f"Bearer {acme}"}
    )
    assert gone.status_code == 204
    post(f"{base}/v1/subscriptions", body, acme)


@pytest.mark.parametrize("value", ["0", "-1", "x", "1001"])
def test_max_subscriptions_must_be_a_whole_number_from_1_to_1000(value: str) -> None:
    with pytest.raises(SettingsError, match="LEADHOOK_MAX_SUBSCRIPTIONS"):
        Settings.from_env({"LEADHOOK_MAX_SUBSCRIPTIONS": value})
    assert Settings.from_env({}).max_subscriptions == 16


def test_a_tenant_past_the_bound_is_told_so(tmp_path: Path) -> None:
    # The CLI applies its own environment's bound: a tenant can hold more subscriptions than
    # a server with a lower one allows, which then said "has 3, the most it may have (=2)".
    url = f"sqlite:///{tmp_path}/bound.db"
    body = {"url": "https://hooks.example.com/in", "event_types": ["*"]}
    wide = build(Settings(database_url=url, max_subscriptions=3))
    mid = wide.tenants.create("acme").tenant.mid
    for _ in range(3):
        wide.subscriptions.create(mid, body)
    narrow = build(Settings(database_url=url, max_subscriptions=2), run_migrations=False)
    with pytest.raises(ConflictError) as refused:
        narrow.subscriptions.create(mid, body)
    said = str(refused.value)
    assert "has 3 subscriptions, more than it may have (LEADHOOK_MAX_SUBSCRIPTIONS=2)" in said
    wide.close()
    narrow.close()
