"""Request dependencies: the container, the tenant of the caller, request metadata."""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Header, Request

from leadhook.bootstrap import Container
from leadhook.domain.errors import BadRequestError, UnauthorizedError
from leadhook.domain.operator import Operator
from leadhook.services.idempotency import fingerprint
from leadhook.services.leads import Request as BehaviourRequest

_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,12})"?\s*$')


def container(request: Request) -> Container:
    """Return the container the app was built with."""
    c: Container = request.app.state.container
    return c


ContainerDep = Annotated[Container, Depends(container)]


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def tenant(
    c: ContainerDep,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """Authenticate a tenant key and return its `mid`."""
    return c.tenants.authenticate(_bearer(authorization))


def admin(
    c: ContainerDep,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Require the admin token (`LEADHOOK_ADMIN_TOKEN`)."""
    expected = c.settings.admin_token
    given = _bearer(authorization)
    if not expected:
        raise UnauthorizedError("the admin API is disabled: set LEADHOOK_ADMIN_TOKEN")
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise UnauthorizedError("missing or wrong admin token")


Mid = Annotated[str, Depends(tenant)]
Admin = Depends(admin)


async def _fingerprint(request: Request) -> str:
    return fingerprint(request.method, request.url.path, await request.body())


def behaviour_request(
    mid: Mid,
    fp: Annotated[str, Depends(_fingerprint)],
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> BehaviourRequest:
    """Collect what every mutating lead call carries besides its body."""
    version: int | None = None
    if if_match is not None:
        m = _IF_MATCH.match(if_match)
        if not m:
            raise BadRequestError(f"If-Match must be a lead version number, not {if_match!r}")
        version = int(m.group(1))
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise BadRequestError("Idempotency-Key must be 1-255 characters")
    return BehaviourRequest(
        mid=mid,
        operator=Operator(),
        if_match=version,
        idempotency_key=idempotency_key,
        fingerprint=fp,
    )


BehaviourReq = Annotated[BehaviourRequest, Depends(behaviour_request)]
