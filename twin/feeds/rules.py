"""Rules as data (data/rules.csv) turn readings into alarms, which resolve or become cases."""

from __future__ import annotations

import json
import logging
import operator
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from twin import settings
from twin.errors import DuplicateIdError, NotFoundError, TwinError, ValidationError
from twin.feeds.episodes import (
    END_COLUMNS,
    EPISODE_COLUMNS,
    alerts_from_events,
    episodes,
    readings_from_events,
)
from twin.feeds.state import OFFLINE_INTERVALS
from twin.notify import alarm_rows
from twin.schema import ALARMS

LOGGER = logging.getLogger(__name__)

RULE_KINDS = ("threshold", "state", "occupancy", "offline", "geofence", "camera")
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
       "==": operator.eq, "!=": operator.ne}
ACTIVE = ("open", "acknowledged", "in_progress")
#: Rule kinds decided on readings: re-read from the stored events of the sources a batch touched.
READING_KINDS = ("threshold", "state", "geofence")
#: A lot whose share in a worker's own live state is this close to an occupancy threshold is
#: read back from the store (a worker's view of a lot lags by a few sensors' reports at most).
LOCAL_MARGIN = 0.15
#: Seconds between two checks of every sensor's last stored time (the offline rules).
OFFLINE_CHECK_S = 30.0
#: Seconds between two sweeps for resolved auto-case alarms left without their case.
SWEEP_RESOLVED_S = 60.0
#: Alarm life cycle: status → statuses it may move to by hand.
ALARM_TRANSITIONS = {
    "open": ("acknowledged", "in_progress", "resolved", "closed"),
    "acknowledged": ("in_progress", "resolved", "closed"),
    "in_progress": ("resolved", "closed"),
    "resolved": ("closed",),
    "closed": (),
}
RULE_COLUMNS = ("rule_id", "name_zh", "name_en", "kind", "applies_to", "property", "op",
                "threshold", "duration_s", "severity", "polygon", "case_category", "auto_case",
                "clear_after_s")


def load_rules(path: str | Path | None = None) -> pd.DataFrame:
    """Read and check the rules table (default ``<data_dir>/rules.csv``).

    Raises
    ------
    ValidationError
        Naming the rule and the column that is wrong.
    """
    path = Path(path) if path else Path(settings.get("data_dir")) / "rules.csv"
    rules = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in RULE_COLUMNS if c not in rules]
    if missing:
        raise ValidationError(f"{path}: rules need the columns {missing}; see docs/feeds.md")
    problems = []
    bad_kind = ~rules["kind"].isin(RULE_KINDS)
    problems += [f"{r}: kind must be one of {RULE_KINDS}" for r in rules.loc[bad_kind, "rule_id"]]
    numeric = rules["kind"].isin(("threshold", "state", "occupancy", "camera", "offline"))
    bad_op = numeric & ~rules["op"].isin(OPS)
    problems += [f"{r}: op must be one of {list(OPS)}" for r in rules.loc[bad_op, "rule_id"]]
    geo = rules["kind"] == "geofence"
    problems += [f"{r}: op must be inside or outside" for r in
                 rules.loc[geo & ~rules["op"].isin(("inside", "outside")), "rule_id"]]
    if rules["rule_id"].duplicated().any():
        dup = sorted(set(rules.loc[rules["rule_id"].duplicated(), "rule_id"]))
        problems.append(f"duplicate rule ids {dup}")
    out = rules.copy()
    for c in ("threshold", "duration_s", "clear_after_s"):
        out[c] = pd.to_numeric(out[c].replace("", np.nan), errors="coerce")
    bad_num = numeric & out["threshold"].isna()
    problems += [f"{r}: threshold must be a number" for r in rules.loc[bad_num, "rule_id"]]
    out["duration_s"] = out["duration_s"].fillna(0)
    out["auto_case"] = out["auto_case"].str.lower().isin(("true", "1", "yes"))
    if problems:
        raise ValidationError(f"{path}: " + "; ".join(problems) + ". Correct the table.")
    return out.set_index("rule_id", drop=False)


def _polygon(spec: str, layers: dict[str, Any]) -> Any:
    if spec.startswith("layer:"):
        frame = layers.get(spec.removeprefix("layer:"))
        return None if frame is None or len(frame) == 0 else shapely.union_all(
            frame.geometry.values)
    return shapely.from_wkt(spec) if spec else None


