"""A tenant's catalog: members, business types, statuses, stages, pools, fields and objects."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal, get_args

from leadhook.domain.errors import NotFoundError, ValidationError

FieldType = Literal["text", "number", "date", "datetime", "image", "option", "reference"]
FieldGroup = Literal["ordinary", "source", "system"]
RefKind = Literal["members", "business_types", "lead_statuses", "life_stages", "lead_pools"]
CatalogKind = Literal[
    "members", "business_types", "lead_statuses", "life_stages", "lead_pools", "fields", "objects"
]
CATALOG_KINDS: tuple[str, ...] = get_args(CatalogKind)

# \Z, not $: `$` also matches before a trailing newline, which would let "id\n" through.
KEY_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
EMPTY_TEXT = "-"
_EXACT_INTEGERS = 2**53  # below it, every whole double is exactly its digits
EXTERNAL_ID_RULE = "must be 1-64 characters, with no control character and no space around it"


def has_control(value: str) -> bool:
    """Whether `value` holds a control character (C0, DEL or C1)."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value)


def is_external_id(value: Any) -> bool:
    """An id another system gave (a related object's `object_id`, a relation's target ids),
    as that system spells it: 1-64 characters, no control ones, no space around them."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and value == value.strip()
        and not has_control(value)
    )


DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_OBJECT_ID = "56"


@dataclass(frozen=True)
class Member:
    """A person of the tenant who can own or collaborate on leads.

    `operator_id` is the back-office account the member is bound to (None: not bound); a
    behaviour performed by that account reports the member's `omni_user_uuid`.
    """

    id: str
    name: str
    omni_user_uuid: str = ""
    operator_id: int | None = None


@dataclass(frozen=True)
class Entry:
    """A named catalog entry: a business type, a lead status or a lead pool."""

    id: str
    name: str


AssignmentMode = Literal["round_robin", "least_loaded"]
ASSIGNMENT_MODES: tuple[str, ...] = get_args(AssignmentMode)


@dataclass(frozen=True)
class Assignment:
    """A pool's automatic allocation rule: who gets its new and returned leads, and how."""

    mode: AssignmentMode
    members: tuple[str, ...]
    enabled: bool = True


@dataclass(frozen=True)
class Reclaim:
    """A pool's automatic reclaim rule: owned leads without follow-up for `after_days` go back."""

    after_days: float
    enabled: bool = True
    to_lead_pool: str | None = None  # None: back into the pool the lead is in

    @property
    def after_seconds(self) -> int:
        """The rule's delay in whole seconds (a lead is due once this much time has passed)."""
        return round(self.after_days * 86400)


@dataclass(frozen=True)
class LeadPool(Entry):
    """A lead pool: who may claim from it, how many each may hold, and its automatic rules."""

    members: tuple[str, ...] = ()
    claim_limit: int | None = None  # None: no limit
    assignment: Assignment | None = None
    reclaim: Reclaim | None = None

    @property
    def assigns(self) -> bool:
        """Tell whether new and returned leads of this pool get an owner automatically."""
        return self.assignment is not None and self.assignment.enabled

    @property
    def reclaims(self) -> bool:
        """Tell whether owned leads of this pool are reclaimed automatically."""
        return self.reclaim is not None and self.reclaim.enabled


@dataclass(frozen=True)
class LifeStage:
    """One lifecycle stage; stages are kept in ascending `order`."""

    code: str
    name: str
    order: int


@dataclass(frozen=True)
class RelatedObject:
    """Another object kind a lead can be related to (e.g. `account`) and its object id."""

    name: str
    label: str
    object_id: str


@dataclass(frozen=True)
class NamedMatches:
    """What `Catalog.named` found: codes of each kind, and (field, option code) pairs."""

    owners: tuple[str, ...] = ()
    lead_pools: tuple[str, ...] = ()
    life_stages: tuple[str, ...] = ()
    lead_statuses: tuple[str, ...] = ()
    options: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FieldDef:
    """A lead field: its code, label, value type and the behaviour group that may change it."""

    code: str
    label: str
    type: FieldType
    group: FieldGroup
    options: Mapping[str, str] = field(default_factory=dict)
    ref: RefKind | None = None
    builtin: bool = False


