"""Rebuild tests/data/feeds/sample.jsonl: a recorded feed for the replay tests (deterministic).

Run ``python tests/data/feeds/record.py``. Each line is ``{"t": seconds since start, "topic",
"payload"}``; the payload is the raw text as it came over MQTT (some of it deliberately broken).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=8)))
TOPIC = "gridtwin/guixin"


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def records() -> list[dict]:
    out = []

    def add(t: float, kind: str, payload) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
        out.append({"t": t, "topic": f"{TOPIC}/{kind}", "payload": text})

    # PM2.5 every minute for 30 min: above 75 from minute 5 to 24, then clean again
    for m in range(30):
        pm = 90.0 if 5 <= m < 25 else 40.0
        add(m, "obs", {"id": f"air-{m}", "sensor_id": "S-AIR1", "observed_at": at(m),
                       "values": {"pm25": pm, "pm10": pm * 1.5}})
    # smoke on at minute 3, off at minute 8
    add(3, "obs", {"id": "smk-1", "sensor_id": "S-SMK1", "observed_at": at(3),
                   "values": {"smoke": 1}})
    add(8, "obs", {"id": "smk-2", "sensor_id": "S-SMK1", "observed_at": at(8),
                   "values": {"smoke": 0}})
    # a gateway batch: both parking spaces of lot P1 occupied
    add(10, "obs", [{"id": "p1-1", "sensor_id": "S-P1", "observed_at": at(10),
                     "values": {"occupied": 1}},
                    {"id": "p2-1", "sensor_id": "S-P2", "observed_at": at(10),
                     "values": {"occupied": 1}}])
    # duplicates: the same message delivered twice (QoS 1)
    add(11, "obs", {"id": "air-11", "sensor_id": "S-AIR1", "observed_at": at(11),
                    "values": {"pm25": 90.0, "pm10": 135.0}})
    # a camera alert and a resident report
    add(12, "camera", {"id": "cam-1", "camera_id": "C1", "observed_at": at(12),
                       "kind": "garbage", "confidence": 0.93, "snapshot_url": None})
    add(13, "reports", {"id": "rep-1", "service_code": "E0101", "description": "垃圾堆放",
                        "lat": 25.0803, "long": 110.2905, "requested_datetime": at(13),
                        "media_url": None, "role": "resident"})
    # bad ones: every reason once
    add(14, "obs", '{"id": "bad-json", "sensor_id": "S-AIR1", "values": {"pm25": 1')
    add(14, "obs", {"id": "bad-sensor", "sensor_id": "S-NOPE", "observed_at": at(14),
                    "values": {"pm25": 10}})
    add(14, "obs", {"id": "bad-time", "sensor_id": "S-AIR1", "observed_at": "2026-03-02 08:14",
                    "values": {"pm25": 10}})
    add(14, "obs", {"id": "bad-future", "sensor_id": "S-AIR1", "observed_at": "2099-01-01T00:00Z",
                    "values": {"pm25": 10}})
    add(14, "obs", {"id": "bad-range", "sensor_id": "S-AIR1", "observed_at": at(14),
                    "values": {"pm25": -5}})
    add(14, "obs", {"id": "bad-prop", "sensor_id": "S-AIR1", "observed_at": at(14),
                    "values": {"radon": 3}})
    add(14, "obs", {"sensor_id": "S-AIR1", "observed_at": at(14), "values": {"pm25": 3}})
    return sorted(out, key=lambda r: r["t"])


def main() -> None:
    path = Path(__file__).with_name("sample.jsonl")
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records()),
                    encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
