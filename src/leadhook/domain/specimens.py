"""One lead's whole life, event by event: the contract's examples, produced by the domain.

The contract's source document gives one example, a lead's creation (tenant `941`, lead
`e9vMaiGWybEQ3Nc9xGgwV4`, business type "Authing", 2023-02-21 14:50:53 in Asia/Shanghai).
This module continues that lead's life through every behaviour, one event per step, with fixed
operators, times (one per hour) and event ids, so that every event is reproducible.

`docs/examples/*.json` are these events (the tests check it, key order included); the API
serves one per event type in `GET /v1/event-types` and in the OpenAPI *Webhooks* section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

from leadhook.domain import behaviours as b
from leadhook.domain.catalog import Catalog
from leadhook.domain.catalog_entries import upsert_entry
from leadhook.domain.events import EVENT_TYPES, LeadEvent
from leadhook.domain.lead import Lead
from leadhook.domain.operator import SYSTEM, Operator

MID = "941"
BUSINESS_TYPE = "WNh7rwLXUQPFwACQ6EKPqD"
LEAD_ID = "e9vMaiGWybEQ3Nc9xGgwV4"
LEAD_OMNI_USER_UUID = "7wJy7CNpCPWnP7XMYwEHdn"
CREATE_TIME = 1676962253  # 2023-02-21 14:50:53 in Asia/Shanghai
WANG_FANG = "Kq7vX2mNpR4sT8wY3zA5bC"
MEMBER_2 = "Hd9fG6jL2mP4rS7tV1xZ3c"
MEMBER_3 = "Wn4pQ8sT2vX6zB9dF3hJ5k"
FOLLOWING_UP = "St6uI9oP3aS5dF8gH1jK4l"
ACCOUNT = "Ac2sD4fG6hJ8kL1zX3cV5b"
HEADIMGURL = (
    '["http:\\\\/\\\\/wx.qlogo.cn\\\\/mmhead\\\\/'
    'Q3auHgzwzM4EHT2nacEdibOYV8bxFnmIT6PynWABJYDA5RpFAUrbAgA\\\\/0"]'
)
CREATE_EXAMPLE = "object_create.with-additions.json"
"""The file name of the creation with leadhook's additions (`event_id`, `entity_version`)."""
SOURCE_EXAMPLE = "object_create.json"
"""The file name of the source document's own example, verbatim (without the additions)."""

BACK_OFFICE = Operator(
    operator_type=1, operator_id=17, login_platform="jingsocial", login_environment="pc"
)
MEMBER = Operator(
    operator_type=2,
    operator_id=3021,
    omni_user_uuid="Rt5yU8iO2pA4sD6fG9hJ1k",
    login_platform="member_center",
    login_source_value="wx8f3a2b1c9d4e5f60",
    login_source_type="wechat",
    login_environment="mobile",
    login_source_name="径硕服务号",
)


def event_id(version: int) -> str:
    """Return the example's ULID of the event with `version`."""
    return f"01GSQ8H3G8Q6W7ZQ2V8N5K4T{version:02d}"


def at(version: int) -> int:
    """Return the example's `create_time` of the event with `version`: one per hour."""
    return CREATE_TIME if version == 1 else CREATE_TIME + 3600 * version


def source_catalog() -> Catalog:
    """Return tenant 941's catalog as the source example implies it."""
    return upsert_entry(
        Catalog.default(MID, BUSINESS_TYPE), "business_types", BUSINESS_TYPE, {"name": "Authing"}
    )


def life_catalog() -> Catalog:
    """Return the catalog the whole life needs: members, a status and the account object."""
    cat = source_catalog()
    for member_id, name in ((WANG_FANG, "王芳"), (MEMBER_2, "李娜"), (MEMBER_3, "张伟")):
        cat = upsert_entry(cat, "members", member_id, {"name": name})
    cat = upsert_entry(cat, "lead_statuses", FOLLOWING_UP, {"name": "跟进中"})
    return upsert_entry(cat, "objects", "account", {"name": "客户", "object_id": "57"})


