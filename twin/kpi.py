"""Indicators (绩效评价, GB/T 30428.4) from case timestamps: vectorised groupby, 同比 and 环比."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import pandas as pd

from twin.errors import ValidationError
from twin.store.base import Store
from twin.timeutil import local_zone, to_utc

LOGGER = logging.getLogger(__name__)

#: Slices: the name used in calls → the case column.
SLICES = {
    "grid": "grid_code", "grid_code": "grid_code",
    "resp_grid": "resp_grid_id", "resp_grid_id": "resp_grid_id",
    "community": "community_code", "community_code": "community_code",
    "street": "street_code", "street_code": "street_code",
    "department": "department", "post": "post", "person": "assignee", "assignee": "assignee",
}

#: Rates with their official names: (column, zh, en, numerator, denominator).
RATES = (
    ("close_rate", "结案率", "Close rate", "closed", "due"),
    ("ontime_close_rate", "按期结案率", "On-time close rate", "closed_on_time", "due"),
    ("ontime_file_rate", "按时立案率", "On-time filing rate", "filed_on_time", "filed"),
    ("accurate_file_rate", "准确立案率", "Accurate filing rate", "filed_not_cancelled", "filed"),
    ("accurate_dispatch_rate", "准确派遣率", "Accurate dispatch rate", "dispatched_not_reworked",
     "dispatched"),
    ("ontime_handle_rate", "按期处置率", "On-time handling rate", "handled_on_time",
     "due_to_handle"),
    ("rework_rate", "返工率", "Rework rate", "reworked", "handled"),
    ("extension_rate", "延期率", "Extension rate", "extended", "dispatched"),
)
RATE_NAMES = {r[0]: (r[1], r[2]) for r in RATES}
COUNTS = ("filed", "cancelled", "filed_on_time", "dispatched", "reworked", "extended", "handled",
          "due_to_handle", "handled_on_time", "due", "closed", "closed_on_time")

#: zh/en names of the counts.
COUNT_NAMES = {
    "filed": ("立案数", "Filed"), "cancelled": ("作废数", "Cancelled"),
    "filed_on_time": ("按时立案数", "Filed on time"), "dispatched": ("派遣数", "Dispatched"),
    "reworked": ("返工数", "Reworked"), "extended": ("延期数", "Extended"),
    "handled": ("处置数", "Handled"), "due_to_handle": ("应处置数", "Due to handle"),
    "handled_on_time": ("按期处置数", "Handled on time"), "due": ("应结案数", "Due to close"),
    "closed": ("结案数", "Closed"), "closed_on_time": ("按期结案数", "Closed on time"),
    "score": ("综合评分", "Composite score"), "grade": ("等级", "Grade"),
    "period": ("周期", "Period"), "grid_code": ("单元网格", "Unit grid"),
    "resp_grid_id": ("责任网格", "Responsibility grid"), "community_code": ("社区", "Community"),
    "street_code": ("街道", "Street"), "department": ("部门", "Department"),
    "post": ("岗位", "Post"), "assignee": ("人员", "Person"),
}

#: Default composite weights (sum 1); rework and extension rates count inverted (100 − rate).
DEFAULT_WEIGHTS = {
    "close_rate": 0.25, "ontime_close_rate": 0.25, "ontime_file_rate": 0.1,
    "accurate_file_rate": 0.1, "accurate_dispatch_rate": 0.1, "ontime_handle_rate": 0.1,
    "rework_rate": 0.05, "extension_rate": 0.05,
}
INVERTED = ("rework_rate", "extension_rate")
#: Grade thresholds (lower bounds, %): A ≥ 90, B 75–90, C 60–75, D 40–60, E < 40.
GRADES = (("A", 90.0), ("B", 75.0), ("C", 60.0), ("D", 40.0), ("E", -np.inf))

NEEDED = ("status", "filed_at", "file_deadline", "dispatched_at", "first_rework_at",
          "fed_back_at", "handle_deadline", "closed_at", "deadline_at", "cancelled_at",
          "extended")


def period_bounds(period: Any) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Return ``[start, end)`` in UTC of a period (calendar periods in the local zone).

    A period is ``"2026-03"``, ``"2026"``, ``"2026-Q1"``, ``"2026-03-02"`` or ``(start, end)``.
    """
    if isinstance(period, tuple | list) and len(period) == 2:
        zone = local_zone()  # a bound given without a zone is local wall time
        return to_utc(period[0], naive_zone=zone), to_utc(period[1], naive_zone=zone)
    try:
        if not re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?|-Q[1-4])?", str(period)):
            raise ValueError(period)
        p = pd.Period(str(period))
    except ValueError:
        raise ValidationError(
            f"period {period!r} is not understood; give 2026-03, 2026-Q1, 2026 or (start, end)"
        ) from None
    zone = local_zone()
    return to_utc(p.start_time, naive_zone=zone), to_utc((p + 1).start_time, naive_zone=zone)


