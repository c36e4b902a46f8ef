"""Validate catalog entries from outside and convert a catalog to and from plain JSON."""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, get_args

from leadhook.domain.catalog import (
    BUILTIN_FIELDS,
    EXTERNAL_ID_RULE,
    Catalog,
    Entry,
    FieldDef,
    FieldGroup,
    FieldType,
    LifeStage,
    Member,
    RelatedObject,
    has_control,
    is_external_id,
    stage_timestamp_field,
    validate_key,
)
from leadhook.domain.errors import ConflictError, ValidationError
from leadhook.domain.jsontext import dumps
from leadhook.domain.operator import MAX_OPERATOR_ID
from leadhook.domain.pools import parse_pool, pool_from_json, pool_keys, pool_to_json
from leadhook.domain.values import MAX_TEXT

_ALLOWED_KEYS: Mapping[str, frozenset[str]] = {
    "members": frozenset({"name", "omni_user_uuid", "operator_id"}),
    "business_types": frozenset({"name", "default"}),
    "lead_statuses": frozenset({"name"}),
    "life_stages": frozenset({"name", "order"}),
    "lead_pools": pool_keys(),
    "fields": frozenset({"name", "type", "group", "options"}),
    "objects": frozenset({"name", "object_id"}),
}
_CUSTOM_TYPES = tuple(t for t in get_args(FieldType) if t != "reference")
_CUSTOM_GROUPS = ("ordinary", "source")


MAX_NAME = 200
"""The longest name (and option label) a catalog entry may have."""


def _text(body: Mapping[str, Any], key: str, *, required: bool, max_len: int = MAX_NAME) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise ValidationError.at(("body", key), "is required")
        return ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > max_len:
        raise ValidationError.at(("body", key), f"must be a non-empty string of at most {max_len}")
    if has_control(value):  # names are shown in events' display texts, the console, the CLI
        raise ValidationError.at(("body", key), "must not contain control characters")
    return value


def upsert_entry(catalog: Catalog, kind: str, key: str, body: Mapping[str, Any]) -> Catalog:
    """Return `catalog` with `key` of `kind` created or replaced from the request `body`."""
    catalog.require(kind)
    validate_key(key)
    unknown = sorted(set(body) - _ALLOWED_KEYS[kind])
    if unknown:
        raise ValidationError.at(("body", unknown[0]), f"unknown key for {kind}")
    name = _text(body, "name", required=True)
    if kind == "members":
        uuid = _text(body, "omni_user_uuid", required=False)
        member = Member(key, name, uuid, _operator_binding(catalog, key, body))
        return replace(catalog, members={**catalog.members, key: member})
    if kind == "business_types":
        default = body.get("default", False)
        if not isinstance(default, bool):
            raise ValidationError.at(("body", "default"), "must be a boolean")
        types = {**catalog.business_types, key: Entry(key, name)}
        chosen = key if default else catalog.default_business_type
        return replace(catalog, business_types=types, default_business_type=chosen)
    if kind == "lead_statuses":
        return replace(catalog, lead_statuses={**catalog.lead_statuses, key: Entry(key, name)})
    if kind == "lead_pools":
        pool = parse_pool(catalog, key, name, body)
        return replace(catalog, lead_pools={**catalog.lead_pools, key: pool})
    if kind == "life_stages":
        order = body.get("order")
        if order is None:
            existing = catalog.life_stages.get(key)
            order = (
                existing.order
                if existing
                else 1 + max((s.order for s in catalog.life_stages.values()), default=0)
            )
        if not isinstance(order, int) or isinstance(order, bool):
            raise ValidationError.at(("body", "order"), "must be an integer")
        if abs(order) > 1_000_000:
            raise ValidationError.at(("body", "order"), "must be from -1000000 to 1000000")
        stages = {**catalog.life_stages, key: LifeStage(key, name, order)}
        ordered = dict(sorted(stages.items(), key=lambda kv: (kv[1].order, kv[0])))
        return replace(catalog, life_stages=ordered)
    if kind == "objects":
        object_id = body.get("object_id")
        if object_id is None:
            raise ValidationError.at(("body", "object_id"), "is required")
        if not is_external_id(object_id):  # it goes into object_relation events as it is
            raise ValidationError.at(("body", "object_id"), EXTERNAL_ID_RULE)
        objs = {**catalog.objects, key: RelatedObject(key, name, object_id)}
        return replace(catalog, objects=objs)
    return replace(catalog, custom_fields={**catalog.custom_fields, key: _field(key, name, body)})


