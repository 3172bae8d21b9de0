"""`encode_record`'s fast path (plain records straight to `json.dumps`) writes exactly what
encoding `json_safe(record)` writes, for every record either can take."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from uniscale.router import encode_record, json_safe


def _reference(record: Any) -> bytes:
    text = json.dumps(json_safe(record), separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii") + b"\n"


_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.integers(-(2**62), 2**62).map(np.int64),
    st.booleans().map(np.bool_),
    st.lists(st.floats(allow_nan=True), max_size=3).map(np.array),
)
_value = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=6), inner, max_size=4),
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=6), _value, max_size=6))
def test_fast_path_writes_what_json_safe_writes(record: dict[str, Any]) -> None:
    assert encode_record(record) == _reference(record)


def test_fast_path_and_fallback_cases() -> None:
    plain = {"decision_id": 3, "x": (0.5, 1e-300), "s": "caf\u00e9"}
    assert encode_record(plain) == _reference(plain)
    for odd in (math.nan, np.float64("inf"), np.int64(7), np.array([1.0, np.nan])):
        assert encode_record({"v": odd}) == _reference({"v": odd})
    with pytest.raises(TypeError):
        encode_record({"v": {1, 2}})  # neither path can write a set
