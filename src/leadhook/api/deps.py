"""Request dependencies: the container, the tenant of the caller, request metadata."""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any
from urllib.parse import unquote_to_bytes

from fastapi import Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from leadhook.api.metrics import HEAD_ORIGIN
from leadhook.api.problems import JSON_MEDIA_TYPE, coded_body
from leadhook.bootstrap import Container
from leadhook.domain.errors import (
    BadJsonError,
    BadRequestError,
    FieldProblem,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationError,
)
from leadhook.domain.events import EVENT_TYPES
from leadhook.domain.operator import Operator
from leadhook.services.deliveries import event_type_problem
from leadhook.services.idempotency import fingerprint
from leadhook.services.leads import BehaviourRequest

_IF_MATCH = re.compile(r'\A\s*(?:W/"(\d+)"|"(\d+)"|(\d+))\s*\Z', re.ASCII)
# A version number longer than this is well formed but no lead's (412, not 400), and too long
# for Python to read as an int (it refuses past 4,300 digits): `_LongVersion` stands for it.
_VERSION_DIGITS = 4000


class _LongVersion(int):
    """A listed version of more than `_VERSION_DIGITS` digits: above every lead's version
    (it never matches), and written as it was sent in the 412's detail."""

    digits: str

    def __new__(cls, digits: str) -> _LongVersion:
        version = super().__new__(cls, 1 << 64)
        version.digits = digits
        return version

    def __str__(self) -> str:
        return self.digits

    __repr__ = __str__


def query_check(problem: Callable[[Any], str | None]) -> Callable[[Any], Any]:
    """A query parameter's validator from a function that says what is wrong with a value.

    Checked with the route's other parameters, a bad filter is listed beside a bad `limit`
    in one 422, where the route's own check only ran once the parameters had all parsed.
    """

    def check(value: Any) -> Any:
        found = problem(value)
        if found is not None:
            # The message as the context's value: braces in echoed input stay text.
            raise PydanticCustomError("query_value", "{problem}", {"problem": found})
        return value

    return check


def optional_enum(values: Iterable[str]) -> WithJsonSchema:
    """The schema of an optional query parameter taking one of `values`."""
    return WithJsonSchema({"anyOf": [{"type": "string", "enum": [*values]}, {"type": "null"}]})


EventTypeQuery = Annotated[
    str | None,
    Query(description="one of the event types"),
    AfterValidator(query_check(event_type_problem)),
    optional_enum(EVENT_TYPES),
]
"""An `event_type` filter, checked with the other parameters."""


async def container(request: Request) -> Container:
    """Return the container the app was built with."""
    c: Container = request.app.state.container
    return c


ContainerDep = Annotated[Container, Depends(container)]


_ASCII_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() strips: the rate limiter's reading


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None.

    Read exactly as the rate limiter reads it (api/limits.py): ASCII spaces around it
    stripped, and only an ASCII token is one (keys are minted in ASCII). A `str.strip()` also
    took U+00A0 and U+0085 away, so padded copies of one key authenticated as it while each
    got a rate-limit bucket of its own.
    """
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip(_ASCII_SPACE)
    if scheme.lower() != "bearer" or not token or not token.isascii():
        return None
    return token


async def tenant_of(c: Container, api_key: str | None) -> str:
    """The tenant (`mid`) of a key, or its 401.

    A key seen in the last two seconds is answered from the service's cache, on the loop,
    without a thread hop; another costs one indexed read, on a thread: a database that
    stalls (a server stopped, a network cut without a reset) held that read, on the loop,
    and with it every request, `/healthz` included, for as long (a review).
    """
    mid = c.tenants.cached(api_key)
    if mid is not None:
        return mid
    return await run_in_threadpool(c.tenants.authenticate, api_key)


async def tenant(
    c: ContainerDep,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """Authenticate a tenant key and return its `mid` (`tenant_of`)."""
    return await tenant_of(c, bearer(authorization))


async def admin(
    c: ContainerDep,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Require the admin token (`LEADHOOK_ADMIN_TOKEN`)."""
    expected = c.settings.admin_token
    given = bearer(authorization)
    if not expected:
        raise UnauthorizedError("the admin API is disabled: set LEADHOOK_ADMIN_TOKEN")
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise UnauthorizedError("missing or wrong admin token")