def case_counts(cases: pd.DataFrame, as_of: pd.Series | pd.Timestamp) -> pd.DataFrame:
    """Per case 0/1 flags of each count in :data:`COUNTS` as they stood at *as_of* (vectorised).

    The cohort is the cases filed (立案) — every flag is 0 for a case never filed. *as_of* is
    one time or one per case (the end of each case's period): steps after it do not count.
    These are the definitions of :data:`twin.store.base.CASE_COMPONENTS` (which the stores count
    in SQL) written in pandas; the store contract tests check that both give the same counts.
    """
    missing = [c for c in NEEDED if c not in cases]
    if missing:
        raise ValidationError(
            f"indicators need case columns {missing}; build the table with twin.cases.case_table"
        )
    t = {c: to_utc(cases[c]) for c in NEEDED if c not in ("status", "extended")}
    as_of = as_of if isinstance(as_of, pd.Series) else pd.Series(as_of, index=cases.index)

    def by(ts: pd.Series) -> np.ndarray:  # the step happened, no later than as_of
        return (ts.notna() & (ts <= as_of)).to_numpy()

    filed = by(t["filed_at"])
    cancelled = filed & by(t["cancelled_at"])
    closed = filed & ~cancelled & by(t["closed_at"])
    dispatched = filed & by(t["dispatched_at"])
    reworked = dispatched & by(t["first_rework_at"])
    handled = dispatched & by(t["fed_back_at"])
    held = cases["status"].eq("on_hold").to_numpy()
    deadline_passed = by(t["deadline_at"])
    # 应结案数: filed, not cancelled, whose closing deadline has passed by as_of, or closed by then
    due = filed & ~cancelled & ((deadline_passed & ~held) | closed)
    handle_passed = by(t["handle_deadline"])
    due_to_handle = dispatched & ~cancelled & ((handle_passed & ~held) | handled)
    out = pd.DataFrame({
        "filed": filed,
        "cancelled": cancelled,
        # no filing deadline recorded: on time (as twin.store.base.CASE_COMPONENTS counts it)
        "filed_on_time": filed & ((t["filed_at"] <= t["file_deadline"])
                                  | t["file_deadline"].isna()).to_numpy(),
        "dispatched": dispatched,
        "reworked": reworked,
        "extended": dispatched & cases["extended"].fillna(False).astype(bool).to_numpy(),
        "handled": handled,
        "due_to_handle": due_to_handle,
        "handled_on_time": handled & (t["fed_back_at"] <= t["handle_deadline"]).fillna(False)
        .to_numpy(),
        "due": due,
        "closed": closed,
        "closed_on_time": closed & (t["closed_at"] <= t["deadline_at"]).fillna(False).to_numpy(),
    }, index=cases.index)
    return out.astype("int64")