def _operator_binding(catalog: Catalog, key: str, body: Mapping[str, Any]) -> int | None:
    """Validate the back-office account (`operator_id`) a member is bound to, if any.

    One account is one person: binding it to a second member would make the `omni_user_uuid`
    of its events ambiguous, so that is a conflict (409), not a silent move.
    """
    operator_id = body.get("operator_id")
    if operator_id is None:
        return None
    # The bound a behaviour's operator_id has: a member bound past it could never be named.
    if type(operator_id) is not int or not 0 < operator_id <= MAX_OPERATOR_ID:
        raise ValidationError.at(
            ("body", "operator_id"),
            f"must be a positive integer of at most {MAX_OPERATOR_ID} (a back-office account id)",
        )
    bound = catalog.member_bound_to(operator_id)
    if bound is not None and bound.id != key:
        raise ConflictError(
            f"operator_id {operator_id} is already bound to member {bound.id!r}; "
            "unbind it there first (PUT that member without operator_id)"
        )
    return operator_id


def _field(code: str, label: str, body: Mapping[str, Any]) -> FieldDef:
    ftype = body.get("type", "text")
    group = body.get("group", "ordinary")
    if ftype not in _CUSTOM_TYPES:
        raise ValidationError.at(("body", "type"), f"must be one of {', '.join(_CUSTOM_TYPES)}")
    if group not in _CUSTOM_GROUPS:
        raise ValidationError.at(("body", "group"), f"must be one of {', '.join(_CUSTOM_GROUPS)}")
    if code in BUILTIN_FIELDS or (code.startswith("to_") and code.endswith("_timestamp")):
        raise ValidationError.at(("key",), f"{code!r} is a built-in field and cannot be redefined")
    options = body.get("options", {})
    if ftype == "option":
        if not isinstance(options, dict) or not options:
            raise ValidationError.at(
                ("body", "options"), "an option field needs options: {value: label, ...}"
            )
        _check_options(options)
    elif options:
        raise ValidationError.at(("body", "options"), "only option fields take options")
    ft: FieldType = ftype
    fg: FieldGroup = group
    return FieldDef(code, label, ft, fg, options=dict(options))


def _check_options(options: Mapping[str, Any]) -> None:
    """Refuse an option no lead could take, or one without a label to show."""
    for value, label in options.items():
        if value == "":
            raise ValidationError.at(
                ("body", "options"),
                'an option\'s value must not be empty: "" clears a field, so no lead could take it',
            )
        if len(value) > MAX_TEXT:
            raise ValidationError.at(
                ("body", "options", value[:64]),
                f"an option's value must be at most {MAX_TEXT} characters, as a field's value is",
            )
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_NAME:
            raise ValidationError.at(
                ("body", "options", value),
                f"must be the option's label: a non-empty string of at most {MAX_NAME} characters",
            )
        if has_control(label):
            raise ValidationError.at(
                ("body", "options", value), "an option's label must not contain control characters"
            )


MAX_TIMEZONE = 64


# Files of the time zone database that are not zones: `localtime` is whatever the host's
# /etc/localtime is (a tenant's day would move with the machine), `Factory` a placeholder.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})


@functools.cache
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def validate_timezone(tz: str) -> str:
    """Check an IANA time zone name against the known names, never against the file system.

    `ZoneInfo(name)` opens a file: a directory (`Europe`) or a 100 KB name raises OSError,
    not a clean "unknown" answer, so the name must be a known one before it is opened.
    """
    loc = ("body", "timezone")
    if not isinstance(tz, str) or len(tz) > MAX_TIMEZONE or tz not in _known_timezones():
        text = tz if isinstance(tz, str) else repr(tz)
        shown = repr(text[:MAX_TIMEZONE]) + ("…" if len(text) > MAX_TIMEZONE else "")
        raise ValidationError.at(loc, f"unknown time zone {shown} (an IANA name: Asia/Shanghai)")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError.at(loc, f"unknown time zone {tz!r}") from exc
    return tz


MAX_CATALOG_BYTES = 512 * 1024
"""The most a tenant's catalog may hold, as its JSON text in UTF-8. Every behaviour of the
tenant reads it, and the service keeps the versions in use parsed in memory: a catalog of
18 MB (forty option fields of 4,500 options each, every request under the body's 1 MiB) cost
each of the tenant's behaviours 40-80 ms of the API's loop, and its versions gigabytes."""


