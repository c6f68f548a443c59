"""Indicators of every organisation (绩效), and the public's anonymised view of them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from twin.cases import case_table
from twin.organisations import ORG_PREFIX, table
from twin.timeutil import to_utc

#: Fewer owned cases than this (or evaluations, for satisfaction) are not published: a small
#: count can point at a household (docs/trust.md, The public page).
PUBLIC_MIN_CASES = 5


def _scores(cases: pd.DataFrame) -> pd.Series:
    """Return the evaluation scores of the evaluated cases (the only JSON read: few rows)."""
    done = cases.loc[cases["status"] == "evaluated", "data"]

    def score(value: Any) -> float:
        data = json.loads(value) if isinstance(value, str) else dict(value or {})
        got = data.get("evaluation")
        return float(got) if isinstance(got, int | float) else np.nan
    return pd.Series([score(v) for v in done], index=done.index, dtype=float)


def indicators(cases: pd.DataFrame, areas: pd.DataFrame, *, since: Any = None,
               until: Any = None, as_of: Any = None) -> pd.DataFrame:
    """Return one row per organisation: what it owned and how it did.

    The cohort is the cases an organisation was given (``org_id``) that were requested in
    ``[since, until)`` (default: all). Counted as of *as_of* (default now):

    ============== ================================================================
    ``owned``      cases given to the organisation
    ``due``        dispatched to it and either reported (处理反馈) or past its deadline
    ``on_time``    reported by its own deadline, without being escalated
    ``on_time_rate`` on_time ÷ due, in %
    ``escalated``  handed back to the community after missing its limit (督办)
    ``reworked``   sent back to handling at least once; ``rework_rate`` ÷ reported, in %
    ``evaluations`` / ``satisfaction``  evaluated cases and their mean score (0-100)
    ============== ================================================================
    """
    orgs = table(areas)
    base = orgs[["org_id", "name", "org_type"]].copy()
    cols = ("owned", "due", "on_time", "escalated", "reported", "reworked", "evaluations")
    if len(cases) == 0 or "org_id" not in cases or cases["org_id"].isna().all():
        return base.assign(**{c: 0 for c in cols}, on_time_rate=np.nan, rework_rate=np.nan,
                           satisfaction=np.nan)
    as_of = to_utc(pd.Timestamp.now(tz="UTC") if as_of is None else as_of)
    t = case_table(cases.loc[cases["org_id"].notna()])
    requested = pd.to_datetime(t["requested_at"], utc=True)
    keep = requested <= as_of
    if since is not None:
        keep &= requested >= to_utc(since)
    if until is not None:
        keep &= requested < to_utc(until)
    t = t.loc[keep]
    due_at = pd.to_datetime(t["org_deadline"], utc=True)
    reported = t["fed_back_at"].notna() & (t["fed_back_at"] <= as_of)
    escalated = t["department"].astype(str) != ORG_PREFIX + t["org_id"].astype(str)
    escalated &= due_at.notna() & ~reported & t["supervised"].gt(0)
    frame = pd.DataFrame({
        "org_id": t["org_id"].astype(str),
        "owned": 1,
        "due": (due_at.notna() & (reported | (due_at <= as_of))).astype(int),
        "on_time": (reported & ~escalated & (t["fed_back_at"] <= due_at)).astype(int),
        "escalated": escalated.astype(int),
        "reported": reported.astype(int),
        "reworked": (reported & t["first_rework_at"].notna()).astype(int),
    })
    scores = _scores(t)
    frame["score"] = scores.reindex(t.index)
    grouped = frame.groupby("org_id").agg(
        owned=("owned", "sum"), due=("due", "sum"), on_time=("on_time", "sum"),
        escalated=("escalated", "sum"), reported=("reported", "sum"),
        reworked=("reworked", "sum"), evaluations=("score", "count"),
        satisfaction=("score", "mean"))
    out = base.merge(grouped, left_on="org_id", right_index=True, how="left")
    for c in cols:
        out[c] = out[c].fillna(0).astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["on_time_rate"] = np.where(out["due"] > 0, 100 * out["on_time"] / out["due"],
                                       np.nan)
        out["rework_rate"] = np.where(out["reported"] > 0,
                                      100 * out["reworked"] / out["reported"], np.nan)
    out["satisfaction"] = out["satisfaction"].astype(float)
    return out.reset_index(drop=True)


def public_indicators(cases: pd.DataFrame, areas: pd.DataFrame,
                      min_count: int = PUBLIC_MIN_CASES, **period: Any) -> pd.DataFrame:
    """Return the indicators the public may see: organisation name and type, no person.

    Small counts are suppressed: an owned count below *min_count*, a rate over fewer than
    *min_count* cases and a satisfaction over fewer than *min_count* evaluations are left
    empty (``suppressed`` marks a row whose count is hidden).
    """
    full = indicators(cases, areas, **period)
    out = full[["name", "org_type"]].copy()
    small = full["owned"] < min_count
    out["owned"] = full["owned"].astype("Int64").mask(small)
    out["on_time_rate"] = full["on_time_rate"].round(1).mask(full["due"] < min_count)
    out["rework_rate"] = full["rework_rate"].round(1).mask(full["reported"] < min_count)
    out["satisfaction"] = full["satisfaction"].round(1).mask(full["evaluations"] < min_count)
    out["suppressed"] = small.to_numpy()
    return out.reset_index(drop=True)
