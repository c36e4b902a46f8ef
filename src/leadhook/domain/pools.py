"""Lead pools that run themselves: pool rules, allocation, claim, return, reclaim and merge.

Everything here is pure: the services read what a rule needs from the store (the pool's
round-robin turn, members' loads, a lead's duplicates and their notes), call these functions
in one transaction, and write back the lead(s) and the events they return.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from leadhook.domain import behaviours as b
from leadhook.domain.catalog import (
    ASSIGNMENT_MODES,
    Assignment,
    Catalog,
    FieldDef,
    LeadPool,
    Reclaim,
)
from leadhook.domain.errors import ClaimRefusedError, LeadVoidedError, ValidationError
from leadhook.domain.events import LeadEvent, OwnerExtra
from leadhook.domain.lead import Lead
from leadhook.domain.operator import SYSTEM
from leadhook.domain.values import (
    MAX_SAFE_INTEGER,
    MAX_TEXT,
    coerce,
    finite_number,
    local_timestamp,
)

RULE_RECLAIM = "reclaim"
MAX_AFTER_DAYS = 3650
MAX_MERGE = 50

_POOL_KEYS = frozenset({"name", "members", "claim_limit", "assignment", "reclaim"})
_ASSIGNMENT_KEYS = frozenset({"mode", "members", "enabled"})
_RECLAIM_KEYS = frozenset({"after_days", "enabled", "to_lead_pool"})


# ---- pool rules: from a request, to and from JSON ------------------------------------------


def pool_keys() -> frozenset[str]:
    """The keys a lead pool entry takes in `PUT /v1/catalog/lead_pools/{key}`."""
    return _POOL_KEYS


def _members(
    catalog: Catalog, value: Any, loc: tuple[str | int, ...], *, empty: bool
) -> tuple[str, ...]:
    if value is None:
        value = []
    if not isinstance(value, list) or (not empty and not value):
        what = "a list" if empty else "a non-empty list"
        raise ValidationError.at(loc, f"must be {what} of member ids")
    seen: list[str] = []
    for i, member in enumerate(value):
        if not isinstance(member, str) or member not in catalog.members:
            raise ValidationError.at((*loc, i), f"unknown member id {member!r}")
        if member in seen:
            raise ValidationError.at((*loc, i), f"member {member!r} is listed twice")
        seen.append(member)
    return tuple(seen)


def _flag(body: Mapping[str, Any], key: str, loc: tuple[str | int, ...]) -> bool:
    value = body.get(key, True)
    if not isinstance(value, bool):
        raise ValidationError.at((*loc, key), "must be a boolean")
    return value


def _object(value: Any, keys: frozenset[str], loc: tuple[str | int, ...]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError.at(loc, "must be an object (or null for no rule)")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ValidationError.at((*loc, unknown[0]), "unknown key")
    return value


def parse_pool(catalog: Catalog, key: str, name: str, body: Mapping[str, Any]) -> LeadPool:
    """Validate a lead pool entry and its rules; a rule left out (or null) is no rule."""
    members = _members(catalog, body.get("members"), ("body", "members"), empty=True)
    limit = body.get("claim_limit")
    if limit is not None and (type(limit) is not int or not 1 <= limit <= MAX_SAFE_INTEGER):
        raise ValidationError.at(
            ("body", "claim_limit"), f"must be null or an integer from 1 to {MAX_SAFE_INTEGER}"
        )
    assignment = None
    if body.get("assignment") is not None:
        loc: tuple[str | int, ...] = ("body", "assignment")
        raw = _object(body["assignment"], _ASSIGNMENT_KEYS, loc)
        mode = raw.get("mode")
        if mode not in ASSIGNMENT_MODES:
            raise ValidationError.at(
                (*loc, "mode"), f"must be one of {', '.join(ASSIGNMENT_MODES)}"
            )
        assignment = Assignment(
            mode=mode,
            members=_members(catalog, raw.get("members"), (*loc, "members"), empty=False),
            enabled=_flag(raw, "enabled", loc),
        )
    reclaim = None
    if body.get("reclaim") is not None:
        loc = ("body", "reclaim")
        raw = _object(body["reclaim"], _RECLAIM_KEYS, loc)
        days = raw.get("after_days")
        if not finite_number(days) or not 0 < days <= MAX_AFTER_DAYS:
            raise ValidationError.at(
                (*loc, "after_days"), f"must be a number of days above 0, at most {MAX_AFTER_DAYS}"
            )
        target = raw.get("to_lead_pool")
        if target is not None and (
            not isinstance(target, str) or (target != key and target not in catalog.lead_pools)
        ):
            raise ValidationError.at((*loc, "to_lead_pool"), f"unknown lead_pools id {target!r}")
        reclaim = Reclaim(days, _flag(raw, "enabled", loc), target)
    return LeadPool(key, name, members, limit, assignment, reclaim)


def pool_to_json(pool: LeadPool) -> dict[str, Any]:
    """Return a lead pool as the catalog shows it: every rule key, null when unset."""
    a, r = pool.assignment, pool.reclaim
    return {
        "code": pool.id,
        "name": pool.name,
        "members": list(pool.members),
        "claim_limit": pool.claim_limit,
        "assignment": None
        if a is None
        else {"mode": a.mode, "members": list(a.members), "enabled": a.enabled},
        "reclaim": None
        if r is None
        else {"after_days": r.after_days, "enabled": r.enabled, "to_lead_pool": r.to_lead_pool},
    }


def pool_from_json(data: Mapping[str, Any]) -> LeadPool:
    """Rebuild a lead pool from `pool_to_json` (a catalog stored before rules: no rules)."""
    a, r = data.get("assignment"), data.get("reclaim")
    return LeadPool(
        id=data["code"],
        name=data["name"],
        members=tuple(data.get("members", ())),
        claim_limit=data.get("claim_limit"),
        assignment=None
        if a is None
        else Assignment(a["mode"], tuple(a["members"]), a.get("enabled", True)),
        reclaim=None
        if r is None
        else Reclaim(r["after_days"], r.get("enabled", True), r.get("to_lead_pool")),
    )


# ---- automatic allocation (scene 1) -------------------------------------------------------


def choose_member(
    assignment: Assignment,
    *,
    last: str | None,
    loads: Mapping[str, int] | None = None,
    exclude: str | None = None,
) -> str:
    """Pick the member who gets the next lead of a pool.

    Members are considered in turn, starting after `last` (the member who got the previous
    lead): round robin takes the first, least-loaded the first of those with the fewest open
    leads (`loads`), so ties rotate too. `exclude` (the member who just returned the lead) is
    passed over unless nobody else is left.
    """
    members = list(assignment.members)
    start = members.index(last) + 1 if last in members else 0
    order = members[start:] + members[:start]
    candidates = [m for m in order if m != exclude] or order
    if assignment.mode == "round_robin" or loads is None:
        return candidates[0]
    fewest = min(loads.get(m, 0) for m in candidates)
    return next(m for m in candidates if loads.get(m, 0) == fewest)


def arrives_unowned(before: Lead | None, outcome: b.Effect) -> bool:
    """Tell whether a behaviour left a live lead without owner in a pool it just arrived in.

    That is: a lead created without owner, returned to a pool (scene 4), or moved to another
    pool while it has no owner. A lead reclaimed by a rule (scene 5) is not: it waits in its
    pool for a claim, else reclaiming and allocating would only pass it around.
    """
    lead = outcome.lead
    if lead.voided or lead.owner is not None:
        return False
    if before is None:
        return True
    owner_scenes = [
        e.extra_data.scene_type for e in outcome.events if isinstance(e.extra_data, OwnerExtra)
    ]
    if 4 in owner_scenes:
        return True
    moved = any(e.event_type == "object_change_lead_pool" for e in outcome.events)
    return moved and not owner_scenes


def allocate(ctx: b.Context, lead: Lead, pool: LeadPool, member: str) -> b.Effect:
    """Give an unowned lead to `member` by the pool's assignment rule (scene 1, the system)."""
    mode = pool.assignment.mode if pool.assignment else "manual"
    note = f'assignment rule of lead pool "{pool.id}" ({pool.name}): {mode}'
    return b.change_owner(replace(ctx, operator=SYSTEM), lead, member, 1, notes=note)


