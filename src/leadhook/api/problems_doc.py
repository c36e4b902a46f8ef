"""OpenAPI documentation of the problem+json answers every route may give."""

from __future__ import annotations

from typing import Any

from leadhook.api.models import Problem

# The schema sits under the media type the answers have (`application/problem+json`), not under
# `application/json` as a `model` would put it: a client, or a checker, reads the two apart.
_DOC = {"content": {"application/problem+json": {"schema": Problem.model_json_schema()}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_DOC, "description": "Malformed request (bad JSON, cursor or header)"},
    401: {**_DOC, "description": "Missing or unknown API key"},
    404: {**_DOC, "description": "No such object in this tenant"},
    409: {**_DOC, "description": "Conflicts with the current state"},
    412: {**_DOC, "description": "If-Match names an older version"},
    413: {**_DOC, "description": "Body over 1 MiB"},
    414: {**_DOC, "description": "URL (path and query) over 8 KiB"},
    422: {
        **_DOC,
        "description": "Invalid input; `errors` names each field (or a body that is not"
        " application/json, `unsupported-media-type`)",
    },
    429: {**_DOC, "description": "Over this API key's request rate; retry after `Retry-After`"},
    431: {**_DOC, "description": "Request headers over 16 KiB"},
    503: {
        **_DOC,
        "description": "The database is down or locked; retry after `Retry-After` (with the"
        " same Idempotency-Key)",
    },
    507: {**_DOC, "description": "The database's disk is full; the write was rolled back"},
}


def narrow_problems(method: str, operation: dict[str, Any]) -> None:
    """Drop from an operation's documented answers the problems it cannot give: 412 where no
    `If-Match` is read, 507 (a full disk refusing a write) where nothing is written."""
    responses = operation.get("responses", {})
    params = operation.get("parameters", [])
    headers = {str(p.get("name", "")).lower() for p in params if p.get("in") == "header"}
    if "if-match" not in headers:
        responses.pop("412", None)
    if method.lower() in ("get", "head"):
        responses.pop("507", None)
