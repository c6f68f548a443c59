"""The working calendar: working hours, holidays, make-up days; deadlines and elapsed time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import ValidationError
from twin.timeutil import local_zone, to_utc

LOGGER = logging.getLogger(__name__)

#: The four units of a time limit (DOMAIN.md, 立结案标准).
UNITS = ("urgent_hours", "working_hours", "working_days", "calendar_days")
#: Units measured on the working clock (inside working hours of working days).
WORKING_UNITS = ("working_hours", "working_days")

_DAY = np.int64(86_400)


def _parse_hhmm(text: str) -> int:
    try:
        hours, minutes = str(text).strip().split(":")
        value = int(hours) * 3600 + int(minutes) * 60
    except ValueError:
        raise ValidationError(
            f"working hours: {text!r} is not a HH:MM time; write e.g. 08:30") from None
    if not 0 <= value <= 86_400:
        raise ValidationError(f"working hours: {text!r} is outside 00:00–24:00")
    return value


@dataclass(frozen=True, eq=False)
class WorkCalendar:
    """Working days and hours in one time zone, with arrays for vectorised deadline arithmetic.

    Build one with :func:`load_calendar` (the seed tables) or :meth:`from_rules`. All times go in
    and come out as timezone-aware timestamps; inside, seconds since the epoch of local wall time
    are used, so the zone must keep one UTC offset over the calendar's years (Asia/Shanghai has
    no daylight saving; a zone that has is refused).
    """

    first_day: date
    last_day: date
    holidays: frozenset[date]
    workdays: frozenset[date]  # make-up working days on weekends (调休上班)
    periods: tuple[tuple[int, int], ...]  # working periods of a day, seconds from midnight
    timezone: str = field(default_factory=local_zone)
    provisional_years: frozenset[int] = frozenset()
    _arrays: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_rules(
        cls,
        first_day: date | str,
        last_day: date | str,
        *,
        holidays: list[date | str] = (),
        workdays: list[date | str] = (),
        periods: list[tuple[str, str]] = (("08:30", "12:00"), ("14:30", "17:30")),
        timezone: str | None = None,
        provisional_years: frozenset[int] = frozenset(),
    ) -> WorkCalendar:
        """Build a calendar for ``first_day``–``last_day`` with these days off and make-up days.

        The time zone defaults to :func:`twin.timeutil.local_zone`.

        Raises
        ------
        ValidationError
            If periods overlap, are empty or not in order, a day is listed both ways, or the
            zone changes its UTC offset (daylight saving) within the calendar's years.
        """
        secs = tuple((_parse_hhmm(a), _parse_hhmm(b)) for a, b in periods)
        if not secs:
            raise ValidationError("working hours: at least one period (start, end) is needed")
        for (a, b), nxt in zip(secs, secs[1:] + ((86_401, 86_401),), strict=True):
            if not a < b <= nxt[0]:
                raise ValidationError(
                    f"working hours: periods must be non-empty, in order and not overlap; got "
                    f"{list(periods)}"
                )
        hol = frozenset(pd.Timestamp(d).date() for d in holidays)
        wrk = frozenset(pd.Timestamp(d).date() for d in workdays)
        both = sorted(hol & wrk)
        if both:
            raise ValidationError(f"calendar: {both[:5]} listed both as holiday and as working day")
        cal = cls(pd.Timestamp(first_day).date(), pd.Timestamp(last_day).date(), hol, wrk, secs,
                  timezone or local_zone(), frozenset(provisional_years))
        cal._check_fixed_offset()
        cal._build()
        return cal

    def _check_fixed_offset(self) -> None:
        """Refuse a zone whose UTC offset changes within the calendar (its clock is wall time)."""
        utc = pd.date_range(pd.Timestamp(self.first_day, tz="UTC") - pd.Timedelta(days=1),
                            pd.Timestamp(self.last_day, tz="UTC") + pd.Timedelta(days=2),
                            freq="6h")
        offsets = utc.tz_convert(self.timezone).tz_localize(None) - utc.tz_localize(None)
        if offsets.nunique() > 1:
            raise ValidationError(
                f"working calendar: time zone {self.timezone} changes its UTC offset between "
                f"{self.first_day} and {self.last_day} (daylight saving); the working clock needs "
                "a fixed offset. Set TWIN_TIMEZONE to the community's zone without daylight "
                "saving, e.g. Asia/Shanghai."
            )

    def _build(self) -> None:
        days = pd.date_range(self.first_day, self.last_day, freq="D")
        weekday = days.day_of_week < 5
        dates = days.date
        is_hol = np.isin(dates, np.array(sorted(self.holidays), dtype=object))
        is_wrk = np.isin(dates, np.array(sorted(self.workdays), dtype=object))
        working = (weekday & ~is_hol) | is_wrk
        day_secs = days.as_unit("s").asi8.astype(np.int64)
        wdays = day_secs[working]
        starts = (wdays[:, None] + np.array([p[0] for p in self.periods])[None, :]).ravel()
        ends = (wdays[:, None] + np.array([p[1] for p in self.periods])[None, :]).ravel()
        lengths = ends - starts
        cum = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._arrays.update(
            day_secs=day_secs, working=working, wdays=wdays, starts=starts, ends=ends,
            cum=cum, cum_end=cum + lengths, lo=day_secs[0], hi=day_secs[-1] + _DAY,
        )

    # -- days ---------------------------------------------------------------------------------

    @property
    def seconds_per_day(self) -> int:
        """Working seconds in one working day."""
        return int(sum(b - a for a, b in self.periods))

    def is_working_day(self, days: Any) -> np.ndarray | bool:
        """Tell working days (weekdays not on holiday, plus make-up days); vectorised."""
        scalar = np.ndim(days) == 0
        idx = pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(days))).normalize()
        if idx.tz is not None:
            idx = idx.tz_localize(None)
        secs = idx.as_unit("s").asi8.astype(np.int64)
        self._check_range(secs)
        a = self._arrays
        out = a["working"][((secs - a["lo"]) // _DAY).astype(np.int64)]
        return bool(out[0]) if scalar else out

    # -- conversions ---------------------------------------------------------------------------

    def _to_local_secs(self, times: Any) -> np.ndarray:
        ts = pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(times, utc=True)))
        local = ts.tz_convert(self.timezone).tz_localize(None)
        secs = local.as_unit("s").asi8.astype(np.int64)
        self._check_range(secs[~np.isnat(local.values)])
        return secs

    def _from_local_secs(self, secs: np.ndarray) -> pd.DatetimeIndex:
        local = pd.to_datetime(secs, unit="s")
        return pd.DatetimeIndex(local).tz_localize(self.timezone).tz_convert("UTC")

    def _check_range(self, secs: np.ndarray) -> None:
        a = self._arrays
        if len(secs) and (secs.min() < a["lo"] or secs.max() >= a["hi"]):
            bad = pd.to_datetime(secs[(secs < a["lo"]) | (secs >= a["hi"])][:1], unit="s")[0]
            raise ValidationError(
                f"working calendar covers {self.first_day}–{self.last_day}; {bad:%Y-%m-%d} is "
                "outside it. Add the year's holiday notice as data/seed/calendar_<year>.csv."
            )

    def _warn_provisional(self, secs: np.ndarray) -> None:
        if self.provisional_years and len(secs):
            years = set(pd.to_datetime([secs.min(), secs.max()], unit="s").year)
            touched = sorted(years & self.provisional_years)
            if touched:
                LOGGER.warning("working calendar for %s is provisional (statutory days only); "
                               "load the State Council notice", touched)

    # -- the working clock ---------------------------------------------------------------------

    def _work_position(self, secs: np.ndarray) -> np.ndarray:
        """Working seconds from the calendar's start up to each local time (vectorised)."""
        a = self._arrays
        i = np.searchsorted(a["starts"], secs, side="right") - 1
        ok = i >= 0
        ic = np.clip(i, 0, None)
        inside = np.clip(secs - a["starts"][ic], 0, a["ends"][ic] - a["starts"][ic])
        return np.where(ok, a["cum"][ic] + inside, 0)

    def _from_work_position(self, work: np.ndarray) -> np.ndarray:
        a = self._arrays
        i = np.searchsorted(a["cum_end"], work, side="left")
        if (i >= len(a["starts"])).any():
            raise ValidationError(
                f"a deadline falls after {self.last_day}, the end of the working calendar; add "
                "the next year's notice as data/seed/calendar_<year>.csv."
            )
        return a["starts"][i] + (work - a["cum"][i])

    def _snap(self, secs: np.ndarray) -> np.ndarray:
        """Each time, moved forward to the next working moment (unchanged inside working time)."""
        a = self._arrays
        i = np.searchsorted(a["ends"], secs, side="left")
        if (i >= len(a["starts"])).any():
            raise ValidationError(f"no working time after {self.last_day} in the calendar; add "
                                  "the next year's notice as data/seed/calendar_<year>.csv.")
        return np.maximum(secs, a["starts"][i])

    # -- public arithmetic ---------------------------------------------------------------------

    def add(self, start: Any, amount: float, unit: str) -> pd.Timestamp:
        """Return the deadline *amount* *unit* after *start* (one case; see :meth:`deadlines`)."""
        return self.deadlines([start], [amount], [unit])[0]

    def deadlines(self, starts: Any, amounts: Any, units: Any) -> pd.DatetimeIndex:
        """Deadlines for many cases at once (vectorised; no per-row Python).

        Parameters
        ----------
        starts
            Start times (timezone-aware, or naive UTC).
        amounts
            Time limits, one per start (fractions allowed).
        units
            One of :data:`UNITS` per start (or a single unit for all):
            ``urgent_hours`` run 24/7; ``working_hours`` run only inside working periods of
            working days; ``working_days`` move the start to the next working moment, then to the
            same clock time that many working days later; ``calendar_days`` are 24-hour days.

        Returns
        -------
        pandas.DatetimeIndex
            UTC deadlines; NaT where a start is missing.

        Raises
        ------
        ValidationError
            For an unknown unit, a negative amount, or times outside the calendar.
        """
        secs = self._to_local_secs(starts)
        n = len(secs)
        amounts = np.broadcast_to(np.asarray(amounts, dtype="float64"), (n,))
        units = np.broadcast_to(np.asarray(units, dtype=object), (n,))
        unknown = sorted(set(units.tolist()) - set(UNITS))
        if unknown:
            raise ValidationError(f"unknown time-limit unit(s) {unknown}; use one of {list(UNITS)}")
        if (amounts < 0).any() or np.isnan(amounts).any():
            raise ValidationError("time limits must be non-negative numbers")
        missing = pd.isna(pd.to_datetime(starts, utc=True))
        missing = np.atleast_1d(np.asarray(missing))
        out = np.zeros(n, dtype=np.int64)
        secs = np.where(missing, self._arrays["starts"][0], secs)
        by = {u: units == u for u in UNITS}
        m = by["urgent_hours"]
        out[m] = secs[m] + np.round(amounts[m] * 3600).astype(np.int64)
        m = by["calendar_days"]
        out[m] = secs[m] + np.round(amounts[m] * 86_400).astype(np.int64)
        m = by["working_hours"]
        if m.any():
            pos = self._work_position(secs[m])
            add = np.round(amounts[m] * 3600).astype(np.int64)
            out[m] = np.where(add > 0, self._from_work_position(pos + add), secs[m])
        m = by["working_days"]
        if m.any():
            out[m] = self._add_working_days(secs[m], amounts[m])
        self._warn_provisional(out[~missing])
        result = self._from_local_secs(out)
        return result.where(~missing, pd.NaT)

    def _add_working_days(self, secs: np.ndarray, days: np.ndarray) -> np.ndarray:
        a = self._arrays
        whole = np.floor(days).astype(np.int64)
        frac = days - whole
        snapped = self._snap(secs)
        day0 = snapped - (snapped % _DAY)
        k = np.searchsorted(a["wdays"], day0)
        target = k + whole
        if (target >= len(a["wdays"])).any():
            raise ValidationError(
                f"a deadline falls after {self.last_day}, the end of the working calendar; add "
                "the next year's notice as data/seed/calendar_<year>.csv."
            )
        result = a["wdays"][target] + (snapped - day0)
        if (frac > 0).any():  # a fraction of a working day is that share of the day's hours
            extra = np.round(frac * self.seconds_per_day).astype(np.int64)
            pos = self._work_position(result)
            result = np.where(extra > 0, self._from_work_position(pos + extra), result)
        return result

    def working_seconds(self, start: Any, end: Any) -> np.ndarray:
        """Working seconds between *start* and *end* (vectorised; negative when end < start)."""
        s = self._to_local_secs(start)
        e = self._to_local_secs(end)
        return self._work_position(e) - self._work_position(s)

    def elapsed_seconds(self, start: Any, end: Any, units: Any) -> np.ndarray:
        """Seconds from *start* to *end* on each unit's clock (working clock for working units)."""
        s = self._to_local_secs(start)
        e = self._to_local_secs(end)
        units = np.broadcast_to(np.asarray(units, dtype=object), (len(s),))
        working = np.isin(units, WORKING_UNITS)
        return np.where(working, self._work_position(e) - self._work_position(s), e - s)


