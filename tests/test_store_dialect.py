"""twin.store.dialect: the values each store binds, the same for a short column as for a long."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin import schema
from twin.schema import Column, coerce_series
from twin.store.dialect import _pg_value, _pg_values, format_datetimes, to_sql_values

TIMES = ["1969-12-31 23:59:59.999600", "2026-12-07 06:30:00.123956", None,
         "1900-01-01 00:00:00.0"]


def _times(unit: str, zone: str) -> pd.Series:
    stamps = pd.Series(pd.to_datetime(TIMES, format="ISO8601").as_unit(unit)).dt.tz_localize(zone)
    if unit == "ns":  # below a microsecond: floored, also before 1970
        extra = pd.Series([pd.Timestamp("2026-01-01 00:00:00.123456789", tz=zone),
                           pd.Timestamp("1969-12-31 23:59:59.999999999", tz=zone)])
        stamps = pd.concat([stamps, extra], ignore_index=True)
    return stamps


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_times_are_written_as_utc_milliseconds_floored(unit, zone):
    stamps = _times(unit, zone)
    floored = stamps.dt.tz_convert("UTC").dt.floor("ms")
    expected = [None if pd.isna(t) else t.strftime("%Y-%m-%dT%H:%M:%S.") +
                f"{t.microsecond // 1000:03d}Z" for t in floored]
    assert format_datetimes(stamps).tolist() == expected
    assert to_sql_values(stamps, "datetime") == expected


@pytest.mark.parametrize("zone", ["UTC", "Asia/Shanghai"])
@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_postgresql_gets_utc_datetimes_floored_to_microseconds(unit, zone):
    stamps = _times(unit, zone)
    got = _pg_values(stamps, "datetime")
    assert got == [_pg_value(v, "datetime") for v in stamps.tolist()]
    floored = stamps.dt.tz_convert("UTC").dt.floor("us")
    assert got == [None if pd.isna(t) else t.to_pydatetime() for t in floored]
    assert got[2] is None


VALUES = {"text": ["a", None, "北"], "int": [1, None, 3], "float": [1.5, np.nan, 2.0],
          "bool": [True, None, False], "json": ['{"a": 1}', None, "[1]"],
          "datetime": ["2026-12-07T06:30:00.123Z", None, "2026-12-07T06:30:01.000Z"]}


@pytest.mark.parametrize("dtype", sorted(VALUES))
def test_a_short_column_binds_as_a_long_one_does(dtype):
    column = Column("c", dtype, "c", "c")
    short = coerce_series(pd.Series(VALUES[dtype], dtype=object), column)
    long = coerce_series(pd.Series(VALUES[dtype] * schema.SMALL, dtype=object), column)
    assert to_sql_values(short, dtype) == to_sql_values(long, dtype)[: len(short)]
    assert to_sql_values(short, dtype)[1] is None
