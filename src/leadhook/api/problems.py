"""The one place where errors become RFC 9457 problem+json responses."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leadhook.api.matching import route_table
from leadhook.domain.errors import (
    BadJsonError,
    BadRequestError,
    ClaimRefusedError,
    ConflictError,
    LeadhookError,
    LeadVoidedError,
    NotFoundError,
    SecretKeyUnavailableError,
    UnauthorizedError,
    UnavailableError,
    UnsupportedMediaTypeError,
    ValidationError,
    VersionMismatchError,
)
from leadhook.services.redaction import redact

PROBLEM_TYPE_BASE = "https://leadhook.dev/problems/"
log = logging.getLogger("leadhook.api")

MAX_ECHO = 300
"""Characters of a detail or error message kept in a body: echoed input stays bounded."""
RETRY_AFTER_UNAVAILABLE = 5
RETRY_AFTER_LOCKED = 1
RETRY_AFTER_FULL = 60
JSON_MEDIA_TYPE = "application/json"
"""The one media type request bodies may have (its problem names it in Accept-Post/Accept-Patch)."""


@dataclass(frozen=True)
class ProblemKind:
    """How the API answers one class of domain error."""

    status: int
    slug: str
    """The last part of the problem's `type` URI."""
    title: str


PROBLEMS: dict[type[LeadhookError], ProblemKind] = {
    LeadhookError: ProblemKind(500, "internal", "Internal error"),
    ValidationError: ProblemKind(422, "validation", "Validation failed"),
    BadRequestError: ProblemKind(400, "bad-request", "Bad request"),
    BadJsonError: ProblemKind(400, "bad-json", "Bad request"),
    # 422, not HTTP's own 415: the API's reference page keeps bad input to 400, 404, 409, 412,
    # 413 and 422, and clients are written against it (docs/api.md, "Bodies").
    UnsupportedMediaTypeError: ProblemKind(422, "unsupported-media-type", "Unsupported media type"),
    UnauthorizedError: ProblemKind(401, "unauthorized", "Unauthorized"),
    NotFoundError: ProblemKind(404, "not-found", "Not found"),
    VersionMismatchError: ProblemKind(412, "version-mismatch", "Precondition failed"),
    ConflictError: ProblemKind(409, "conflict", "Conflict"),
    LeadVoidedError: ProblemKind(409, "lead-voided", "Lead is voided"),
    ClaimRefusedError: ProblemKind(409, "claim-refused", "Claim refused"),
    UnavailableError: ProblemKind(503, "unavailable", "Service unavailable"),
    SecretKeyUnavailableError: ProblemKind(503, "unavailable", "Service unavailable"),
}
"""Domain error class → its answer; a subclass not listed answers as its nearest listed base."""


def problem_kind(exc: LeadhookError) -> ProblemKind:
    """The answer for a domain error: its class's entry, else its nearest base's."""
    for cls in type(exc).__mro__:
        kind = PROBLEMS.get(cls)
        if kind is not None:
            return kind
    raise AssertionError("LeadhookError is in PROBLEMS")  # pragma: no cover


def problem(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build a problem+json response."""
    return Response(
        problem_text(status, title, detail, slug, errors),
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


def problem_text(
    status: int,
    title: str,
    detail: str,
    slug: str,
    errors: list[dict[str, Any]] | None = None,
) -> str:
    """The JSON text of a problem: `type`, `title`, `status`, `detail` (clipped), `errors`."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": clip(detail),
    }
    if errors is not None:
        body["errors"] = [_clipped(e) for e in errors[:50]]
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if not _encodable(text):
        # Echoed input with an unpaired surrogate cannot be UTF-8: send it \u-escaped.
        text = json.dumps(body, separators=(",", ":"))
    return text


def clip(text: str, limit: int = MAX_ECHO) -> str:
    """Bound a message that may echo input (a 100 KB string comes back as its first 300)."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more)"


def _clipped(error: dict[str, Any]) -> dict[str, Any]:
    loc = [p if isinstance(p, int) else clip(str(p)) for p in error.get("loc", [])]
    return {**error, "loc": loc, "msg": clip(str(error.get("msg", "")))}


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
    kind = problem_kind(exc)
    errors = None
    if isinstance(exc, ValidationError):
        errors = [{"loc": _loc(e.loc), "msg": e.msg} for e in exc.errors]
    headers = {"WWW-Authenticate": "Bearer"} if kind.status == 401 else None
    if kind.status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
        if type(exc) is not UnavailableError:  # a stopping server logs its refusals itself
            # A store the service cannot read (its secret keys): logged once per outage, with
            # the operator's message, not a traceback per request.
            outages: OutageLog = request.app.state.outages
            outages.failed(kind.status, exc.detail, exc)
    if isinstance(exc, UnsupportedMediaTypeError):
        # RFC 9110 15.5.16 and RFC 5789: say which media type the method accepts.
        method = request.method.upper()
        name = "Accept-Patch" if method == "PATCH" else "Accept-Post"
        headers = {name: JSON_MEDIA_TYPE} if method in ("POST", "PATCH") else None
    return problem(kind.status, kind.title, exc.detail, kind.slug, errors, headers)


CredentialCheck = Callable[[Request], Awaitable[None]]


async def credential_first(request: Request) -> Response | None:
    """The answer to a request whose credential fails, checked before its body's problem.

    FastAPI reads a route's JSON body before the route's dependencies run, so a body that is
    not JSON was answered 400 before a missing key's 401: the credential is checked first
    here too, as for every other request (see `install`).
    """
    check: CredentialCheck | None = getattr(request.app.state, "credential_check", None)
    return None if check is None else await credential_refusal(request, check)


async def credential_refusal(request: Request, check: CredentialCheck) -> Response | None:
    """The problem `check` raises for the request's credential (its 401), or None."""
    try:
        await check(request)
    except LeadhookError as exc:
        return await _leadhook_error(request, exc)
    return None