# The JSON escape of NUL or of a UTF-16 surrogate: cheap to look for before parsing.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# Python's JSON reader takes NaN, Infinity and -Infinity, which are not JSON (RFC 8259): a
# body holding one of these words is read once more, strictly, before anything else.
_CONSTANT_WORD = re.compile(rb"NaN|Infinity")


class _NotJsonNumber(ValueError):
    pass


def _no_constant(word: str) -> Any:
    raise _NotJsonNumber(word)


def json_constant(body: bytes) -> str | None:
    """The first NaN, Infinity or -Infinity read as a number in a JSON body, or None."""
    if not _CONSTANT_WORD.search(body):
        return None
    try:
        json.loads(body, parse_constant=_no_constant)
    except _NotJsonNumber as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return None  # not JSON anyway: the body's own reading answers
    return None


def plain_json_input(path: str, query: bytes, content_type: str | None, body: bytes) -> bool:
    """Tell whether `storable_input` would pass this request without a second look: no
    query, no NUL in the path, a JSON (or no) media type, UTF-8 text, no escaped NUL or
    surrogate."""
    return (
        not query
        and "\x00" not in path
        and (not body or content_type is None or _json_media_type(content_type))
        and utf8(body)
        and not _SUSPECT_ESCAPE.search(body)
        and not _CONSTANT_WORD.search(body)
    )


def utf8(body: bytes) -> bool:
    """Tell whether a body is UTF-8 text, as RFC 8259 requires of JSON between systems.

    Python's JSON reader is more lenient than that: it decodes a body in UTF-16 or UTF-32,
    and a UTF-8 body with surrogates encoded in it (three bytes each, which UTF-8 forbids)
    into text that no database driver can encode. A byte order mark before UTF-8 is valid
    UTF-8 (and the reader skips it, as the RFC allows).
    """
    if body.isascii():
        return True
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _json_media_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


NUL_IN_ADDRESS = "the path and the query must not contain NUL characters"
QUERY_NOT_UTF8 = "the query is not UTF-8 text once percent-decoded (%FF, a surrogate's bytes)"

HEAD_AS_GET = HEAD_ORIGIN
"""The scope key a HEAD request carries while it is answered as its GET (`api/app.py`): a
route whose answer never ends (the console's event stream) sends its head and stops. Its value
is the server's own scope, which the copy answered as GET was made from."""


def address_problem(request: Request) -> str | None:
    """What makes the request's path or query unreadable as text, or None: a NUL (no id or
    filter holds one) or a query that is not UTF-8 once percent-decoded (`?owner=%FF`: read
    with U+FFFD in its place, it was a filter that matched nothing, not a refusal)."""
    query = request.query_params.multi_items()
    if "\x00" in request.scope["path"] or any("\x00" in k + v for k, v in query):
        return NUL_IN_ADDRESS
    raw = request.scope.get("query_string", b"")
    if b"%" in raw and not utf8(unquote_to_bytes(raw.replace(b"+", b" "))):
        return QUERY_NOT_UTF8
    return None


async def storable_input(request: Request) -> None:
    """Refuse input that no store can keep, the same on every backend, before it gets near one.

    A NUL in the path or query (no id holds one, and PostgreSQL refuses it in any text
    parameter), or a query that is not UTF-8, is a 400. A body sent as anything but JSON
    (`text/plain`, a form), or content-coded (`Content-Encoding: gzip`: the API reads bodies
    as sent), is a 422 `unsupported-media-type`; a body without a Content-Type is read as
    JSON. In the body, text with a NUL (PostgreSQL text cannot hold one) or an unpaired
    surrogate (valid JSON, but not Unicode: no driver can encode it) is a 422 naming where it
    is. A body that is not UTF-8 at all (UTF-16, Latin-1, a surrogate's three bytes) is a 400
    `bad-json`.
    """
    problem = address_problem(request)
    if problem is not None:
        raise BadRequestError(problem)
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    body = await request.body()
    content_type = request.headers.get("content-type")
    coded = coded_body(request) if body else None
    if coded is not None:
        raise coded
    if body and content_type is not None and not _json_media_type(content_type):
        raise UnsupportedMediaTypeError(
            f"the request body must be {JSON_MEDIA_TYPE},"
            f" not {content_type.split(';', 1)[0].strip() or 'an empty media type'}"
        )
    if not utf8(body):
        raise BadJsonError("the request body is not UTF-8 text")
    constant = json_constant(body)
    if constant is not None:
        raise BadJsonError(
            f"the request body is not valid JSON: {constant} is not a JSON number (RFC 8259)"
        )
    if body and getattr(request.scope.get("route"), "body_field", True) is None:
        _no_body_expected(body)
    if not _SUSPECT_ESCAPE.search(body):
        return
    try:
        data = json.loads(body)
    except ValueError:
        return  # not JSON: the body's own validation answers
    loc = _unstorable(data, ("body",))
    if loc is not None:
        raise ValidationError.at(loc, "text must not contain NUL or unpaired UTF-16 surrogates")


