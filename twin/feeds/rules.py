"""Rules as data (data/rules.csv) turn readings into alarms, which resolve or become cases."""

from __future__ import annotations

import json
import logging
import operator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from twin import settings
from twin.errors import NotFoundError, TwinError, ValidationError
from twin.schema import ALARMS

LOGGER = logging.getLogger(__name__)

RULE_KINDS = ("threshold", "state", "occupancy", "offline", "geofence", "camera")
OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
       "==": operator.eq, "!=": operator.ne}
ACTIVE = ("open", "acknowledged", "in_progress")
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
        self.since: dict[tuple[str, str], pd.Timestamp] = {}
        self.last_alert: dict[tuple[str, str], pd.Timestamp] = {}
        self.opened = 0
        self.resolved = 0
        self.open = {(a["rule_id"], a["source_id"]): a
                     for a in store.read_rows(ALARMS, status=ACTIVE).to_dict("records")}

    # -- conditions ------------------------------------------------------------------------------

    def _kind_of(self, sources: pd.Series) -> np.ndarray:
        return self.registry.sensors["kind"].reindex(sources).to_numpy(dtype=object)

    def conditions(self, readings: pd.DataFrame, alerts: pd.DataFrame,
                   occupancy: pd.DataFrame) -> pd.DataFrame:
        """One row per (rule, source, time): whether the rule's condition holds."""
        parts = []
        kinds = self._kind_of(readings["source_id"]) if len(readings) else np.array([])
        for rid, rule in self.rules.iterrows():  # a handful of rules, each vectorised
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
                for cam, at in zip(a["camera_id"], a["observed_at"], strict=True):
                    key = (rid, cam)
                    self.last_alert[key] = max(at, self.last_alert.get(key, at))
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

    def tick_conditions(self, now: pd.Timestamp, status: pd.DataFrame) -> pd.DataFrame:
        """Conditions that depend on time passing: sensors offline, camera alerts gone quiet."""
        parts = []
        for rid, rule in self.rules[self.rules["kind"] == "offline"].iterrows():
            kinds = self.registry.sensors["kind"].reindex(status.index).to_numpy()
            s = status[(kinds == rule["applies_to"]) | (rule["applies_to"] == "*")]
            parts.append(self._cond(rid, pd.Series(s.index), [now] * len(s), ~s["online"],
                                    np.zeros(len(s)), "sensor", "online"))
        for (rid, source), last in list(self.last_alert.items()):
            clear = self.rules.at[rid, "clear_after_s"]
            clear = 600.0 if pd.isna(clear) else float(clear)
            if now - last > pd.Timedelta(seconds=clear):
                parts.append(self._cond(rid, [source], [now], [False], [0.0], "camera", ""))
                del self.last_alert[(rid, source)]
        parts = [p for p in parts if len(p)]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    # -- alarms ----------------------------------------------------------------------------------

    def apply(self, conds: pd.DataFrame, now: pd.Timestamp) -> pd.DataFrame:
        """Open, keep or auto-resolve alarms for *conds*; write the changes; return them."""
        if conds.empty:
            return pd.DataFrame()
        conds = conds.sort_values(["rule_id", "source_id", "at"], kind="stable")
        group = [conds["rule_id"], conds["source_id"]]
        # start of the current run of true conditions per (rule, source): vectorised
        breaks = (~conds["active"]).astype(int).groupby(group).cumsum()
        start = conds["at"].where(conds["active"]).groupby([*group, breaks]).transform("min")
        # and the start of the current run of false conditions (when an alarm cleared)
        runs = conds["active"].astype(int).groupby(group).cumsum()
        cleared = conds["at"].where(~conds["active"]).groupby([*group, runs]).transform("min")
        last = conds.assign(run_start=start, breaks=breaks, cleared=cleared).groupby(
            group, sort=False).tail(1)
        changed = []
        for row in last.itertuples(index=False):  # one row per (rule, source) in the batch
            key = (row.rule_id, row.source_id)
            if row.active:
                # a run with no false reading in this batch continues the one before it
                since = self.since.get(key, row.run_start) if row.breaks == 0 else row.run_start
                self.since[key] = since
                duration = pd.Timedelta(seconds=float(self.rules.at[row.rule_id, "duration_s"]))
                if key not in self.open and row.at - since >= duration:
                    changed.append(self._open(row, since, since + duration, now))
            else:
                self.since.pop(key, None)
                alarm = self.open.pop(key, None)
                if alarm is not None:
                    # as stored now: people may have acknowledged it meanwhile
                    stored = self.store.read_rows(ALARMS, id=alarm["id"])
                    if len(stored):
                        alarm = stored.iloc[0].to_dict()
                    if alarm["status"] not in ACTIVE:
                        continue
                    alarm = {**alarm, "status": "resolved", "resolved_at": row.cleared,
                             "updated_at": now}
                    self.resolved += 1
                    changed.append(alarm)
        if not changed:
            return pd.DataFrame()
        frame = pd.DataFrame(changed)
        self.store.put_rows(ALARMS, frame, on_conflict="update")
        for alarm in changed:
            if alarm["status"] == "open" and self.rules.at[alarm["rule_id"], "auto_case"]:
                try:
                    case_id = self.on_case(alarm)
                except TwinError as exc:
                    LOGGER.warning("alarm %s not promoted to a case: %s", alarm["id"], exc)
                    continue
                if case_id:
                    alarm["case_id"] = case_id
        return frame

    def _open(self, row, since: pd.Timestamp, opened: pd.Timestamp,
              now: pd.Timestamp) -> dict[str, Any]:
        """Return a new alarm, opened when the condition had held for the rule's duration."""
        rule = self.rules.loc[row.rule_id]
        where = self._where(row.source_id, row.source_kind)
        alarm = {
            "id": f"{row.rule_id}/{row.source_id}/{pd.Timestamp(since):%Y%m%dT%H%M%S}",
            "rule_id": row.rule_id, "source_id": row.source_id,
            "source_kind": row.source_kind, "status": "open", "severity": rule["severity"],
            "opened_at": opened, "updated_at": now, "resolved_at": None,
            "property": row.property, "value": row.value, **where, "case_id": None,
            "data": {"name_zh": rule["name_zh"], "name_en": rule["name_en"],
                     "op": rule["op"], "threshold": None if pd.isna(rule["threshold"])
                     else float(rule["threshold"]), "since": pd.Timestamp(since).isoformat(),
                     "case_category": rule["case_category"] or None},
        }
        self.open[(row.rule_id, row.source_id)] = alarm
        self.opened += 1
        return alarm

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
                  grid_cells=None, alarm: dict | None = None) -> dict[str, Any]:
    """Make an alarm a case through ``twin.cases.report`` (source sensor, or camera for video).

    The alarm records the case id and moves to ``in_progress``.

    Raises
    ------
    ValidationError
        If no category is given and the rule names none.
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
    case = cases.report(
        store, category=category, lon=alarm["lon"], lat=alarm["lat"],
        description=f"{data.get('name_zh', alarm['rule_id'])}: {alarm['source_id']} "
                    f"({alarm['property']} = {alarm['value']:g})",
        source=source, actor=actor, role=role, grid_cells=grid_cells, at=alarm["opened_at"],
        case_id=f"A-{alarm_id.replace('/', '-')}",
    )
    data.setdefault("history", []).append({"at": pd.Timestamp.now(tz="UTC").isoformat(),
                                           "actor": actor, "to": "in_progress",
                                           "note": f"case {case['id']}"})
    updated = {**alarm, "case_id": case["id"], "status": "in_progress", "data": data,
               "updated_at": pd.Timestamp.now(tz="UTC")}
    store.put_rows(ALARMS, pd.DataFrame([updated]), on_conflict="update")
    return updated
