"""Request bodies and documented answers of the subscription and delivery routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
)
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from leadhook.services.subscriptions import (
    DEFAULT_MAX_IN_FLIGHT,
    MAX_DESCRIPTION,
    MAX_IN_FLIGHT_LIMIT,
    MAX_RATE,
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SubscriptionIn(_In):
    """A new webhook endpoint and the event types it receives."""

    url: str = Field(
        max_length=2048,
        description="absolute http(s) URL without credentials; private, loopback, link-local,"
        " CGNAT and metadata addresses are refused unless LEADHOOK_ALLOW_PRIVATE_TARGETS=1",
    )
    event_types: list[str] = Field(
        min_length=1, description='lead event types (see Webhooks), or exactly ["*"] for all'
    )
    description: str = Field("", max_length=MAX_DESCRIPTION)
    enabled: bool = True
    max_in_flight: int = Field(
        DEFAULT_MAX_IN_FLIGHT,
        ge=1,
        le=MAX_IN_FLIGHT_LIMIT,
        description="attempts sent to this endpoint at the same time, per worker"
        f" (at most {MAX_IN_FLIGHT_LIMIT})",
    )
    rate_limit_per_s: float | None = Field(
        None,
        gt=0,
        le=MAX_RATE,
        description="attempts per second, per worker, smoothed (bursts of at most 0.1 s worth);"
        " null: no limit",
    )


_NOT_NULL = ("url", "event_types", "description", "enabled", "max_in_flight")


def _without_null(schema: dict[str, Any]) -> None:
    # The fields of _NOT_NULL may be left out, not sent as null: the schema says so too.
    for name in _NOT_NULL:
        prop = schema["properties"][name]
        kept = [s for s in prop.pop("anyOf", []) if s.get("type") != "null"]
        if len(kept) == 1:
            prop.update(kept[0])
        prop.pop("default", None)


class SubscriptionPatch(_In):
    """The fields to change; absent fields keep their value (`rate_limit_per_s: null` lifts it)."""

    model_config = ConfigDict(json_schema_extra=_without_null)  # merged with _In's

    url: str | None = Field(None, max_length=2048)
    event_types: list[str] | None = Field(None, min_length=1)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    enabled: bool | None = Field(
        None, description="true re-enables and clears `disabled_reason` and `failing_since`"
    )
    max_in_flight: int | None = Field(None, ge=1, le=MAX_IN_FLIGHT_LIMIT)
    rate_limit_per_s: float | None = Field(None, gt=0, le=MAX_RATE)

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Checked with the rest of the body (every problem listed at once), not by the service
        # after it: only `rate_limit_per_s` has a meaning for null.
        if value is None:
            raise PydanticCustomError("not_null", "may be left out, not null")
        return value


def _one_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # A value of neither type failed each member of the union: one error at `since` itself,
    # not one at `since.float` and one at `since.str`.
    try:
        return handler(value)
    except PydanticValidationError:
        raise PydanticCustomError(
            "since_type",
            "must be unix seconds (a number >= 0) or an RFC 3339 date-time with its time zone",
        ) from None


# A replay's time: unix seconds or RFC 3339, one error when it is neither (`_one_error`).
Instant = Annotated[float | str, WrapValidator(_one_error)]


class ReplayIn(_In):
    """Queue again the deliveries created since a time: dead ones, delivered ones, or both; or
    make the failed ones (waiting for a retry) due now."""

    since: Instant = Field(
        description="deliveries created at or after it: unix seconds (a number >= 0) or an"
        " RFC 3339 date-time with its time zone"
    )
    status: Literal["dead", "delivered", "failed"] | None = Field(
        None,
        description="only deliveries in this state; omitted: dead and delivered. `failed`: the"
        " deliveries waiting for a retry are sent now, with a fresh schedule (after an endpoint"
        " that answered errors is mended)",
    )


class ReplayMissingIn(_In):
    """Queue the tenant's logged events the subscription has no delivery of."""

    since: Instant = Field(
        description="events created at or after it: unix seconds (a number >= 0) or an"
        " RFC 3339 date-time with its time zone"
    )
    until: Instant | None = Field(
        None, description="events created before it (the same forms); omitted: up to now"
    )


