"""The Lead aggregate: its state, and a uniform view of every field code on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from functools import cached_property
from typing import Any

from leadhook.domain.jsontext import dumps
from leadhook.domain.times import rfc3339, rfc3339_or_none

# Field codes that live in their own attribute of Lead rather than in `fields` / `source`.
ATTRIBUTE_FIELDS = ("business_type", "owner", "lead_pool", "life_status", "leads_status")


@dataclass(frozen=True)
class Relation:
    """An association of the lead with an object of another kind."""

    target_object_name: str
    target_entity_id: str
    target_object_id: str


@dataclass(frozen=True)
class Lead:
    """A lead as it is after its latest event (`version` = that event's entity_version)."""

    id: str
    mid: str
    version: int
    business_type: str
    owner: str | None
    lead_pool: str
    life_status: str
    leads_status: str | None = None
    voided: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    team_members: tuple[str, ...] = ()
    relations: tuple[Relation, ...] = ()
    lead_omni_user_uuid: str = ""
    created_at: int = 0
    updated_at: int = 0
    # The clocks of the reclaim rule (see `track_clocks`): when the current owner got the lead
    # (None without owner), and when it was last followed up (None if never).
    owner_since: int | None = None
    last_follow_up_at: int | None = None

    def but(self, **changes: Any) -> Lead:
        """Return a copy with `changes`: `dataclasses.replace` without its per-call walk over
        the fields and `__init__` (three copies per behaviour, ~10% of a batch's domain work).
        """
        unknown = changes.keys() - _LEAD_FIELDS
        if unknown:
            raise TypeError(f"Lead has no field {', '.join(sorted(unknown))}")
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__, **changes)
        copy.__dict__.pop("stored_text", None)  # the copy's own text, when it is asked for
        return copy

    def value(self, code: str) -> Any:
        """Return the value of field `code` (None when empty); codes are unique across groups."""
        if code in ATTRIBUTE_FIELDS:
            return getattr(self, code)
        found = self.fields.get(code)
        return self.source.get(code) if found is None else found

    def with_values(
        self, changes: Mapping[str, Any], source_codes: frozenset[str] = frozenset()
    ) -> Lead:
        """Return the lead with field values set; None removes a field.

        A code holds one value, in the group its field belongs to now (`source_codes`): a
        value still held under the other group (its field moved since it was written) moves
        with the write, so the lead never holds a code twice.
        """
        attrs: dict[str, Any] = {}
        fields = dict(self.fields)
        source = dict(self.source)
        for code, value in changes.items():
            if code in ATTRIBUTE_FIELDS:
                attrs[code] = value
                continue
            target, other = (source, fields) if code in source_codes else (fields, source)
            other.pop(code, None)
            if value is None:
                target.pop(code, None)
            else:
                target[code] = value
        return self.but(fields=fields, source=source, **attrs)

    def to_json(self) -> dict[str, Any]:
        """Return the lead object of the API (and of the store)."""
        return {
            "id": self.id,
            "mid": self.mid,
            "version": self.version,
            "business_type": self.business_type,
            "owner": self.owner,
            "lead_pool": self.lead_pool,
            "life_status": self.life_status,
            "leads_status": self.leads_status,
            "voided": self.voided,
            "fields": dict(self.fields),
            "source": dict(self.source),
            "team_members": list(self.team_members),
            "relations": [
                {
                    "target_object_name": r.target_object_name,
                    "target_entity_id": r.target_entity_id,
                    "target_object_id": r.target_object_id,
                }
                for r in self.relations
            ],
            "lead_omni_user_uuid": self.lead_omni_user_uuid,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "owner_since": self.owner_since,
            "last_follow_up_at": self.last_follow_up_at,
        }

    @cached_property
    def stored_text(self) -> str:
        """`to_json()` as the store keeps it (`jsontext.dumps`), encoded once per lead: a
        behaviour stores its lead and answers with it (`api_text`)."""
        return dumps(self.to_json())

    def api_text(self) -> str:
        """`to_api_json()` as JSON text, byte for byte what `dumps` writes of it: the
        stored text with its four times, its last keys, written as RFC 3339 strings."""
        stored = self.stored_text
        # The last occurrence is the lead's own key: a nested object's key of that name (a
        # field's code) comes earlier, and a string holds no unescaped quote.
        head = stored[: stored.rindex(',"created_at":')]
        return (
            f'{head},"created_at":"{rfc3339(self.created_at)}"'
            f',"updated_at":"{rfc3339(self.updated_at)}"'
            f',"owner_since":{_time_text(self.owner_since)}'
            f',"last_follow_up_at":{_time_text(self.last_follow_up_at)}}}'
        )

    def to_api_json(self) -> dict[str, Any]:
        """Return the lead object as the API answers it: times as RFC 3339 UTC strings."""
        return {
            **self.to_json(),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "owner_since": rfc3339_or_none(self.owner_since),
            "last_follow_up_at": rfc3339_or_none(self.last_follow_up_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lead:
        """Rebuild a lead from `to_json`'s output."""
        return cls(
            id=data["id"],
            mid=data["mid"],
            version=data["version"],
            business_type=data["business_type"],
            owner=data["owner"],
            lead_pool=data["lead_pool"],
            life_status=data["life_status"],
            leads_status=data["leads_status"],
            voided=data["voided"],
            fields=dict(data["fields"]),
            source=dict(data["source"]),
            team_members=tuple(data["team_members"]),
            relations=tuple(Relation(**r) for r in data["relations"]),
            lead_omni_user_uuid=data["lead_omni_user_uuid"],
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            # A lead stored before the clocks existed: its owner has had it at least since
            # its last change (the same backfill as migration 0004).
            owner_since=(
                data["owner_since"]
                if "owner_since" in data
                else (data["updated_at"] if data["owner"] is not None else None)
            ),
            last_follow_up_at=data.get("last_follow_up_at"),
        )


_LEAD_FIELDS = frozenset(f.name for f in dataclass_fields(Lead))


def _time_text(seconds: float | None) -> str:
    return "null" if seconds is None else f'"{rfc3339(seconds)}"'


def track_clocks(before: Lead | None, after: Lead, *, follow_up: bool, now: int) -> Lead:
    """Advance the reclaim clocks of a lead across one event (`before` None on create).

    A new owner starts `owner_since` (no owner clears it); a follow-up (a note with
    is_follow_up 1, or a status change) sets `last_follow_up_at`. Both the behaviours and the
    replay of the log apply this one rule, so a folded lead equals the stored one.
    """
    owner_since = after.owner_since
    if before is None or before.owner != after.owner:
        owner_since = None if after.owner is None else now
    last = now if follow_up else after.last_follow_up_at
    if owner_since == after.owner_since and last == after.last_follow_up_at:
        return after
    return after.but(owner_since=owner_since, last_follow_up_at=last)
