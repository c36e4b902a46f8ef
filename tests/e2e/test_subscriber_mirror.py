"""A subscriber that keeps its own copy of each lead from the delivered events, as the docs tell.

Each test reads what arrives at a receiver on 127.0.0.1 (signatures verified), rebuilds what
the documents say a subscriber can rebuild from it, and compares with `GET /v1/leads/{id}`.
Where the events alone cannot give the documented state, the documents must say what a
subscriber does instead: those sentences are checked here too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from delivery_support import Stack, wait_for

from leadhook.domain.times import parse_rfc3339
from leadhook.receiver import GapDetector, parse

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _delivered(stack: Stack, count: int) -> list[dict[str, Any]]:
    wait_for(lambda: len(stack.receiver.acked()) >= count, what=f"{count} deliveries")
    events = [r.event for r in stack.receiver.acked()]
    assert all(r.verified_with for r in stack.receiver.acked())
    return events


def _row(document: str, key: str) -> str:
    text = (DOCS / document).read_text(encoding="utf-8")
    row = re.search(rf"^\| `{key}` \|.*$", text, re.MULTILINE)
    assert row is not None, f"{document} has no row for {key}"
    return row.group(0)


def test_last_follow_up_is_rebuilt_from_the_events_by_the_documented_rule(stack: Stack) -> None:
    stack.subscribe()
    stack.dispatch()
    lead = stack.lead()
    for path, body in (
        ("notes", {"notes": "plain"}),
        ("status", {"leads_status": None}),  # no status yet: changes nothing, no event
    ):
        assert stack.call("POST", f"/v1/leads/{lead}/{path}", json=body).status_code == 200
    put = stack.call("PUT", "/v1/catalog/lead_statuses/open", json={"name": "跟进中"})
    assert put.status_code == 200, put.text
    changed = stack.call("POST", f"/v1/leads/{lead}/status", json={"leads_status": "open"})
    assert changed.status_code == 200, changed.text
    events = _delivered(stack, 3)
    real = stack.call("GET", f"/v1/leads/{lead}").json()

    # The status change moved the lead's follow-up clock, yet its event says is_follow_up 0 ...
    assert real["last_follow_up_at"] is not None
    status_event = events[-1]
    assert status_event["event_type"] == "object_update_status"
    assert status_event["extra_data"]["is_follow_up"] == 0
    # ... so reading `is_follow_up` alone, a subscriber never sees this follow-up,
    assert not any(e["extra_data"]["is_follow_up"] == 1 for e in events)
    # while the rule the documents give (follow-up notes and status changes) rebuilds it.
    last = None
    for e in events:
        if e["extra_data"]["is_follow_up"] == 1 or e["event_type"] == "object_update_status":
            last = e["create_time"]
    assert last == int(parse_rfc3339(real["last_follow_up_at"]))
    # The contract's `is_follow_up` and the reclaim rule's text both say so.
    row = _row("contract.md", "is_follow_up")
    assert "object_update_status" in row and "last_follow_up_at" in row, row
    automation = (DOCS / "automation.md").read_text(encoding="utf-8")
    assert "counts `object_update_status` as well" in automation


def test_a_subscription_to_some_types_skips_versions_and_the_docs_say_so(stack: Stack) -> None:
    stack.subscribe(event_types=["object_create", "object_change_owner"])
    stack.dispatch()
    put = stack.call("PUT", "/v1/catalog/members/wang", json={"name": "王芳"})
    assert put.status_code == 200, put.text
    lead = stack.lead()
    patched = stack.call("PATCH", f"/v1/leads/{lead}", json={"fields": {"title": "CTO"}})
    assert patched.status_code == 200, patched.text
    owner = {"owner": "wang", "scene_type": 2}
    assert stack.call("POST", f"/v1/leads/{lead}/owner", json=owner).status_code == 200
    events = _delivered(stack, 2)
    assert [e["entity_version"] for e in events] == [1, 3]
    # Version 2 (the update) was never meant for this subscription, and nothing went dead,
    assert stack.call("GET", "/v1/deliveries", params={"status": "dead"}).json()["data"] == []
    # yet the receiver's gap detector, used as documented, reports it missing.
    versions = GapDetector()
    gaps = [g for g in (versions.observe(parse(r.body)) for r in stack.receiver.acked()) if g]
    assert [(g.entity_id, list(g.versions)) for g in gaps] == [(lead, [2])]
    # The documents that promise "no jump unless a delivery went dead" say when a jump is
    # expected.
    for document in ("events.md", "delivery.md", "receiver.md"):
        text = " ".join((DOCS / document).read_text(encoding="utf-8").split())
        assert "of the other types are skipped" in text, document