def _no_body_expected(body: bytes) -> None:
    """A call that takes no body (`POST .../keys`, `.../rotate-secret`) was sent one: `{}` (or
    `null`) says nothing and passes; a key is one the call does not define, a 422 as in any
    other body; anything else is not the empty object the call could take."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadJsonError("the request body is not valid JSON") from exc
    if data is None or data == {}:
        return
    if isinstance(data, dict):
        problems = [
            FieldProblem(("body", str(key)[:64]), "this call takes no body: unknown key")
            for key in list(data)[:20]
        ]
        first = problems[0]
        raise ValidationError(f"{'.'.join(map(str, first.loc))}: {first.msg}", problems)
    raise ValidationError.at(("body",), "this call takes no body (send none, or {})")


def _unstorable(value: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    if isinstance(value, str):
        return None if _storable(value) else loc
    items: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not _storable(key):  # never echo it back: name it escaped
                return (*loc, json.dumps(key)[1:-1])
            items.append((key, item))
    elif isinstance(value, list):
        items = list(enumerate(value))
    for key, item in items:
        found = _unstorable(item, (*loc, key))
        if found is not None:
            return found
    return None


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def checked_tenant(request: Request) -> str:
    """Authenticate the tenant, then check its input (`storable_input`).

    One dependency that reads the request itself: every route of a tenant runs it, and each
    sub-dependency (the container, the Authorization header) cost FastAPI a resolution step.
    """
    c: Container = request.app.state.container
    mid = await tenant_of(c, bearer(request.headers.get("authorization")))
    await storable_input(request)
    return mid


async def checked_admin(request: Request, _: Annotated[None, Depends(admin)]) -> None:
    """Require the admin token, then check the input (`storable_input`)."""
    await storable_input(request)


async def route_credential(request: Request) -> None:
    """Check the credential the request's route asks for (tenant key or admin token), alone.

    For a request answered before its route's dependencies ran (a body FastAPI could not
    read as JSON): its 401 comes first, as it does for every other request.
    """
    route = request.scope.get("route")
    stack = [getattr(route, "dependant", None)]
    calls: set[Any] = set()
    while stack:
        dependant = stack.pop()
        if dependant is not None:
            calls.update(d.call for d in dependant.dependencies)
            stack.extend(dependant.dependencies)
    header = request.headers.get("authorization")
    c: Container = request.app.state.container
    if calls & {checked_tenant, tenant, behaviour_request}:  # the last calls checked_tenant
        await tenant_of(c, bearer(header))
    elif calls & {checked_admin, admin}:
        await admin(c, header)


async def path_credential(request: Request) -> None:
    """Check the credential a request's path asks for, before any route is chosen: the admin
    token under `/v1/tenants`, a tenant key under the rest of `/v1/`, none elsewhere. For a
    request refused before routing (a body over the limit): its 401 comes first, as it does
    for every other request."""
    path: str = request.scope["path"]  # as routing reads it (not re-escaped)
    if not path.startswith("/v1/"):
        return
    header = request.headers.get("authorization")
    c: Container = request.app.state.container
    if path == "/v1/tenants" or path.startswith("/v1/tenants/"):
        await admin(c, header)
    else:
        await tenant_of(c, bearer(header))


Mid = Annotated[str, Depends(checked_tenant)]
Admin = Depends(checked_admin)


async def behaviour_request(request: Request) -> BehaviourRequest:
    """Collect what every mutating lead call carries besides its body.

    The headers are read here rather than declared as parameters (one resolution step instead
    of five on the hottest routes); `BEHAVIOUR_HEADERS` documents them in the OpenAPI document.
    """
    mid = await checked_tenant(request)
    headers = request.headers
    return behaviour_metadata(
        mid,
        request.method,
        request.scope["path"],
        await request.body(),
        _joined(headers.getlist("if-match")),
        single_idempotency_key(headers.getlist("idempotency-key")),
    )


async def idempotent_create(request: Request) -> tuple[str, str] | None:
    """A create's Idempotency-Key and the fingerprint of its request (400 for a malformed
    key); None without the header. As for the behaviours, "the same request" is the same
    method, path and body, byte for byte."""
    key = checked_idempotency_key(
        single_idempotency_key(request.headers.getlist("idempotency-key"))
    )
    if key is None:
        return None
    return key, fingerprint(request.method, request.scope["path"], await request.body())


def single_idempotency_key(sent: list[str]) -> str | None:
    """The one Idempotency-Key a request sent; 400 for two (a retry could not tell which)."""
    if len(sent) > 1:
        raise BadRequestError("Idempotency-Key was sent more than once: send one key")
    return sent[0] if sent else None


def checked_idempotency_key(key: str | None) -> str | None:
    """The Idempotency-Key header as given; 400 unless 1-255 characters."""
    if key is not None and not 0 < len(key) <= 255:
        raise BadRequestError("Idempotency-Key must be 1-255 characters")
    return key


IdempotentCreate = Annotated[tuple[str, str] | None, Depends(idempotent_create)]

IDEMPOTENCY_HEADER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retrying with the same key (1-255 characters) answers the first"
    " response and changes nothing; the same key with another request is a 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _joined(lines: list[str]) -> str | None:
    """A header sent on several lines as the one list it is (RFC 9110); None if not sent.
    Sent empty, it is "" (refused, as a malformed value): never taken as not sent."""
    return ", ".join(lines) if lines else None


def if_match_versions(value: str | None) -> frozenset[int] | None:
    """The lead versions an `If-Match` header lists; None when it checks none (absent, `*`).

    RFC 9110 makes If-Match a list, any member of which matches, and a header sent twice
    the same list (the lines joined with commas). `*` (any current version) asks only that
    the lead exist, which every behaviour on a lead requires anyway (404 otherwise).
    """
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    if items == ["*"]:
        return None
    found = [_IF_MATCH.match(item) for item in items]
    if not found or not all(found):
        raise BadRequestError(f"If-Match must list lead version numbers (or be *), not {value!r}")
    digits = [m.group(1) or m.group(2) or m.group(3) for m in found if m]
    return frozenset(
        int(d) if len(d) <= _VERSION_DIGITS else _LongVersion(d.lstrip("0") or "0") for d in digits
    )


def behaviour_metadata(
    mid: str,
    method: str,
    path: str,
    body: bytes,
    if_match: str | None,
    idempotency_key: str | None,
) -> BehaviourRequest:
    """The behaviour request of tenant `mid`: checks If-Match and Idempotency-Key (400)."""
    return BehaviourRequest(
        mid=mid,
        operator=Operator(),
        if_match=if_match_versions(if_match),
        idempotency_key=checked_idempotency_key(idempotency_key),
        fingerprint=fingerprint(method, path, body),
    )


BehaviourReq = Annotated[BehaviourRequest, Depends(behaviour_request)]

BEHAVIOUR_HEADERS: dict[str, Any] = {
    "parameters": [
        IDEMPOTENCY_HEADER,
        {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": 'The lead version this change expects (3, "3" or W/"3"), or a'
            ' list of them ("3", "4"): 412 if the lead is at a version not listed.'
            " * checks no version.",
            "schema": {"type": "string"},
        },
    ]
}
"""The headers `behaviour_request` reads, for the OpenAPI document of each behaviour route."""
