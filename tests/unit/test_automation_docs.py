"""docs/automation.md shows real JSON: each example block is what this scenario produces.

Each block follows a marker `<!-- example: NAME -->` in the document. The scenario runs the
services on the in-memory store with a fixed clock and repeatable ids, so the output is stable;
`LEADHOOK_UPDATE_GOLDEN=1 pytest tests/unit/test_automation_docs.py` rewrites the blocks.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from leadhook.adapters.memory import FakeClock, MemoryStore, SequentialIds
from leadhook.api import bodies
from leadhook.domain.operator import SYSTEM, Operator
from leadhook.services.automation import AutomationService, PoolService
from leadhook.services.leads import BehaviourRequest, LeadService
from leadhook.services.tenants import TenantService

DOC = Path(__file__).parents[2] / "docs" / "automation.md"
UPDATE = os.environ.get("LEADHOOK_UPDATE_GOLDEN") == "1"
BLOCK = re.compile(r"(<!-- example: (?P<name>[\w-]+) -->\n```json\n)(?P<body>.*?)(```)", re.S)
START = 1_676_962_253.0  # 2023-02-21 14:50:53 in Asia/Shanghai
DAY = 86400
WANG = Operator(operator_type=2, operator_id=3021, login_platform="member_center")


def _scenario() -> dict[str, Any]:
    store, clock, ids = MemoryStore(), FakeClock(START), SequentialIds()
    tenants = TenantService(store.uow, clock, ids)
    leads = LeadService(store.uow, clock, ids)
    pools = PoolService(leads, store.uow)
    automation = AutomationService(leads, store.uow, clock, ids)
    tenants.create("941", "Acme")
    for key, name in (("wang_fang", "王芳"), ("li_na", "李娜"), ("zhang_wei", "张伟")):
        tenants.put_catalog_entry(
            "941", "members", key, {"name": name, "omni_user_uuid": f"omni-{key}"}
        )
    out: dict[str, Any] = {}
    east = {
        "name": "东区公海",
        "members": ["wang_fang", "li_na"],
        "claim_limit": 20,
        "assignment": {"mode": "round_robin", "members": ["wang_fang", "li_na", "zhang_wei"]},
        "reclaim": {"after_days": 3, "enabled": True},
    }
    put = tenants.put_catalog_entry("941", "lead_pools", "east", east)
    out["pool-entry"] = bodies.catalog_entry(put, "lead_pools", "east").model_dump()
    tenants.put_catalog_entry(
        "941",
        "lead_pools",
        "market",
        {
            "name": "市场公海",
            "members": ["wang_fang"],
            "reclaim": {"after_days": 2.5, "to_lead_pool": "sales"},
        },
    )
    system = BehaviourRequest("941", SYSTEM)

    def answer(result: tuple[int, str]) -> Any:
        return json.loads(result[1])

    created = answer(leads.create(system, {"fields": {"name": "赵拥晨"}, "lead_pool": "east"}))
    out["allocation"] = created["events"]
    lead_id = created["lead"]["id"]

    clock.advance(3600)
    returned = answer(
        pools.return_(BehaviourRequest("941", WANG), lead_id, "market", "客户暂无需求")
    )
    out["return"] = returned["events"]

    clock.advance(3600)
    claimed = answer(pools.claim(BehaviourRequest("941", WANG), lead_id, "wang_fang"))
    out["claim"] = claimed["events"]

    clock.advance(2.5 * DAY)
    out["run"] = bodies.runs_now(automation.run_now("941")).model_dump()
    with store.uow() as u:
        logged = u.events.for_entity("941", lead_id)
    out["reclaim"] = [json.loads(e.payload) for e in logged[-2:]]
    out["runs"] = bodies.runs(automation.runs("941", None, 50)).model_dump()

    clock.advance(600)
    keep = answer(leads.create(system, {"fields": {"name": "赵拥晨", "mobile": "138 0013 8000"}}))[
        "lead"
    ]["id"]
    dup = answer(
        leads.create(
            system,
            {
                "fields": {"mobile": "+86 13800138000", "email": "zhao@example.com"},
                "owner": "li_na",
            },
        )
    )["lead"]["id"]
    leads.perform(system, "notes", dup, {"notes": "想要试用版", "is_follow_up": True})
    leads.perform(system, "add_team_members", dup, {"members": ["zhang_wei"]})
    out["duplicates"] = json.loads(pools.duplicates("941", keep, 50))
    clock.advance(60)
    merged = answer(pools.merge(BehaviourRequest("941", WANG), keep, [dup]))
    out["merge"] = merged["events"]
    return out


_SCALARS = re.compile(
    r"\[\n\s*((?:(?:\"(?:[^\"\\\\]|\\\\.)*\"|-?[\d.]+|null|true|false),?\n\s*)+)\]"
)


def _render(value: Any) -> str:
    """Indented JSON, with lists of plain values kept on one line (as people write them)."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    return _SCALARS.sub(
        lambda m: (
            "[" + ", ".join(x.strip().rstrip(",") for x in m.group(1).strip().split("\n")) + "]"
        ),
        text,
    )


def test_the_automation_docs_show_what_the_code_produces() -> None:
    produced = _scenario()
    text = DOC.read_text(encoding="utf-8")
    found = {m.group("name") for m in BLOCK.finditer(text)}
    assert found == set(produced), f"examples in the doc: {sorted(found)}"
    if UPDATE:
        text = BLOCK.sub(
            lambda m: m.group(1) + _render(produced[m.group("name")]) + "\n" + m.group(4), text
        )
        DOC.write_text(text, encoding="utf-8")
    for match in BLOCK.finditer(text):
        assert json.loads(match.group("body")) == produced[match.group("name")], match.group("name")
