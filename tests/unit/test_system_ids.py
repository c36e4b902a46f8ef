"""The real id factory: shortuuid's ids, minted faster, and ULIDs in order."""

from __future__ import annotations

import uuid

import shortuuid
from hypothesis import given
from hypothesis import strategies as st
from ulid import ULID

from leadhook.adapters.system import (
    ALPHABET,
    SystemIds,
    new_ulid,
    random_uuid4,
    shortuuid_of,
    ulid_of,
)


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_the_encoding_is_shortuuids_byte_for_byte(number: int) -> None:
    assert shortuuid_of(number) == shortuuid.encode(uuid.UUID(int=number))


def test_the_alphabet_is_shortuuids() -> None:
    assert shortuuid.get_alphabet() == ALPHABET


def test_random_numbers_are_version_4_uuids() -> None:
    for _ in range(200):
        u = uuid.UUID(int=random_uuid4())
        assert u.version == 4
        assert u.variant == uuid.RFC_4122


def test_short_ids_are_22_characters_of_the_alphabet_and_decode_to_uuid4s() -> None:
    ids = SystemIds()
    minted = {ids.short() for _ in range(1000)}
    assert len(minted) == 1000
    for value in minted:
        assert len(value) == 22
        assert set(value) <= set(ALPHABET)
        assert shortuuid.decode(value).version == 4


def test_event_ids_increase_within_a_millisecond() -> None:
    ids = SystemIds()
    minted = [ids.event_id(1_700_000_000.0) for _ in range(50)]
    assert minted == sorted(minted)
    assert len(set(minted)) == 50


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_the_ulid_text_is_the_ulid_librarys(number: int) -> None:
    assert ulid_of(number) == str(ULID.from_int(number))


@given(st.floats(min_value=0, max_value=2**47 / 1000, allow_nan=False))
def test_a_new_ulid_carries_the_millisecond_as_the_library_reads_it(at: float) -> None:
    minted = ULID.from_int(new_ulid(at))
    assert minted.milliseconds == int(at * 1000)
    assert minted.milliseconds == ULID.from_timestamp(at).milliseconds


def test_event_ids_are_ulids_of_their_time() -> None:
    ids = SystemIds()
    minted = ULID.from_str(ids.event_id(1_700_000_000.123))
    assert minted.milliseconds == 1_700_000_000_123