def check_catalog_size(catalog: Catalog) -> None:
    """Refuse (422) a catalog past `MAX_CATALOG_BYTES`."""
    size = len(dumps(catalog_to_json(catalog)).encode())  # the text the store keeps
    if size > MAX_CATALOG_BYTES:
        raise ValidationError.at(
            ("body",),
            f"the catalog would hold {size:,} bytes, more than the {MAX_CATALOG_BYTES:,} a"
            " tenant's catalog may: make this entry smaller, or remove entries no lead uses",
        )


def catalog_to_json(catalog: Catalog) -> dict[str, Any]:
    """Return the catalog as the API shows it and as the store keeps it."""
    return {
        "mid": catalog.mid,
        "name": catalog.name,
        "timezone": catalog.timezone,
        "object_id": catalog.object_id,
        "default_business_type": catalog.default_business_type,
        "members": [
            {
                "id": m.id,
                "name": m.name,
                "omni_user_uuid": m.omni_user_uuid,
                "operator_id": m.operator_id,
            }
            for m in catalog.members.values()
        ],
        "business_types": [{"id": e.id, "name": e.name} for e in catalog.business_types.values()],
        "lead_statuses": [{"id": e.id, "name": e.name} for e in catalog.lead_statuses.values()],
        "life_stages": [
            {"code": s.code, "name": s.name, "order": s.order} for s in catalog.life_stages.values()
        ],
        "lead_pools": [pool_to_json(p) for p in catalog.lead_pools.values()],
        # Built in, the tenant's own, then each stage's timestamp (`to_<stage>_timestamp`, a
        # system field a lead gets when it enters the stage), in the stages' order.
        "fields": [
            _field_json(f)
            for f in (
                *BUILTIN_FIELDS.values(),
                *catalog.custom_fields.values(),
                *_stage_time_fields(catalog),
            )
        ],
        "objects": [
            {"object_name": o.name, "name": o.label, "object_id": o.object_id}
            for o in catalog.objects.values()
        ],
    }


# The member of each catalog kind's JSON entries that holds the entry's key.
_ENTRY_ID = {
    "life_stages": "code",
    "lead_pools": "code",
    "fields": "code",
    "objects": "object_name",
}


def find_entry(catalog: Catalog, kind: str, key: str) -> dict[str, Any] | None:
    """Return one entry of `kind` as `catalog_to_json` lists it, or None if there is none."""
    entries: list[dict[str, Any]] = catalog_to_json(catalog)[kind]
    id_key = _ENTRY_ID.get(kind, "id")
    return next((e for e in entries if e[id_key] == key), None)


def _stage_time_fields(catalog: Catalog) -> list[FieldDef]:
    defs = (catalog.field_def(stage_timestamp_field(s.code)) for s in catalog.stages_in_order)
    return [f for f in defs if f is not None and f.code not in catalog.custom_fields]


def _field_json(f: FieldDef) -> dict[str, Any]:
    out: dict[str, Any] = {"code": f.code, "name": f.label, "type": f.type, "group": f.group}
    if f.ref:
        out["ref"] = f.ref
    if f.options:
        out["options"] = dict(f.options)
    out["builtin"] = f.builtin
    return out


def catalog_from_json(data: Mapping[str, Any]) -> Catalog:
    """Rebuild a catalog from `catalog_to_json`'s output."""
    return Catalog(
        mid=data["mid"],
        name=data["name"],
        timezone=data["timezone"],
        object_id=data["object_id"],
        default_business_type=data["default_business_type"],
        members={
            m["id"]: Member(m["id"], m["name"], m.get("omni_user_uuid", ""), m.get("operator_id"))
            for m in data["members"]
        },
        business_types={e["id"]: Entry(e["id"], e["name"]) for e in data["business_types"]},
        lead_statuses={e["id"]: Entry(e["id"], e["name"]) for e in data["lead_statuses"]},
        life_stages={
            s["code"]: LifeStage(s["code"], s["name"], s["order"]) for s in data["life_stages"]
        },
        lead_pools={p["code"]: pool_from_json(p) for p in data["lead_pools"]},
        custom_fields={
            f["code"]: FieldDef(
                f["code"], f["name"], f["type"], f["group"], options=f.get("options", {})
            )
            for f in data["fields"]
            if not f.get("builtin")
        },
        objects={
            o["object_name"]: RelatedObject(o["object_name"], o["name"], o["object_id"])
            for o in data.get("objects", [])
        },
    )