def rates(counts: pd.DataFrame, weights: dict[str, float] | None = None) -> pd.DataFrame:
    """Add the rates (%, NaN where the denominator is 0), the composite score and its grade.

    Computed on the count columns' arrays and added in one step: the table is small and a
    pandas operation per column cost more than the counting in the database.
    """
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    unknown = sorted(set(w) - set(RATE_NAMES))
    if unknown:
        raise ValidationError(f"unknown weights {unknown}; rates are {list(RATE_NAMES)}")
    total_w = sum(w.values())
    if total_w <= 0:
        raise ValidationError("weights must add up to more than 0")
    n = {c: _floats(counts[c]) for c in COUNTS}
    n["filed_not_cancelled"] = n["filed"] - n["cancelled"]
    n["dispatched_not_reworked"] = n["dispatched"] - n["reworked"]
    added: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, _zh, _en, num, den in RATES:
            added[name] = np.where(n[den] > 0, 100.0 * n[num] / n[den], np.nan)
    score: Any = 0.0
    weight_present: Any = 0.0
    for name, wt in w.items():
        value = 100.0 - added[name] if name in INVERTED else added[name]
        score = score + np.nan_to_num(value, nan=0.0) * wt
        weight_present = weight_present + ~np.isnan(value) * wt
    with np.errstate(divide="ignore", invalid="ignore"):
        added["score"] = np.where(weight_present > 0, score / weight_present, np.nan)
    frame = pd.DataFrame(added, index=counts.index)
    frame["grade"] = pd.Series(_grades(added["score"]), index=counts.index, dtype=object)
    out = counts.drop(columns=[c for c in frame if c in counts])
    return pd.concat([out, frame], axis=1)


def _floats(column: pd.Series) -> np.ndarray:
    """Return the column's values as floats, NaN for a missing count (any integer or float)."""
    values = column.to_numpy()
    if values.dtype.kind in "iuf":
        return values.astype("float64", copy=False)
    return column.to_numpy(dtype="float64", na_value=np.nan)


def grade(score: pd.Series) -> pd.Series:
    """Grade scores: A ≥ 90, B 75–90, C 60–75, D 40–60, E < 40 (NaN score → no grade)."""
    return pd.Series(_grades(score.to_numpy(dtype="float64", na_value=np.nan)),
                     index=score.index, dtype=object)


def _grades(score: np.ndarray) -> np.ndarray:
    """Return the grade of each score (:data:`GRADES`), NaN where the score is NaN."""
    bounds = np.array([lower for _g, lower in reversed(GRADES[:-1])])  # 40, 60, 75, 90
    letters = np.array([g for g, _lower in reversed(GRADES)] + [np.nan], dtype=object)
    at = np.searchsorted(bounds, score, side="right")
    return letters[np.where(np.isnan(score), len(GRADES), at)]


def indicators(
    cases: pd.DataFrame,
    *,
    period: Any = None,
    by: str | list[str] | None = None,
    freq: str | None = None,
    as_of: Any = None,
    weights: dict[str, float] | None = None,
    compare: bool = True,
) -> pd.DataFrame:
    """Compute the indicator table: counts, rates (%), composite score and grade per slice.

    Parameters
    ----------
    cases
        Cases with the columns of :func:`twin.cases.case_table` (status, filed_at, file_deadline,
        dispatched_at, first_rework_at, fed_back_at, handle_deadline, closed_at, deadline_at,
        cancelled_at, extended, and the slice columns) — or a store
        (:class:`twin.store.base.Store`): then the counts are computed inside the database by
        :meth:`~twin.store.base.Store.case_counts` (one ``GROUP BY`` per period compared) and
        only the small table of counts comes back; the result is the same.
    period
        The period whose filed cases are evaluated (``"2026-03"``, ``"2026-Q1"``, ``"2026"`` or
        ``(start, end)``); None: all cases, as of *as_of*.
    by
        Slice(s): grid, resp_grid, community, street, department, post, person (or the column
        names). None: one row for everything.
    freq
        ``"M"`` (month), ``"Q"`` or ``"Y"``: also slice by the local calendar period of
        ``filed_at``, each period evaluated as of its own end; adds ``period``.
    as_of
        When the books are closed (default: the end of the period, or now). Steps after it do
        not count.
    weights
        Composite score weights by rate name (default :data:`DEFAULT_WEIGHTS`).
    compare
        With a *period*: add 同比 (``<rate>_yoy``, same period a year before) and 环比
        (``<rate>_mom``, the period before), as differences in percentage points. With *freq*:
        环比 against the previous period of the same slice.

    Returns
    -------
    pandas.DataFrame
        One row per slice (and period), sorted.
    """
    keys = [] if by is None else ([by] if isinstance(by, str) else list(by))
    cols = []
    for k in keys:
        if k not in SLICES:
            raise ValidationError(f"unknown slice {k!r}; slice by one of {sorted(set(SLICES))}")
        cols.append(SLICES[k])
    if freq is not None and freq not in FREQS:
        raise ValidationError(f"freq must be M, Q or Y; got {freq!r}")
    if isinstance(cases, Store):  # counted inside the database
        return _store_indicators(cases, period=period, cols=cols, freq=freq, as_of=as_of,
                                 weights=weights, compare=compare)
    missing = [c for c in cols if c not in cases]
    if missing:
        raise ValidationError(f"cases have no column(s) {missing} to slice by")
    filed_at = to_utc(cases["filed_at"])
    if freq is not None:
        keep = filed_at.notna()
        if period is not None:
            start, end = period_bounds(period)
            keep &= (filed_at >= start) & (filed_at < end)
        sub = cases.loc[keep]
        code, labels, ends = _period_codes(filed_at[keep], freq)
        if as_of is not None:
            ends = ends.clip(upper=pd.Timestamp(as_of, tz="UTC") if pd.Timestamp(as_of).tzinfo
                             is None else pd.Timestamp(as_of))
        flags = case_counts(sub, ends)
        flags["period"] = labels
        group = cols + ["period"]
        for c in cols:
            flags[c] = sub[c].to_numpy()
        table = flags.groupby(group, dropna=False, sort=True).sum().reset_index()
        table = rates(table, weights)
        if compare and len(table):
            for name in RATE_NAMES:
                prev = table.groupby(cols, dropna=False)[name].shift(1) if cols else \
                    table[name].shift(1)
                table[f"{name}_mom"] = table[name] - prev
        return table
    if period is not None:
        start, end = period_bounds(period)
    else:
        start, end = None, None
    stop = _as_of(as_of, end)
    table = _table(cases, filed_at, start, end, stop, cols, weights)
    if compare and period is not None:
        for suffix, shift in (("yoy", pd.DateOffset(years=1)), ("mom", None)):
            if shift is None:
                length = end - start
                pstart, pend = _previous(period, start, end, length)
            else:
                pstart, pend = start - shift, end - shift
            other = _table(cases, filed_at, pstart, pend, min(stop - (end - pend), pend)
                           if stop < end else pend, cols, weights)
            table = _compare(table, other, cols, suffix)
    return table


