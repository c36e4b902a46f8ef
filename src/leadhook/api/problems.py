"""The one place where errors become RFC 9457 problem+json responses."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from leadhook.domain.errors import LeadhookError, UnsupportedMediaTypeError, ValidationError

PROBLEM_TYPE_BASE = "https://leadhook.dev/problems/"
log = logging.getLogger("leadhook.api")


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    text = json.dumps(body, ensure_ascii=False)
    if not _encodable(text):
        # Echoed input with an unpaired surrogate cannot be UTF-8: send it \u-escaped.
        text = json.dumps(body)
    return Response(
        text,
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _loc(loc: Any) -> list[str | int]:
    return [p if isinstance(p, int) else str(p) for p in loc]


async def _leadhook_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LeadhookError)
    errors = None
    if isinstance(exc, ValidationError):
        errors = [{"loc": _loc(e.loc), "msg": e.msg} for e in exc.errors]
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if isinstance(exc, UnsupportedMediaTypeError):
        # RFC 9110 15.5.16 and RFC 5789: say which media type the method accepts.
        method = request.method.upper()
        name = "Accept-Patch" if method == "PATCH" else "Accept-Post"
        headers = {name: exc.expected} if method in ("POST", "PATCH") else None
    return problem(exc.status, exc.title, exc.detail, exc.type_slug, errors, headers)


async def _request_validation(_req: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return problem(400, "Bad request", "the request body is not valid JSON", "bad-json", errors)
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return problem(422, "Validation failed", detail, "validation", errors)


async def _http_error(_req: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    titles = {
        400: "Bad request",
        404: "Not found",
        405: "Method not allowed",
        413: "Payload too large",
    }
    title = titles.get(exc.status_code, "HTTP error")
    return problem(
        exc.status_code,
        title,
        str(exc.detail),
        title.lower().replace(" ", "-"),
        headers=dict(exc.headers or {}),
    )


async def _unexpected(_req: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return problem(500, "Internal error", "an unexpected error occurred", "internal")


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on `app`."""
    app.add_exception_handler(LeadhookError, _leadhook_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
