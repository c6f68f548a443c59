"""A deterministic simulator of a community's feeds with realistic daily patterns."""

from __future__ import annotations

import json
import logging
import zlib

import numpy as np
import pandas as pd

from twin.feeds.models import Message
from twin.timeutil import local_zone

LOGGER = logging.getLogger(__name__)

REPORT_CODES = ("E0101", "E0102", "E0501", "E0502", "E0401", "P0105", "P0301")


def _hours(times: np.ndarray) -> np.ndarray:
    """Local hour of day (float) of UTC epoch seconds."""
    return ((times + 8 * 3600) % 86400) / 3600.0


def parking_share(hours: np.ndarray) -> np.ndarray:
    """Occupied share of a residential lot: full at night, emptiest at midday."""
    return 0.55 + 0.38 * np.cos((hours - 2.0) / 24.0 * 2 * np.pi)


def pm25_level(hours: np.ndarray) -> np.ndarray:
    """PM2.5 (µg/m³) baseline with morning and evening rush-hour peaks."""
    rush = np.exp(-((hours - 8.0) ** 2) / 2.0) + np.exp(-((hours - 18.5) ** 2) / 2.5)
    return 32.0 + 30.0 * rush


class Simulator:
    """Messages of every sensor and camera of a registry, deterministic for a seed.

    Each sensor reports at its ``report_interval_s`` with a phase of its own; a time window's
    messages depend only on the seed and the window, so replaying a window gives the same
    messages. Rare events (smoke, leaks, open manholes, pollution episodes, camera alerts,
    residents' reports) come from the same seeded draws.

    Parameters
    ----------
    sensors, cameras
        ``Registry.sensors`` / ``Registry.cameras`` (indexed by id, with kind, lon, lat).
    community
        Used in the topics ``gridtwin/<community>/obs|camera|reports``.
    seed
        Seed of every random draw.
    """

    def __init__(self, sensors: pd.DataFrame, cameras: pd.DataFrame, *, community: str = "demo",
                 seed: int = 0, prefix: str = "gridtwin") -> None:
        self.sensors = sensors
        self.cameras = cameras
        self.seed = seed
        self.topic = f"{prefix}/{community}"
        ids = sensors.index.astype(str)
        self._phase = np.array([zlib.crc32(s.encode()) for s in ids], dtype=np.int64)
        self._interval = sensors["report_interval_s"].to_numpy(dtype=np.int64).clip(1)
        lon = sensors["lon"].to_numpy(dtype=float)
        lat = sensors["lat"].to_numpy(dtype=float)
        self._bounds = (lon.min(), lat.min(), lon.max(), lat.max()) if len(lon) else None

    def _rng(self, second: int, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(second) // 60, salt])

    def messages(self, start: pd.Timestamp, end: pd.Timestamp) -> list[Message]:
        """Every message due in ``[start, end)`` (whole seconds), oldest first."""
        t0, t1 = int(pd.Timestamp(start).timestamp()), int(pd.Timestamp(end).timestamp())
        out: list[tuple[int, str, dict]] = []
        # minute by minute so that the random draws do not depend on the window's cut
        for minute in range(t0 - t0 % 60, t1, 60):
            lo, hi = max(minute, t0), min(minute + 60, t1)
            if lo < hi:
                out.extend(self._minute(minute, lo, hi))
        out.sort(key=lambda m: (m[0], m[2]["id"]))
        received = pd.Timestamp.now(tz="UTC")
        return [Message(f"{self.topic}/{topic}", json.dumps(body).encode(), received)
                for _, topic, body in out]

    def _minute(self, minute: int, lo: int, hi: int) -> list[tuple[int, str, dict]]:
        rng = self._rng(minute)
        n = len(self.sensors)
        offset = self._phase % self._interval
        # first due second ≥ minute for each sensor, then every interval within the minute
        first = minute + (offset - minute) % self._interval
        out = []
        kinds = self.sensors["kind"].to_numpy(dtype=object)
        ids = self.sensors.index.to_numpy(dtype=object)
        hours = _hours(np.full(n, minute, dtype=float))
        u = rng.random((n, 4))
        episode = self._rng(minute - minute % 3600, 1).random(n) < 0.04  # an hour of bad air
        values = {
            "parking": lambda i: {"occupied": int(u[i, 0] < parking_share(hours[i:i + 1])[0])},
            "air": lambda i: self._air(hours[i], u[i], episode[i]),
            "noise": lambda i: {"noise": round(42 + 18 * (7 <= hours[i] <= 22) + 6 * u[i, 0], 1)},
            "smoke": lambda i: {"smoke": int(u[i, 0] < 0.0015)},
            "water_leak": lambda i: {"leak": int(u[i, 0] < 0.002)},
            "manhole": lambda i: {"open": int(u[i, 0] < 0.002),
                                  "tilt": round(float(u[i, 1] * 3), 1)},
            "elevator": lambda i: {"running": int(u[i, 0] < 0.3 + 0.4 * (7 <= hours[i] <= 21)),
                                   "fault": int(u[i, 1] < 0.001)},
            "gas": lambda i: {"gas": int(u[i, 0] < 0.001)},
            "door": lambda i: {"door": int(u[i, 0] < 0.2)},
            "water_meter": lambda i: {"flow": round(float(u[i, 0] * 2), 3)},
        }
        for i in np.flatnonzero(first < hi):
            for t in range(int(first[i]), hi, int(self._interval[i])):
                if t < lo:
                    continue
                make = values.get(kinds[i])
                if make is None:
                    continue
                out.append((t, "obs", {"id": f"sim-{ids[i]}-{t}", "sensor_id": ids[i],
                                       "observed_at": _iso(t), "values": make(i)}))
        out.extend(self._camera_alerts(rng, minute, lo, hi))
        out.extend(self._reports(rng, minute, lo, hi))
        return out

    @staticmethod
    def _air(hour: float, u: np.ndarray, episode: bool) -> dict:
        pm25 = pm25_level(np.array([hour]))[0] * (0.8 + 0.4 * u[0]) + (60 if episode else 0)
        return {"pm25": round(float(pm25), 1), "pm10": round(float(pm25 * 1.6), 1),
                "no2": round(float(25 + 20 * u[1]), 1)}

    def _camera_alerts(self, rng, minute, lo, hi):
        n = len(self.cameras)
        if n == 0:
            return []
        hour = _hours(np.array([minute], dtype=float))[0]
        rate = 0.01 + 0.02 * (7 <= hour <= 9 or 17 <= hour <= 20)  # per camera per minute
        hits = np.flatnonzero(rng.random(n) < rate)
        kinds = np.array(["crowd", "illegal_parking", "garbage", "fire_smoke"])
        which = rng.choice(len(kinds), size=n, p=[0.4, 0.35, 0.23, 0.02])
        seconds = rng.integers(0, 60, size=n)
        conf = rng.uniform(0.6, 0.99, size=n)
        ids = self.cameras.index.to_numpy(dtype=object)
        out = []
        for i in hits:
            t = minute + int(seconds[i])
            if lo <= t < hi:
                out.append((t, "camera", {
                    "id": f"sim-{ids[i]}-{t}", "camera_id": ids[i], "observed_at": _iso(t),
                    "kind": str(kinds[which[i]]), "confidence": round(float(conf[i]), 2),
                    "snapshot_url": None}))
        return out

    def _reports(self, rng, minute, lo, hi):
        if self._bounds is None or rng.random() >= 0.02:  # about one an hour
            return []
        t = minute + int(rng.integers(0, 60))
        if not lo <= t < hi:
            return []
        x0, y0, x1, y1 = self._bounds
        return [(t, "reports", {
            "id": f"sim-report-{t}", "service_code": str(rng.choice(REPORT_CODES)),
            "description": "居民反映问题(模拟)", "long": round(float(rng.uniform(x0, x1)), 6),
            "lat": round(float(rng.uniform(y0, y1)), 6), "requested_datetime": _iso(t),
            "media_url": None, "role": "resident"})]


def _iso(second: int) -> str:
    return pd.Timestamp(second, unit="s", tz="UTC").tz_convert(local_zone()).isoformat()