ORDINARY_FIELDS: tuple[tuple[str, str, FieldType], ...] = (
    ("name", "姓名", "text"),
    ("business_type", "业务类型", "reference"),
    ("first_name", "名", "text"),
    ("last_name", "姓", "text"),
    ("mobile", "手机号", "text"),
    ("email", "邮箱", "text"),
    ("company_id", "公司", "text"),
    ("country_region", "国家/地区", "text"),
    ("industry", "行业", "text"),
    ("department", "部门", "text"),
    ("account_id", "客户", "text"),
    ("title", "职位", "text"),
    ("official_website", "官网", "text"),
    ("market", "市场活动", "text"),
    ("headimgurl", "头像", "image"),
)
SYSTEM_FIELDS: tuple[tuple[str, str, RefKind], ...] = (
    ("owner", "负责人", "members"),
    ("leads_status", "线索状态", "lead_statuses"),
    ("lead_pool", "公海池", "lead_pools"),
    ("life_status", "生命周期阶段", "life_stages"),
)
SOURCE_FIELDS: tuple[tuple[str, str], ...] = (
    ("source", "来源"),
    ("source_channel", "来源渠道"),
    ("utm_source", "utm_source"),
    ("utm_medium", "utm_medium"),
    ("utm_campaign", "utm_campaign"),
    ("utm_term", "utm_term"),
    ("utm_content", "utm_content"),
)
DEFAULT_LIFE_STAGES = (
    LifeStage("baby_lead", "初始线索", 1),
    LifeStage("mql", "市场认可线索", 2),
    LifeStage("sql", "销售认可线索", 3),
    LifeStage("customer", "成交客户", 4),
)
DEFAULT_LEAD_POOLS = (LeadPool("market", "市场公海"), LeadPool("sales", "销售公海"))
DEFAULT_BUSINESS_TYPE_NAME = "默认业务类型"


def stage_timestamp_field(stage: str) -> str:
    """Name the field that records when a lead entered `stage`."""
    return f"to_{stage}_timestamp"


def _builtin_fields() -> dict[str, FieldDef]:
    defs: dict[str, FieldDef] = {}
    for code, label, ftype in ORDINARY_FIELDS:
        ref: RefKind | None = "business_types" if code == "business_type" else None
        defs[code] = FieldDef(code, label, ftype, "ordinary", ref=ref, builtin=True)
    for code, label, ref_kind in SYSTEM_FIELDS:
        defs[code] = FieldDef(code, label, "reference", "system", ref=ref_kind, builtin=True)
    for code, label in SOURCE_FIELDS:
        defs[code] = FieldDef(code, label, "text", "source", builtin=True)
    return defs


BUILTIN_FIELDS: Mapping[str, FieldDef] = _builtin_fields()
_BUILTIN_POSITION: Mapping[str, int] = {code: i for i, code in enumerate(BUILTIN_FIELDS)}


