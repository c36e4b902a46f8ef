"""The one error hierarchy of leadhook; the API maps it to problem+json in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One invalid input: where it is (`loc`) and what is wrong with it (`msg`)."""

    loc: tuple[str | int, ...]
    msg: str


class LeadhookError(Exception):
    """Base of every error leadhook raises on purpose."""

    status = 500
    title = "Internal error"
    type_slug = "internal"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationError(LeadhookError):
    """Input that names an unknown field or catalog id, or has the wrong type or shape."""

    status = 422
    title = "Validation failed"
    type_slug = "validation"

    def __init__(self, detail: str, errors: list[FieldProblem] | None = None) -> None:
        super().__init__(detail)
        self.errors: list[FieldProblem] = errors or []

    @classmethod
    def at(cls, loc: tuple[str | int, ...], msg: str) -> ValidationError:
        """Build the error for a single problem at `loc`."""
        return cls(f"{'.'.join(str(p) for p in loc)}: {msg}", [FieldProblem(loc, msg)])


class BadRequestError(LeadhookError):
    """A request that cannot be understood (bad cursor, bad header value)."""

    status = 400
    title = "Bad request"
    type_slug = "bad-request"


class NotFoundError(LeadhookError):
    """An object that does not exist, or that belongs to another tenant."""

    status = 404
    title = "Not found"
    type_slug = "not-found"


class ConflictError(LeadhookError):
    """A request that contradicts the current state (voided lead, reused idempotency key)."""

    status = 409
    title = "Conflict"
    type_slug = "conflict"


class LeadVoidedError(ConflictError):
    """A behaviour other than restore on a voided lead."""

    type_slug = "lead-voided"
    title = "Lead is voided"


class VersionMismatchError(LeadhookError):
    """`If-Match` named a version the lead has moved on from."""

    status = 412
    title = "Precondition failed"
    type_slug = "version-mismatch"


class UnauthorizedError(LeadhookError):
    """A missing or unknown credential."""

    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class PayloadTooLargeError(LeadhookError):
    """A request body over the size limit."""

    status = 413
    title = "Payload too large"
    type_slug = "payload-too-large"


class ClaimRefusedError(ConflictError):
    """A claim the pool's rules refuse: the lead has an owner, the member may not claim from
    the pool, or she holds its claim_limit already."""

    type_slug = "claim-refused"
    title = "Claim refused"


class UnsupportedMediaTypeError(LeadhookError):
    """A request body that is not JSON (by its Content-Type): the API reads JSON only."""

    status = 415
    title = "Unsupported media type"
    type_slug = "unsupported-media-type"
    expected = "application/json"