class CircuitOut(BaseModel):
    """The endpoint's circuit breaker: `open` after 5 attempts in a row got no answer (timeout,
    connection refused or reset); nothing is sent until `retry_at`, then `half_open`: one probe.
    An answer closes it; no answer opens it again for twice as long (up to 10 minutes).
    Deliveries wait as `pending` meanwhile: nothing is lost."""

    state: Literal["closed", "open", "half_open"]
    opened_at: str | None = Field(description="when it last opened (RFC 3339, UTC); null if closed")
    retry_at: str | None = Field(description="when the next probe may go (RFC 3339, UTC)")
    consecutive_failures: int = Field(description="attempts in a row that got no answer")


class SubscriptionOut(BaseModel):
    """A subscription (its secret is shown on create, rotate and `GET .../secret` only)."""

    id: str
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(
        description="why it is disabled: HTTP 410, failing for days (auto-disabled), the API"
    )
    max_in_flight: int
    rate_limit_per_s: float | None
    failing_since: str | None = Field(
        description="start of the current streak of failed attempts (RFC 3339), null if none"
    )
    previous_secret_expires_at: str | None = Field(
        description="while a rotation overlaps: when the previous secret stops signing (RFC 3339)"
    )
    circuit: CircuitOut
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")


class SubscriptionWithSecretOut(SubscriptionOut):
    """A subscription and its signing secret (`whsec_` + base64)."""

    secret: str


class SubscriptionPageOut(BaseModel):
    """A page of subscriptions."""

    data: list[SubscriptionOut]
    next_cursor: str | None


class SecretOut(BaseModel):
    """The current signing secret."""

    secret: str
    previous_secret_expires_at: str | None


class AttemptOut(BaseModel):
    """One HTTP attempt: when, the answer (null: none came), its latency and first 1 KB."""

    attempted_at: str = Field(description="RFC 3339, UTC")
    status_code: int | None
    latency_ms: float
    error: str | None = Field(
        description="Why no answer came (a timeout, a refused connection or target), or"
        " `not sent: circuit open` for an attempt the open circuit turned away; null when"
        " the endpoint answered"
    )
    response_body: str


class DeliveryOut(BaseModel):
    """One event to one subscription: `pending` (queued or being sent), `failed` (waiting for
    a retry at `next_attempt_at`), `delivered` or `dead` (retries exhausted, 410, deleted)."""

    id: str
    subscription_id: str
    event_id: str
    event_type: str
    entity_id: str
    entity_version: int
    status: Literal["pending", "delivered", "failed", "dead"]
    attempt_count: int
    next_attempt_at: str | None = Field(
        description=(
            "RFC 3339, UTC; null once finished. In flight: the end of its lease. Behind an"
            " earlier delivery of its lead that waits for a retry: that retry's time"
        )
    )
    last_error: str | None
    created_at: str = Field(description="RFC 3339, UTC")
    updated_at: str = Field(description="RFC 3339, UTC")
    attempts: list[AttemptOut]


class DeliveryPageOut(BaseModel):
    """A page of deliveries, newest first."""

    data: list[DeliveryOut]
    next_cursor: str | None


class AttemptPageOut(BaseModel):
    """The attempts of one delivery, oldest first."""

    delivery_id: str
    status: Literal["pending", "delivered", "failed", "dead"]
    data: list[AttemptOut]


class TestEventOut(BaseModel):
    """How the endpoint answered the test event."""

    success: bool = Field(description="the endpoint answered 2xx")
    event: dict[str, object] = Field(description="the test event exactly as it was sent")
    attempt: AttemptOut


class ReplayOut(BaseModel):
    """How many deliveries were queued again."""

    replayed: int


class ReplayMissingOut(BaseModel):
    """How many missing events were queued, and whether more are missing than one call
    queues (10,000): the same call again queues the next ones."""

    replayed: int
    more: bool