def validate_key(key: str, what: str = "key") -> str:
    """Check a tenant-supplied id: 1–64 letters, digits, `_` or `-`."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValidationError.at(
            (what,), "must be 1-64 characters of ASCII letters, digits, '_' and '-'"
        )
    return key


@dataclass(frozen=True)
class Catalog:
    """Everything a tenant defines that events refer to, with the display text of each."""

    mid: str
    name: str
    timezone: str
    object_id: str
    default_business_type: str
    members: Mapping[str, Member]
    business_types: Mapping[str, Entry]
    lead_statuses: Mapping[str, Entry]
    life_stages: Mapping[str, LifeStage]
    lead_pools: Mapping[str, LeadPool]
    custom_fields: Mapping[str, FieldDef]
    objects: Mapping[str, RelatedObject]

    @classmethod
    def default(
        cls,
        mid: str,
        default_business_type_id: str,
        *,
        name: str = "",
        timezone: str = DEFAULT_TIMEZONE,
        object_id: str = DEFAULT_OBJECT_ID,
    ) -> Catalog:
        """Build a new tenant's catalog with the defaults of the contract."""
        return cls(
            mid=mid,
            name=name or mid,
            timezone=timezone,
            object_id=object_id,
            default_business_type=default_business_type_id,
            members={},
            business_types={
                default_business_type_id: Entry(
                    default_business_type_id, DEFAULT_BUSINESS_TYPE_NAME
                )
            },
            lead_statuses={},
            life_stages={s.code: s for s in DEFAULT_LIFE_STAGES},
            lead_pools={p.id: p for p in DEFAULT_LEAD_POOLS},
            custom_fields={},
            objects={},
        )

    # ---- lookups -------------------------------------------------------------------------

    @cached_property
    def stages_in_order(self) -> tuple[LifeStage, ...]:
        """The life stages by `order`, then (for stages of one order) by code."""
        return tuple(sorted(self.life_stages.values(), key=lambda s: (s.order, s.code)))

    @cached_property
    def first_stage(self) -> str:
        """The stage every new lead starts in."""
        return self.stages_in_order[0].code

    @property
    def first_pool(self) -> str:
        """The pool a lead lands in when none is named."""
        return next(iter(self.lead_pools))

    def field_def(self, code: str) -> FieldDef | None:
        """Return the definition of a field code, stage timestamps included."""
        return self._field_defs.get(code)

    @cached_property
    def _field_defs(self) -> Mapping[str, FieldDef]:
        # Built once per catalog (catalogs are immutable): a create looks up twenty codes.
        # A builtin code wins over a custom one, which wins over a stage's timestamp.
        defs: dict[str, FieldDef] = {}
        for stage in self.life_stages.values():
            code = stage_timestamp_field(stage.code)
            defs[code] = FieldDef(code, f"{stage.name}时间", "datetime", "system", builtin=True)
        return {**defs, **self.custom_fields, **BUILTIN_FIELDS}

    def field_order(self, code: str) -> tuple[int, str]:
        """Sort key that lists fields in the contract's order: builtin, custom, stage times."""
        known = self._field_orders.get(code)
        if known is not None:
            return known
        return (len(_BUILTIN_POSITION) + len(self.life_stages) + 1, code)

    @cached_property
    def _field_orders(self) -> Mapping[str, tuple[int, str]]:
        # Built once per catalog (catalogs are immutable): every create sorts its fields.
        # Stage times in the stages' order, after the custom fields, after the builtins.
        builtin = _BUILTIN_POSITION
        orders = {
            stage_timestamp_field(stage.code): (len(builtin) + 1 + i, "")
            for i, stage in enumerate(self.stages_in_order)
        }
        orders.update({code: (len(builtin), code) for code in self.custom_fields})
        orders.update({code: (position, "") for code, position in builtin.items()})
        return orders

    def reference_exists(self, ref: RefKind, value: str) -> bool:
        """Tell whether `value` is an id of the catalog kind `ref`."""
        table: Mapping[str, object] = getattr(self, ref)
        return value in table

    def reference_name(self, ref: RefKind, value: str) -> str:
        """Return the display name of a catalog id, or the id itself when unknown."""
        entry = getattr(self, ref).get(value)
        return value if entry is None else str(entry.name)

    def member_bound_to(self, operator_id: int) -> Member | None:
        """Return the member bound to the back-office account `operator_id`, if any."""
        return self._members_by_operator.get(operator_id)

    @cached_property
    def _members_by_operator(self) -> Mapping[int, Member]:
        # Built once per catalog (catalogs are immutable): behaviours look it up on every event.
        return {m.operator_id: m for m in self.members.values() if m.operator_id is not None}

    def member_name(self, member_id: str | None) -> str:
        """Return a member's name, `""` for no member."""
        return "" if member_id is None else self.reference_name("members", member_id)

    def display(self, code: str, value: Any) -> str:
        """Return the display text of one value of field `code` (`"-"` for empty)."""
        if value is None or value == "":
            return EMPTY_TEXT
        fdef = self.field_def(code)
        if fdef is not None and fdef.type == "image":
            return "image"
        if isinstance(value, float):
            # Decimal text, never an exponent: repr's shortest digits, written out (1e-07 is
            # "0.0000001"). A whole number is its digits however it was written (3.0, 3e0,
            # 1e+20): 3 and 3.0 are the same number (a change between them emits nothing),
            # and repr kept ".0" below 1e16 but not above it. Past 2**53 a double is not its
            # own digits: 1e23 is "100000000000000000000000" as sent, not the binary value's
            # "99999999999999991611392". Whatever the field's type now: a number stored
            # before the catalog made the field text (or dropped it) still shows as one.
            if value.is_integer():
                if abs(value) < _EXACT_INTEGERS:
                    return str(int(value))
                return format(Decimal(repr(value)).normalize(), "f")
            return format(Decimal(repr(value)), "f")
        if fdef is None:
            return str(value)
        if fdef.type == "option":
            return fdef.options.get(str(value), str(value))
        if fdef.type == "reference" and fdef.ref is not None:
            return self.reference_name(fdef.ref, str(value))
        return str(value)

    def named(self, text: str, limit: int = 100) -> NamedMatches:
        """The catalog's codes whose shown name contains `text` (any letter case): the
        members, pools, stages and statuses a lead list shows by name, and the options of
        option fields by label. A search by what a list shows finds the leads that hold them.
        At most `limit` options (a catalog of thousands would make a query of thousands)."""
        needle = text.casefold()
        if not needle:
            return NamedMatches()

        def hit(name: str) -> bool:
            return needle in name.casefold()

        options: list[tuple[str, str]] = []
        for fdef in self.custom_fields.values():
            if fdef.type == "option":
                options += [(fdef.code, code) for code, label in fdef.options.items() if hit(label)]
        return NamedMatches(
            owners=tuple(m.id for m in self.members.values() if hit(m.name)),
            lead_pools=tuple(p.id for p in self.lead_pools.values() if hit(p.name)),
            life_stages=tuple(s.code for s in self.life_stages.values() if hit(s.name)),
            lead_statuses=tuple(e.id for e in self.lead_statuses.values() if hit(e.name)),
            options=tuple(options[:limit]),
        )

    def object_label(self, name: str) -> str:
        """Return the name an object kind is shown by (its catalog key when it has none)."""
        obj = self.objects.get(name)
        return name if obj is None else obj.label

    def related_object_id(self, name: str) -> str:
        """Return the tenant's object id for an object name, or `""` when unknown."""
        if name == "lead":
            return self.object_id
        obj = self.objects.get(name)
        return "" if obj is None else obj.object_id

    # ---- changes -------------------------------------------------------------------------

    def require(self, kind: str) -> None:
        """Refuse an unknown catalog kind with 404."""
        if kind not in CATALOG_KINDS:
            raise NotFoundError(
                f"unknown catalog kind {kind!r}; one of: {', '.join(CATALOG_KINDS)}"
            )