def content_coding(values: list[str]) -> str:
    """The codings a request's `Content-Encoding` lines list other than `identity` ("" for
    none), as sent."""
    codings = [c.strip() for v in values for c in v.split(",")]
    return ", ".join(c for c in codings if c and c.lower() != "identity")


def coded_body(request: Request) -> UnsupportedMediaTypeError | None:
    """The problem (422) of a request whose body is content-coded (`Content-Encoding: gzip`),
    or None.

    The API reads a body as it is sent (RFC 9110 8.4.1 lets a server refuse a coding it does
    not accept): a gzip body was answered as text that is not UTF-8, and a plain one
    labelled gzip read as if it were unlabelled.
    """
    coding = content_coding(request.headers.getlist("content-encoding"))
    if not coding:
        return None
    return UnsupportedMediaTypeError(
        f"the request body must not be content-coded (Content-Encoding: {coding[:64]}):"
        f" send it as plain {JSON_MEDIA_TYPE}"
    )


async def _unreadable(request: Request, detail: str) -> Response:
    """The answer to a body the JSON reader refused: the credential's problem first, then a
    content coding's, else `bad-json` with `detail`."""
    refused = await credential_first(request)
    if refused is not None:
        return refused
    coded = coded_body(request)
    if coded is not None:
        return await _leadhook_error(request, coded)
    return problem(400, "Bad request", detail, "bad-json")