def _seed_dir(seed_dir: str | Path | None) -> Path:
    return Path(seed_dir) if seed_dir else Path(settings.get("data_dir")) / "seed"


def read_calendar_tables(seed_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the seed tables: every ``calendar_<year>.csv`` stacked, and ``working_hours.csv``.

    Raises
    ------
    ValidationError
        If no calendar file is found or a row is malformed.
    """
    folder = _seed_dir(seed_dir)
    files = sorted(folder.glob("calendar_*.csv"))
    if not files:
        raise ValidationError(
            f"no calendar_<year>.csv in {folder}; the working calendar needs at least one year"
        )
    frames = []
    for path in files:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        frame["file"] = path.name
        frames.append(frame)
    days = pd.concat(frames, ignore_index=True)
    need = {"date", "kind", "name_zh", "name_en", "status"}
    if not need <= set(days.columns):
        raise ValidationError(
            f"calendar files need columns {sorted(need)}; got {list(days.columns)}")
    try:
        days["date"] = pd.to_datetime(days["date"], format="%Y-%m-%d").dt.date
    except ValueError as exc:
        raise ValidationError(f"calendar: a date is not YYYY-MM-DD ({exc})") from None
    bad = ~days["kind"].isin(["holiday", "workday"])
    if bad.any():
        raise ValidationError(
            f"calendar: kind must be holiday or workday; got {days.loc[bad, 'kind'].unique()[:5]}"
        )
    bad_year = days["date"].map(lambda d: d.year) != days["file"].str[9:13].astype(int)
    if bad_year.any():
        raise ValidationError(
            f"calendar: dates {days.loc[bad_year, 'date'].tolist()[:5]} are in the wrong year file"
        )
    dup = days["date"].duplicated(keep=False)
    if dup.any():
        raise ValidationError(f"calendar: dates listed twice: {days.loc[dup, 'date'].tolist()[:5]}")
    hours = pd.read_csv(folder / "working_hours.csv", dtype=str, keep_default_na=False)
    return days, hours


def calendar_from_tables(days: pd.DataFrame, hours: pd.DataFrame, zone: str | None = None
                         ) -> WorkCalendar:
    """Build the :class:`WorkCalendar` from the seed tables of :func:`read_calendar_tables`.

    The time zone is *zone*, else :func:`twin.timeutil.local_zone`; the hours table may name it
    in a ``timezone`` column, and must then name that one.

    Raises
    ------
    ValidationError
        If the table names another zone, or several.
    """
    years = sorted({int(f[9:13]) for f in days["file"]}) if "file" in days else sorted(
        {d.year for d in days["date"]})
    provisional = frozenset(
        int(y) for y in {d.year for d in days.loc[days["status"] == "provisional", "date"]})
    zone = zone or local_zone()
    named = set(hours["timezone"]) - {""} if "timezone" in hours else set()
    if named - {zone}:
        raise ValidationError(
            f"working_hours.csv names the time zone {', '.join(sorted(named))}, but the "
            f"community's zone (setting timezone, TWIN_TIMEZONE) is {zone}; make them agree "
            "(or leave the table's timezone column empty)."
        )
    return WorkCalendar.from_rules(
        date(years[0], 1, 1),
        date(years[-1], 12, 31),
        holidays=days.loc[days["kind"] == "holiday", "date"].tolist(),
        workdays=days.loc[days["kind"] == "workday", "date"].tolist(),
        periods=list(zip(hours["start"], hours["end"], strict=True)),
        timezone=zone,
        provisional_years=provisional,
    )


@cache
def _cached(folder: str, zone: str) -> WorkCalendar:
    return calendar_from_tables(*read_calendar_tables(folder), zone=zone)


def load_calendar(seed_dir: str | Path | None = None) -> WorkCalendar:
    """Load the working calendar from ``data/seed``.

    Cached per folder and time zone: restart after editing the tables.
    """
    return _cached(str(_seed_dir(seed_dir).resolve()), local_zone())


def to_datetime(value: Any) -> pd.Timestamp:
    """Return a timezone-aware UTC timestamp from a datetime, ISO text or Timestamp (naive: UTC).

    Unlike :func:`twin.timeutil.to_utc` it takes only one time, never a missing one.
    """
    if isinstance(value, datetime | pd.Timestamp | str | np.datetime64):
        return to_utc(value)
    raise ValidationError(f"not a time: {value!r}; give an ISO 8601 string or a datetime")
