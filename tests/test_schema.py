"""twin.schema: columns coerced to their canonical dtypes, cheaply when they already are."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

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
