"""Planner queries 1, 2, 7 and camera coverage (twin.query) vs hand-written PostGIS SQL."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import shapely

from benchmarks import scenarios
from benchmarks.common import Figure, Timing, figure, peak_rss_mb, pg_store, reset_peak, sql_rows

NAME = "queries"
TITLE = "Planner queries (within, nearest, counts per grid, camera coverage)"
DESCRIPTION = """
Both stores hold the same scenario layers. Each query is asked from a series of different points
(around buildings); the figure is the median, and the targets use the p95, of those calls after
two warm-up calls. The anchor is the SQL a PostGIS user would write by hand for the same question
— metric distances in the data's UTM zone (EPSG:32649) behind a bounding-box prefilter so the
GiST index is used — run on the same PostGIS database; the embedded store is compared with the
same SQL anchor. Answers must match (same ids in the same order; same counts per grid).
"""
LAYERS = ("community", "grid_cells", "buildings", "parking", "cameras")
QUICK_SCALES = ("community", "street")
UTM = 32649
POINT_SQL = f"ST_Transform(ST_SetSRID(ST_MakePoint(:x, :y), 4326), {UTM})"
WITHIN_SQL = f"""
SELECT building_code FROM buildings
WHERE geom && ST_Expand(ST_SetSRID(ST_MakePoint(:x, :y), 4326), :deg)
  AND ST_DWithin(ST_Transform(geom, {UTM}), {POINT_SQL}, :d)
ORDER BY round(ST_Distance(ST_Transform(geom, {UTM}), {POINT_SQL})::numeric, 3), building_code
"""
NEAREST_SQL = f"""
SELECT lot_id FROM parking
ORDER BY round(ST_Distance(ST_Transform(geom, {UTM}), {POINT_SQL})::numeric, 3), lot_id LIMIT :k
"""
COUNTS_SQL = "SELECT grid_code, count(*) FROM buildings WHERE grid_code IS NOT NULL GROUP BY 1"


def _series(fn, args_list) -> Timing:
    """Time one call per argument set after two warm-up calls; keep every answer."""
    reset_peak()
    for a in args_list[:2]:
        fn(*a)
    times, answers = [], []
    for a in args_list:
        t0 = time.perf_counter()
        answers.append(fn(*a))
        times.append(time.perf_counter() - t0)
    return Timing(times, answers, peak_rss_mb())


def _counts_answer(frame) -> dict:
    """{unit: count} of the non-zero units, read column-wise (as the anchor's rows are)."""
    units, counts = frame["unit"].to_numpy(), frame["count"].to_numpy()
    hit = counts > 0
    return dict(zip(units[hit].tolist(), counts[hit].tolist(), strict=True))


def _fill(store, scen) -> None:
    for name in LAYERS:
        store.write_layer(name, scen[name], actor="bench", source="scenario")


def run(scale: str, quick: bool) -> list[Figure]:
    from twin.query import counts_per_grid, coverage, nearest, within_distance
    from twin.store import open_store

    scen = scenarios.scenario(scale)
    rng = np.random.default_rng(3)
    calls = 10 if quick else 20
    pts = shapely.point_on_surface(scen["buildings"].geometry.values)
    picked = pts[rng.integers(0, len(pts), calls)]
    xy = [(float(p.x), float(p.y)) for p in picked]
    size = {k: len(scen[k]) for k in ("buildings", "parking", "cameras", "grid_cells")}
    figs: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-q-") as tmp, pg_store() as pg:
        emb = open_store(str(Path(tmp) / "twin.gpkg"))
        _fill(pg, scen)
        _fill(emb, scen)
        deg = 200 / (111_320.0 * np.cos(np.radians(xy[0][1]))) * 1.05

        def sql_within(x, y):
            return [r[0] for r in sql_rows(pg, WITHIN_SQL, {"x": x, "y": y, "d": 200.0,
                                                            "deg": deg})]

        def sql_nearest(x, y):
            return [r[0] for r in sql_rows(pg, NEAREST_SQL, {"x": x, "y": y, "k": 5})]

        def sql_counts():
            return dict(sql_rows(pg, COUNTS_SQL))

        anchors = {
            "within": _series(sql_within, xy),
            "nearest": _series(sql_nearest, xy),
            "counts": _series(sql_counts, [()] * calls),
        }
        for label, store in (("PostGIS", pg), ("embedded", emb)):
            ours = {
                "within": _series(lambda x, y, s=store: within_distance(
                    s, "buildings", 200, point=(x, y)).frame["building_code"].tolist(), xy),
                "nearest": _series(lambda x, y, s=store: nearest(
                    s, "parking", 5, point=(x, y)).frame["lot_id"].tolist(), xy),
                "counts": _series(lambda s=store: _counts_answer(
                    counts_per_grid(s, "buildings").frame), [()] * calls),
            }
            what = {"within": "within_distance(buildings, 200 m)",
                    "nearest": "nearest(parking, k=5)",
                    "counts": "counts_per_grid(buildings, grid)"}
            for q, t_o in ours.items():
                t_a = anchors[q]
                same = t_o.answer == t_a.answer
                figs.append(figure(NAME, f"{q} ({label})", scale, size,
                                   f"twin.query.{what[q]} on {label}",
                                   "hand-written PostGIS SQL", t_o, t_a, same,
                                   extra={"show_p95": True, "calls": calls}))
        if scale in ("community", "street"):
            for label, store in (("PostGIS", pg), ("embedded", emb)):
                reset_peak()
                coverage(store, output="grids")
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    res = coverage(store, output="grids")
                    times.append(time.perf_counter() - t0)
                t_o = Timing(times, res, peak_rss_mb())
                figs.append(figure(NAME, f"coverage ({label})", scale, size,
                                   f"twin.query.coverage(output='grids') on {label}", "none",
                                   t_o, None, None,
                                   extra={"share": res.notes.get("coverage_share")},
                                   notes="camera coverage has no SQL anchor: PostGIS has no "
                                         "view-cone/shadow function; judged by its 2 s target"))
        emb.close()
    return figs
