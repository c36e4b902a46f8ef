"""Schemathesis over the whole OpenAPI document: valid and invalid requests generated for
every operation, with real credentials, against the app on a real SQLite file. No answer
may be a server error, and every answer whose status the document lists must match the schema
listed for it (schemathesis' response_schema_conformance). A short budget (a few examples per
operation) keeps it under a minute. test_openapi_conformance.py walks every operation to a
success deterministically; this one explores the inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from api_helpers import ADMIN_TOKEN, seed_catalog
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import response_schema_conformance

from leadhook.api.app import create_app
from leadhook.bootstrap import build
from leadhook.settings import Settings

pytestmark = pytest.mark.slow
BUDGET = {"positive": 5, "negative": 4}


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """The app over a seeded tenant (catalog, a lead, a subscription), and the tenant's key."""
    container = build(Settings(database_url=f"sqlite:///{tmp_path}/st.db", admin_token=ADMIN_TOKEN))
    app = create_app(container)
    with TestClient(app) as client:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        key = client.post("/v1/tenants", json={"mid": "acme"}, headers=admin).json()["api_key"]
        seed_catalog(client, key)
        auth = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/leads", json={"fields": {"name": "L"}}, headers=auth).is_success
        hook = {"url": "https://hooks.example.com/x", "event_types": ["*"]}
        assert client.post("/v1/subscriptions", json=hook, headers=auth).is_success
    yield app, key
    container.close()


def test_no_operation_answers_a_server_error_or_an_undocumented_body(
    target: tuple[Any, str],
) -> None:
    app, key = target
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    server_errors: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30
    for operation in operations:
        token = ADMIN_TOKEN if operation.path.startswith("/v1/tenants") else key
        for mode, examples in BUDGET.items():
            if mode == "negative" and not len(operation.body):
                continue  # any path or query string is valid input: negatives cannot exist
            try:
                _explore(operation, mode, examples, token, server_errors)
            except Unsatisfiable:
                continue  # no invalid request exists for it
    assert server_errors == []


def _explore(operation: Any, mode: str, examples: int, token: str, errors: list[str]) -> None:
    """Send `examples` generated requests of `mode` to `operation`; note every 5xx, and every
    answer that does not match the schema documented for its status."""
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        if response.status_code >= 500:
            errors.append(
                f"{operation.label} -> {response.status_code}: {response.text[:300]}"
                f" ({case.path_parameters} {case.query} {str(case.body)[:200]})"
            )
            return
        try:
            case.validate_response(response, checks=[response_schema_conformance])
        except Exception as exc:  # schemathesis raises a group of check failures
            errors.append(f"{operation.label} -> {response.status_code}: {str(exc)[:500]}")

    check()
