"""Arrow values built from their bytes are the ones pyarrow's conversion gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lineage._arrow_build import binaries, booleans, literal, numbers, strings


@pytest.mark.parametrize(
    ("values", "build", "kind"),
    [(st.text(), strings, pa.string()), (st.binary(), binaries, pa.large_binary())],
)
@given(data=st.data())
@settings(deadline=None)  # pyarrow's first conversion imports pandas
def test_variable_length_values_are_pyarrows(values, build, kind, data) -> None:
    given_values = data.draw(st.lists(values))
    made = build(given_values)
    made.validate(full=True)
    assert made.equals(pa.array(given_values, kind))


@pytest.mark.parametrize("kind", [pa.int32(), pa.int64()])
def test_numbers_from_a_list_or_an_array(kind: pa.DataType) -> None:
    values = [0, 5, -3, 30_000]
    for given_as in (values, np.array(values), np.array(values, np.int16)):
        made = numbers(given_as, kind)
        made.validate(full=True)
        assert made.equals(pa.array(values, kind))
    assert numbers([], kind).equals(pa.array([], kind))


def test_a_literal_is_a_string_scalar() -> None:
    for text in ("", "docs/", '","text":"', "é\n"):
        assert literal(text).equals(pa.scalar(text, pa.string()))


@given(st.lists(st.booleans()))
@settings(deadline=None)  # pyarrow's first conversion imports pandas
def test_booleans_from_a_numpy_mask(values: list[bool]) -> None:
    made = booleans(np.array(values, bool))
    made.validate(full=True)
    assert made.equals(pa.array(values, pa.bool_()))


def test_a_number_out_of_range_is_refused_not_wrapped() -> None:
    with pytest.raises(OverflowError):
        numbers([2**31], pa.int32())
    assert numbers(np.array([2**31]), pa.int64()).to_pylist() == [2**31]