FREQS = {"M": "month", "Q": "quarter", "Y": "year"}


def _as_of_or_none(as_of: Any) -> pd.Timestamp | None:
    return None if as_of is None else to_utc(as_of)


def _store_indicators(store, *, period, cols, freq, as_of, weights, compare) -> pd.DataFrame:
    """:func:`indicators` with the counting done by the store (same rows, same numbers)."""
    if freq is not None:
        since, until = period_bounds(period) if period is not None else (None, None)
        table = store.case_counts(list(COUNTS), by=cols, period=FREQS[freq], since=since,
                                  until=until, as_of=_as_of_or_none(as_of))
        table = rates(table, weights)
        if compare and len(table):
            for name in RATE_NAMES:
                prev = table.groupby(cols, dropna=False)[name].shift(1) if cols else \
                    table[name].shift(1)
                table[f"{name}_mom"] = table[name] - prev
        return table
    start, end = period_bounds(period) if period is not None else (None, None)
    stop = _as_of(as_of, end)

    def counted(pstart, pend, pstop) -> pd.DataFrame:
        return rates(store.case_counts(list(COUNTS), by=cols, since=pstart, until=pend,
                                       as_of=pstop), weights)

    table = counted(start, end, stop)
    if compare and period is not None:
        for suffix, shift in (("yoy", pd.DateOffset(years=1)), ("mom", None)):
            if shift is None:
                pstart, pend = _previous(period, start, end, end - start)
            else:
                pstart, pend = start - shift, end - shift
            other = counted(pstart, pend, min(stop - (end - pend), pend) if stop < end else pend)
            table = _compare(table, other, cols, suffix)
    return table


def _compare(table: pd.DataFrame, other: pd.DataFrame, cols: list[str], suffix: str
             ) -> pd.DataFrame:
    """Add ``<rate>_<suffix>``: the difference with the same slice of *other* (points)."""
    rate_cols = list(RATE_NAMES)
    if cols:
        table = table.merge(other[cols + rate_cols], on=cols, how="left", suffixes=("", "_prev"))
    else:
        for r in rate_cols:
            table[f"{r}_prev"] = other[r].iloc[0] if len(other) else np.nan
    for r in rate_cols:
        table[f"{r}_{suffix}"] = table[r] - table[f"{r}_prev"]
    return table.drop(columns=[f"{r}_prev" for r in rate_cols])


