"""twin.schema: columns coerced to their canonical dtypes, cheaply when they already are."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from twin import schema
from twin.schema import Column, ValidationError, coerce_series

TEXT = Column("name", "text", "名称", "name")
DATE = Column("day", "date", "日期", "day")


def test_text_with_nothing_missing_is_the_same_series():
    series = pd.Series(["a", "北门", "c"], dtype=object)
    assert coerce_series(series, TEXT) is series  # one pass, no copy


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA])
def test_text_with_missing_values_holds_none_for_each(missing):
    out = coerce_series(pd.Series(["a", missing, "c"], dtype=object), TEXT)
    assert out.tolist() == ["a", None, "c"]
    assert out.dtype == object


def test_text_of_other_types_is_converted_and_all_missing_is_all_none():
    assert coerce_series(pd.Series([1, "b", None], dtype=object), TEXT).tolist() == [
        "1", "b", None]
    assert coerce_series(pd.Series([None, np.nan], dtype=object), TEXT).tolist() == [None, None]


def test_dates_with_and_without_missing_values():
    days = pd.Series([dt.date(2026, 1, 2), dt.date(2026, 3, 4)], dtype=object)
    assert coerce_series(days, DATE) is days
    gap = coerce_series(pd.Series([dt.date(2026, 1, 2), np.nan], dtype=object), DATE)
    assert gap.tolist() == [dt.date(2026, 1, 2), None]


def test_a_value_that_does_not_convert_is_named():
    with pytest.raises(ValidationError, match="'x'"):
        coerce_series(pd.Series(["2026-01-02", "x"], dtype=object), DATE)


# -- short columns: converted value by value, exactly as the vectorised path converts them -----

STAMP = "2026-12-07T06:30:00.123Z"
SHORT = [
    ("text", ["a", "北门"]), ("text", ["a", None]), ("text", [None, None]),
    ("text", ["a", np.nan]), ("text", ["x", pd.NA]), ("text", [1, "b"]),
    ("int", [1, 2]), ("int", [1, None]), ("int", [None, None]), ("int", [np.int64(3), None]),
    ("int", ["4", None]), ("int", [True, 2]),
    ("float", [1.5, 2]), ("float", [1.0, None]), ("float", [np.float32(2.5), 3]),
    ("float", ["1.5", None]),
    ("bool", [True, False]), ("bool", [True, None]), ("bool", [np.bool_(True), None]),
    ("bool", [1, 0]), ("bool", [0, None]), ("bool", ["是", "no"]),
    ("datetime", [None, None]), ("datetime", [STAMP, None]), ("datetime", [STAMP, STAMP]),
    ("datetime", ["2026-12-07 14:30:00+08:00", None]),
    ("datetime", [pd.Timestamp("2026-12-07 06:30", tz="UTC"), None]),
    ("json", [{"b": 2, "a": 1}, None]), ("json", ['{"b": 2, "a": 1}', None]),
    ("json", [[1, "二"], "null"]), ("json", [None, None]),
]


@pytest.mark.parametrize("make", [lambda v: pd.Series(v, dtype=object), pd.Series],
                         ids=["object", "inferred"])
@pytest.mark.parametrize(("dtype", "values"), SHORT, ids=[f"{d}-{v}" for d, v in SHORT])
def test_a_short_column_converts_as_a_long_one_does(make, dtype, values):
    column = Column("c", dtype, "c", "c")
    short = make(values)
    assert len(short) <= schema.SMALL
    long = make(values * schema.SMALL)  # over SMALL: the vectorised path
    expected = coerce_series(long, column).iloc[: len(values)]
    pd.testing.assert_series_equal(coerce_series(short, column), expected, check_names=False)


def test_the_short_path_takes_only_values_already_of_their_type():
    assert schema._small(pd.Series([1, "b"], dtype=object), "text") is None
    assert schema._small(pd.Series(["4"], dtype=object), "int") is None
    assert schema._small(pd.Series([True], dtype=object), "int") is None
    assert schema._small(pd.Series([2], dtype=object), "bool") is None  # 2 is not a boolean
    assert schema._small(pd.Series(["2026-12-07 14:30:00+08:00"], dtype=object),
                         "datetime") is None


def test_a_bad_value_in_a_short_column_is_still_named():
    with pytest.raises(ValidationError, match="'x'"):
        coerce_series(pd.Series([1, "x"], dtype=object), Column("n", "int", "n", "n"))
