"""The JSON leadhook writes: the standard library's compact text, written faster."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from leadhook.domain.jsontext import dumps

SCALARS = (
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text()
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def _standard(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@given(st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)))
def test_the_text_is_the_standard_librarys_byte_for_byte(obj: Any) -> None:
    assert dumps(obj) == _standard(obj)


@given(FLOATS)
def test_a_float_reads_back_as_the_same_number(value: float) -> None:
    written = dumps({"v": value})
    back = json.loads(written)["v"]
    assert back == value and math.copysign(1, back) == math.copysign(1, value)
    if "e" not in _standard(value):  # only an exponent is spelled differently (1e-7, 1e-07)
        assert written == _standard({"v": value})


def test_non_ascii_text_is_kept_as_is() -> None:
    assert dumps({"name": "赵拥晨", "tab": "\t", "nul": "\x00"}) == (
        '{"name":"赵拥晨","tab":"\\t","nul":"\\u0000"}'
    )


def test_what_orjson_refuses_is_written_as_before() -> None:
    for obj in ({"big": 2**70}, {"lone": "\ud800"}, {1: "int key"}, [-(2**64)]):
        assert dumps(obj) == _standard(obj)
