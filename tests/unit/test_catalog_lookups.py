"""A catalog's field lookups, built once per catalog, answer what the rules say."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from leadhook.domain.catalog import (
    BUILTIN_FIELDS,
    Catalog,
    FieldDef,
    LifeStage,
    stage_timestamp_field,
)

BASE = Catalog.default("t1", "bt1")
CATALOG = replace(
    BASE,
    custom_fields={
        "budget": FieldDef("budget", "预算", "number", "ordinary"),
        "to_vip_timestamp": FieldDef("to_vip_timestamp", "custom", "text", "ordinary"),
        "name": FieldDef("name", "shadowed by the builtin", "text", "ordinary"),
    },
    life_stages={
        **BASE.life_stages,
        "vip": LifeStage("vip", "贵宾", 0),
        "zz": LifeStage("zz", "最后", 9),
    },
)


def _field_def(cat: Catalog, code: str) -> FieldDef | None:
    # The rule, as written before the lookups were built once per catalog.
    found = BUILTIN_FIELDS.get(code) or cat.custom_fields.get(code)
    if found is not None:
        return found
    if code.startswith("to_") and code.endswith("_timestamp"):
        stage = cat.life_stages.get(code[3 : -len("_timestamp")])
        if stage is not None:
            return FieldDef(code, f"{stage.name}时间", "datetime", "system", builtin=True)
    return None


def _field_order(cat: Catalog, code: str) -> tuple[int, str]:
    builtin = list(BUILTIN_FIELDS)
    if code in BUILTIN_FIELDS:
        return (builtin.index(code), "")
    if code in cat.custom_fields:
        return (len(builtin), code)
    stages = sorted(cat.life_stages.values(), key=lambda s: (s.order, s.code))
    codes = [stage_timestamp_field(s.code) for s in stages]
    if code in codes:
        return (len(builtin) + 1 + codes.index(code), "")
    return (len(builtin) + len(cat.life_stages) + 1, code)


KNOWN = sorted(
    {*BUILTIN_FIELDS, *CATALOG.custom_fields, "to_nope_timestamp", "to__timestamp"}
    | {stage_timestamp_field(code) for code in CATALOG.life_stages}
)


@given(st.sampled_from(KNOWN) | st.text(max_size=20))
def test_field_def_and_order_follow_the_rules(code: str) -> None:
    assert CATALOG.field_def(code) == _field_def(CATALOG, code)
    assert CATALOG.field_order(code) == _field_order(CATALOG, code)


def test_a_builtin_wins_over_a_custom_field_which_wins_over_a_stage_time() -> None:
    assert CATALOG.field_def("name") == BUILTIN_FIELDS["name"]
    custom = CATALOG.field_def("to_vip_timestamp")
    assert custom is not None and custom.label == "custom"
    stage = CATALOG.field_def("to_zz_timestamp")
    assert stage is not None and stage.label == "最后时间" and stage.group == "system"


def test_the_first_stage_is_the_lowest_order() -> None:
    assert CATALOG.first_stage == "vip"
    assert BASE.first_stage == "baby_lead"


def test_a_changed_catalog_builds_its_own_lookups() -> None:
    # The lookups are cached on the instance: a catalog made from another by `replace` (how
    # catalogs change) must not inherit the first one's.
    before = replace(BASE)
    assert before.field_def("budget") is None and before.first_stage == "baby_lead"
    assert before.field_def("to_new_timestamp") is None
    after = replace(
        before,
        custom_fields={"budget": FieldDef("budget", "预算", "number", "ordinary")},
        life_stages={**before.life_stages, "new": LifeStage("new", "新", -1)},
    )
    assert after.field_def("budget") is not None
    assert after.field_def("to_new_timestamp") is not None
    assert after.first_stage == "new"
    assert after.field_order("budget") == _field_order(after, "budget")
    assert before.field_def("budget") is None and before.first_stage == "baby_lead"
    assert before.field_def("to_new_timestamp") is None