def create(catalog: Catalog, next_event_id: Callable[[], str]) -> b.Effect:
    """Create the source example's lead."""
    ctx = b.Context(catalog, CREATE_TIME, next_event_id, SYSTEM)
    return b.create_lead(
        ctx,
        LEAD_ID,
        {"name": "赵拥晨", "headimgurl": HEADIMGURL},
        business_type=BUSINESS_TYPE,
        lead_omni_user_uuid=LEAD_OMNI_USER_UUID,
    )


Behaviour = Callable[[b.Context, Lead], b.Effect]


@dataclass(frozen=True)
class Step:
    """One example of the life: its file, the version it gets, who acts and what they do."""

    example: str
    version: int
    operator: Operator
    behaviour: Behaviour


STEPS: tuple[Step, ...] = (
    Step("object_update.json", 2, BACK_OFFICE,
         lambda c, lead: b.update_fields(c, lead, {"department": "信息中心", "title": "技术总监"})),
    Step("object_update_status.json", 3, BACK_OFFICE,
         lambda c, lead: b.change_status(c, lead, FOLLOWING_UP)),
    Step("object_change_owner.claim.json", 4, MEMBER,
         lambda c, lead: b.change_owner(c, lead, WANG_FANG, 3)),
    Step("object_update_life_cycle.json", 5, MEMBER,
         lambda c, lead: b.change_life_cycle(c, lead, "mql")),
    Step("object_add_notes.json", 6, MEMBER,
         lambda c, lead: b.add_note(c, lead, "电话沟通,客户对私有化部署感兴趣,下周演示", True)),
    Step("object_add_team_member.json", 7, MEMBER,
         lambda c, lead: b.add_team_members(c, lead, [MEMBER_2, MEMBER_3])),
    Step("object_remove_team_member.json", 8, MEMBER,
         lambda c, lead: b.remove_team_member(c, lead, MEMBER_3)),
    Step("object_change_lead_pool.json", 9, BACK_OFFICE,
         lambda c, lead: b.change_lead_pool(c, lead, "sales")),
    Step("object_relation.json", 10, MEMBER,
         lambda c, lead: b.relate(c, lead, "account", ACCOUNT)),
    Step("object_source_info.json", 11, SYSTEM,
         lambda c, lead: b.change_source(
             c, lead, {"utm_source": "wechat", "utm_campaign": "2023-spring-webinar"})),
    Step("object_change_owner.reclaim.json", 12, SYSTEM,
         lambda c, lead: b.change_owner(c, lead, None, 5, notes="14 天未跟进,自动回收至公海")),
    Step("object_voids.json", 13, BACK_OFFICE, lambda c, lead: b.void(c, lead, "重复线索")),
    Step("object_restore.json", 14, BACK_OFFICE, b.restore),
)  # fmt: skip


@dataclass(frozen=True)
class Life:
    """The lead's events by example file name, in order, and the lead after the last one."""

    events: dict[str, LeadEvent]
    lead: Lead


def live(catalog: Catalog) -> Life:
    """Run the lead's whole life; every step must emit exactly one event."""
    created = create(catalog, lambda: event_id(1))
    events: dict[str, LeadEvent] = {CREATE_EXAMPLE: created.events[0]}
    lead = created.lead
    for step in STEPS:
        ids = partial(event_id, step.version)
        ctx = b.Context(catalog, at(step.version), ids, step.operator)
        outcome = step.behaviour(ctx, lead)
        if len(outcome.events) != 1:
            raise AssertionError(f"{step.example}: {len(outcome.events)} events, not 1")
        events[step.example] = outcome.events[0]
        lead = outcome.lead
    return Life(events, lead)


@cache
def the_life() -> Life:
    """Return the life on its full catalog (computed once: it never changes)."""
    return live(life_catalog())


def examples() -> dict[str, LeadEvent]:
    """Return one example event per type, in contract order; the owner change is the claim."""
    chosen: dict[str, LeadEvent] = {}
    for name, event in the_life().events.items():
        if name != "object_change_owner.reclaim.json":
            chosen.setdefault(event.event_type, event)
    return {t: chosen[t] for t in EVENT_TYPES}
