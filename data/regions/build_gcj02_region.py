"""Build data/regions/gcj02_region.geojson: where GCJ-02 coordinates carry the offset.

Run from the repository root with the world-atlas npm package unpacked somewhere::

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python data/regions/build_gcj02_region.py package/countries-10m.json package/land-10m.json

The region is China's land (Natural Earth 1:10m admin-0 "China", "Taiwan", "Hong Kong",
"Macao", "Spratly Is.", "Scarborough Reef", plus the few South China Sea islands Natural Earth
lacks, listed in EXTRA_ISLANDS) and the sea within SEA_KM of that land which is nearer to it than
to any other country's land (an equidistance line, so the sea off Korea, Vietnam, Japan and the
Philippines is left to them). Land borders are Natural Earth's, not a buffer. See README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyproj
import shapely
from shapely.geometry import MultiPolygon, Polygon

HERE = Path(__file__).resolve().parent
OUT = HERE / "gcj02_region.geojson"

#: Natural Earth admin-0 names whose land AMap draws as China and shifts.
CHINA_NAMES = ("China", "Taiwan", "Hong Kong", "Macao", "Spratly Is.", "Scarborough Reef")
#: South China Sea islands missing from Natural Earth 1:10m countries (lon, lat, ~0.01°).
EXTRA_ISLANDS = {
    "Pratas Island 东沙岛": (116.72, 20.70),
    "Fiery Cross Reef 永暑礁": (112.89, 9.55),
    "Cuarteron Reef 华阳礁": (112.86, 8.86),
}
EXTRA_ISLAND_KM = 3.0
#: How far out to sea the region reaches (nearer China than any other land).
SEA_KM = 100.0
#: Douglas-Peucker tolerance of the shipped outline, degrees (~0.5 km).
SIMPLIFY_DEG = 0.005
#: Window of the countries that matter (lon/lat).
WINDOW = (55.0, -5.0, 160.0, 62.0)
#: Spacing of the boundary samples that define the equidistance line, degrees.
SAMPLE_DEG = 0.02
# Metric work (buffers) in an azimuthal equidistant projection centred on China.
METRIC = "+proj=aeqd +lat_0=30 +lon_0=108 +ellps=WGS84 +units=m"


def read_topojson(path: Path, obj: str) -> list[tuple[str | None, object]]:
    """(name, geometry) of every feature of a TopoJSON object (quantized arcs decoded)."""
    topo = json.loads(path.read_text())
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        a = np.cumsum(np.asarray(arc, dtype="float64"), axis=0)
        arcs.append(np.column_stack([a[:, 0] * sx + tx, a[:, 1] * sy + ty]))

    def ring(indices):
        pts = []
        for i in indices:
            a = arcs[i] if i >= 0 else arcs[~i][::-1]
            pts.extend(a if not pts else a[1:])
        return np.asarray(pts)

    def polygon(rings):
        rings = [r for r in (ring(x) for x in rings) if len(r) >= 4]
        return Polygon(rings[0], rings[1:]) if rings else None

    out = []
    for g in topo["objects"][obj]["geometries"]:
        parts = [g["arcs"]] if g["type"] == "Polygon" else g.get("arcs", [])
        polys = [p for p in (polygon(x) for x in parts) if p is not None]
        if polys:
            name = g.get("properties", {}).get("name")
            out.append((name, shapely.make_valid(MultiPolygon(polys))))
    return out


def _polygonal(geom):
    """Keep the polygons of *geom* (make_valid may add stray lines and points), valid, as one."""
    parts = shapely.get_parts(shapely.make_valid(geom))
    parts = np.concatenate([shapely.get_parts(p) for p in parts]) if len(parts) else parts
    polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
    return shapely.make_valid(shapely.union_all(polys))


def _to_metric(geom, inverse=False):
    t = pyproj.Transformer.from_crs("EPSG:4326", METRIC, always_xy=True)
    fn = (lambda c: np.column_stack(t.transform(c[:, 0], c[:, 1], direction="INVERSE"))
          ) if inverse else (lambda c: np.column_stack(t.transform(c[:, 0], c[:, 1])))
    return shapely.transform(geom, fn)


def _samples(geom) -> np.ndarray:
    """Points every SAMPLE_DEG along a geometry's boundary (lon/lat)."""
    lines = shapely.segmentize(shapely.boundary(geom), SAMPLE_DEG)
    return shapely.get_coordinates(lines)


