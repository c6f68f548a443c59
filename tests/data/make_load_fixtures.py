"""Make the real-world-shaped bad files the loader tests feed through the command line.

Each ``make_<case>(folder)`` writes one small file (or shapefile set) into *folder* and returns
the path to load. The tests call them in ``tmp_path``; ``python tests/data/make_load_fixtures.py``
writes them all into ``tests/data/load/`` for trying the loader by hand (see docs/loading.md).
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
from shapely.geometry import LineString, Point, Polygon, box

LON, LAT = 110.29, 25.08  # Guilin, the demo community
D = 0.001


def footprint(i: int) -> Polygon:
    x = LON + (i % 50) * 0.0004
    y = LAT + (i // 50) * 0.0004
    return box(x, y, x + 0.0003, y + 0.0003)


def _geojson(folder: Path, name: str, features: list[dict]) -> Path:
    path = folder / name
    path.write_text(
        json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False),
        encoding="utf-8",
    )
    return path


def _feature(props: dict, geometry: dict | None) -> dict:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def _ring(coords) -> dict:
    return {"type": "Polygon", "coordinates": [[list(c) for c in coords]]}


def make_bowtie(folder: Path) -> Path:
    """A self-intersecting ring (bow-tie) among good footprints."""
    bow = [(LON, LAT), (LON + D, LAT + D), (LON + D, LAT), (LON, LAT + D), (LON, LAT)]
    good = [list(footprint(i).exterior.coords) for i in (10, 11)]
    return _geojson(
        folder,
        "bowtie.geojson",
        [
            _feature({"building_code": "B1", "name": "1栋", "floors": 6}, _ring(good[0])),
            _feature({"building_code": "B2", "name": "领结楼", "floors": 5}, _ring(bow)),
            _feature({"building_code": "B3", "name": "3栋", "floors": 11}, _ring(good[1])),
        ],
    )


def make_two_point_ring(folder: Path) -> Path:
    """A ring of two distinct points (a sliver a CAD export collapsed) next to a good one."""
    sliver = [(LON, LAT), (LON + D, LAT + D), (LON, LAT)]
    return _geojson(
        folder,
        "two_point_ring.geojson",
        [
            _feature({"building_code": "B1", "floors": 6}, _ring(footprint(3).exterior.coords)),
            _feature({"building_code": "B9", "floors": 2}, _ring(sliver)),
        ],
    )


def make_only_two_point_rings(folder: Path) -> Path:
    sliver = [(LON, LAT), (LON + D, LAT + D), (LON, LAT)]
    return _geojson(
        folder,
        "all_slivers.geojson",
        [_feature({"building_code": f"S{i}"}, _ring(sliver)) for i in range(3)],
    )


def _buildings(n: int = 3) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "BLDG_CODE": [f"GL{i:04d}" for i in range(n)],
            "BLDG_NAME": [f"桂花苑{i}栋" for i in range(n)],
            "CS": [6 + i for i in range(n)],
            "物业": ["漓江物业"] * n,
        },
        geometry=[footprint(i) for i in range(n)],
        crs=4326,
    )


def make_shapefile_without_shx(folder: Path) -> Path:
    """A shapefile whose .shx was not sent (only .shp, .dbf, .prj, .cpg)."""
    path = folder / "no_shx" / "buildings.shp"
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(_buildings(), path, encoding="UTF-8")
    path.with_suffix(".shx").unlink()
    return path


def make_gbk_shapefile_without_cpg(folder: Path) -> Path:
    """Chinese names written in GBK, and no .cpg to say so (what Chinese offices often send)."""
    path = folder / "gbk" / "楼栋.shp"
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(_buildings(), path, encoding="GBK")
    path.with_suffix(".cpg").unlink(missing_ok=True)
    return path


def make_zipped_shapefile(folder: Path) -> Path:
    shp = make_gbk_shapefile_without_cpg(folder / "z")
    path = folder / "楼栋.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for part in shp.parent.iterdir():
            zf.write(part, part.name)
    shutil.rmtree(folder / "z")
    return path


def _shapefile(folder: Path, n: int = 83, name: str = "buildings") -> Path:
    path = folder / f"{name}.shp"
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(_buildings(n), path, encoding="UTF-8")
    return path


def make_empty_dbf(folder: Path) -> Path:
    """An 83-building shapefile whose .dbf arrived as 0 bytes (a failed copy); the .shp is good."""
    path = _shapefile(folder / "empty_dbf")
    path.with_suffix(".dbf").write_bytes(b"")
    return path


def make_garbage_dbf(folder: Path) -> Path:
    """A .dbf that is not dBASE at all (an HTML error page saved under its name)."""
    path = _shapefile(folder / "garbage_dbf")
    path.with_suffix(".dbf").write_bytes(b"<html><body>502 Bad Gateway</body></html>\n" * 4)
    return path


def make_truncated_dbf(folder: Path) -> Path:
    """A .dbf cut off halfway (an interrupted download)."""
    path = _shapefile(folder / "truncated_dbf")
    dbf = path.with_suffix(".dbf")
    dbf.write_bytes(dbf.read_bytes()[: dbf.stat().st_size // 2])
    return path


def make_foreign_dbf(folder: Path) -> Path:
    """The .dbf of another export (3 records) beside an 83-shape .shp/.shx."""
    path = _shapefile(folder / "foreign_dbf")
    other = _shapefile(folder / "foreign_dbf_other", n=3)
    shutil.copy(other.with_suffix(".dbf"), path.with_suffix(".dbf"))
    shutil.rmtree(other.parent)
    return path


def make_foreign_dbf_without_shx(folder: Path) -> Path:
    """As :func:`make_foreign_dbf`, and no .shx to count the shapes by (it is restored)."""
    path = make_foreign_dbf(folder / "foreign_dbf_no_shx")
    path.with_suffix(".shx").unlink()
    return path


ZIP_BOMB_BYTES = 3 * 1024**3


def _raw_zip(path: Path, entries: list[tuple[str, bytes, int, int]]) -> Path:
    """Write a .zip by hand: (name, raw deflate data, crc32, uncompressed size) per entry.

    zipfile would have to deflate a bomb's 3 GiB to write it; written by hand it takes the time
    of its 3 MB.
    """
    import struct

    local, central = bytearray(), bytearray()
    for name, data, crc, size in entries:
        encoded = name.encode()
        offset = len(local)
        fields = (20, 0x800, 8, 0, 0x21, crc, len(data), size, len(encoded), 0)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + encoded + data
        central += (
            struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0, 0, offset)
            + encoded
        )
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                      len(local), 0)
    path.write_bytes(bytes(local + central) + end)
    return path


def _deflate(data: bytes) -> tuple[bytes, int, int]:
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush(), zlib.crc32(data), len(data)


def make_zip_bomb(folder: Path, size: int = ZIP_BOMB_BYTES) -> Path:
    """A 3 MB .zip holding a 3 GiB "buildings.shp" of zeros beside a real .shx and .dbf.

    The zeros are 1 MiB deflate blocks repeated (each ends on a full flush, so the same bytes
    follow each other as one valid stream), as zip bombs are made.
    """
    import zlib

    shp = _shapefile(folder / "bomb_parts", n=3)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    crc, zeros = 0, bytes(16 << 20)
    for _ in range(size // len(zeros)):
        crc = zlib.crc32(zeros, crc)
    data = block * (size >> 20) + b"\x03\x00"  # the last block: empty, final, fixed Huffman
    entries = [("buildings.shp", data, crc, size)]
    for suffix in (".shx", ".dbf"):
        entries.append(("buildings" + suffix, *_deflate(shp.with_suffix(suffix).read_bytes())))
    shutil.rmtree(shp.parent)
    return _raw_zip(folder / "bomb.zip", entries)


def make_ratio_bomb(folder: Path) -> Path:
    """A .zip under the size limit whose 64 MiB .dbf of zeros inflates 1,000:1."""
    shp = _shapefile(folder / "ratio_parts", n=3)
    entries = [("buildings.dbf", *_deflate(bytes(64 << 20)))]
    for suffix in (".shp", ".shx"):
        entries.append(("buildings" + suffix, *_deflate(shp.with_suffix(suffix).read_bytes())))
    shutil.rmtree(shp.parent)
    return _raw_zip(folder / "ratio_bomb.zip", entries)


def make_wgs84_gpkg(folder: Path) -> Path:
    """Footprints in a GeoPackage that says (rightly) EPSG:4326: a --crs 4547 would wreck them."""
    path = folder / "楼栋_wgs84.gpkg"
    pyogrio.write_dataframe(_buildings(5), path, layer="楼栋")
    return path


def make_lying_prj(folder: Path) -> Path:
    """Coordinates in CGCS2000 GK zone 37 (metres, with zone prefix) under a .prj saying 4326."""
    metres = _buildings().to_crs(4525)
    path = folder / "lying_prj" / "buildings.shp"
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.write_dataframe(metres.set_crs(4326, allow_override=True), path, encoding="UTF-8")
    return path


def make_no_crs_metres(folder: Path) -> Path:
    """A CSV of projected numbers (GK without zone prefix) and no word about the CRS."""
    pts = gpd.GeoSeries([Point(LON + i * D, LAT) for i in range(3)], crs=4326).to_crs(4546)
    path = folder / "metres.csv"
    pd.DataFrame(
        {
            "camera_id": ["C1", "C2", "C3"],
            "x": pts.x.round(2),
            "y": pts.y.round(2),
            "heading": [0, 90, 180],
            "fov": [60] * 3,
            "range": [30] * 3,
        }
    ).to_csv(path, index=False)
    return path


def _cameras(lon, lat) -> pd.DataFrame:
    n = len(lon)
    return pd.DataFrame(
        {
            "camera_id": [f"C{i + 1}" for i in range(n)],
            "name": [f"{i + 1}号摄像头" for i in range(n)],
            "lon": lon,
            "lat": lat,
            "heading": [90.0] * n,
            "fov": [60.0] * n,
            "range": [40.0] * n,
        }
    )


def make_swapped(folder: Path) -> Path:
    """A CSV where two of three rows have latitude in the lon column and longitude in lat."""
    lon = [LAT + 0.0002, LON + 0.0005, LAT + 0.0007]
    lat = [LON + 0.0002, LAT + 0.0005, LON + 0.0007]
    path = folder / "swapped.csv"
    _cameras(lon, lat).to_csv(path, index=False)
    return path


def make_gcj02_points(folder: Path) -> Path:
    """Camera points picked on AMap (GCJ-02): the true WGS84 points are a few hundred m west."""
    from twin.crs import wgs84_to_gcj02

    lon, lat = wgs84_to_gcj02(np.array([LON + 0.0002, LON + 0.0006]), np.array([LAT, LAT + 1e-4]))
    path = folder / "amap_cameras.csv"
    _cameras(np.round(lon, 7), np.round(lat, 7)).to_csv(path, index=False)
    return path


def make_chinese_csv(folder: Path) -> Path:
    """Parking lots with Chinese headers, saved by Excel as GB18030 (no BOM), lon/lat columns."""
    frame = pd.DataFrame(
        {
            "编号": ["P1", "P2"],
            "名称": ["东门停车场", "地下车库"],
            "类型": ["surface", "underground"],
            "泊位数": [40, 120],
            "收费标准": ["2.5", "3"],
            "经度": [LON + 0.0003, LON + 0.0008],
            "纬度": [LAT + 0.0002, LAT + 0.0004],
            "负责人": ["王工", "李工"],
        }
    )
    path = folder / "停车场.csv"
    path.write_bytes(frame.to_csv(index=False).encode("gb18030"))
    return path


def make_parking_xlsx(folder: Path) -> Path:
    frame = pd.DataFrame(
        {
            "编号": ["P1", "P2"],
            "名称": ["东门停车场", "路边泊位"],
            "类型": ["surface", "on_street"],
            "泊位数": [40, 12],
            "经度": [LON + 0.0003, LON + 0.0008],
            "纬度": [LAT + 2e-4, LAT + 4e-4],
        }
    )
    path = folder / "停车场.xlsx"
    frame.to_excel(path, index=False, sheet_name="停车场")
    return path


def make_duplicate_ids(folder: Path) -> Path:
    return _geojson(
        folder,
        "duplicates.geojson",
        [
            _feature({"building_code": "B1", "name": "甲"}, _ring(footprint(0).exterior.coords)),
            _feature({"building_code": "B2", "name": "乙"}, _ring(footprint(1).exterior.coords)),
            _feature({"building_code": "B1", "name": "丙"}, _ring(footprint(2).exterior.coords)),
        ],
    )


def make_roads_kml(folder: Path) -> Path:
    roads = gpd.GeoDataFrame(
        {"Name": ["漓江路", "桂花路"], "Description": ["主干道", "小区内部路"]},
        geometry=[
            LineString([(LON, LAT), (LON + 0.003, LAT)]),
            LineString([(LON, LAT + 0.001), (LON + 0.002, LAT + 0.001)]),
        ],
        crs=4326,
    )
    path = folder / "roads.kml"
    pyogrio.write_dataframe(roads, path, driver="KML")
    return path


def make_grid_cells(folder: Path) -> Path:
    """Three unit grids: two overlap by 10 m, one has a malformed street code."""
    to_m = pyproj.Transformer.from_crs(4326, 32649, always_xy=True)
    x0, y0 = to_m.transform(LON, LAT)
    cells = [
        box(x0, y0, x0 + 100, y0 + 100),
        box(x0 + 90, y0, x0 + 200, y0 + 100),
        box(x0, y0 + 100, x0 + 200, y0 + 200),
    ]
    frame = gpd.GeoDataFrame(
        {
            "county_code": ["450311"] * 3,
            "street_code": ["001", "001", "01"],
            "community_code": ["001"] * 3,
            "sequence": ["01", "02", "03"],
            "wgmc": ["一网格", "二网格", "三网格"],
            "resp_grid_id": ["R01", "R01", "R02"],
        },
        geometry=cells,
        crs=32649,
    ).to_crs(4326)
    path = folder / "grids.gpkg"
    pyogrio.write_dataframe(frame, path, layer="单元网格")
    return path


def community_boundary() -> gpd.GeoDataFrame:
    """The community the grid fixture should tile: 200 m × 300 m (so 200 × 100 m² uncovered)."""
    to_m = pyproj.Transformer.from_crs(4326, 32649, always_xy=True)
    x0, y0 = to_m.transform(LON, LAT)
    square = gpd.GeoSeries([box(x0, y0, x0 + 200, y0 + 300)], crs=32649).to_crs(4326)
    return gpd.GeoDataFrame(
        {"community_code": ["450311001001"], "name": ["桂花社区"]}, geometry=square.values, crs=4326
    )


def make_large(folder: Path, n: int = 20_000, vertices: int = 620) -> Path:
    """A survey-office GeoPackage of *n* finely digitised footprints (≈ 200 MB at the defaults).

    Each outline has *vertices* points (densified curves, as CAD conversions produce), spread
    over about 8 × 4 km, so most lie far from the test community and draw a warning. Feature
    ``L012345`` is a bow-tie (repaired) and the last one has no geometry (rejected): both sit
    after thousands of warnings, where a truncated report would lose them.
    """
    import shapely

    i = np.arange(n)
    cx = LON + (i % 200) * 0.0004 + 0.00015
    cy = LAT + (i // 200) * 0.0004 + 0.00015
    angle = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    radius = 0.00012 * (1 + 0.05 * np.sin(7 * angle))
    rings = np.stack([cx[:, None] + radius * np.cos(angle), cy[:, None] + radius * np.sin(angle)],
                     axis=-1)
    geoms = shapely.polygons(np.concatenate([rings, rings[:, :1]], axis=1))
    bow = 12_345 % n
    x, y = cx[bow], cy[bow]
    geoms[bow] = Polygon([(x, y), (x + 1e-4, y + 1e-4), (x + 1e-4, y), (x, y + 1e-4), (x, y)])
    geoms[-1] = None
    frame = gpd.GeoDataFrame(
        {
            "bldg_code": [f"L{k:06d}" for k in i],
            "floors": (i % 30) + 1,
            "note": np.where(i % 2 == 0, "住宅", "商业"),
        },
        geometry=geoms,
        crs=4326,
    )
    path = folder / "large.gpkg"
    pyogrio.write_dataframe(frame, path, layer="buildings")
    return path


#: made by the tests only: too large for the repository (large: 200 MB; the bombs: 3 MB that
#: would hand anyone who unzips them by hand 3 GiB)
NOT_STORED = {"large", "zip_bomb", "ratio_bomb"}
ALL = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("make_")}


def main(folder: str | Path | None = None) -> int:
    folder = Path(folder) if folder else Path(__file__).resolve().parent / "load"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, fn in ALL.items():
        if name in NOT_STORED:
            continue  # generated by the tests themselves, never stored
        print(fn(folder).relative_to(folder))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else None))
