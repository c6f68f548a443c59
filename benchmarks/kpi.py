"""Indicators by grid and month through each store (Store.case_counts) vs a plain SQL GROUP BY."""

from __future__ import annotations

import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import scenarios
from benchmarks.common import Figure, figure, measure, pg_store, repeats_for, sql_rows

NAME = "kpi"
TITLE = "Indicators by unit grid and month"
DESCRIPTION = """
Cases from `twin.scenario.make_cases` (a year, 2025) are written into each store with
`store.put_rows(twin.schema.CASES, …)`, which also keeps each store's monthly rollup of the case
counts (`twin_case_months`, maintained by triggers in the same transactions; `put_rows_s` is the
time of those writes, rollup included). Ours is the store path: `twin.kpi.indicators(store,
by="grid", freq="M", compare=False)`, which runs `Store.case_counts` — here a sum over the rollup
(every month of 2025 has ended) inside the database — and brings back only the table of counts.
The anchor is a plain hand-written SQL
`GROUP BY grid_code, local month` with `count(*) FILTER (…)` per count on the same PostGIS table,
each month evaluated as of its own end as `twin.kpi` does; the embedded store is compared with
the same PostGIS anchor. Same answer: the counts of ours equal the anchor's row for row, and (up
to 200,000 cases) also equal `twin.kpi.indicators(twin.cases.case_table(store.read_cases()), …)`,
the in-memory path. Both stores hold the full number of cases (a million at city scale; the
size column says how many, and `put_rows_s` how long writing them took).
"""
COUNTS = ("filed", "cancelled", "filed_on_time", "dispatched", "reworked", "extended", "handled",
          "due_to_handle", "handled_on_time", "due", "closed", "closed_on_time")
#: Cases written into the embedded store per scale (None: as many as PostGIS); a cap can be set
#: with TWIN_BENCH_EMBEDDED_CASES for a quicker run.
EMBEDDED_CASES = {"city": int(os.environ["TWIN_BENCH_EMBEDDED_CASES"])} if os.environ.get(
    "TWIN_BENCH_EMBEDDED_CASES") else {}
#: Up to how many cases the in-memory path (read_cases → case_table → indicators) is checked.
IN_MEMORY_CHECK_MAX = 200_000
START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2026, 1, 1, tzinfo=UTC)

# The counts of twin.store.base.CASE_COMPONENTS, each month evaluated as of its own end (local).
SQL = """
WITH c AS (
  SELECT *, date_trunc('month', filed_at AT TIME ZONE 'Asia/Shanghai') AS m
  FROM twin_cases WHERE filed_at IS NOT NULL
), e AS (
  SELECT *, (m + interval '1 month') AT TIME ZONE 'Asia/Shanghai' AS e FROM c
), f AS (
  SELECT *, filed_at <= e AS fil,
         coalesce(cancelled_at <= e, false) AS canc,
         filed_at <= e AND dispatched_at <= e AS disp,
         coalesce(status <> 'on_hold', true) AS notheld
  FROM e
)
SELECT grid_code, to_char(m, 'YYYY-MM') AS period,
  count(*) FILTER (WHERE fil) AS filed,
  count(*) FILTER (WHERE fil AND canc) AS cancelled,
  count(*) FILTER (WHERE fil AND (file_deadline IS NULL OR filed_at <= file_deadline))
    AS filed_on_time,
  count(*) FILTER (WHERE disp) AS dispatched,
  count(*) FILTER (WHERE disp AND first_rework_at <= e) AS reworked,
  count(*) FILTER (WHERE disp AND extended) AS extended,
  count(*) FILTER (WHERE disp AND fed_back_at <= e) AS handled,
  count(*) FILTER (WHERE disp AND NOT canc AND ((handle_deadline <= e AND notheld)
    OR fed_back_at <= e)) AS due_to_handle,
  count(*) FILTER (WHERE disp AND fed_back_at <= e AND fed_back_at <= handle_deadline)
    AS handled_on_time,
  count(*) FILTER (WHERE fil AND NOT canc AND ((deadline_at <= e AND notheld)
    OR closed_at <= e)) AS due,
  count(*) FILTER (WHERE fil AND NOT canc AND closed_at <= e) AS closed,
  count(*) FILTER (WHERE fil AND NOT canc AND closed_at <= e AND closed_at <= deadline_at)
    AS closed_on_time
FROM f GROUP BY 1, 2 ORDER BY 1, 2
"""


