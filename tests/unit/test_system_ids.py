"""The real id factory: shortuuid's ids of time-ordered UUIDs, minted fast, and ULIDs in order."""

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
    new_uuid7,
    shortuuid_of,
    ulid_of,
)


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_the_encoding_is_shortuuids_byte_for_byte(number: int) -> None:
    assert shortuuid_of(number) == shortuuid.encode(uuid.UUID(int=number))


def test_the_alphabet_is_shortuuids() -> None:
    assert shortuuid.get_alphabet() == ALPHABET


@given(st.floats(min_value=0, max_value=2**48 / 1000 - 1, allow_nan=False))
def test_a_new_uuid7_is_a_version_7_uuid_carrying_its_millisecond(at: float) -> None:
    u = uuid.UUID(int=new_uuid7(at))
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert u.int >> 80 == int(at * 1000)


def test_the_random_bits_of_a_uuid7_are_all_used() -> None:
    # 74 random bits: each of them is set in some id and clear in another (none is fixed,
    # and rand_a is not a copy of rand_b's bits).
    minted = [new_uuid7(1_700_000_000.0) & ((0xFFF << 64) | (1 << 62) - 1) for _ in range(400)]
    ones = 0
    zeros = 0
    for value in minted:
        ones |= value
        zeros |= ~value
    assert ones & zeros & ((0xFFF << 64) | (1 << 62) - 1) == (0xFFF << 64) | (1 << 62) - 1
    rand_a = {v >> 64 for v in minted}
    copied = {(v >> 6) & 0xFFF for v in minted}
    assert rand_a != copied


@given(
    st.floats(min_value=0, max_value=2**48 / 1000 - 2, allow_nan=False),
    st.floats(min_value=0.001, max_value=10_000),
)
def test_ids_of_a_later_millisecond_sort_later_as_text(at: float, later: float) -> None:
    first, second = new_uuid7(at), new_uuid7(at + later)
    if int((at + later) * 1000) > int(at * 1000):
        assert shortuuid_of(first) < shortuuid_of(second)


def test_short_ids_are_22_characters_of_the_alphabet_and_decode_to_uuid7s() -> None:
    ids = SystemIds()
    minted = {ids.short() for _ in range(1000)}
    assert len(minted) == 1000
    for value in minted:
        assert len(value) == 22
        assert set(value) <= set(ALPHABET)
        assert shortuuid.decode(value).version == 7


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
