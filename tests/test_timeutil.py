"""twin.timeutil: the local zone read from the settings at call time, and one naive→UTC rule."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twin import cases, kpi
from twin.errors import ConfigError, ValidationError
from twin.timeutil import local_zone, to_local, to_utc
from twin.workcal import WorkCalendar, load_calendar, read_calendar_tables

ROOT = Path(__file__).resolve().parent.parent
Z = pd.Timestamp("2026-03-02 01:30", tz="UTC")  # = 09:30 in Asia/Shanghai


# -- the zone ------------------------------------------------------------------------------------


def test_the_local_zone_is_asia_shanghai_by_default(monkeypatch):
    monkeypatch.delenv("TWIN_TIMEZONE", raising=False)
    assert local_zone() == "Asia/Shanghai"
    assert to_local(Z).isoformat() == "2026-03-02T09:30:00+08:00"


def test_the_setting_is_read_at_call_time(monkeypatch):
    monkeypatch.setenv("TWIN_TIMEZONE", "Asia/Tokyo")
    assert local_zone() == "Asia/Tokyo"
    assert to_local(Z).isoformat() == "2026-03-02T10:30:00+09:00"
    monkeypatch.setenv("TWIN_TIMEZONE", "UTC")
    assert to_local(Z).isoformat() == "2026-03-02T01:30:00+00:00"


@pytest.mark.parametrize("bad", ["Asia/Shanghi", "GMT+8 please", "../../etc/passwd"])
def test_an_unknown_zone_is_a_config_error_saying_how_to_fix_it(monkeypatch, bad):
    monkeypatch.setenv("TWIN_TIMEZONE", bad)
    with pytest.raises(ConfigError, match=r"TWIN_TIMEZONE=.*IANA time zone name.*unset it"):
        local_zone()


def test_asia_shanghai_keeps_one_offset_all_year():
    # the working clock counts local wall time; that is only right in a zone without DST
    hours = pd.date_range("2024-01-01", "2028-01-01", freq="h", tz="UTC")
    offsets = hours.tz_convert("Asia/Shanghai").tz_localize(None) - hours.tz_localize(None)
    assert set(offsets) == {pd.Timedelta(hours=8)}


def test_a_zone_with_daylight_saving_is_refused_by_the_working_calendar(monkeypatch):
    with pytest.raises(ValidationError, match="Europe/Berlin changes its UTC offset"):
        WorkCalendar.from_rules("2026-01-01", "2026-12-31", timezone="Europe/Berlin")
    monkeypatch.setenv("TWIN_TIMEZONE", "America/New_York")
    with pytest.raises(ValidationError, match="daylight saving"):
        WorkCalendar.from_rules("2026-01-01", "2026-12-31")


def test_the_override_reaches_calendar_periods_and_case_ids(monkeypatch, tmp_path):
    monkeypatch.delenv("TWIN_TIMEZONE", raising=False)
    assert kpi.period_bounds("2026-03")[0] == pd.Timestamp("2026-02-28 16:00", tz="UTC")
    assert load_calendar().timezone == "Asia/Shanghai"
    late = pd.Timestamp("2026-03-01 17:00", tz="UTC")  # already Monday the 2nd in Shanghai
    assert cases.new_case_id(late).startswith("20260302-")
    days, hours = read_calendar_tables()
    (tmp_path / "calendar_2026.csv").write_text(
        days.loc[days["file"] == "calendar_2026.csv"].drop(columns="file").to_csv(index=False))
    hours.drop(columns="timezone").to_csv(tmp_path / "working_hours.csv", index=False)

    monkeypatch.setenv("TWIN_TIMEZONE", "Asia/Tokyo")
    assert kpi.period_bounds("2026-03")[0] == pd.Timestamp("2026-02-28 15:00", tz="UTC")
    assert kpi.period_bounds(("2026-03-02", "2026-03-03"))[0] == pd.Timestamp(
        "2026-03-01 15:00", tz="UTC")
    tokyo = load_calendar(tmp_path)  # a table naming no zone takes the setting's
    assert tokyo.timezone == "Asia/Tokyo"
    assert tokyo.add(pd.Timestamp("2026-03-02 08:30", tz="Asia/Tokyo"), 1, "working_hours") \
        == pd.Timestamp("2026-03-02 09:30", tz="Asia/Tokyo")
    with pytest.raises(ValidationError, match="names the time zone Asia/Shanghai.*Asia/Tokyo"):
        load_calendar()  # the seed table names Shanghai: one zone, not two
    monkeypatch.setenv("TWIN_TIMEZONE", "UTC")
    assert cases.new_case_id(late).startswith("20260301-")
    assert load_calendar(tmp_path).timezone == "UTC"  # not the cached Tokyo calendar


# -- one time ------------------------------------------------------------------------------------

SCALARS = [
    ("naive Timestamp is UTC", pd.Timestamp("2026-03-02 01:30"), Z),
    ("aware Timestamp is converted", pd.Timestamp("2026-03-02 09:30", tz="Asia/Shanghai"), Z),
    ("naive datetime", datetime(2026, 3, 2, 1, 30), Z),
    ("aware datetime", datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=8))), Z),
    ("datetime in UTC", datetime(2026, 3, 2, 1, 30, tzinfo=UTC), Z),
    ("text with offset", "2026-03-02T09:30+08:00", Z),
    ("text with Z", "2026-03-02T01:30:00Z", Z),
    ("naive text", "2026-03-02 01:30", Z),
    ("numpy datetime64", np.datetime64("2026-03-02T01:30"), Z),
    ("a date is its midnight", date(2026, 3, 2), pd.Timestamp("2026-03-02", tz="UTC")),
    ("None stays missing", None, pd.NaT),
    ("NaT stays missing", pd.NaT, pd.NaT),
    ("numpy NaT", np.datetime64("NaT"), pd.NaT),
    ("NaN stays missing", float("nan"), pd.NaT),
]


@pytest.mark.parametrize(("why", "value", "expected"), SCALARS, ids=[s[0] for s in SCALARS])
def test_one_time_to_utc(why, value, expected):
    got = to_utc(value)
    if expected is pd.NaT:
        assert got is pd.NaT
    else:
        assert isinstance(got, pd.Timestamp) and str(got.tz) == "UTC" and got == expected


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-45", 1_700_000_000, True, [1], object()])
def test_what_is_not_a_time_is_refused(bad):
    if isinstance(bad, list):
        with pytest.raises(ValidationError, match="not times"):
            to_utc(bad)
        return
    with pytest.raises(ValidationError, match="not a time"):
        to_utc(bad)


def test_naive_times_can_be_read_as_local_wall_time(monkeypatch):
    monkeypatch.delenv("TWIN_TIMEZONE", raising=False)
    assert to_utc("2026-03-02 09:30", naive_zone=local_zone()) == Z
    assert to_utc("2026-03-02T01:30Z", naive_zone=local_zone()) == Z  # aware: unaffected
    assert to_utc(pd.Timestamp("2026-03-02 10:30"), naive_zone="Asia/Tokyo") == Z


# -- many times ----------------------------------------------------------------------------------


def test_series_of_every_kind_come_back_in_utc():
    naive = pd.Series(pd.to_datetime(["2026-03-02 01:30", None]))
    aware = naive.dt.tz_localize("UTC").dt.tz_convert("Asia/Shanghai")
    text = pd.Series(["2026-03-02T09:30+08:00", "2026-03-02T01:30Z", "2026-03-02 01:30", None, ""],
                     index=list("abcde"))
    objects = pd.Series([pd.Timestamp("2026-03-02 09:30", tz="Asia/Shanghai"),
                         datetime(2026, 3, 2, 1, 30, tzinfo=UTC), None], dtype=object)
    for series, n in ((naive, 1), (aware, 1), (text, 3), (objects, 2)):
        got = to_utc(series)
        assert isinstance(got, pd.Series) and str(got.dt.tz) == "UTC"
        assert got.index.equals(series.index)
        assert (got.dropna() == Z).all() and got.notna().sum() == n
    utc = to_utc(naive)
    assert to_utc(utc) is utc  # already UTC: no copy on hot paths


def test_a_series_mixing_naive_and_offset_text_reads_naive_as_the_zone_asked():
    text = pd.Series(["2026-03-02 09:30", "2026-03-02T01:30Z", "2026-03-02T10:30+09:00", None])
    got = to_utc(text, naive_zone="Asia/Shanghai")
    assert got.iloc[:3].eq(Z).all() and got.iloc[3] is pd.NaT
    assert to_utc(text).iloc[0] == pd.Timestamp("2026-03-02 09:30", tz="UTC")


def test_bad_values_in_a_series_are_named():
    with pytest.raises(ValidationError, match=r"not times: \['soon'\]"):
        to_utc(pd.Series(["2026-03-02T01:30Z", "soon", None]))
    with pytest.raises(ValidationError, match="numbers"):
        to_utc(pd.Series([1.5, 2.5]))
    assert to_utc(pd.Series([np.nan, np.nan])).isna().all()  # all missing is fine


def test_indexes_and_lists_come_back_as_utc_datetime_indexes():
    naive = pd.DatetimeIndex(["2026-03-02 01:30", "2026-03-02 02:30"], name="at")
    for value in (naive, naive.tz_localize("UTC").tz_convert("Asia/Shanghai"),
                  ["2026-03-02T09:30+08:00", "2026-03-02T02:30Z"], naive.to_numpy()):
        got = to_utc(value)
        assert isinstance(got, pd.DatetimeIndex) and str(got.tz) == "UTC"
        assert list(got) == [Z, Z + pd.Timedelta(hours=1)]
    assert to_utc(naive).name == "at"
    assert to_utc(pd.DatetimeIndex(["2026-03-02 09:30"]), naive_zone="Asia/Shanghai")[0] == Z
    assert len(to_utc([])) == 0


def test_to_local_keeps_the_kind():
    series = pd.Series([Z, pd.NaT])
    local = to_local(series)
    assert str(local.dt.tz) == "Asia/Shanghai" and local.iloc[0].hour == 9
    assert to_local(pd.DatetimeIndex([Z]))[0].hour == 9
    assert to_local("2026-03-02T01:30Z").hour == 9


# -- declared once -------------------------------------------------------------------------------

# Copies in files other helpers were rewriting when timeutil came in; the lead replaces them after
# merging, and this list only shrinks. Anything outside it fails.
ZONE_PENDING: set[str] = set()
UTC_RULE_PENDING = {  # binary COPY reads: epoch stamps that are UTC by construction (hot path)
                    "twin/store/pgcopy.py"}
ZONE_LITERAL = re.compile(r"""["']Asia/Shanghai["']""")
NAIVE_TO_UTC = re.compile(r"""tz_localize\(\s*["']UTC["']\s*\)""")


def _files_with(pattern: re.Pattern, allowed: set[str]) -> set[str]:
    found = set()
    for folder in ("twin", "ui", "scripts", "layers"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in allowed and pattern.search(path.read_text(encoding="utf-8")):
                found.add(rel)
    return found | ({"app.py"} if pattern.search((ROOT / "app.py").read_text("utf-8")) else set())


def test_the_zone_is_written_only_in_the_settings():
    assert _files_with(ZONE_LITERAL, ZONE_PENDING | {"twin/settings.py"}) == set()


def test_naive_times_become_utc_only_in_timeutil():
    assert _files_with(NAIVE_TO_UTC, UTC_RULE_PENDING | {"twin/timeutil.py"}) == set()