def _store_path(store) -> pd.DataFrame:
    from twin import kpi

    return kpi.indicators(store, by="grid", freq="M", compare=False)


def _in_memory(store) -> pd.DataFrame:
    from twin import cases, kpi

    return kpi.indicators(cases.case_table(store.read_cases()), by="grid", freq="M",
                          compare=False)


def _counts(frame: pd.DataFrame) -> np.ndarray:
    a = frame[["grid_code", "period", *COUNTS]].copy()
    a = a[a["grid_code"].notna()].sort_values(["grid_code", "period"]).reset_index(drop=True)
    a = a.astype({c: "int64" for c in COUNTS})
    a["period"] = a["period"].astype(str)
    return a.to_numpy(dtype=object)


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    x, y = _counts(a), _counts(b)
    return bool(x.shape == y.shape and np.array_equal(x, y))


def _analyze(store) -> None:
    import sqlalchemy as sa

    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE twin_cases"))


def _fill(store, frame: pd.DataFrame, chunk: int = 100_000) -> float:
    """Write the cases in chunks (one transaction each); return the seconds it took."""
    from twin import schema

    t0 = time.perf_counter()
    for i in range(0, len(frame), chunk):
        store.put_rows(schema.CASES, frame.iloc[i:i + chunk])
    return time.perf_counter() - t0


def run(scale: str, quick: bool) -> list[Figure]:
    from twin import scenario as tscen

    scen = scenarios.scenario(scale)
    n = scenarios.CASES[scale]
    t0 = time.perf_counter()
    cases = tscen.make_cases(scen, n, start=START, end=END)
    made_s = round(time.perf_counter() - t0, 1)
    cases = pd.DataFrame(cases).drop(columns="geometry", errors="ignore")
    reps = repeats_for(scale, quick)
    figs = []
    with tempfile.TemporaryDirectory(prefix="bench-kpi-") as tmp, pg_store() as pg:
        from twin.store import open_store

        put_pg = _fill(pg, cases)
        _analyze(pg)
        t_a = measure(lambda: pd.DataFrame(sql_rows(pg, SQL),
                                           columns=["grid_code", "period", *COUNTS]), reps)
        n_emb = min(n, EMBEDDED_CASES.get(scale) or n)
        emb = open_store(str(Path(tmp) / "twin.gpkg"))
        try:
            put_emb = _fill(emb, cases.iloc[:n_emb])
            t_a_emb = t_a
            if n_emb < n:  # the anchor on the same subset, in a PostGIS schema of its own
                with pg_store() as pg2:
                    _fill(pg2, cases.iloc[:n_emb])
                    _analyze(pg2)
                    t_a_emb = measure(lambda: pd.DataFrame(
                        sql_rows(pg2, SQL), columns=["grid_code", "period", *COUNTS]), reps)
            for label, store, m, anchor in (("PostGIS", pg, n, t_a),
                                            ("embedded", emb, n_emb, t_a_emb)):
                t_o = measure(lambda s=store: _store_path(s), reps)
                same = _same(t_o.answer, anchor.answer)
                checked = "anchor"
                if m <= IN_MEMORY_CHECK_MAX:
                    same = same and _same(t_o.answer, _in_memory(store))
                    checked = "anchor and in-memory path"
                size = {"cases": m, "grid_cells": len(scen["grid_cells"]),
                        "result_rows": len(t_o.answer)}
                figs.append(figure(
                    NAME, f"indicator table by grid × month ({label})", scale, size,
                    f"twin.kpi.indicators({label} store, by='grid', freq='M') → "
                    "Store.case_counts",
                    "hand-written SQL GROUP BY with FILTER counts in PostGIS", t_o, anchor, same,
                    notes=f"same answer checked against: {checked}",
                    extra={"put_rows_s": round(put_pg if label == "PostGIS" else put_emb, 1),
                           "make_cases_s": made_s}))
        finally:
            emb.close()
    return figs
