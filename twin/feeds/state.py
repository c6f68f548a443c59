"""Live state: latest value per sensor and property, lot occupancy, online sensors, grid totals."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

LOGGER = logging.getLogger(__name__)

#: A sensor is offline when nothing came for this many of its report intervals.
OFFLINE_INTERVALS = 3.0


class LiveState:
    """What the twin knows now, updated a batch at a time (vectorised, order-independent).

    Parameters
    ----------
    sensors
        ``Registry.sensors``: kind, report interval, lot and grid of every sensor.
    """

    def __init__(self, sensors: pd.DataFrame, started: pd.Timestamp | None = None) -> None:
        self.sensors = sensors
        self.started = started or pd.Timestamp.now(tz="UTC")
        # (source_id, property) → (observed_at in ns since the epoch, value)
        self._latest: dict[tuple[str, str], tuple[int, float]] = {}
        self._frame: pd.DataFrame | None = None

    @property
    def latest(self) -> pd.DataFrame:
        """Latest ``value`` and ``observed_at`` per (source_id, property), sorted by key."""
        if self._frame is None:
            keys = sorted(self._latest)
            stamps = np.fromiter((self._latest[k][0] for k in keys), dtype=np.int64,
                                 count=len(keys))
            self._frame = pd.DataFrame(
                {"value": np.fromiter((self._latest[k][1] for k in keys), dtype=float,
                                      count=len(keys)),
                 "observed_at": pd.DatetimeIndex(stamps.astype("datetime64[ns]"), tz="UTC")
                 .astype("datetime64[us, UTC]")},
                index=pd.MultiIndex.from_tuples(keys, names=["source_id", "property"]),
            )
        return self._frame

    def update(self, readings: pd.DataFrame) -> pd.DataFrame:
        """Merge readings (source_id, property, value, observed_at); return the newer ones.

        An older reading arriving late never replaces a newer value. The batch is reduced with
        numpy to its latest reading per (sensor, property) first, so the dict is touched once
        per key (a gateway batch of 20,000 readings holds a few hundred keys): per-batch pandas
        merges cost milliseconds whatever the batch size, and this runs on the ingest path.
        """
        if readings.empty:
            return readings
        sources, props = readings["source_id"].to_numpy(), readings["property"].to_numpy()
        source_code, source_keys = pd.factorize(sources)
        prop_code, prop_keys = pd.factorize(props)
        key_code = source_code.astype(np.int64) * len(prop_keys) + prop_code
        code, key_of = pd.factorize(key_code)  # readings → distinct keys, in first-seen order
        stamps = pd.to_datetime(readings["observed_at"], utc=True).to_numpy(
            dtype="datetime64[ns]").view(np.int64)
        values = readings["value"].to_numpy(dtype=float)
        keys = list(zip(source_keys[key_of // len(prop_keys)].tolist(),
                        prop_keys[key_of % len(prop_keys)].tolist(), strict=True))
        latest = self._latest
        never = np.iinfo(np.int64).min
        before = np.fromiter((latest.get(k, (never,))[0] for k in keys), dtype=np.int64,
                             count=len(keys))
        newer = stamps > before[code]
        # the latest reading per key; the later of equal times wins (the last in the batch)
        order = np.lexsort((np.arange(len(code)), stamps, code))
        last = order[np.r_[code[order][1:] != code[order][:-1], True]]
        for k, stamp, value in zip(code[last].tolist(), stamps[last].tolist(),
                                   values[last].tolist(), strict=True):
            if stamp >= before[k]:
                latest[keys[k]] = (stamp, value)
        self._frame = None
        return readings[newer]

    def value(self, sensor_id: str, prop: str) -> float | None:
        try:
            return float(self.latest.loc[(sensor_id, prop), "value"])
        except KeyError:
            return None

    def last_seen(self) -> pd.Series:
        """Latest observation time of every registered sensor (NaT if never heard)."""
        seen = self.latest["observed_at"].groupby(level="source_id").max()
        return seen.reindex(self.sensors.index)

    def sensors_status(self, now: pd.Timestamp) -> pd.DataFrame:
        """Per sensor: last_seen, online (heard within OFFLINE_INTERVALS × its interval)."""
        seen = self.last_seen()
        limit = pd.to_timedelta(self.sensors["report_interval_s"].astype(float) * OFFLINE_INTERVALS,
                                unit="s")
        since = seen.fillna(self.started)
        online = (now - since) <= limit
        return pd.DataFrame({"last_seen": seen, "online": online.to_numpy(),
                             "offline_since": (since + limit).where(~online),
                             "grid_code": self.sensors["grid_code"]})

    def lot_occupancy(self) -> pd.DataFrame:
        """Per lot: sensors reporting, occupied, and the occupied share of monitored spaces."""
        occ = self.latest.xs("occupied", level="property", drop_level=True)["value"] \
            if "occupied" in self.latest.index.get_level_values("property") else pd.Series(
                dtype=float)
        lots = self.sensors["lot_id"].reindex(occ.index)
        frame = pd.DataFrame({"lot_id": lots.to_numpy(), "occupied": occ.to_numpy()}).dropna()
        if frame.empty:
            return pd.DataFrame(columns=["monitored", "occupied", "share"])
        out = frame.groupby("lot_id")["occupied"].agg(monitored="size", occupied="sum")
        out["share"] = out["occupied"] / out["monitored"]
        return out

    def grid_summary(self, now: pd.Timestamp) -> pd.DataFrame:
        """Per unit grid: sensors, online, offline and the mean of each numeric property."""
        status = self.sensors_status(now)
        counts = status.groupby("grid_code", dropna=True)["online"].agg(
            sensors="size", online="sum")
        counts["offline"] = counts["sensors"] - counts["online"]
        if len(self.latest):
            latest = self.latest.reset_index()
            latest["grid_code"] = self.sensors["grid_code"].reindex(latest["source_id"]).to_numpy()
            means = latest.pivot_table(index="grid_code", columns="property", values="value",
                                       aggfunc="mean")
            counts = counts.join(means.add_prefix("mean_"))
        return counts
