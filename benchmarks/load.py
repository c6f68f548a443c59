"""Layer load of a footprint GeoPackage into PostGIS (twin.load.load_layer) vs ogr2ogr."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pyogrio

from benchmarks import scenarios
from benchmarks.common import (
    Timing,
    figure,
    measure,
    pg_libpq,
    pg_store,
    repeats_for,
    run_child,
    sql_rows,
)

NAME = "load"
TITLE = "Layer load into PostGIS (building footprints)"
DESCRIPTION = """
Staff file: the scenario's buildings written as a GeoPackage without the grid columns (what a
survey office sends). Ours is `twin.load.load_layer` with validation on — read, reproject check,
repair, attribute mapping, stable ids, grid assignment from the stored grid cells — writing a new
version with history; the anchor is `ogr2ogr -f PostgreSQL` (COPY, GiST index) of the same file
into the same database. Each of our repeats is a new version of the layer. At city scale the
first 100,000 footprints are used (the issue 3 target).
"""
LIMIT = 100_000
STAFF_DROP = ("grid_code", "resp_grid_id", "community_code", "street_code")


def staff_file(buildings, folder: Path) -> Path:
    path = folder / "buildings.gpkg"
    frame = buildings.drop(columns=[c for c in STAFF_DROP if c in buildings.columns])
    frame = frame.drop(columns=["attrs"]).head(LIMIT)
    pyogrio.write_dataframe(frame, path, layer="buildings", driver="GPKG")
    return path


def run(scale: str, quick: bool):
    from twin.load import load_layer

    scen = scenarios.scenario(scale)
    reps = repeats_for(scale, quick)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, pg_store() as store:
        path = staff_file(scen["buildings"], Path(tmp))
        n = min(LIMIT, len(scen["buildings"]))
        for name in ("community", "grid_cells"):
            store.write_layer(name, scen[name], actor="bench", source="scenario")
        t_o = measure(lambda: load_layer(store, "buildings", path, actor="bench"), reps)
        report = t_o.answer.report
        dsn = "PG:" + pg_libpq(store.schema)
        cmd = ["ogr2ogr", "-f", "PostgreSQL", dsn, str(path), "buildings", "-nln", "ogr_buildings",
               "-overwrite", "-lco", "GEOMETRY_NAME=geom", "-lco", "FID=ogc_fid"]
        times, peaks = [], []
        run_child(cmd)  # warm-up
        for _ in range(reps):
            t, peak, _done = run_child(cmd)
            times.append(t)
            peaks.append(peak)
        t_a = Timing(times, None, max(peaks))
        ours_rows = sql_rows(store, "SELECT count(*), sum(ST_Area(geom::geography)), "
                                    "count(grid_code) FROM buildings")[0]
        ogr_rows = sql_rows(store, "SELECT count(*), sum(ST_Area(geom::geography)) "
                                   "FROM ogr_buildings")[0]
        ids = sql_rows(store, "SELECT count(*) FROM buildings b FULL JOIN ogr_buildings o "
                              "ON o.building_code = b.building_code "
                              "WHERE o.building_code IS NULL OR b.building_code IS NULL")[0][0]
        same = (ours_rows[0] == ogr_rows[0] == n and ids == 0
                and abs(float(ours_rows[1]) - float(ogr_rows[1])) <= 1e-6 * float(ogr_rows[1]))
        timings = report.get("timings_s", {})
        return [figure(NAME, "GeoPackage → PostGIS, validation on", scale,
                       {"footprints": n}, "twin.load.load_layer (validate, assign grids, version)",
                       "ogr2ogr -f PostgreSQL", t_o, t_a, same,
                       notes="same answer: same ids, row count and total area (±1e-6); ours also "
                             "fills the grid columns and keeps history",
                       extra={"ours_stage_s": timings, "ours_assigned": int(ours_rows[2]),
                              "ours_over_anchor": (t_o.median / t_a.median)})]
