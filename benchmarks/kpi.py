"""Indicators by unit grid and month (twin.kpi) vs a plain SQL GROUP BY in PostGIS."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from benchmarks import scenarios
from benchmarks.common import Figure, figure, measure, pg_store, repeats_for, sql_rows

NAME = "kpi"
TITLE = "Indicators by unit grid and month"
DESCRIPTION = """
The case table (the columns `twin.cases.case_table` gives `twin.kpi.indicators`: status, filing,
dispatch, feedback, closing times and deadlines, grid) is generated vectorised — 1,000,000 cases
at city scale over a year and all unit grids — and also COPYed into a plain PostGIS table. The
anchor is one SQL `GROUP BY grid_code, local month` with `count(*) FILTER (…)` for each count,
each month evaluated as of its own end as `twin.kpi` does; the counts of both must be equal row
for row. Two of our figures: the indicator table from cases already in memory, and reading the
case columns out of PostGIS first. The embedded store is not measured end to end yet: its cases
keep their step times in each case's `data` JSON (parsed by `case_table`), and filling it with a
million full cases did not fit this run.
"""
COUNTS = ("filed", "cancelled", "filed_on_time", "dispatched", "reworked", "extended", "handled",
          "due_to_handle", "handled_on_time", "due", "closed", "closed_on_time")
TIMES = ("filed_at", "file_deadline", "dispatched_at", "first_rework_at", "fed_back_at",
         "handle_deadline", "closed_at", "deadline_at", "cancelled_at")
COLUMNS = ("id", "status", "grid_code", *TIMES, "extended")

# The same counts as twin.kpi.case_counts, each month evaluated as of its own end (local time).
SQL = """
WITH c AS (
  SELECT *, date_trunc('month', filed_at AT TIME ZONE 'Asia/Shanghai') AS m
  FROM bench_cases WHERE filed_at IS NOT NULL
), e AS (
  SELECT *, (m + interval '1 month') AT TIME ZONE 'Asia/Shanghai' AS e,
         coalesce(cancelled_at <= (m + interval '1 month') AT TIME ZONE 'Asia/Shanghai', false)
           AS canc
  FROM c
)
SELECT grid_code, to_char(m, 'YYYY-MM') AS period,
  count(*) AS filed,
  count(*) FILTER (WHERE canc) AS cancelled,
  count(*) FILTER (WHERE file_deadline IS NULL OR filed_at <= file_deadline) AS filed_on_time,
  count(*) FILTER (WHERE dispatched_at <= e) AS dispatched,
  count(*) FILTER (WHERE dispatched_at <= e AND first_rework_at <= e) AS reworked,
  count(*) FILTER (WHERE dispatched_at <= e AND extended) AS extended,
  count(*) FILTER (WHERE dispatched_at <= e AND fed_back_at <= e) AS handled,
  count(*) FILTER (WHERE dispatched_at <= e AND NOT canc AND ((handle_deadline <= e
    AND status <> 'on_hold') OR fed_back_at <= e)) AS due_to_handle,
  count(*) FILTER (WHERE dispatched_at <= e AND fed_back_at <= e
    AND fed_back_at <= handle_deadline) AS handled_on_time,
  count(*) FILTER (WHERE NOT canc AND ((deadline_at <= e AND status <> 'on_hold')
    OR closed_at <= e)) AS due,
  count(*) FILTER (WHERE NOT canc AND closed_at <= e) AS closed,
  count(*) FILTER (WHERE NOT canc AND closed_at <= e AND closed_at <= deadline_at)
    AS closed_on_time
FROM e GROUP BY 1, 2 ORDER BY 1, 2
"""


def write_table(store, cases: pd.DataFrame) -> None:
    """The case columns as a plain table in the bench schema, by COPY."""
    ddl = ", ".join(
        f"{c} {'timestamptz' if c in TIMES else 'boolean' if c == 'extended' else 'text'}"
        for c in COLUMNS)
    buf = io.StringIO()
    out = cases[list(COLUMNS)].copy()
    for c in TIMES:
        out[c] = out[c].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    out.to_csv(buf, index=False, header=False)
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"CREATE TABLE bench_cases ({ddl})")
        copy = f"COPY bench_cases ({', '.join(COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
        with cur.copy(copy) as cp:
            cp.write(buf.getvalue())
        cur.execute("ANALYZE bench_cases")
        raw.commit()
    finally:
        raw.close()


def read_table(store) -> pd.DataFrame:
    """Our path on PostGIS: the case columns read back, typed (what twin.kpi needs)."""
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM bench_cases")
        frame = pd.DataFrame(cur.fetchall(), columns=list(COLUMNS))
    finally:
        raw.close()
    for c in TIMES:
        frame[c] = pd.to_datetime(frame[c], utc=True)
    return frame


def _ours(cases: pd.DataFrame) -> pd.DataFrame:
    from twin import kpi

    return kpi.indicators(cases, by="grid", freq="M", compare=False)


def _same(ours: pd.DataFrame, rows: list[tuple]) -> bool:
    sql = pd.DataFrame(rows, columns=["grid_code", "period", *COUNTS])
    a = ours[["grid_code", "period", *COUNTS]].sort_values(["grid_code", "period"])
    a = a.reset_index(drop=True).astype({c: "int64" for c in COUNTS})
    sql = sql.astype({c: "int64" for c in COUNTS})
    return bool(len(a) == len(sql) and np.array_equal(a.to_numpy(dtype=object),
                                                      sql.to_numpy(dtype=object)))


def run(scale: str, quick: bool) -> list[Figure]:
    scen = scenarios.scenario(scale)
    n = scenarios.CASES[scale]
    cases = scenarios.case_table(scen, n)
    reps = repeats_for(scale, quick)
    size = {"cases": n, "grid_cells": len(scen["grid_cells"])}
    figs = []
    with pg_store() as store:
        write_table(store, cases)
        t_a = measure(lambda: sql_rows(store, SQL), reps)
        t_o = measure(lambda: _ours(cases), reps)
        figs.append(figure(NAME, "indicator table in memory (by grid × month)", scale, size,
                           "twin.kpi.indicators(by='grid', freq='M')",
                           "SQL GROUP BY with FILTER counts in PostGIS", t_o, t_a,
                           _same(t_o.answer, t_a.answer)))
        t_p = measure(lambda: _ours(read_table(store)), reps)
        figs.append(figure(NAME, "read from PostGIS + indicators", scale, size,
                           "SELECT case columns → twin.kpi.indicators",
                           "SQL GROUP BY with FILTER counts in PostGIS", t_p, t_a,
                           _same(t_p.answer, t_a.answer)))
    return figs
