"""The one representation of time in answers (RFC 3339, UTC, milliseconds) and its parsing."""

from __future__ import annotations

import datetime as dt
import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from leadhook.domain.times import parse_rfc3339, rfc3339, rfc3339_or_none
from leadhook.services.deliveries import delivery_filter

# From 1970 to 2200, in seconds with a fraction.
instants = st.floats(min_value=0, max_value=7_258_118_400, allow_nan=False)


def test_formats_in_utc_with_milliseconds_and_a_z() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1676962253) == "2023-02-21T06:50:53.000Z"
    assert rfc3339(1676962253.25) == "2023-02-21T06:50:53.250Z"
    assert rfc3339(1676962253.9999) == "2023-02-21T06:50:53.999Z"  # truncated, never rounded up
    assert rfc3339_or_none(None) is None
    assert rfc3339_or_none(0.5) == "1970-01-01T00:00:00.500Z"


@given(instants)
def test_round_trip_within_a_millisecond_and_never_later(seconds: float) -> None:
    """Catches: a time shown later than the stored one (microseconds rounded up into the next
    millisecond), which a `created_after` filter given that very time would then exclude."""
    text = rfc3339(seconds)
    assert len(text) == 24 and text.endswith("Z")
    assert 0 <= seconds - parse_rfc3339(text) < 0.001 + 1e-6  # cut, never rounded up


def test_an_instant_just_below_a_millisecond_shows_the_millisecond_it_is_in() -> None:
    below = 1764979200.124 - 2**-22  # 0.17 µs below .124: datetime rounds it up to .124000
    assert rfc3339(below) == "2025-12-06T00:00:00.123Z"
    assert parse_rfc3339(rfc3339(below)) <= below
    assert rfc3339(-0.0005) == "1969-12-31T23:59:59.999Z"


@given(instants, instants)
def test_the_strings_sort_as_the_instants(a: float, b: float) -> None:
    if int(a * 1000) != int(b * 1000):
        assert (rfc3339(a) < rfc3339(b)) == (a < b)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2023-02-21T06:50:53Z", 1676962253.0),
        ("2023-02-21T14:50:53+08:00", 1676962253.0),
        ("2023-02-21t06:50:53.5z", 1676962253.5),
        ("2023-02-21 06:50:53.123456789Z", 1676962253.123456),
        ("2023-02-20T22:50:53-08:00", 1676962253.0),
    ],
)
def test_parses_any_offset(text: str, seconds: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-21T06:50:53",  # no offset: ambiguous
        "2023-02-21",
        "1676962253",
        "2023-02-21T06:50:53 08:00",  # a `+` that a query string turned into a space
        "2023-13-01T00:00:00Z",
        "2023-02-30T00:00:00Z",
        "2023-02-21T25:00:00Z",
        "yesterday",
        "",
    ],
)
def test_refuses_what_is_not_an_rfc3339_date_time(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


def test_delivery_filters_name_every_bad_one() -> None:
    from leadhook.domain.errors import ValidationError

    with pytest.raises(ValidationError) as caught:
        delivery_filter(status="lost", event_type="object_delete", created_after="today")
    assert [p.loc for p in caught.value.errors] == [
        ("query", "status"),
        ("query", "event_type"),
        ("query", "created_after"),
    ]
    f = delivery_filter(
        status="dead",
        event_type="object_create",
        lead_id="L1",
        subscription_id="s1",
        created_after="2023-02-21T14:50:53+08:00",
        created_before="2023-02-22T00:00:00Z",
    )
    assert (f.status, f.event_type, f.entity_id, f.subscription_id) == (
        "dead",
        "object_create",
        "L1",
        "s1",
    )
    assert (f.created_after, f.created_before) == (1676962253.0, 1677024000.0)


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_rfc3339_formats_as_exact_arithmetic_does(seconds: float) -> None:
    # rfc3339 caches the whole second's text: the result must be the uncached one exactly,
    # the float's exact value cut to the millisecond.
    exact = Fraction(seconds)
    whole = math.floor(exact)
    millis = math.floor((exact - whole) * 1000)
    shown = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert rfc3339(seconds) == f"{shown}.{millis:03d}Z"


@given(st.integers(min_value=-(2**34), max_value=2**34))
def test_whole_seconds_format_as_the_same_float_does(seconds: int) -> None:
    assert rfc3339(seconds) == rfc3339(float(seconds))