async def _request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    syntax = next((e for e in exc.errors() if e.get("type") == "json_invalid"), None)
    if syntax is not None:
        # `bad-json` names no field (there is none to name in a body that is not JSON): what
        # the reader found, and where, is the detail, as for every other unreadable body.
        loc = syntax.get("loc", ())
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        reason = str((syntax.get("ctx") or {}).get("error") or "").strip()
        detail = f"the request body is not valid JSON: {reason or 'a syntax error'}{where}"
        return await _unreadable(request, detail)
    errors = [{"loc": _loc(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return problem(422, "Validation failed", detail, "validation", errors)


# What FastAPI answers when its JSON reader raised anything but a syntax error (see below).
_FASTAPI_PARSE_FAILED = "There was an error parsing the body"


def _unreadable_body(exc: StarletteHTTPException) -> str | None:
    """The detail of a body FastAPI could not read as JSON, or None for another 400.

    FastAPI answers a JSON syntax error as a validation error (`json_invalid`, handled
    above) but anything else its reader raises as a bare 400: bytes that are not UTF-8, a
    number past the reader's 4,300 digits, arrays nested past its recursion limit. All of
    them are a body that is not JSON the API can read: `bad-json`, like a syntax error.
    """
    if exc.status_code != 400 or exc.detail != _FASTAPI_PARSE_FAILED:
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeError):
        return "the request body is not UTF-8 text"
    if isinstance(cause, RecursionError):
        return "the request body is not valid JSON: it nests too deep"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "the request body is not valid JSON: a number of more than 4,300 digits"
    return None  # not the JSON reader's (a form the console could not read): a plain 400


async def _http_error(req: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    unreadable = _unreadable_body(exc)
    if unreadable is not None:
        return await _unreadable(req, unreadable)
    headers = dict(exc.headers or {})
    table = route_table(req.scope)
    if exc.status_code == 405 and table is not None:
        # Every method of the path, not only those of the first route that matched it.
        headers["Allow"] = ", ".join(table.methods(req.scope["path"])) or headers.get("Allow", "")
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
        headers=headers,
    )


async def _unexpected(_req: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return _internal()


def _internal() -> Response:
    return problem(500, "Internal error", "an unexpected error occurred", "internal")


# ---- the database is down, locked or full: 503 / 507, logged once per outage ---------------

# SQLite primary result codes (the low byte of `sqlite_errorcode`).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 5, 6, 13
_SQLITE_UNAVAILABLE = frozenset({8, 10, 14})  # READONLY, IOERR, CANTOPEN


def classify_storage_error(exc: BaseException) -> tuple[int, str, int] | None:
    """Return (status, reason, Retry-After seconds) for a store that cannot answer now.

    Works on SQLAlchemy's wrappers and on the raw drivers alike (hot paths may use sqlite3 or
    psycopg directly). None means the error is not an outage: a bug, answered 500.
    """
    if isinstance(exc, sa_exc.TimeoutError):
        return 503, "no database connection became free in time", RETRY_AFTER_UNAVAILABLE
    orig: BaseException = exc
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
    if isinstance(orig, sqlite3.Error):
        return _classify_sqlite(orig)
    if isinstance(orig, psycopg.Error):
        return _classify_psycopg(orig)
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return 503, "the database connection was lost", RETRY_AFTER_UNAVAILABLE
    if isinstance(exc, sa_exc.OperationalError):
        return 503, "the database cannot answer now", RETRY_AFTER_UNAVAILABLE
    return None


def _classify_sqlite(exc: sqlite3.Error) -> tuple[int, str, int] | None:
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == _SQLITE_FULL:
        return 507, "the database's disk is full", RETRY_AFTER_FULL
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return 503, "the database stayed locked past the busy timeout", RETRY_AFTER_LOCKED
    if code in _SQLITE_UNAVAILABLE:
        return 503, "the database file cannot be read or written now", RETRY_AFTER_UNAVAILABLE
    return None


def _classify_psycopg(exc: psycopg.Error) -> tuple[int, str, int] | None:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith("53"):  # insufficient resources: disk full, out of memory, too many
        status = 507 if sqlstate == "53100" else 503
        return status, "the database is out of resources", RETRY_AFTER_FULL
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return 503, "the database is unavailable", RETRY_AFTER_UNAVAILABLE
    return None


@dataclass
class _Outage:
    since: float | None = None  # monotonic; None: no outage
    refused: int = 0


class OutageLog:
    """Log a storage outage once when it starts and once when it ends, never per request.

    Two outages are told apart. The database's ends with any request the store answers. The
    secret key's (the keys this process holds no longer open the stored webhook secrets:
    another process re-encrypted them) does not end because a behaviour, which reads no
    secret, went through: only when the readiness check finds the key opening them again
    (`key_opens`). One log kept both: each behaviour after a refused secret read logged
    the database "available again", and the next refusal a new outage.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._database = _Outage()
        self._key = _Outage()

    @property
    def since(self) -> float | None:
        """When the database's outage began (None: none)."""
        return self._database.since

    @property
    def key_since(self) -> float | None:
        """When the secret key's outage began (None: none)."""
        return self._key.since

    def failed(self, status: int, reason: str, exc: BaseException) -> None:
        """Record a request refused because of the store; log only the first of an outage."""
        outage = self._key if isinstance(exc, SecretKeyUnavailableError) else self._database
        with self._lock:
            outage.refused += 1
            if outage.since is not None:
                return
            outage.since = time.monotonic()
        # The exception's class and first line only: no traceback, no SQL, no parameters.
        first = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        log.error(
            "database unavailable: answering %d until it recovers (%s: %s)",
            status,
            type(exc).__name__,
            clip(first, 200),
            extra={"reason": reason},
        )

    def answered(self) -> None:
        """Record a request the store answered; ends the database's outage in progress."""
        self._end(self._database, "database available again")

    def key_opens(self) -> None:
        """Record that the secret keys open the stored secrets; ends the key's outage."""
        self._end(self._key, "the secret keys open the webhook secrets again")

    def _end(self, outage: _Outage, what: str) -> None:
        if outage.since is None:
            return
        with self._lock:
            if outage.since is None:
                return
            lasted, refused = time.monotonic() - outage.since, outage.refused
            outage.since, outage.refused = None, 0
        log.warning("%s after %.1f s; %d requests were refused meanwhile", what, lasted, refused)


async def _storage_error(req: Request, exc: Exception) -> Response:
    verdict = classify_storage_error(exc)
    if verdict is None:
        log.error("database error", exc_info=exc)
        return _internal()
    status, reason, retry_after = verdict
    outages: OutageLog = req.app.state.outages
    outages.failed(status, reason, exc)
    title = "Insufficient storage" if status == 507 else "Service unavailable"
    slug = "insufficient-storage" if status == 507 else "unavailable"
    return problem(
        status,
        title,
        f"{reason}; retry later (with the same Idempotency-Key, if the request had one)",
        slug,
        headers={"Retry-After": str(retry_after)},
    )


class OutageRecovery:
    """Tell the outage log when an API request (they all use the store) answers below 500."""

    def __init__(self, app: ASGIApp, outages: OutageLog) -> None:
        self.app = app
        self.outages = outages

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] < 500:
                self.outages.answered()
            await send(message)

        await self.app(scope, receive, watch)


STORAGE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.DBAPIError,
    sa_exc.TimeoutError,
    sqlite3.Error,
    psycopg.Error,
)


def install(app: FastAPI, credential_check: CredentialCheck | None = None) -> None:
    """Register the problem+json handlers on `app`.

    `credential_check` raises the request's 401 (or 403), if any: a body FastAPI could not
    read is answered after it, as every other request's problems are.
    """
    app.state.outages = OutageLog()
    app.state.credential_check = credential_check
    app.add_exception_handler(LeadhookError, _leadhook_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in STORAGE_ERRORS:
        app.add_exception_handler(error, _storage_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(OutageRecovery, outages=app.state.outages)
