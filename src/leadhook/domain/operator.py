"""Who performed a behaviour, as every event reports it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from leadhook.domain.errors import ValidationError

_TEXT_KEYS = (
    "omni_user_uuid",
    "login_platform",
    "login_source_value",
    "login_source_type",
    "login_environment",
    "login_source_name",
)
_ALL_KEYS = frozenset({"operator_type", "operator_id", *_TEXT_KEYS})
MAX_OPERATOR_ID = 2**53 - 1
"""The largest id every JSON consumer (int64 or double) reads exactly."""


@dataclass(frozen=True)
class Operator:
    """The operator of a behaviour; `operator_type` 0 is the system (no person)."""

    operator_type: int = 0
    operator_id: int = 0
    omni_user_uuid: str = ""
    login_platform: str = ""
    login_source_value: str = ""
    login_source_type: str = ""
    login_environment: str = ""
    login_source_name: str = ""

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None) -> Operator:
        """Validate an `operator` object from a request; `None` is the system operator."""
        if data is None:
            return SYSTEM
        if not isinstance(data, Mapping):
            raise ValidationError.at(("body", "operator"), "must be an object")
        unknown = sorted(set(data) - _ALL_KEYS)
        if unknown:
            raise ValidationError.at(("body", "operator", unknown[0]), "unknown key")
        op_type = data.get("operator_type", 0)
        # An int exactly: 1.0 == 1 and True == 1 would pass a plain `in` test.
        if type(op_type) is not int or op_type not in (0, 1, 2):
            raise ValidationError.at(
                ("body", "operator", "operator_type"), "must be 0 (system), 1 (user) or 2 (member)"
            )
        op_id = data.get("operator_id", 0)
        if not isinstance(op_id, int) or isinstance(op_id, bool) or op_id < 0:
            raise ValidationError.at(
                ("body", "operator", "operator_id"), "must be a non-negative integer"
            )
        if op_id > MAX_OPERATOR_ID:
            raise ValidationError.at(
                ("body", "operator", "operator_id"), f"must be at most {MAX_OPERATOR_ID}"
            )
        if op_type == 0 and op_id != 0:
            raise ValidationError.at(
                ("body", "operator", "operator_id"), "must be 0 when operator_type is 0"
            )
        texts: dict[str, str] = {}
        for key in _TEXT_KEYS:
            value = data.get(key, "")
            if value is None:
                value = ""
            if not isinstance(value, str) or len(value) > 200:
                raise ValidationError.at(
                    ("body", "operator", key), "must be a string of at most 200 characters"
                )
            texts[key] = value
        if texts["login_environment"] not in ("", "pc", "mobile"):
            raise ValidationError.at(
                ("body", "operator", "login_environment"), "must be 'pc', 'mobile' or ''"
            )
        return cls(operator_type=op_type, operator_id=op_id, **texts)


SYSTEM = Operator()
