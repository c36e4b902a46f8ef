"""docs/api.md is the product's own API reference: what the interface promises, it states, and
the API does what it states. Here, the promises it once left to other documents: an API key is
stored only as a hash, and a create's defaults (business type, lead pool, lifecycle stage)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ADMIN, Api, seeded_api
from sqlalchemy import select

from leadhook.adapters.db import tables as t

REFERENCE = Path(__file__).parents[2] / "docs" / "api.md"


@pytest.fixture
def api(backend: str, seeded_databases: Any) -> Iterator[Api]:
    with seeded_api(backend, seeded_databases) as api:
        yield api


def _reference() -> str:
    # One line per paragraph or table row, so that a statement can be matched across wraps.
    return re.sub(r"\n(?![\n|#-])\s*", " ", REFERENCE.read_text(encoding="utf-8"))


def _row(text: str, call: str) -> str:
    row = re.search(rf"^\| `{re.escape(call)}` .*$", text, re.MULTILINE)
    assert row is not None, f"docs/api.md has no row for {call}"
    return row.group(0)


def test_the_reference_says_only_a_hash_of_a_key_is_stored(api: Api) -> None:
    text = _reference()
    for call in ("POST /v1/tenants", "POST /v1/tenants/{mid}/keys"):
        assert re.search(r"only its (SHA-256 )?hash is stored", _row(text, call)), call

    first = api.client.post("/v1/tenants", json={"mid": "hashed"}, headers=ADMIN)
    second = api.client.post("/v1/tenants/hashed/keys", headers=ADMIN)
    assert first.status_code == second.status_code == 201
    # Both answers name the new key's id as `key_id` (the key's own object also as `id`).
    assert second.json()["key_id"] == second.json()["id"] and first.json()["key_id"]
    keys = {first.json()["api_key"], second.json()["api_key"]}
    with api.container.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(t.api_keys)).mappings()]
    stored = {str(v) for row in rows for v in row.values()}
    assert not keys & stored
    assert {hashlib.sha256(k.encode()).hexdigest() for k in keys} <= stored


def test_the_reference_states_what_a_create_defaults_to(api: Api) -> None:
    text = _reference()
    assert re.search(r"A create that names no `business_type` takes the tenant's default", text)
    assert re.search(r"the tenant's first \(`market`\) unless `lead_pool` names another", text)
    assert re.search(r"starts in the first\s+lifecycle stage", text)

    catalog = api.get("/v1/catalog").json()
    lead = api.create_lead(fields={"name": "甲"})
    assert lead["business_type"] == catalog["default_business_type"]
    assert lead["lead_pool"] == catalog["lead_pools"][0]["code"] == "market"
    first_stage = min(catalog["life_stages"], key=lambda s: s["order"])["code"]
    assert lead["life_status"] == first_stage
    assert lead["owner"] is None
