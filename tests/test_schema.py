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


@pytest.mark.parametrize("n", [3, 200], ids=["short", "long"])
@pytest.mark.parametrize("dtype", schema.DTYPES)
def test_a_column_the_frame_lacks_is_what_coerce_series_makes_of_an_empty_one(dtype, n):
    col = Column("x", dtype, "x", "x")
    index = pd.RangeIndex(n)
    pd.testing.assert_series_equal(schema._absent_column(index, col),
                                   coerce_series(schema._absent(index), col))


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


def test_a_few_records_get_the_values_of_the_frame_path():
    from twin.store.dialect import SQLITE

    stamp = pd.Timestamp("2026-12-07 06:30:00.123456789", tz="Asia/Shanghai")
    records = [
        {"id": "C1", "status": "collected", "lon": np.float64(110.3), "lat": 25, "version": 1,
         "reworks": np.int64(2), "extended": np.bool_(False), "requested_at": stamp,
         "updated_at": dt.datetime(2026, 12, 7, 6, 30), "timer_start": "2026-12-07T06:30:00Z",
         "timer_deadline": "2026-12-07T14:30:00.5+08:00", "data": {"b": 1, "a": "二"}},
        {"id": "C2", "status": None, "lon": np.nan, "lat": None, "version": 1,
         "requested_at": None, "updated_at": pd.NaT, "data": '{"z": 1, "a": 2}'},
    ]
    columns = schema.coerce_records(schema.CASES, records)
    frame = schema.coerce_table(schema.CASES, pd.DataFrame(records))
    for col in schema.CASES.columns:  # bound alike: value by value and column by column
        assert [SQLITE.value(v, col.dtype) for v in columns[col.name]] == SQLITE.values(
            frame[col.name], col.dtype), col.name


@pytest.mark.parametrize("odd", [{"lat": "25.1"}, {"requested_at": "2026-W49-1"},
                                 {"unknown": 1}, {"extended": "是"}])
def test_records_with_a_value_to_parse_go_the_frame_way(odd):
    assert schema.coerce_records(schema.CASES, [{"id": "C1", **odd}]) is None
    assert schema.coerce_records(schema.CASES, [{"id": "C1"}] * (schema.SMALL + 1)) is None
