"""Field values: validate what a request sends, and describe what a behaviour changed."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeGuard
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from leadhook.domain.catalog import Catalog, FieldDef, FieldGroup
from leadhook.domain.errors import ValidationError
from leadhook.domain.lead import Lead

MAX_TEXT = 10_000
MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer every JSON consumer reads exactly (a double's 53-bit mantissa)."""
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@functools.lru_cache(maxsize=256)
def local_timestamp(unix_seconds: int, timezone: str) -> str:
    """Format an instant as `YYYY-MM-DD HH:MM:SS` in the tenant's time zone (the behaviours
    of one busy second format it once)."""
    return datetime.fromtimestamp(unix_seconds, ZoneInfo(timezone)).strftime(TIME_FORMAT)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_number(value: Any) -> TypeGuard[int | float]:
    """Tell whether `value` is a JSON number a double holds: an int or float, not a bool, not
    NaN or an infinity (`1e400` decodes to one), and no integer past a double's range.

    `math.isfinite(10**400)` raises OverflowError: a request's `10` followed by 400 zeros
    must be refused as a bad value (422), not fail the request (500).
    """
    if not _is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def same(a: Any, b: Any) -> bool:
    """Compare two field values as JSON values: numbers by value, everything else by value
    and type.

    `0` and `0.0` (or `1` and `1.0`) are the same JSON number, so setting one over the other
    changes nothing; `True` is not the number 1, and `"1"` is not 1.
    """
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    return type(a) is type(b) and a == b


def coerce(catalog: Catalog, fdef: FieldDef, value: Any, loc: tuple[str | int, ...]) -> Any:
    """Validate one value for field `fdef`; return it normalised (empty becomes None)."""
    if value is None or value == "":
        return None
    if fdef.type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError.at(loc, "must be a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError.at(loc, "must be a finite number")
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            # Subscribers parse numbers as int64 or double: a 4,000-digit integer (or one
            # just past 2**53) would fail or silently change in their hands.
            raise ValidationError.at(
                loc, f"integers must be between -{MAX_SAFE_INTEGER} and {MAX_SAFE_INTEGER}"
            )
        return value
    if fdef.type == "image" and isinstance(value, list):
        if not all(isinstance(u, str) for u in value):
            raise ValidationError.at(loc, "must be a list of image URLs")
        _check_image_urls(value, loc, "must be a list of image URLs")
        return json.dumps(value, ensure_ascii=False) if value else None
    if not isinstance(value, str):
        raise ValidationError.at(loc, f"must be a string ({fdef.type} field)")
    if len(value) > MAX_TEXT:
        raise ValidationError.at(loc, f"must be at most {MAX_TEXT} characters")
    if fdef.type == "date":
        _check_time(value, "%Y-%m-%d", loc)
    elif fdef.type == "datetime":
        _check_time(value, TIME_FORMAT, loc)
    elif fdef.type == "image":
        _check_image(value, loc)
    elif fdef.type == "option" and value not in fdef.options:
        raise ValidationError.at(loc, f"unknown option {value!r}")
    elif fdef.type == "reference" and fdef.ref and not catalog.reference_exists(fdef.ref, value):
        raise ValidationError.at(loc, f"unknown {fdef.ref} id {value!r}")
    return value


# strptime alone takes "2020-1-1" and " 1:2:3": the stored text must be the one form, so that
# one date is one value (and re-sending it zero-padded is no change).
_TIME_SHAPES = {
    "%Y-%m-%d": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    TIME_FORMAT: re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}"),
}


def _check_time(value: str, fmt: str, loc: tuple[str | int, ...]) -> None:
    try:
        if not _TIME_SHAPES[fmt].fullmatch(value):
            raise ValueError(value)
        datetime.strptime(value, fmt)
    except ValueError as exc:
        raise ValidationError.at(loc, f"must be a time formatted {fmt}") from exc


def _check_image(value: str, loc: tuple[str | int, ...]) -> None:
    try:
        urls = json.loads(value)
    except ValueError as exc:
        raise ValidationError.at(loc, "must be a JSON-encoded list of URLs") from exc
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ValidationError.at(loc, "must be a JSON-encoded list of URLs")
    _check_image_urls(urls, loc, "must be a JSON-encoded list of URLs")


def _check_image_urls(urls: list[str], loc: tuple[str | int, ...], rule: str) -> None:
    """Each an absolute http:// or https:// URL with a host: subscribers and the console show
    them as images and links, where `javascript:alert(1)` or a bare word would be a hazard or
    nothing at all."""
    for url in urls:
        # The source system writes its URLs' slashes escaped a second time (`http:\/\/wx…`,
        # the contract's own example): read as slashes for the check, stored as sent.
        if not _is_web_url(url.replace("\\/", "/")):
            raise ValidationError.at(loc, f"{rule}: {url!r} is not an http:// or https:// URL")


def _is_web_url(text: str) -> bool:
    if not text or any(c.isspace() or not c.isprintable() for c in text):
        return False
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018  (read for its check: not a number, or past 65535)
    except ValueError:  # a bracketed host that is not an IPv6 address, a bad port
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


_OWNING_BEHAVIOUR = {
    "owner": "POST /v1/leads/{id}/owner",
    "leads_status": "POST /v1/leads/{id}/status",
    "lead_pool": "POST /v1/leads/{id}/lead-pool",
    "life_status": "POST /v1/leads/{id}/life-cycle",
}


def parse_fields(
    catalog: Catalog,
    fields: Any,
    groups: tuple[FieldGroup, ...],
    loc: tuple[str | int, ...] = ("body", "fields"),
) -> dict[str, Any]:
    """Validate a `fields` object whose codes must all belong to one of `groups`."""
    if not isinstance(fields, Mapping):
        raise ValidationError.at(loc, "must be an object of field code to value")
    out: dict[str, Any] = {}
    for code, value in fields.items():
        fdef = catalog.field_def(code) if isinstance(code, str) else None
        if fdef is None:
            raise ValidationError.at((*loc, code), "unknown field code")
        if fdef.group not in groups:
            raise ValidationError.at((*loc, code), _wrong_behaviour(fdef))
        out[code] = coerce(catalog, fdef, value, (*loc, code))
    return out


def _wrong_behaviour(fdef: FieldDef) -> str:
    if fdef.group == "source":
        return "is a source field: change it with PATCH /v1/leads/{id}/source"
    if fdef.code in _OWNING_BEHAVIOUR:
        return f"has its own behaviour: {_OWNING_BEHAVIOUR[fdef.code]}"
    if fdef.group == "system":
        return "is set by the lifecycle behaviour, not directly"
    return "is an ordinary field: change it with PATCH /v1/leads/{id}"


def diff(
    catalog: Catalog, before: Lead, after: Lead, codes: Iterable[str]
) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    """Return `mapping_data` and `mapping_data_text` of the codes whose value changed."""
    data: dict[str, list[Any]] = {}
    text: dict[str, list[str]] = {}
    for code in sorted(set(codes), key=catalog.field_order):
        old, new = before.value(code), after.value(code)
        if not same(old, new):
            data[code] = [old, new]
            text[code] = [catalog.display(code, old), catalog.display(code, new)]
    return data, text


def change_mapping(
    catalog: Catalog, code: str, old: str | None, new: str | None
) -> dict[str, dict[str, Any]]:
    """Return the `entity_change_mapping` of one reference field."""

    def side(value: str | None) -> dict[str, str] | None:
        return None if value is None else {"value": value, "text": catalog.display(code, value)}

    return {code: {"before": side(old), "after": side(new)}}
