"""Page cursors: what `encode` makes, `decode` reads back; anything else is a 400, never a 500."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from leadhook.domain.errors import BadRequestError
from leadhook.services import cursor as cursors


def _raw(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@pytest.mark.parametrize("position", [0, 1, 9, 10, 12345, 2**31, 10**18, cursors.MAX_POSITION])
def test_round_trip(position: int) -> None:
    cursor = cursors.encode(position)
    assert cursors.decode(cursor) == position
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor


@given(st.integers(min_value=0, max_value=cursors.MAX_POSITION))
def test_round_trip_any_position(position: int) -> None:
    assert cursors.decode(cursors.encode(position)) == position


@pytest.mark.parametrize("empty", [None, ""])
def test_no_cursor_is_the_start(empty: str | None) -> None:
    assert cursors.decode(empty) is None


@pytest.mark.parametrize(
    "cursor",
    [
        "!!",
        "%%%",
        "a",
        _raw("p"),
        _raw("x12"),
        _raw("12"),
        _raw("p-1"),
        _raw("p+1"),
        _raw("p01"),
        _raw("p1_000"),
        _raw(" p1"),
        _raw("p 1"),
        _raw("p1 "),
        _raw("p1\n"),
        _raw("p１"),  # a full-width digit, which int() would take
        _raw("p٣"),  # an Arabic-Indic digit, ditto
        _raw("p1.5"),
        _raw("p1e3"),
        _raw(b"p\xff"),
        _raw(f"p{cursors.MAX_POSITION + 1}"),
        _raw("p" + "9" * 40),
    ],
)
def test_malformed_cursors_are_bad_requests(cursor: str) -> None:
    with pytest.raises(BadRequestError):
        cursors.decode(cursor)


@given(st.text(max_size=40))
def test_any_text_decodes_or_is_a_bad_request(cursor: str) -> None:
    try:
        position = cursors.decode(cursor)
    except BadRequestError:
        return
    assert position is None or 0 <= position <= cursors.MAX_POSITION


def test_a_huge_malformed_cursor_is_named_by_its_start_only() -> None:
    with pytest.raises(BadRequestError) as refused:
        cursors.decode("x" * 5000)
    assert len(refused.value.detail) < 200 and "(5000 chars)" in refused.value.detail
    with pytest.raises(BadRequestError) as keyed:
        cursors.decode_keyed("y" * 5000)
    assert len(keyed.value.detail) < 200


@example(0.007735566991939693, "0")  # 18 digits after the point: three leading zeros + 15
@example(0.00012345678901234568, "k")  # the most a repr without an exponent writes
@given(st.floats(min_value=0, max_value=4e9, allow_nan=False), st.text("abcXYZ019_-", min_size=1))
def test_keyed_cursors_carry_the_exact_time_and_key(created_at: float, key: str) -> None:
    assert cursors.decode_keyed(cursors.encode_keyed(created_at, key)) == (created_at, key)
