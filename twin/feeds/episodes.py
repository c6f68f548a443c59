"""Episodes of rule conditions, derived the same way by every worker from the stored events.

A rule's condition for one source is a sequence of (time, true/false); an *episode* is a
maximal run of true conditions. Each worker of a shared subscription sees only some of the
messages, so none keeps the sequence in memory: after its batch is stored, it reads back the
stored events of the sources its batch touched and cuts them into episodes here. Two workers
reading the same stored events reach the same episodes, hence the same alarm ids; the database
(:meth:`twin.store.Store.open_alarms`) keeps a race between them to one alarm.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

EPISODE_COLUMNS = ["rule_id", "source_id", "source_kind", "property", "value", "since", "last",
                   "until"]
END_COLUMNS = ["rule_id", "source_id", "resolved_at"]


def episodes(conds: pd.DataFrame, durations: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut conditions into the episodes that raise an alarm, and the times that clear one.

    Parameters
    ----------
    conds
        One row per (rule_id, source_id, at): ``active``, ``value``, ``source_kind``,
        ``property`` (:meth:`twin.feeds.rules.RuleEngine.conditions`).
    durations
        Seconds a condition must hold before its alarm opens, by rule id.

    Returns
    -------
    tuple of DataFrame
        The episodes that held for their rule's duration (``since``: the first true time;
        ``last``: the last one; ``until``: the first false time after it, NaT while going
        on; ``value``: the last value), and the ends: one row per false run after a true one
        (``resolved_at``: its first time), which clears an alarm opened before it.
    """
    if conds.empty:
        return (pd.DataFrame(columns=EPISODE_COLUMNS), pd.DataFrame(columns=END_COLUMNS))
    # a true and a false at the same instant: the false last (it clears)
    frame = conds.assign(_false=~conds["active"].astype(bool)).sort_values(
        ["rule_id", "source_id", "at", "_false"], kind="stable").reset_index(drop=True)
    active = frame["active"].astype(bool).to_numpy()
    new_key = (frame["rule_id"].ne(frame["rule_id"].shift())
               | frame["source_id"].ne(frame["source_id"].shift())).to_numpy()
    flips = new_key | np.r_[True, active[1:] != active[:-1]]
    run = np.cumsum(flips)
    frame["_run"] = run
    runs = frame.groupby("_run", sort=True).agg(
        rule_id=("rule_id", "first"), source_id=("source_id", "first"),
        source_kind=("source_kind", "first"), property=("property", "first"),
        value=("value", "last"), since=("at", "min"), last=("at", "max"),
        active=("active", "first"))
    runs["active"] = runs["active"].astype(bool)
    same_key_next = (runs["rule_id"].eq(runs["rule_id"].shift(-1))
                     & runs["source_id"].eq(runs["source_id"].shift(-1)))
    runs["until"] = runs["since"].shift(-1).where(same_key_next)
    need = pd.to_timedelta(durations.reindex(runs["rule_id"]).fillna(0).to_numpy(dtype=float),
                           unit="s")
    held = runs["active"].to_numpy() & ((runs["last"] - runs["since"]).to_numpy() >= need)
    raised = runs.loc[held, EPISODE_COLUMNS].reset_index(drop=True)
    # every false run clears: a false run first in the window may follow a true run before it
    ends = runs.loc[~runs["active"], ["rule_id", "source_id", "since"]].rename(
        columns={"since": "resolved_at"}).reset_index(drop=True)
    return raised, ends


def readings_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Return the long-form readings of stored observation events (as the decoder makes them).

    Columns ``event_id, source_id, observed_at, property, value, lon, lat``; one row per
    property of each event's ``values``.
    """
    columns = ["event_id", "source_id", "observed_at", "property", "value", "lon", "lat"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    values = [json.loads(p).get("values") or {} if isinstance(p, str) else (p or {}).get(
        "values") or {} for p in events["payload"]]
    counts = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    at = np.repeat(np.arange(len(values)), counts)
    pairs = [kv for v in values for kv in v.items()]
    return pd.DataFrame({
        "event_id": events["id"].to_numpy(dtype=object)[at],
        "source_id": events["source_id"].to_numpy(dtype=object)[at],
        "observed_at": pd.DatetimeIndex(events["observed_at"]).take(at),
        "property": np.array([k for k, _ in pairs], dtype=object),
        "value": np.array([float(v) for _, v in pairs], dtype=float),
        "lon": events["lon"].to_numpy(dtype=float)[at],
        "lat": events["lat"].to_numpy(dtype=float)[at],
    })


def alerts_from_events(events: pd.DataFrame) -> pd.DataFrame:
    """Return the camera alerts of stored camera events (``camera_id, observed_at, kind …``)."""
    columns = ["event_id", "camera_id", "observed_at", "kind", "confidence"]
    if events.empty:
        return pd.DataFrame(columns=columns)
    body = [json.loads(p) if isinstance(p, str) else (p or {}) for p in events["payload"]]
    return pd.DataFrame({
        "event_id": events["id"].to_numpy(dtype=object),
        "camera_id": events["source_id"].to_numpy(dtype=object),
        "observed_at": pd.DatetimeIndex(events["observed_at"]),
        "kind": np.array([b.get("kind") for b in body], dtype=object),
        "confidence": np.array([float(b.get("confidence") or 0) for b in body], dtype=float),
    })