def then(first: b.Effect, second: b.Effect) -> b.Effect:
    """Chain two outcomes on the same lead: the lead after both, the events of both in order."""
    return b.Effect(second.lead, (*first.events, *second.events))


# ---- claim (scene 3) and return (scene 4) -------------------------------------------------


def claim(ctx: b.Context, lead: Lead, member: Any, held: int) -> b.Effect:
    """A member takes an unowned lead from its pool (scene 3); `held` = what she holds there.

    Refused (409) when the lead has an owner, the member may not claim from the pool, or she
    holds the pool's `claim_limit` already.
    """
    if not isinstance(member, str) or member not in ctx.catalog.members:
        raise ValidationError.at(("body", "member"), f"unknown member id {member!r}")
    if lead.voided:
        raise LeadVoidedError(f"lead {lead.id} is voided: only restore is allowed")
    pool = ctx.catalog.lead_pools[lead.lead_pool]
    if lead.owner is not None:
        raise ClaimRefusedError(f"lead {lead.id} has an owner ({lead.owner}): nothing to claim")
    if member not in pool.members:
        raise ClaimRefusedError(f"member {member!r} may not claim from lead pool {pool.id!r}")
    if pool.claim_limit is not None and held >= pool.claim_limit:
        raise ClaimRefusedError(
            f"member {member!r} holds {held} leads of lead pool {pool.id!r},"
            f" its claim_limit is {pool.claim_limit}"
        )
    return b.change_owner(ctx, lead, member, 3)


