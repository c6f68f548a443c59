from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from twin.errors import ValidationError
from twin.workcal import WorkCalendar, calendar_from_tables, load_calendar, read_calendar_tables

TZ = "Asia/Shanghai"


def t(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=TZ)


@pytest.fixture(scope="module")
def cal() -> WorkCalendar:
    return load_calendar()


# start (local time), amount, unit, expected deadline (local time), why
KNOWN = [
    ("2026-03-02 10:00", 4, "working_hours", "2026-03-02 16:30", "over lunch"),
    ("2026-03-02 11:00", 1, "working_hours", "2026-03-02 12:00", "ends exactly at noon"),
    ("2026-03-02 11:30", 1, "working_hours", "2026-03-02 15:00", "lunch break not counted"),
    ("2026-03-03 20:00", 2, "working_hours", "2026-03-04 10:30", "over a night"),
    ("2026-03-06 16:00", 4, "working_hours", "2026-03-09 11:00", "over a weekend"),
    ("2026-04-02 16:00", 10, "working_hours", "2026-04-07 10:30", "over Qingming Apr 4-6"),
    ("2026-02-13 16:00", 4, "working_hours", "2026-02-14 11:00", "into make-up Saturday Feb 14"),
    ("2026-02-14 17:00", 1, "working_hours", "2026-02-24 09:00", "over Spring Festival"),
    ("2025-12-31 17:00", 1, "working_hours", "2026-01-04 09:00", "New Year, make-up Sunday"),
    ("2026-09-30 17:00", 1, "working_hours", "2026-10-08 09:00", "over National Day"),
    ("2026-03-07 09:00", 0.5, "working_hours", "2026-03-09 09:00", "Saturday report"),
    ("2026-02-13 10:00", 1, "working_days", "2026-02-14 10:00", "make-up Saturday counts"),
    ("2026-02-13 10:00", 2, "working_days", "2026-02-24 10:00", "Spring Festival skipped"),
    ("2026-03-08 20:00", 1, "working_days", "2026-03-10 08:30", "Sunday night starts Monday"),
    ("2026-03-02 10:00", 20, "working_days", "2026-03-30 10:00", "demolish in 20 working days"),
    ("2026-09-24 10:00", 3, "calendar_days", "2026-09-27 10:00", "calendar days ignore holidays"),
    ("2026-09-30 23:00", 2, "urgent_hours", "2026-10-01 01:00", "urgent hours run 24/7"),
    ("2026-03-02 10:00", 0, "working_hours", "2026-03-02 10:00", "zero limit"),
]


@pytest.mark.parametrize("start,amount,unit,expected,why", KNOWN, ids=[k[-1] for k in KNOWN])
def test_known_deadlines(cal, start, amount, unit, expected, why):
    assert cal.add(t(start), amount, unit) == t(expected)


def test_deadlines_are_vectorised_and_agree_with_one_by_one(cal):
    starts = [t(k[0]) for k in KNOWN]
    got = cal.deadlines(pd.Series(starts), [k[1] for k in KNOWN], [k[2] for k in KNOWN])
    assert list(got) == [t(k[3]) for k in KNOWN]
    assert str(got.tz) == "UTC"


def test_missing_start_gives_missing_deadline(cal):
    got = cal.deadlines([t("2026-03-02 10:00"), None], [1, 1], "working_hours")
    assert got[0] == t("2026-03-02 11:00") and pd.isna(got[1])


def test_working_days_of_2026(cal):
    days = pd.to_datetime(["2026-01-01", "2026-01-04", "2026-02-14", "2026-02-23", "2026-02-28",
                           "2026-05-09", "2026-09-20", "2026-10-10", "2026-10-08", "2026-03-07"])
    assert cal.is_working_day(days).tolist() == [False, True, True, False, True, True, True, True,
                                                 True, False]
    # 2026 has 261 weekdays; the notice puts 19 of them off (2+6+1+3+1+1+5) and adds 6
    # make-up weekend days: 261 - 19 + 6 = 248
    year = pd.date_range("2026-01-01", "2026-12-31")
    assert int(cal.is_working_day(year).sum()) == 248


def test_working_seconds_between(cal):
    got = cal.working_seconds([t("2026-03-06 16:00"), t("2026-03-02 08:00")],
                              [t("2026-03-09 11:00"), t("2026-03-02 20:00")])
    assert got.tolist() == [4 * 3600, int(6.5 * 3600)]
    elapsed = cal.elapsed_seconds([t("2026-03-06 16:00")] * 2, [t("2026-03-09 11:00")] * 2,
                                  ["working_hours", "urgent_hours"])
    assert elapsed.tolist() == [4 * 3600, 67 * 3600]


@pytest.mark.parametrize("args,match", [
    ((t("2026-03-02 10:00"), 1, "fortnights"), "unknown time-limit unit"),
    ((t("2026-03-02 10:00"), -1, "working_hours"), "non-negative"),
    ((t("2030-03-02 10:00"), 1, "working_hours"), "calendar_<year>.csv"),
    ((t("2027-12-31 17:00"), 5, "working_days"), "end of the working calendar"),
])
def test_bad_inputs(cal, args, match):
    with pytest.raises(ValidationError, match=match):
        cal.add(*args)


def test_periods_must_not_overlap():
    with pytest.raises(ValidationError, match="overlap"):
        WorkCalendar.from_rules("2026-01-01", "2026-12-31",
                                periods=[("08:30", "12:00"), ("11:00", "17:30")])


def test_seed_tables_load_and_a_broken_one_is_refused(tmp_path):
    days, hours = read_calendar_tables()
    assert {"2025", "2026", "2027"} <= set(days["file"].str[9:13])
    assert days.loc[days["kind"] == "workday"].shape[0] >= 6
    days.loc[0, "kind"] = "party"
    with pytest.raises(ValidationError, match="kind must be holiday or workday"):
        (tmp_path / "calendar_2026.csv").write_text(days.drop(columns="file").to_csv(index=False))
        (tmp_path / "working_hours.csv").write_text(hours.to_csv(index=False))
        calendar_from_tables(*read_calendar_tables(tmp_path))


def test_fractional_working_days(cal):
    # half a working day = 3 h 15 min of working time
    assert cal.add(t("2026-03-02 08:30"), 1.5, "working_days") == t("2026-03-03 11:45")
    assert np.isclose(cal.seconds_per_day, 6.5 * 3600)
