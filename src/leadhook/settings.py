"""Settings from the environment (names in docs/api.md, section Environment)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from leadhook.adapters.db.engine import DEFAULT_DATABASE_URL
from leadhook.adapters.secretbox import SecretKeyError, parse_keys
from leadhook.domain.retry import DEFAULT_DELIVERY_TIMEOUT, DEFAULT_DISABLE_AFTER, RetryPolicy
from leadhook.services.retention import RetentionPolicy


class SettingsError(ValueError):
    """An environment variable with a value leadhook cannot use."""


_ON = ("1", "true", "yes", "on")
_OFF = ("", "0", "false", "no", "off")


def _flag(name: str, value: str | None) -> bool:
    """Read a switch: on or off in the usual spellings; anything else is a mistake to say."""
    text = (value or "").strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise SettingsError(f"{name} must be 1, true, yes or on (or 0, false, no, off), not {value!r}")


DEFAULT_RATE_LIMIT = (100.0, 200.0)
"""Requests a second per API key and the burst above it, unless LEADHOOK_RATE_LIMIT says."""


def _rate_limit(value: str | None) -> tuple[float, float] | None:
    """Parse `RATE[,BURST]` (requests a second per key; burst defaults to twice the rate)."""
    if value is None or value.strip() == "":
        return DEFAULT_RATE_LIMIT
    text = value.strip().lower()
    if text in ("0", "off", "none", "false", "no"):
        return None
    try:
        numbers = [float(p) for p in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or not all(math.isfinite(n) and n > 0 for n in numbers):
        raise SettingsError(
            "LEADHOOK_RATE_LIMIT must be RATE or RATE,BURST (requests a second per API key,"
            f" positive numbers) or off, not {value!r}"
        )
    rate = numbers[0]
    burst = numbers[1] if len(numbers) == 2 else 2 * rate
    return rate, max(burst, 1.0)


def _positive(name: str, value: str | None, default: float) -> float:
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number of seconds, not {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise SettingsError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


def _interval(name: str, value: str | None, default: float) -> float:
    """Like `_positive`, but 0 is allowed: it turns the periodic work off."""
    try:
        if value is not None and value.strip() and float(value) == 0:
            return 0.0
    except ValueError:
        pass  # `_positive` names the problem
    try:
        return _positive(name, value, default)
    except SettingsError as exc:
        raise SettingsError(f"{exc} (or 0, which turns it off)") from None


def _count(name: str, value: str | None, default: int, most: int) -> int:
    """Read a whole number from 1 to `most`."""
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= most:
        raise SettingsError(f"{name} must be a whole number from 1 to {most}, not {value!r}")
    return number


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LONGEST = 36500 * 86400.0  # a duration's bound: 100 years


def _duration(name: str, value: str | None, default: float | None) -> float | None:
    """Read a duration: seconds (`3600`), or a number with a unit (`90m`, `24h`, `30d`);
    `off` (or zero, in any unit) keeps the rows forever."""
    if value is None or value.strip() == "":
        return default
    text = value.strip().lower()
    if text in ("off", "0", "none", "never"):
        return None
    scale = _UNITS.get(text[-1])
    number = text[:-1] if scale is not None else text
    try:
        seconds = float(number) * (scale or 1.0)
    except ValueError as exc:
        raise SettingsError(
            f"{name} must be a duration such as 3600, 90m, 24h or 30d, or off; not {value!r}"
        ) from exc
    if not math.isfinite(seconds) or seconds < 0:
        raise SettingsError(f"{name} must be a positive duration or off, not {value!r}")
    # Past 100 years is as good as forever, and a cut-off that far back is no time the
    # database can store (1e15d overflowed SQLite's integers at every purge): 100 years.
    seconds = min(seconds, _LONGEST)
    # Zero in any unit is `0`: keep forever. (0s once meant "purge at once", so an operator
    # writing 0d for "off" lost the log within a minute.)
    return seconds or None


def _retention(env: Mapping[str, str]) -> RetentionPolicy:
    default = RetentionPolicy()
    return RetentionPolicy(
        idempotency_ttl=_duration(
            "LEADHOOK_IDEMPOTENCY_TTL", env.get("LEADHOOK_IDEMPOTENCY_TTL"), default.idempotency_ttl
        ),
        delivery_retention=_duration(
            "LEADHOOK_DELIVERY_RETENTION",
            env.get("LEADHOOK_DELIVERY_RETENTION"),
            default.delivery_retention,
        ),
        event_retention=_duration(
            "LEADHOOK_EVENT_RETENTION", env.get("LEADHOOK_EVENT_RETENTION"), None
        ),
    )


DEFAULT_MAX_SUBSCRIPTIONS = 16
"""Live subscriptions a tenant may have (`LEADHOOK_MAX_SUBSCRIPTIONS`); Stripe's endpoint
limit for an account, too."""


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the defaults of the contract."""

    database_url: str = DEFAULT_DATABASE_URL
    admin_token: str | None = None
    allow_private_targets: bool = False
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy.default)
    delivery_timeout: float = DEFAULT_DELIVERY_TIMEOUT
    auto_disable_after: float = DEFAULT_DISABLE_AFTER
    lease_seconds: float = 15.0
    concurrency: int = 64
    max_body_bytes: int = 1024 * 1024
    poll_interval: float = 0.25
    automation_interval: float = 60.0  # seconds between passes of the pool rules; 0: never
    # Signs the web console's session cookies; unset: a random secret per process (sessions
    # end when it restarts and do not carry between processes).
    console_secret: str | None = None
    max_header_bytes: int = 16 * 1024
    max_url_bytes: int = 8 * 1024
    # (requests a second, burst) per API key; None: no limit. `from_env` applies the default
    # (DEFAULT_RATE_LIMIT); settings built in code (tests, embedding) opt in.
    rate_limit: tuple[float, float] | None = None
    # Fernet keys of the webhook secrets at rest (first encrypts, all decrypt); empty: the key
    # file beside the database. Never in a repr: settings may be printed or logged.
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    # Threads writing behaviours to PostgreSQL, each on a connection of its own (SQLite's are
    # written on the event loop). More let a write waiting on another process's row lock not
    # hold up the rest, at more CPU a behaviour (docs/write-path.md, "Group commit").
    writer_threads: int = 1
    # Live subscriptions a tenant may have. Every event is copied to each of them in the
    # behaviour's transaction: a tenant with 1,000 made one batch of 200 leads write 200,000
    # delivery rows and hold every other tenant's writes for 10 s (a security review).
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `LEADHOOK_*` variables; keyword overrides (command-line flags) win."""
        env = os.environ if env is None else env
        schedule = env.get("LEADHOOK_RETRY_SCHEDULE")
        try:
            policy = (
                RetryPolicy.default() if schedule is None else RetryPolicy.from_env_value(schedule)
            )
        except ValueError as exc:  # from_env_value's every message names the variable
            raise SettingsError(str(exc)) from exc
        try:
            raw_keys = env.get("LEADHOOK_SECRET_KEY", "").strip()
            keys = parse_keys(raw_keys) if raw_keys else ()
        except SecretKeyError as exc:
            raise SettingsError(str(exc)) from None
        settings = cls(
            secret_keys=keys,
            rate_limit=_rate_limit(env.get("LEADHOOK_RATE_LIMIT")),
            database_url=env.get("LEADHOOK_DATABASE_URL") or DEFAULT_DATABASE_URL,
            admin_token=env.get("LEADHOOK_ADMIN_TOKEN") or None,
            console_secret=env.get("LEADHOOK_CONSOLE_SECRET") or None,
            allow_private_targets=_flag(
                "LEADHOOK_ALLOW_PRIVATE_TARGETS", env.get("LEADHOOK_ALLOW_PRIVATE_TARGETS")
            ),
            retry_policy=policy,
            delivery_timeout=_positive(
                "LEADHOOK_DELIVERY_TIMEOUT",
                env.get("LEADHOOK_DELIVERY_TIMEOUT"),
                DEFAULT_DELIVERY_TIMEOUT,
            ),
            auto_disable_after=_positive(
                "LEADHOOK_AUTO_DISABLE_AFTER",
                env.get("LEADHOOK_AUTO_DISABLE_AFTER"),
                DEFAULT_DISABLE_AFTER,
            ),
            poll_interval=_positive(
                "LEADHOOK_POLL_INTERVAL", env.get("LEADHOOK_POLL_INTERVAL"), 0.25
            ),
            automation_interval=_interval(
                "LEADHOOK_AUTOMATION_INTERVAL", env.get("LEADHOOK_AUTOMATION_INTERVAL"), 60.0
            ),
            retention=_retention(env),
            writer_threads=_count(
                "LEADHOOK_WRITER_THREADS", env.get("LEADHOOK_WRITER_THREADS"), 1, 32
            ),
            max_subscriptions=_count(
                "LEADHOOK_MAX_SUBSCRIPTIONS",
                env.get("LEADHOOK_MAX_SUBSCRIPTIONS"),
                DEFAULT_MAX_SUBSCRIPTIONS,
                1000,
            ),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