def _period_codes(filed_at: pd.Series, freq: str) -> tuple[np.ndarray, np.ndarray, pd.Series]:
    """Local calendar period of each time: integer codes, labels and period ends (vectorised).

    Only the few distinct periods are turned into Period objects; the rows get them by lookup.
    """
    zone = local_zone()
    local = filed_at.dt.tz_convert(zone)
    year = local.dt.year.to_numpy()
    if freq == "M":
        code = year * 12 + local.dt.month.to_numpy() - 1
    elif freq == "Q":
        code = year * 4 + (local.dt.month.to_numpy() - 1) // 3
    else:
        code = year
    uniq, inverse = np.unique(code, return_inverse=True)
    periods = [pd.Period(year=int(c // 12), month=int(c % 12) + 1, freq="M") if freq == "M"
               else pd.Period(year=int(c // 4), quarter=int(c % 4) + 1, freq="Q") if freq == "Q"
               else pd.Period(year=int(c), freq="Y") for c in uniq]
    labels = np.array([str(p) for p in periods], dtype=object)[inverse]
    end_u = to_utc(pd.DatetimeIndex([(p + 1).start_time for p in periods]), naive_zone=zone)
    ends = pd.Series(end_u[inverse], index=filed_at.index)
    return code, labels, ends


def _previous(period: Any, start, end, length) -> tuple[pd.Timestamp, pd.Timestamp]:
    if not isinstance(period, tuple | list):
        p = pd.Period(str(period)) - 1
        return period_bounds(str(p))
    return start - length, start


def _as_of(as_of: Any, end: pd.Timestamp | None) -> pd.Timestamp:
    now = pd.Timestamp.now(tz="UTC")
    if as_of is not None:
        return to_utc(as_of)
    return now if end is None else min(end, now)


def _table(cases, filed_at, start, end, stop, cols, weights) -> pd.DataFrame:
    keep = filed_at.notna()
    if start is not None:
        keep &= (filed_at >= start) & (filed_at < end)
    sub = cases.loc[keep]
    flags = case_counts(sub, stop)
    if cols:
        for c in cols:
            flags[c] = sub[c].to_numpy()
        table = flags.groupby(cols, dropna=False, sort=True).sum().reset_index()
    else:
        table = flags.sum().to_frame().T.astype("int64")
    return rates(table, weights)


def average_handling_hours(cases: pd.DataFrame, *, by: str | list[str] | None = None,
                           calendar=None) -> pd.DataFrame:
    """Mean hours from filing to closing of closed cases; working hours too with a calendar."""
    keys = [] if by is None else [SLICES[k] for k in ([by] if isinstance(by, str) else by)]
    closed = cases.loc[to_utc(cases["closed_at"]).notna() & to_utc(cases["filed_at"]).notna()]
    frame = pd.DataFrame({k: closed[k] for k in keys}, index=closed.index)
    start, stop = to_utc(closed["filed_at"]), to_utc(closed["closed_at"])
    frame["hours"] = (stop - start).dt.total_seconds() / 3600
    if calendar is not None and len(closed):
        frame["working_hours"] = calendar.working_seconds(start, stop) / 3600
    if keys:
        return frame.groupby(keys, dropna=False).mean().reset_index()
    return frame.mean().to_frame().T


def label(column: str, lang: str = "zh-CN") -> str:
    """Return the official name of a column (``close_rate`` → 结案率, ``due`` → 应结案数)."""
    if column in COUNT_NAMES:
        return COUNT_NAMES[column][0 if lang.startswith("zh") else 1]
    base = column.rsplit("_", 1)[0] if column.endswith(("_yoy", "_mom")) else column
    if base not in RATE_NAMES:
        return column
    zh, en = RATE_NAMES[base]
    suffix = {"_yoy": ("同比", "YoY"), "_mom": ("环比", "MoM")}
    for s, (szh, sen) in suffix.items():
        if column.endswith(s):
            return f"{zh}{szh}" if lang.startswith("zh") else f"{en} {sen}"
    return zh if lang.startswith("zh") else en
