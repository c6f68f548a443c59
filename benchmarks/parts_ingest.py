"""Events COPY rate into the monthly-partitioned table vs the plain lean table (same data).

``python -m benchmarks.parts_ingest``: 300,000 events in 10,000-event batches through
``Store.append_events``, into a fresh PostGIS schema whose events table is rebuilt plain (as
before migration 15) or partitioned between rounds, the layouts alternated twice. Figures in
docs/benchmarks.md (issue 20).
"""
import json
import time

import numpy as np
import pandas as pd
import sqlalchemy as sa

from benchmarks.common import pg_store
from twin.schema import EVENTS
from twin.store.migrations import partition_events, table_ddl

N, B = 300_000, 10_000


def batches():
    """N events of three days ago, in batches of B."""
    t0 = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=3)
    for start in range(0, N, B):
        i = np.arange(start, start + B)
        yield pd.DataFrame({
            "id": np.char.add("P", i.astype(str)), "kind": "obs", "source_id": "S1",
            "observed_at": t0 + pd.to_timedelta(i, "s"), "lon": 110.29 + (i % 100) * 1e-4,
            "lat": 25.08, "grid_code": "45031100100101",
            "payload": '{"values": {"pm25": 35.0}}',
        })


def layout(store, partitioned: bool) -> None:
    """Rebuild the events table empty: plain (as before migration 15) or partitioned."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE twin_events CASCADE"))
        for statement in table_ddl(EVENTS):
            conn.execute(sa.text(statement))
        if partitioned:
            partition_events(conn, ahead=1)


def main() -> int:
    with pg_store("parts") as store:
        frames = [store.prepare_events(b) for b in batches()]
        out: dict[bool, list[int]] = {True: [], False: []}
        for _round in range(2):
            for partitioned in (True, False):
                layout(store, partitioned)
                t = time.perf_counter()
                for frame in frames:
                    store.append_events(frame)
                out[partitioned].append(round(N / (time.perf_counter() - t)))
        print(json.dumps({"events": N, "batch": B, "partitioned_per_s": out[True],
                          "plain_per_s": out[False]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
