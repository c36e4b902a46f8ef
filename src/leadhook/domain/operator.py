"""Who performed a behaviour, as every event reports it."""

from __future__ import annotations

import unicodedata
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
# Open vocabularies: the source lists examples ("such as pc, mobile"), not a closed set, so any
# short label is kept as given; only its length and control characters are refused.
VOCABULARY_KEYS = ("login_platform", "login_source_type", "login_environment")
MAX_VOCABULARY = 64
MAX_OPERATOR_TEXT = 200


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
            texts[key] = _operator_text(key, value)
        return cls(operator_type=op_type, operator_id=op_id, **texts)


def _operator_text(key: str, value: Any) -> str:
    loc = ("body", "operator", key)
    if key in VOCABULARY_KEYS:
        if not isinstance(value, str) or len(value) > MAX_VOCABULARY:
            raise ValidationError.at(
                loc, f"must be a string of at most {MAX_VOCABULARY} characters"
            )
        if any(unicodedata.category(ch) == "Cc" for ch in value):
            raise ValidationError.at(loc, "must not contain control characters")
        return value
    if not isinstance(value, str) or len(value) > MAX_OPERATOR_TEXT:
        raise ValidationError.at(loc, f"must be a string of at most {MAX_OPERATOR_TEXT} characters")
    return value


SYSTEM = Operator()