class RuleEngine:
    """Evaluate the rules on each batch and on a clock tick; keep one open alarm per source+rule.

    Parameters
    ----------
    store
        Where alarms are written (``put_rows(ALARMS, …)``) and cases created.
    rules
        :func:`load_rules`.
    registry
        :class:`twin.feeds.models.Registry` (sensor kinds, lots, grids, positions).
    layers
        Layer frames for ``layer:<name>`` polygons of geofence rules.
    on_case
        Hook called as ``on_case(alarm: dict) -> case_id | None`` for rules with ``auto_case``;
        default :func:`promote_alarm` through ``twin.cases.report``.
    """

    def __init__(self, store, rules: pd.DataFrame, registry, *, layers: dict | None = None,
                 on_case=None) -> None:
        self.store = store
        self.rules = rules
        self.registry = registry
        self.polygons = {r: _polygon(p, layers or {}) for r, p in rules["polygon"].items()}
        self.on_case = on_case if on_case is not None else (
            lambda alarm: promote_alarm(store, alarm["id"], actor="gridtwin-feeds",
                                        role="dispatcher", alarm=alarm)["case_id"])
        self.opened = 0
        self.resolved = 0
        self._swept: pd.Timestamp | None = None  # the last sweep of resolved alarms
        self._offline_at = -OFFLINE_CHECK_S  # time.monotonic() of the last offline check

    # -- conditions ------------------------------------------------------------------------------

    def _kind_of(self, sources: pd.Series) -> np.ndarray:
        return self.registry.sensors["kind"].reindex(sources).to_numpy(dtype=object)

    def conditions(self, readings: pd.DataFrame, alerts: pd.DataFrame,
                   occupancy: pd.DataFrame, *, kinds: tuple[str, ...] = RULE_KINDS
                   ) -> pd.DataFrame:
        """One row per (rule, source, time): whether the rule's condition holds.

        *kinds*: only the rules of these kinds.
        """
        parts = []
        rules = self.rules[self.rules["kind"].isin(kinds)]
        kinds = self._kind_of(readings["source_id"]) if len(readings) else np.array([])
        for rid, rule in rules.iterrows():  # a handful of rules, each vectorised
            if rule["kind"] in ("threshold", "state") and len(readings):
                mask = (readings["property"].to_numpy() == rule["property"]) & (
                    (kinds == rule["applies_to"]) | (rule["applies_to"] == "*"))
                r = readings[mask]
                active = OPS[rule["op"]](r["value"].to_numpy(), rule["threshold"])
                parts.append(self._cond(rid, r["source_id"], r["observed_at"], active,
                                        r["value"], "sensor", rule["property"]))
            elif rule["kind"] == "geofence" and len(readings) and self.polygons[rid] is not None:
                mask = (kinds == rule["applies_to"]) | (rule["applies_to"] == "*")
                r = readings[mask].drop_duplicates(["event_id"])
                inside = shapely.contains_xy(self.polygons[rid], r["lon"].to_numpy(),
                                             r["lat"].to_numpy())
                active = inside if rule["op"] == "inside" else ~inside
                parts.append(self._cond(rid, r["source_id"], r["observed_at"], active,
                                        inside.astype(float), "sensor", "position"))
            elif rule["kind"] == "camera" and len(alerts):
                a = alerts[alerts["kind"].to_numpy() == rule["applies_to"]]
                active = OPS[rule["op"]](a["confidence"].to_numpy(), rule["threshold"])
                a = a[active]
                parts.append(self._cond(rid, a["camera_id"], a["observed_at"],
                                        np.ones(len(a), bool), a["confidence"], "camera",
                                        rule["applies_to"]))
            elif rule["kind"] == "occupancy" and len(occupancy):
                now = readings["observed_at"].max() if len(readings) else pd.Timestamp.now(tz="UTC")
                active = OPS[rule["op"]](occupancy["share"].to_numpy(), rule["threshold"])
                parts.append(self._cond(rid, pd.Series(occupancy.index), pd.Series(
                    [now] * len(occupancy)), active, occupancy["share"], "lot", "occupied"))
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    @staticmethod
    def _cond(rid, source, at, active, value, source_kind, prop) -> pd.DataFrame:
        return pd.DataFrame({"rule_id": rid, "source_id": np.asarray(source, dtype=object),
                             "at": np.asarray(at), "active": np.asarray(active, dtype=bool),
                             "value": np.asarray(value, dtype=float),
                             "source_kind": source_kind, "property": prop})

    # -- alarms, decided from the store so that every worker decides alike ---------------------

    def evaluate(self, readings: pd.DataFrame, alerts: pd.DataFrame, now: pd.Timestamp,
                 local_occupancy: pd.DataFrame | None = None) -> pd.DataFrame:
        """Open or resolve the alarms a stored batch calls for; return the alarms opened.

        The batch's readings and alerts only say which (rule, source) to look at; what is
        decided comes from the stored events of those sources (:meth:`_with_history`) and the
        lots' stored occupancy (:meth:`shared_occupancy`), which every worker reads alike.
        *local_occupancy* (this worker's live state) only spares reading back lots far from
        any threshold that hold no alarm.
        """
        live = self.store.active_alarm_keys()
        occupancy = self.shared_occupancy(readings, local_occupancy, live)
        conds = self.conditions(readings, alerts, occupancy)
        return self.apply(conds, now, live)

    def apply(self, conds: pd.DataFrame, now: pd.Timestamp,
              live: set[tuple[str, str]] | None = None) -> pd.DataFrame:
        """Open or resolve alarms for *conds* (widened with the stored history); return opened.

        *live*: the (rule, source) keys holding an active alarm (default: read now).
        """
        if conds.empty:
            return pd.DataFrame()
        live = self.store.active_alarm_keys() if live is None else live
        widened = self._with_history(conds, live)
        raised, ends = episodes(widened, self.rules["duration_s"])
        resolved = self.resolved
        opened = self._record(raised, ends, now)
        if self.resolved == resolved or ends.empty:
            return opened
        # An alarm was just resolved. Another worker may have skipped the next episode of its
        # key a moment ago (true readings, the alarm still active as it read): read the
        # history of the keys resolved once more, now that the resolution is committed and
        # their readings with it, and open what it holds.
        kinds = self.rules["kind"].reindex(ends["rule_id"]).to_numpy()
        keys = set(zip(ends["rule_id"][np.isin(kinds, READING_KINDS)],
                       ends["source_id"][np.isin(kinds, READING_KINDS)], strict=True))
        if not keys:
            return opened
        start = widened["at"].min()
        again, _ = episodes(self._stored_conds(keys, start), self.rules["duration_s"])
        more = self._record(again, pd.DataFrame(columns=END_COLUMNS), now)
        return pd.concat([p for p in (opened, more) if len(p)], ignore_index=True) \
            if len(more) else opened

    def _active_alarms(self) -> pd.DataFrame:
        """Return the stored active alarms (open, acknowledged, in progress): one read."""
        return self.store.read_rows(ALARMS, status=ACTIVE)

    def _live_keys(self, alarms: pd.DataFrame | None = None) -> set[tuple[str, str]]:
        """Return the (rule, source) keys holding an active alarm (of *alarms*, or read now)."""
        alarms = self._active_alarms() if alarms is None else alarms
        return set(zip(alarms["rule_id"], alarms["source_id"], strict=True))

    def _record(self, raised: pd.DataFrame, ends: pd.DataFrame,
                now: pd.Timestamp) -> pd.DataFrame:
        """Resolve, then open (each once, the database decides), then auto-create cases."""
        if len(ends):
            self.resolved += len(self.store.resolve_alarms(ends, now))
        if raised.empty:
            return pd.DataFrame()
        rows = [self._alarm(row, now) for row in raised.itertuples(index=False)]
        frame = pd.DataFrame(rows)
        # the grid's subscribers are told in the transaction that opens each alarm (only the
        # worker that opens it writes them): twin.notify, docs/notify.md
        inserted = set(self.store.open_alarms(frame, outbox=alarm_rows(self.store, rows)))
        self.opened += len(inserted)
        self.resolved += sum(1 for a in rows if a["id"] in inserted and a["status"] == "resolved")
        opened = [a for a in rows if a["id"] in inserted]
        for alarm in opened:
            if self.rules.at[alarm["rule_id"], "auto_case"]:
                self._auto_case(alarm)
        out = frame[frame["id"].isin(inserted)].drop(columns=["since", "until"])
        return out.reset_index(drop=True)

    def _auto_case(self, alarm: dict[str, Any]) -> None:
        """Make the alarm's case through :attr:`on_case`; a failure is logged, swept later."""
        try:
            case_id = self.on_case(alarm)
        except TwinError as exc:
            LOGGER.warning("alarm %s not promoted to a case: %s", alarm["id"], exc)
            return
        if case_id:
            alarm["case_id"] = case_id

    def _with_history(self, conds: pd.DataFrame, live: set[tuple[str, str]]) -> pd.DataFrame:
        """Replace the batch's reading conditions by those of the stored history of its keys.

        Only keys that may change an alarm are kept: a true condition, or a false one of a
        (rule, source) holding an active alarm; their sources' stored observations since the
        batch's first time less :attr:`lookback` are read back and evaluated.
        """
        kinds = self.rules["kind"].reindex(conds["rule_id"]).to_numpy()
        from_readings = np.isin(kinds, READING_KINDS)
        batch, rest = conds[from_readings], conds[~from_readings]
        rest = self._keep_changing(rest, live)
        if batch.empty:
            return rest
        # true for a key with an alarm open already: nothing to decide (a long episode's batches)
        keys = set(zip(batch.loc[batch["active"], "rule_id"],
                       batch.loc[batch["active"], "source_id"], strict=True)) - live
        quiet = batch.loc[~batch["active"]]
        keys |= live & set(zip(quiet["rule_id"], quiet["source_id"], strict=True))
        if not keys:
            return rest
        mine = pd.Series([k in keys for k in zip(batch["rule_id"], batch["source_id"],
                                                 strict=True)], index=batch.index, dtype=bool)
        batch = batch[mine]
        stored = self._stored_conds(keys, batch["at"].min() - self.lookback)
        both = pd.concat([p for p in (stored, batch, rest) if len(p)], ignore_index=True)
        return both.drop_duplicates(["rule_id", "source_id", "at", "active"])

    def _stored_conds(self, keys: set[tuple[str, str]], start: pd.Timestamp) -> pd.DataFrame:
        """Conditions of the reading rules *keys* on their sources' observations since *start*."""
        events = self.store.events_of(sorted({s for _, s in keys}), start, "obs")
        readings = readings_from_events(events)
        stored = self.conditions(readings, pd.DataFrame(), pd.DataFrame(), kinds=READING_KINDS)
        if len(stored):
            hit = [k in keys for k in zip(stored["rule_id"], stored["source_id"], strict=True)]
            stored = stored[np.asarray(hit, dtype=bool)]
        return stored

    @staticmethod
    def _keep_changing(conds: pd.DataFrame, live: set[tuple[str, str]]) -> pd.DataFrame:
        """Drop false conditions of (rule, source) keys holding no active alarm: nothing to do."""
        if conds.empty or conds["active"].all():
            return conds
        keep = conds["active"].to_numpy() | np.fromiter(
            (k in live for k in zip(conds["rule_id"], conds["source_id"], strict=True)),
            dtype=bool, count=len(conds))
        return conds[keep]

    @property
    def lookback(self) -> pd.Timedelta:
        """How far before a batch the stored history is read: the longest duration + an hour."""
        return pd.Timedelta(seconds=float(self.rules["duration_s"].max() or 0) + 3600)

    def shared_occupancy(self, readings: pd.DataFrame, local: pd.DataFrame | None = None,
                         live: set[tuple[str, str]] | None = None) -> pd.DataFrame:
        """Occupancy of the lots whose sensors are in *readings*, from the stored events.

        Each sensor's latest ``occupied`` reading within :data:`OFFLINE_INTERVALS` of its
        report interval before the batch's last time: what any worker reads alike. With
        *local* (this worker's view, ``LiveState.lot_occupancy``) only lots whose local share
        is within :data:`LOCAL_MARGIN` of an occupancy threshold, or that hold an active alarm
        (*live*), are read back: the others could neither open nor resolve one.
        """
        rules = self.rules[self.rules["kind"] == "occupancy"]
        if readings.empty or rules.empty:
            return pd.DataFrame(columns=["monitored", "occupied", "share"])
        sensors = self.registry.sensors
        occupied = readings[readings["property"].to_numpy() == "occupied"]
        lots = sensors["lot_id"].reindex(occupied["source_id"]).dropna().unique()
        if local is not None and len(lots):
            near = np.zeros(len(lots), dtype=bool)
            share = local["share"].reindex(lots).to_numpy(dtype=float)
            for rid, rule in rules.iterrows():
                near |= np.isnan(share) | (np.abs(share - float(rule["threshold"]))
                                           <= LOCAL_MARGIN) | OPS[rule["op"]](
                    share, float(rule["threshold"]))
                near |= np.fromiter(((rid, lot) in (live or ()) for lot in lots), dtype=bool,
                                    count=len(lots))
            lots = lots[near]
        if not len(lots):
            return pd.DataFrame(columns=["monitored", "occupied", "share"])
        members = sensors[sensors["lot_id"].isin(lots)]
        span = pd.Timedelta(seconds=float(members["report_interval_s"].max()) * OFFLINE_INTERVALS)
        now = pd.Timestamp(readings["observed_at"].max())
        stored = readings_from_events(self.store.events_of(sorted(members.index), now - span,
                                                           "obs"))
        stored = stored[(stored["property"] == "occupied") & (stored["observed_at"] <= now)]
        if stored.empty:
            return pd.DataFrame(columns=["monitored", "occupied", "share"])
        latest = stored.sort_values(["observed_at", "event_id"]).groupby("source_id").tail(1)
        frame = pd.DataFrame({"lot_id": members["lot_id"].reindex(latest["source_id"]).to_numpy(),
                              "occupied": latest["value"].to_numpy()})
        out = frame.groupby("lot_id")["occupied"].agg(monitored="size", occupied="sum")
        out["share"] = out["occupied"] / out["monitored"]
        return out

    # -- time-driven rules and the sweep, from the store as well --------------------------------

    def tick(self, now: pd.Timestamp, started: pd.Timestamp) -> None:
        """Offline sensors, camera alarms gone quiet, and auto-cases a worker left unmade."""
        active = self._active_alarms()
        live = self._live_keys(active)
        raised, ends = pd.DataFrame(columns=EPISODE_COLUMNS), pd.DataFrame(columns=END_COLUMNS)
        if time.monotonic() - self._offline_at >= OFFLINE_CHECK_S:
            # a GROUP BY over the last hours of events: minutes are this rule's resolution
            self._offline_at = time.monotonic()
            raised, ends = self._offline(now, started, live)
        quiet = self._quiet_cameras(now, active)
        self._record(raised, pd.concat([e for e in (ends, quiet) if len(e)], ignore_index=True)
                     if len(ends) or len(quiet) else ends, now)
        self.sweep_cases(now, active)

    def _offline(self, now: pd.Timestamp, started: pd.Timestamp, live: set[tuple[str, str]]
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Episodes of sensors gone silent, from the last time each was stored."""
        rules = self.rules[self.rules["kind"] == "offline"]
        sensors = self.registry.sensors
        if rules.empty or sensors.empty:
            return pd.DataFrame(columns=EPISODE_COLUMNS), pd.DataFrame(columns=END_COLUMNS)
        limit = pd.to_timedelta(sensors["report_interval_s"].astype(float) * OFFLINE_INTERVALS,
                                unit="s")
        seen = self.store.events_last_seen(now - 2 * limit.max()).reindex(sensors.index)
        since = seen.fillna(pd.Timestamp(started)).astype("datetime64[us, UTC]")
        offline = (now - since) > limit
        raised, ends = [], []
        for rid, rule in rules.iterrows():
            fits = (sensors["kind"] == rule["applies_to"]) | (rule["applies_to"] == "*")
            has = np.fromiter(((rid, s) in live for s in sensors.index), dtype=bool,
                              count=len(sensors))
            gone = (offline & fits & ~has).to_numpy()
            at = (since + limit)[gone]
            raised.append(pd.DataFrame({
                "rule_id": rid, "source_id": sensors.index[gone].to_numpy(dtype=object),
                "source_kind": "sensor", "property": "online", "value": 0.0,
                "since": at.to_numpy(), "last": at.to_numpy(), "until": pd.NaT}))
            back = (~offline & fits & has).to_numpy()
            ends.append(pd.DataFrame({"rule_id": rid,
                                      "source_id": sensors.index[back].to_numpy(dtype=object),
                                      "resolved_at": since[back].to_numpy()}))
        return (pd.concat(raised, ignore_index=True), pd.concat(ends, ignore_index=True))

    def _quiet_cameras(self, now: pd.Timestamp, active: pd.DataFrame) -> pd.DataFrame:
        """Return the ends of camera alarms with no stored alert for ``clear_after_s``."""
        rules = self.rules[self.rules["kind"] == "camera"]
        alarms = active[active["rule_id"].isin(rules.index)]
        if rules.empty or alarms.empty:
            return pd.DataFrame(columns=END_COLUMNS)
        clear = rules["clear_after_s"].fillna(600.0).astype(float)
        alerts = alerts_from_events(self.store.events_of(
            sorted(set(alarms["source_id"])), now - pd.Timedelta(seconds=float(clear.max())),
            "camera"))
        out = []
        for alarm in alarms.itertuples(index=False):
            rule = rules.loc[alarm.rule_id]
            mine = alerts[(alerts["camera_id"] == alarm.source_id)
                          & (alerts["kind"] == rule["applies_to"])
                          & OPS[rule["op"]](alerts["confidence"], rule["threshold"])]
            last = max([pd.Timestamp(alarm.opened_at), *mine["observed_at"]])
            wait = pd.Timedelta(seconds=float(clear[alarm.rule_id]))
            if now - last > wait:
                out.append({"rule_id": alarm.rule_id, "source_id": alarm.source_id,
                            "resolved_at": last + wait})
        return pd.DataFrame(out, columns=END_COLUMNS)

    def sweep_cases(self, now: pd.Timestamp, active: pd.DataFrame | None = None) -> int:
        """Make the cases of auto-case alarms that have none (their worker died before it).

        Idempotent across workers: a case's id is derived from its alarm's, so a second
        attempt meets the first one's case (``DuplicateIdError``) and only links it. Open
        alarms (in *active*) at every tick; resolved ones of the last day once a minute.
        """
        auto = list(self.rules.index[self.rules["auto_case"]])
        if not auto:
            return 0
        alarms = self._active_alarms() if active is None else active
        alarms = alarms[alarms["rule_id"].isin(auto) & (alarms["status"] == "open")]
        if self._swept is None or now - self._swept >= pd.Timedelta(seconds=SWEEP_RESOLVED_S):
            self._swept = now
            alarms = pd.concat([alarms, self.store.read_rows(ALARMS, rule_id=auto,
                                                             status="resolved")])
        pending = alarms[alarms["case_id"].isna()
                         & (alarms["opened_at"] >= now - pd.Timedelta(days=1))]
        for alarm in pending.to_dict("records"):
            self._auto_case(alarm)
        return len(pending)

    def _alarm(self, row, now: pd.Timestamp) -> dict[str, Any]:
        """Return the alarm of an episode: opened when it had held for the rule's duration."""
        rule = self.rules.loc[row.rule_id]
        since = pd.Timestamp(row.since)
        until = None if pd.isna(row.until) else pd.Timestamp(row.until)
        duration = pd.Timedelta(seconds=float(rule["duration_s"]))
        where = self._where(row.source_id, row.source_kind)
        return {
            "id": f"{row.rule_id}/{row.source_id}/{since:%Y%m%dT%H%M%S}",
            "rule_id": row.rule_id, "source_id": row.source_id,
            "source_kind": row.source_kind, "status": "open" if until is None else "resolved",
            "severity": rule["severity"], "opened_at": since + duration, "updated_at": now,
            "resolved_at": until, "property": row.property, "value": float(row.value), **where,
            "case_id": None,
            "data": {"name_zh": rule["name_zh"], "name_en": rule["name_en"],
                     "op": rule["op"], "threshold": None if pd.isna(rule["threshold"])
                     else float(rule["threshold"]), "since": since.isoformat(),
                     "case_category": rule["case_category"] or None},
            "since": since, "until": until,
        }

    def _where(self, source_id: str, source_kind: str) -> dict[str, Any]:
        table = self.registry.cameras if source_kind == "camera" else self.registry.sensors
        columns = ("lon", "lat", "grid_code", "resp_grid_id", "community_code", "street_code",
                   "building_code", "lot_id")
        if source_id in table.index:
            row = table.loc[source_id]
            return {c: (None if pd.isna(row[c]) else row[c]) for c in columns}
        if source_kind == "lot":
            lots = self.registry.sensors[self.registry.sensors["lot_id"] == source_id]
            if len(lots):
                first = lots.iloc[0]
                return {**{c: first[c] for c in columns}, "lot_id": source_id}
        return dict.fromkeys(columns)


def set_alarm_status(store, alarm_id: str, status: str, *, actor: str,
                     note: str = "") -> dict[str, Any]:
    """Move an alarm along its life cycle (open → acknowledged → in_progress → resolved → closed).

    Raises
    ------
    NotFoundError
        If there is no such alarm.
    ValidationError
        If the move is not allowed from the alarm's status.
    """
    found = store.read_rows(ALARMS, id=alarm_id)
    if found.empty:
        raise NotFoundError(f"no alarm {alarm_id!r}; list alarms with store.read_rows(ALARMS)")
    alarm = found.iloc[0].to_dict()
    if status not in ALARM_TRANSITIONS.get(alarm["status"], ()):
        raise ValidationError(
            f"alarm {alarm_id} is {alarm['status']}; it may move to "
            f"{list(ALARM_TRANSITIONS[alarm['status']]) or 'nothing (closed)'}, not {status!r}"
        )
    now = pd.Timestamp.now(tz="UTC")
    data = json.loads(alarm["data"]) if alarm["data"] else {}
    data.setdefault("history", []).append({"at": now.isoformat(), "actor": actor,
                                           "from": alarm["status"], "to": status, "note": note})
    alarm.update(status=status, updated_at=now, data=data)
    if status == "resolved" and pd.isna(alarm["resolved_at"]):
        alarm["resolved_at"] = now
    store.put_rows(ALARMS, pd.DataFrame([alarm]), on_conflict="update")
    return alarm


def promote_alarm(store, alarm_id: str, *, actor: str, role: str, category: str | None = None,
                  grid_cells=None, alarm: dict | None = None,
                  existing_ok: bool = True) -> dict[str, Any]:
    """Make an alarm a case through ``twin.cases.report`` (source sensor, or camera for video).

    The alarm records the case id and moves to ``in_progress``. The case id comes from the
    alarm's, so a second attempt finds the first case: workers (*existing_ok*) link it; a
    person promoting by hand is told instead (DuplicateIdError).

    Raises
    ------
    ValidationError
        If no category is given and the rule names none.
    DuplicateIdError
        If the alarm's case exists already and *existing_ok* is false.
    """
    from twin import cases

    if alarm is None:
        found = store.read_rows(ALARMS, id=alarm_id)
        if found.empty:
            raise NotFoundError(f"no alarm {alarm_id!r}")
        alarm = found.iloc[0].to_dict()
    data = alarm["data"] if isinstance(alarm["data"], dict) else json.loads(alarm["data"] or "{}")
    category = category or data.get("case_category")
    if not category:
        raise ValidationError(f"alarm {alarm_id}: give the case category (service code)")
    source = "camera" if alarm["source_kind"] == "camera" else "sensor"
    case_id = f"A-{alarm_id.replace('/', '-')}"  # one case per alarm: the case table's key
    try:
        case = cases.report(
            store, category=category, lon=alarm["lon"], lat=alarm["lat"],
            description=f"{data.get('name_zh', alarm['rule_id'])}: {alarm['source_id']} "
                        f"({alarm['property']} = {alarm['value']:g})",
            source=source, actor=actor, role=role, grid_cells=grid_cells, at=alarm["opened_at"],
            case_id=case_id,
        )
    except DuplicateIdError:  # made already (another worker, or this one before a crash)
        if not existing_ok:
            raise
        case = store.get_case(case_id)
    now = pd.Timestamp.now(tz="UTC")
    data.setdefault("history", []).append({"at": now.isoformat(), "actor": actor,
                                           "to": "in_progress", "note": f"case {case['id']}"})
    # a conditional update: an alarm resolved or linked meanwhile by another worker stays so
    store.link_alarm_case(alarm_id, case["id"], json.dumps(data, ensure_ascii=False,
                                                            sort_keys=True), now)
    found = store.read_rows(ALARMS, id=alarm_id)
    return found.iloc[0].to_dict() if len(found) else {**alarm, "case_id": case["id"]}
