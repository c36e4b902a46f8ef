"""The one error hierarchy of leadhook.

These are domain errors: they say what went wrong, never how HTTP answers it. The API maps
each class to its problem+json status, `type` and title in one table (`api/problems.py`).

Hierarchy:

LeadhookError: every error leadhook raises on purpose
  ├── ValidationError: input with an unknown field or id, a wrong type or shape
  ├── BadRequestError: a request that cannot be understood (bad cursor, bad header)
  │     └── BadJsonError: a body that is not JSON the API can read (not UTF-8, say)
  ├── UnsupportedMediaTypeError: a request body that is not JSON
  ├── UnauthorizedError: a missing, unknown or revoked credential
  ├── NotFoundError: no such object in this tenant
  ├── VersionMismatchError: `If-Match` named a version the lead has moved on from
  ├── ConflictError: a request that contradicts the current state
  │     ├── LeadVoidedError: a behaviour other than restore on a voided lead
  │     └── ClaimRefusedError: a claim the pool's rules refuse
  └── UnavailableError: the service cannot take the request now (it is stopping, or its
        │   secret keys no longer open the store); nothing was written: send it again later
        └── SecretKeyUnavailableError: the service's secret keys do not open the stored
              webhook secrets (an outage of its own in the API's log)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One invalid input: where it is (`loc`) and what is wrong with it (`msg`)."""

    loc: tuple[str | int, ...]
    msg: str


class LeadhookError(Exception):
    """Base of every error leadhook raises on purpose."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationError(LeadhookError):
    """Input that names an unknown field or catalog id, or has the wrong type or shape."""

    def __init__(self, detail: str, errors: list[FieldProblem] | None = None) -> None:
        super().__init__(detail)
        self.errors: list[FieldProblem] = errors or []

    @classmethod
    def at(cls, loc: tuple[str | int, ...], msg: str) -> ValidationError:
        """Build the error for a single problem at `loc`."""
        return cls(f"{'.'.join(str(p) for p in loc)}: {msg}", [FieldProblem(loc, msg)])


class BadRequestError(LeadhookError):
    """A request that cannot be understood (bad cursor, bad header value)."""


class BadJsonError(BadRequestError):
    """A request body that is not JSON text: not UTF-8, malformed, or past what a parser takes
    (a number of thousands of digits, arrays nested thousands deep)."""


class UnsupportedMediaTypeError(LeadhookError):
    """A request body that is not JSON (by its declared media type): leadhook reads JSON only."""


class UnauthorizedError(LeadhookError):
    """A missing or unknown credential."""


class NotFoundError(LeadhookError):
    """An object that does not exist, or that belongs to another tenant."""


class VersionMismatchError(LeadhookError):
    """`If-Match` named a version the lead has moved on from."""


class ConflictError(LeadhookError):
    """A request that contradicts the current state (voided lead, reused idempotency key)."""


class LeadVoidedError(ConflictError):
    """A behaviour other than restore on a voided lead."""


class ClaimRefusedError(ConflictError):
    """A claim the pool's rules refuse: the lead has an owner, the member may not claim from
    the pool, or she holds its claim_limit already."""


class UnavailableError(LeadhookError):
    """The service cannot take the request now: nothing was written. Raised as is by a
    stopping server (`GroupWriter.refuse_waiting`); the adapters' SecretKeyError is one too."""


class SecretKeyUnavailableError(UnavailableError):
    """The service's secret keys do not open the stored webhook secrets (the adapters'
    SecretKeyError): the database answers, but what needs a secret waits for an operator."""
