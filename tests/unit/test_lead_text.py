"""A lead's JSON texts: written once, byte for byte what encoding its dicts writes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from leadhook.domain.jsontext import dumps
from leadhook.domain.lead import Lead, Relation

TEXT = st.text(max_size=12)
# Values a lead's fields hold, and keys that look like the lead's own (a field's code may be
# `created_at`; a value may spell a key with its quotes).
VALUES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
    | st.sampled_from([',"created_at":1', '"}', "赵拥晨"])
)
KEYS = TEXT | st.sampled_from(["created_at", "updated_at", "owner_since", "last_follow_up_at"])
TIMES = st.integers(-(2**31), 2**33) | st.floats(0, 2**33, allow_nan=False)


@st.composite
def leads(draw: st.DrawFn) -> Lead:
    return Lead(
        id=draw(TEXT),
        mid=draw(TEXT),
        version=draw(st.integers(0, 2**40)),
        business_type=draw(TEXT),
        owner=draw(st.none() | TEXT),
        lead_pool=draw(TEXT),
        life_status=draw(TEXT),
        leads_status=draw(st.none() | TEXT),
        voided=draw(st.booleans()),
        fields=draw(st.dictionaries(KEYS, VALUES, max_size=4)),
        source=draw(st.dictionaries(KEYS, VALUES, max_size=3)),
        team_members=tuple(draw(st.lists(TEXT, max_size=3))),
        relations=tuple(
            Relation(*draw(st.tuples(TEXT, TEXT, TEXT))) for _ in range(draw(st.integers(0, 2)))
        ),
        lead_omni_user_uuid=draw(TEXT),
        created_at=draw(TIMES),
        updated_at=draw(TIMES),
        owner_since=draw(st.none() | TIMES),
        last_follow_up_at=draw(st.none() | TIMES),
    )


@given(leads())
def test_the_texts_are_the_encoded_dicts(lead: Lead) -> None:
    assert lead.stored_text == dumps(lead.to_json())
    assert lead.api_text() == dumps(lead.to_api_json())


@given(leads(), leads())
def test_a_changed_copy_writes_its_own_text(lead: Lead, other: Lead) -> None:
    assert lead.stored_text  # cached on the original before it is copied
    copy = lead.but(version=other.version, fields=other.fields, updated_at=other.updated_at)
    assert copy.stored_text == dumps(copy.to_json())
    assert copy.api_text() == dumps(copy.to_api_json())
    assert lead.stored_text == dumps(lead.to_json())


def test_a_copy_with_nothing_changed_has_the_same_text() -> None:
    lead = Lead("a", "m", 1, "b", None, "p", "s", fields={"created_at": "x"})
    assert lead.but().stored_text == lead.stored_text
    assert lead.api_text().endswith(
        ',"created_at":"1970-01-01T00:00:00.000Z","updated_at":"1970-01-01T00:00:00.000Z"'
        ',"owner_since":null,"last_follow_up_at":null}'
    )