def return_to_pool(ctx: b.Context, lead: Lead, lead_pool: Any, notes: Any) -> b.Effect:
    """Return a lead to a pool without owner (scene 4), into `lead_pool` when named."""
    return b.change_owner(ctx, lead, None, 4, notes=notes, lead_pool=lead_pool)


# ---- automatic reclaim (scene 5) ----------------------------------------------------------


def reclaim_due_at(lead: Lead, pool: LeadPool) -> int | None:
    """When the pool's reclaim rule is due for the lead: N days after the later of getting
    its owner and its last follow-up; None if the rule does not apply to it."""
    if (
        lead.voided
        or lead.owner is None
        or pool.id != lead.lead_pool
        or pool.reclaim is None
        or not pool.reclaim.enabled
    ):
        return None
    start = max(lead.owner_since or 0, lead.last_follow_up_at or 0)
    return start + pool.reclaim.after_seconds


def reclaim(ctx: b.Context, lead: Lead) -> b.Effect:
    """Take a lead due under its pool's reclaim rule back into the pool (scene 5).

    Checks again that the rule is due (the caller locked the lead after finding it due, and it
    may have been followed up, claimed or reclaimed since): a lead not due is left alone.
    """
    pool = ctx.catalog.lead_pools.get(lead.lead_pool)
    due = None if pool is None else reclaim_due_at(lead, pool)
    if pool is None or pool.reclaim is None or due is None or ctx.now < due:
        return b.Effect(lead)
    rule = pool.reclaim
    since = due - rule.after_seconds
    why = "followed up" if since == lead.last_follow_up_at else "owned"
    note = (
        f'reclaim rule of lead pool "{pool.id}" ({pool.name}): no follow-up for {rule.after_days:g}'
        f" days (last {why} {local_timestamp(since, ctx.catalog.timezone)})"
    )
    return b.change_owner(
        replace(ctx, operator=SYSTEM), lead, None, 5, notes=note, lead_pool=rule.to_lead_pool
    )


# ---- duplicate check and merge (scene 6) --------------------------------------------------

_SPACES = re.compile(r"[\s\-]+")


def mobile_key(value: Any) -> str | None:
    """Normalise a mobile number for duplicate checks: no spaces or dashes, no +86."""
    if value is None:
        return None
    key = _SPACES.sub("", str(value)).lower()
    if key.startswith("+86"):
        key = key[3:]
    return key or None


def email_key(value: Any) -> str | None:
    """Normalise an email address for duplicate checks: no spaces, lower case."""
    if value is None:
        return None
    return re.sub(r"\s+", "", str(value)).lower() or None


def duplicate_keys(lead: Lead) -> tuple[str | None, str | None]:
    """The lead's normalised mobile and email (what duplicates share)."""
    return mobile_key(lead.value("mobile")), email_key(lead.value("email"))


def matched_on(lead: Lead, other: Lead) -> list[str]:
    """Which of mobile and email two leads share (normalised)."""
    mine, theirs = duplicate_keys(lead), duplicate_keys(other)
    return [
        name
        for name, a, c in zip(("mobile", "email"), mine, theirs, strict=True)
        if a is not None and a == c
    ]


