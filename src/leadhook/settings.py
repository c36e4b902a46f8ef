"""Settings from the environment (names in docs/api.md, section Environment)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from leadhook.adapters.db.engine import DEFAULT_DATABASE_URL
from leadhook.domain.retry import RetryPolicy


class SettingsError(ValueError):
    """An environment variable with a value leadhook cannot use."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


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


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with the defaults of the contract."""

    database_url: str = DEFAULT_DATABASE_URL
    admin_token: str | None = None
    allow_private_targets: bool = False
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy.default)
    delivery_timeout: float = 10.0
    auto_disable_after: float = 5 * 86400.0
    lease_seconds: float = 60.0
    concurrency: int = 64
    max_body_bytes: int = 1024 * 1024

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read `LEADHOOK_*` variables; keyword overrides (command-line flags) win."""
        env = os.environ if env is None else env
        schedule = env.get("LEADHOOK_RETRY_SCHEDULE")
        try:
            policy = (
                RetryPolicy.default() if schedule is None else RetryPolicy.from_env_value(schedule)
            )
        except ValueError as exc:
            raise SettingsError(f"LEADHOOK_RETRY_SCHEDULE: {exc}") from exc
        settings = cls(
            database_url=env.get("LEADHOOK_DATABASE_URL") or DEFAULT_DATABASE_URL,
            admin_token=env.get("LEADHOOK_ADMIN_TOKEN") or None,
            allow_private_targets=_flag(env.get("LEADHOOK_ALLOW_PRIVATE_TARGETS")),
            retry_policy=policy,
            delivery_timeout=_positive(
                "LEADHOOK_DELIVERY_TIMEOUT", env.get("LEADHOOK_DELIVERY_TIMEOUT"), 10.0
            ),
            auto_disable_after=_positive(
                "LEADHOOK_AUTO_DISABLE_AFTER", env.get("LEADHOOK_AUTO_DISABLE_AFTER"), 5 * 86400.0
            ),
        )
        return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