def build(countries_path: Path, land_path: Path):
    window = shapely.box(*WINDOW)
    feats = read_topojson(countries_path, "countries")
    feats = [(n, shapely.intersection(g, window)) for n, g in feats]
    feats = [(n, g) for n, g in feats if not g.is_empty]
    china = shapely.union_all([g for n, g in feats if n in CHINA_NAMES])
    islands = shapely.points(list(EXTRA_ISLANDS.values()))
    islands_m = shapely.buffer(_to_metric(islands), EXTRA_ISLAND_KM * 1000)
    china = _polygonal(shapely.union(china, _to_metric(shapely.union_all(islands_m), inverse=True)))
    others = _polygonal(shapely.union_all([g for n, g in feats if n not in CHINA_NAMES]))
    land = shapely.union_all([g for _, g in read_topojson(land_path, "land")])
    land = shapely.intersection(shapely.union(land, china), window)

    # The equidistance line: Voronoi cells of boundary samples, kept where the sample is China's.
    cpts, opts = _samples(china), _samples(others)
    labels = np.r_[np.ones(len(cpts), bool), np.zeros(len(opts), bool)]
    pts = np.vstack([cpts, opts])
    pts, first = np.unique(np.round(pts, 6), axis=0, return_index=True)
    labels = labels[first]
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=window))
    # voronoi_polygons does not keep the input order: match each cell to its sample point
    tree = shapely.STRtree(shapely.points(pts))
    cell_idx, pt_idx = tree.query(cells, predicate="contains")
    nearer_china = shapely.union_all(cells[cell_idx[labels[pt_idx]]])

    sea_m = shapely.buffer(_to_metric(china), SEA_KM * 1000, quad_segs=4)
    sea = _polygonal(_to_metric(sea_m, inverse=True))
    land = _polygonal(land)
    grid = 1e-6  # snap overlays to a 0.1 m grid: robust against near-coincident edges
    sea = shapely.intersection(sea, _polygonal(nearer_china), grid_size=grid)
    sea = _polygonal(shapely.difference(_polygonal(sea), land, grid_size=grid))
    region = shapely.union(china, sea, grid_size=grid)
    # fill holes: sea enclosed by the region (the middle of the Bohai) is China's too
    shells = shapely.get_exterior_ring(shapely.get_parts(region))
    region = shapely.union_all(shapely.polygons(shells))
    region = shapely.simplify(region, SIMPLIFY_DEG, preserve_topology=True)
    region = shapely.set_precision(region, 1e-4)
    region = _polygonal(region)
    # drop slivers the simplification left (under ~1 km²)
    parts = shapely.get_parts(region)
    parts = parts[shapely.area(parts) > 1e-4]
    return shapely.union_all(parts)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    region = build(Path(argv[0]), Path(argv[1]))
    feature = {
        "type": "FeatureCollection",
        "features": [{
            "type": "Feature",
            "properties": {
                "name": "GCJ-02 region (China's land and its coastal sea)",
                "source": "Natural Earth 1:10m admin-0 countries via world-atlas 2.0.2 "
                "(public domain); see README.md",
                "sea_km": SEA_KM,
                "simplify_deg": SIMPLIFY_DEG,
            },
            "geometry": json.loads(shapely.to_geojson(region)),
        }],
    }
    OUT.write_text(json.dumps(feature, separators=(",", ":")) + "\n")
    n = shapely.get_num_coordinates(region)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {n} vertices, "
          f"{shapely.get_num_geometries(region)} parts)")


if __name__ == "__main__":
    main()