@dataclass(frozen=True)
class Duplicate:
    """A lead to merge into another, and the texts of its notes, oldest first."""

    lead: Lead
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MergeOutcome:
    """The survivor after a merge, each voided duplicate, and every event in emission order."""

    survivor: Lead
    voided: tuple[Lead, ...]
    events: tuple[LeadEvent, ...]


def merge(ctx: b.Context, survivor: Lead, duplicates: Sequence[Duplicate]) -> MergeOutcome:
    """Merge duplicates into `survivor`, in one go and in this order of events:

    on the survivor, `object_update` (its empty ordinary fields filled from the duplicates,
    the first duplicate that has a value wins), `object_add_team_member` (the duplicates'
    collaborators), `object_add_notes` (the duplicates' notes in one note, or in several when
    they pass a note's length), and, when it had no
    owner and a duplicate had one, `object_change_owner` (scene 6, that owner); then
    `object_voids` of each duplicate in the order given, naming the survivor. The data is on
    the survivor before the duplicates disappear. A step with nothing to do emits nothing.
    """
    if not duplicates:
        raise ValidationError.at(("body", "duplicates"), "must name at least one lead")
    for lead in (survivor, *(d.lead for d in duplicates)):
        if lead.voided:
            raise LeadVoidedError(f"lead {lead.id} is voided: restore it before merging")
    cat = ctx.catalog
    fills: dict[str, Any] = {}
    for dup in duplicates:
        # A value is read where the lead holds it: under `source` too, for a field moved to
        # the ordinary group since it was written (`Lead.value`; it was skipped there).
        for code, value in (*dup.lead.fields.items(), *dup.lead.source.items()):
            fdef = cat.field_def(code)
            if (
                fdef is not None
                and fdef.group == "ordinary"
                and value is not None
                and survivor.value(code) is None
                and code not in fills
                and _still_valid(cat, fdef, value)
            ):
                fills[code] = value
    out = b.Effect(survivor)
    if fills:
        out = then(out, b.update_fields(ctx, out.lead, fills))
    team = [m for d in duplicates for m in d.lead.team_members if m in cat.members]
    added = [m for m in dict.fromkeys(team) if m not in out.lead.team_members]
    if added:
        out = then(out, b.add_team_members(ctx, out.lead, added))
    for note in merged_notes(duplicates):
        out = then(out, b.add_note(ctx, out.lead, note))
    owner = next((d.lead.owner for d in duplicates if d.lead.owner is not None), None)
    if out.lead.owner is None and owner is not None:
        out = then(out, b.change_owner(ctx, out.lead, owner, 6))
    voided = [b.void(ctx, d.lead, f"merged into lead {survivor.id}") for d in duplicates]
    events = (*out.events, *(e for v in voided for e in v.events))
    return MergeOutcome(out.lead, tuple(v.lead for v in voided), events)


def _still_valid(catalog: Catalog, fdef: FieldDef, value: Any) -> bool:
    """Tell whether a duplicate's stored value is one the field takes today: a value the
    catalog has since ruled out (an option removed, a text field made a number) stays with
    the voided duplicate instead of refusing the whole merge over a field nobody sent."""
    try:
        coerce(catalog, fdef, value, ("body", "fields", fdef.code))
    except ValidationError:
        return False
    return True


def merged_notes(duplicates: Sequence[Duplicate]) -> list[str]:
    """The note that carries the duplicates' notes, or as many as their text needs: a note
    holds `MAX_TEXT` characters, and the text was cut there ("…"), losing whatever followed.

    Each part is cut at the last paragraph (else line) break that fits, else at `MAX_TEXT`;
    none when the duplicates had no notes.
    """
    parts = [
        f"Notes merged from lead {d.lead.id}:\n" + "\n".join(d.notes) for d in duplicates if d.notes
    ]
    text = "\n\n".join(parts)
    notes: list[str] = []
    while len(text) > MAX_TEXT:
        head = text[:MAX_TEXT]
        for gap in ("\n\n", "\n", ""):  # "" is no break in reach: cut at the bound
            cut = head.rfind(gap) if gap else MAX_TEXT
            if cut > 0:
                break
        notes.append(text[:cut])
        text = text[cut + len(gap) :]
    if text:
        notes.append(text)
    return notes
