"""Any staff file → a validated, reprojected layer frame and a report; optionally a new version."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import shapely

from twin import crs as tcrs
from twin import layers as declared
from twin.enrich import PolygonIndex, grid_index
from twin.errors import LayerNotFoundError, ValidationError
from twin.load_formats import LoadError, RawData, read_source, resolve_source
from twin.schema import (
    ASSIGNED_COLUMNS,
    BOOLEAN_WORDS,
    GEOMETRY_TYPE_IDS,
    GEOMETRY_TYPE_NAMES,
    MULTI_TYPE_IDS,
    Column,
    LayerSpec,
    ValidatedLayer,
    duplicated,
    validate_layer_frame,
)
from twin.twin import GRID_LAYER, READ_GRIDS, GridCells, current_grid_cells, put_layer

LOGGER = logging.getLogger(__name__)

__all__ = [
    "LoadError",
    "LoadResult",
    "load_file",
    "load_layer",
    "parse_defaults",
    "parse_values",
    "source_fingerprint",
]

#: The report lists every rejected and repaired feature but only this many warnings (a version
#: keeps its report); the counts by kind (``issue_counts``) are always complete.
MAX_LISTED_WARNINGS = 2000
FAR_FROM_AREA_M = 2000.0  # a feature farther than this outside the community is reported
FAR_FROM_MEDIAN_M = 10_000.0  # without a community: at least this far from the data's median
TOPOLOGY_TOLERANCE_M2 = 1.0  # overlaps and gaps smaller than this are slivers, not reported
STRICT_KINDS = {"grid_overlap", "grid_gap", "grid_outside_boundary"}  # also reject under strict
VALUE_KINDS = {"bad_value", "bad_choice", "out_of_range"}  # a value that does not fit its field

Progress = Callable[[str], None]


@dataclass
class LoadResult:
    """The loaded frame (canonical columns, EPSG:4326), its report, and the version written."""

    frame: gpd.GeoDataFrame | pd.DataFrame
    report: dict[str, Any]
    version: Any = None  # a twin.store.LayerVersion when written
    #: each frame row's row in the file (from 1; the parts of a split feature share theirs)
    source_rows: np.ndarray | None = None


class _Issues:
    """Issues found while loading, one entry per feature (row) and kind."""

    def __init__(self, initial: list[dict] | None = None) -> None:
        self.items: list[dict] = list(initial or [])
        # source rows and their ids, to name features in the report
        self.named_rows = np.zeros(0, dtype=np.int64)
        self.named_ids = np.zeros(0, dtype=object)

    def name_rows(self) -> None:
        unnamed = [i for i in self.items if "row" in i and "id" not in i]
        if not unnamed:  # the usual load: the lookup is not built
            return
        ids = dict(zip(self.named_rows.tolist(), self.named_ids.tolist(), strict=True))
        for item in unnamed:
            if item["row"] in ids:
                item["id"] = str(ids[item["row"]])

    def add(self, kind: str, severity: str, message: str, row=None, fid=None) -> None:
        item = {"kind": kind, "severity": severity, "message": message}
        if row is not None:
            item["row"] = int(row)
        if fid is not None and not (isinstance(fid, float) and np.isnan(fid)):
            item["id"] = str(fid)
        self.items.append(item)

    def add_rows(self, kind, severity, rows, ids, messages) -> None:
        """Add one issue per row; *messages* is a string or one string per row."""
        rows = np.asarray(rows)
        if rows.size == 0:
            return
        msgs = [messages] * rows.size if isinstance(messages, str) else list(messages)
        ids = list(ids) if ids is not None else [None] * rows.size
        for r, i, m in zip(rows.tolist(), ids, msgs, strict=True):
            self.add(kind, severity, m, r, None if i is None or pd.isna(i) else i)

    def count(self, *severities: str) -> Counter:
        return Counter(i["kind"] for i in self.items if i["severity"] in severities)

    def rows(self, *severities: str) -> set[int]:
        return {i["row"] for i in self.items if i["severity"] in severities and "row" in i}


# -- the public API ------------------------------------------------------------------------------


def load_file(
    layer: str,
    path: str | Path,
    *,
    crs: str | int | None = None,
    encoding: str | None = None,
    source_layer: str | None = None,
    mapping: dict[str, str] | None = None,
    values: dict[str, dict[str, Any]] | None = None,
    defaults: dict[str, Any] | None = None,
    lon: str | None = None,
    lat: str | None = None,
    wkt: str | None = None,
    strict: bool = False,
    area: Any = None,
    progress: Progress | None = None,
    on_geometries: Callable[[np.ndarray], None] | None = None,
    max_unzipped_bytes: int | None = None,
    max_zip_ratio: float | None = None,
    force_crs: bool = False,
) -> LoadResult:
    """Read a staff file and return the layer's canonical frame and a report; write nothing.

    Parameters
    ----------
    layer
        A declared layer name (``buildings``, ``parking``, ``grid_cells`` …).
    path
        A file, a folder or a ``.zip`` (Shapefile, GeoPackage, GeoJSON, KML, CSV, .xlsx).
    crs
        The CRS of the coordinates when the file has none or a wrong one: an EPSG code,
        ``cgcs2000``, ``wgs84``, ``gcj02`` or ``bd09`` (see :func:`twin.crs.parse_crs`).
    encoding
        Text encoding of a Shapefile's .dbf or a CSV; detected when not given.
    source_layer
        The layer of a GeoPackage/KML, the sheet of an .xlsx, or the file within a folder/.zip.
    mapping
        ``{declared field: source field}``, taking precedence over the automatic matches.
    values
        ``{declared field: {file value: value}}`` (``--values FIELD:FROM=TO``), over the
        declared value maps (e.g. OSM ``building=apartments`` → ``use`` residential); file
        values match ignoring case and surrounding spaces; an empty or None value empties the
        field. The file's values of a field that a map changed are kept in ``attrs``.
    defaults
        ``{declared field: value}`` (``--set FIELD=VALUE``) for the features without a value
        (the field missing from the file, empty, or emptied because its value did not fit),
        over the declared defaults (e.g. a camera's range).
    lon, lat, wkt
        Coordinate columns of a table (found automatically when named lon/lat/经度/纬度/wkt …).
    strict
        Reject the whole load when any feature would be repaired or rejected (a value left
        empty because it did not fit its field counts as a repair).
    area
        A shapely geometry in EPSG:4326 (the community boundary): features far outside are
        reported, grid cells are checked for gaps against it, and swapped coordinates are
        recognised by it. (:func:`load_layer` passes a Future of it, read from the store
        while the file is read.)
    progress
        Called with a short line at each stage (the command line shows it on a terminal).
    on_geometries
        Called with the geometries of every row of the file (EPSG:4326, in file order,
        rejected rows included) once they are reprojected and repaired: only multi-part ones
        change after that, when they are split. :func:`load_layer` starts locating them in
        the grid cells while the attributes are checked.
    force_crs
        Load even when *crs* contradicts the file's own CRS, cannot hold the coordinates
        (degrees read as metres, every feature on one point, a Chinese CRS with nothing in
        China), or every feature lands far outside *area*; each such doubt is then a warning.
    max_unzipped_bytes, max_zip_ratio
        Limits of what a ``.zip`` may unpack to, checked on its entries before anything is
        unpacked (defaults :data:`twin.load_formats.MAX_UNZIPPED_BYTES`, 2 GiB, and
        :data:`twin.load_formats.MAX_ZIP_RATIO`, 100:1 for entries over 16 MiB).

    Returns
    -------
    LoadResult
        ``frame`` passes :func:`twin.schema.validate_layer_frame`; ``report`` is JSON-ready.

    Raises
    ------
    LayerNotFoundError
        If *layer* is not declared.
    LoadError
        (a ValidationError) If the file cannot be loaded; ``.report`` holds what was found.
    """
    spec = declared.get_layer(layer)
    path = Path(path)
    note = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "layer": layer,
        "strict": bool(strict),
        "source": {"path": str(path), "name": path.name},
    }
    issues = _Issues()
    # the file's sha256 is hashed in a thread while it is read (hashlib releases the GIL)
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
    fingerprint = hashing.submit(source_fingerprint, path)
    hashing.shutdown(wait=False)
    try:
        with contextlib.ExitStack() as stack:
            file = resolve_source(path, source_layer, stack,
                                  max_unzipped_bytes=max_unzipped_bytes,
                                  max_zip_ratio=max_zip_ratio)
            size = _size(path)
            note(f"reading {file.name} ({size / 1e6:.1f} MB)")
            raw = read_source(
                file,
                geometry=spec.geometry_type is not None,
                encoding=encoding,
                source_layer=source_layer,
                lon=lon,
                lat=lat,
                wkt=wkt,
                stack=stack,
            )
        t_read = time.perf_counter()
        report["source"].update(
            {
                "file": file.name,
                "format": raw.fmt,
                "bytes": size,
                "sha256": fingerprint.result(),
            }
        )
        if raw.source_layer:
            report["source"]["source_layer"] = raw.source_layer
        report["encoding"] = {"chosen": raw.encoding, "how": raw.encoding_how}
        issues = _Issues(raw.issues)
        note(f"checking {len(raw.frame):,} features")
        if isinstance(area, Future):  # load_layer reads the boundary while the file is read
            area = area.result()
        frame, rows = _check(spec, raw, crs, mapping or {}, strict, area, issues, report,
                             on_geometries, values, defaults, force_crs)
        t_check = time.perf_counter()
    except LoadError as exc:
        _finish(report, issues, t0, None)
        exc.report = report
        raise
    report["timings_s"] = {"read": round(t_read - t0, 3), "check": round(t_check - t_read, 3)}
    _finish(report, issues, t0, frame)
    return LoadResult(frame, report, source_rows=rows)


def load_layer(
    store,
    layer: str,
    path: str | Path,
    *,
    actor: str,
    dry_run: bool = False,
    note: str = "",
    progress: Progress | None = None,
    **options: Any,
) -> LoadResult:
    """Load a staff file into *store* as the next version of *layer* (see :func:`load_file`).

    The community boundary stored in the ``community`` layer, when there is one, is the *area*
    unless given. The version's ``report`` holds the report and its ``source`` the file name and
    sha256. With *dry_run* nothing is written.

    Raises
    ------
    LoadError
        If the file cannot be loaded; the store is unchanged.
    """
    spec = declared.get_layer(layer)
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="load-reads") as pool:
        # the community boundary and the grid cells the features will be assigned to are read
        # from the store while the file is read and checked here (the database and this
        # process work at the same time); load_file waits for the boundary after reading
        if options.get("area") is None and layer != "community":
            options["area"] = pool.submit(community_area, store)
        grids = located = cleaned = None
        if not dry_run and spec.located and spec.geometry_type is not None \
                and layer != GRID_LAYER:
            grids = pool.submit(_grid_lookup, store)

            def locate(geoms: np.ndarray) -> None:
                # the features are located in the grid cells (shapely, mostly without the GIL)
                # while their attributes are checked here (pandas)
                nonlocal located, cleaned
                cleaned, located = geoms, pool.submit(_locate, grids, geoms)

            options["on_geometries"] = locate
        result = load_file(layer, path, progress=progress, **options)
        if spec.check is not None:  # the layer's own rules over whole rows (nothing written)
            spec.check(result.frame)
        grid_cells = grids.result() if grids is not None else READ_GRIDS
        where = None
        if located is not None and located.result() is not None:
            where = _located_rows(located.result(), cleaned, result, grid_cells.cells)
    result.report["dry_run"] = bool(dry_run)
    if dry_run:
        return result
    t0 = time.perf_counter()
    (progress or (lambda _m: None))(f"writing {len(result.frame):,} features")
    src = result.report["source"]
    source = f"{src['name']} sha256:{src['sha256']}"
    result.report.setdefault("timings_s", {})["write"] = None  # filled after the write
    result.version = put_layer(  # load_file's frame: validated already, its grids located
        store, layer, ValidatedLayer(layer, result.frame, located=where), actor=actor,
        source=source, note=note, report=result.report, grid_cells=grid_cells,
    )
    result.report["timings_s"]["write"] = round(time.perf_counter() - t0, 3)
    result.report["version"] = int(result.version.version)
    return result


def parse_values(items: list[str]) -> dict[str, dict[str, str]]:
    """Parse ``FIELD:FROM=TO`` items (``--values``) into :func:`load_file`'s *values*.

    ``FIELD:FROM=`` (nothing after ``=``) leaves the field empty for that value.

    Raises
    ------
    LoadError
        If an item is not written ``FIELD:FROM=TO``.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        field, colon, rest = item.partition(":")
        source, equals, value = rest.partition("=")
        if not colon or not equals or not field.strip() or not source.strip():
            raise LoadError(f"--values {item!r}: write it as FIELD:FROM=TO, e.g. "
                            "--values use:apartments=residential (FIELD:FROM= to leave it empty)")
        out.setdefault(field.strip(), {})[source.strip()] = value.strip()
    return out


def parse_defaults(items: list[str]) -> dict[str, str]:
    """Parse ``FIELD=VALUE`` items (``--set``) into :func:`load_file`'s *defaults*.

    Raises
    ------
    LoadError
        If an item is not written ``FIELD=VALUE``.
    """
    out: dict[str, str] = {}
    for item in items:
        field, equals, value = item.partition("=")
        if not equals or not field.strip() or not value.strip():
            raise LoadError(f"--set {item!r}: write it as FIELD=VALUE, e.g. --set fov_deg=360")
        out[field.strip()] = value.strip()
    return out


def _grid_lookup(store) -> GridCells:
    """Return the store's current grid cells with the index assign_grids queries as ``cells``.

    Built in load_layer's pool while the file is checked, off the main thread; ``cells`` is
    None when there are no grid cells yet, an empty frame when the current version is empty
    (see put_layer).
    """
    grids = current_grid_cells(store)
    if grids.cells is None or not len(grids.cells):
        return grids
    return GridCells(grid_index(grids.cells), grids.version)


def _locate(grids: Future, geoms: np.ndarray) -> np.ndarray | None:
    """Return the grid index position of each geometry (-1 in none); None without an index."""
    index = grids.result().cells
    return index.locate(geoms, crs=tcrs.WGS84) if isinstance(index, PolygonIndex) else None


def _located_rows(where: np.ndarray, cleaned: np.ndarray, result: LoadResult,
                  index: PolygonIndex) -> np.ndarray:
    """Return the grid of each frame row from those of the file's rows (:func:`_locate`).

    Only multi-part geometries changed after they were located (split, or lines merged):
    those rows are located again.
    """
    rows = result.source_rows - 1
    out = where[rows]
    again = shapely.get_type_id(cleaned[rows]) >= 4  # multi-part or a collection
    if again.any():
        geoms = np.asarray(result.frame.geometry.values, dtype=object)[again]
        out[again] = index.locate(geoms, crs=tcrs.WGS84)
    return out


def community_area(store) -> Any:
    """Return the union of the store's community boundaries (EPSG:4326), or None if none."""
    try:  # the geometries (and the ids, which always come)
        boundary = store.read_layer("community", columns=())
    except LayerNotFoundError:
        return None
    if boundary is None or len(boundary) == 0:
        return None
    parts = boundary.geometry.values
    # communities tile the area edge to edge (a coverage): their union is then the outline
    # (GEOS's coverage union, ~10x faster than the general overlay for 2,000 communities);
    # the coverage union assumes valid polygons (a layer edited in QGIS may hold others)
    if shapely.is_valid(parts).all() and shapely.coverage_is_valid(parts):
        return shapely.coverage_union_all(parts)
    return shapely.union_all(parts)


def source_fingerprint(path: str | Path) -> str:
    """sha256 of a file; of a folder, over its files' names and contents (sorted)."""
    path = Path(path)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()
    digest = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        digest.update(str(p.relative_to(path)).encode() + b"\0" + source_fingerprint(p).encode())
    return digest.hexdigest()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _finish(report: dict, issues: _Issues, t0: float, frame) -> None:
    issues.name_rows()
    warnings = [i for i in issues.items if i["severity"] == "warning"]
    kept = {id(i) for i in warnings[:MAX_LISTED_WARNINGS]}
    report["issues"] = [i for i in issues.items if i["severity"] != "warning" or id(i) in kept]
    if len(warnings) > MAX_LISTED_WARNINGS:
        report["warnings_not_listed"] = len(warnings) - MAX_LISTED_WARNINGS
    report["issue_counts"] = dict(Counter(i["kind"] for i in issues.items))
    counts = report.setdefault("counts", {})
    counts.update(
        {
            "repaired": len(issues.rows("repaired")),
            "rejected": len(issues.rows("rejected")),
            "warnings": sum(1 for i in issues.items if i["severity"] == "warning"),
            # values left empty because they did not fit (their features loaded)
            "values_emptied": sum(1 for i in issues.items
                                  if i["severity"] == "repaired" and i["kind"] in VALUE_KINDS),
        }
    )
    if frame is not None:
        counts["loaded"] = int(len(frame))
    report.setdefault("timings_s", {})["total"] = round(time.perf_counter() - t0, 3)


# -- the checks ----------------------------------------------------------------------------------


def _check(spec, raw: RawData, crs, mapping, strict, area, issues: _Issues, report,
           on_geometries=None, values=None, defaults=None, force_crs=False):
    value_maps = _value_maps(spec, values or {})
    given_defaults = _given_defaults(spec, defaults or {})
    frame = raw.frame.reset_index(drop=True)
    n = len(frame)
    report["counts"] = {"read": n}
    if n == 0:
        raise LoadError(f"{raw.file.name} holds no features; check the file (or --source-layer).")
    rows = np.arange(1, n + 1)
    rejected = np.zeros(n, dtype=bool)
    for item in issues.items:  # rows the reader could not use
        if item.get("severity") == "rejected" and "row" in item:
            rejected[item["row"] - 1] = True
    geoms = valid = None
    # the geometries are tested for validity (GEOS, without the GIL) while the attributes are
    # converted (pandas); the geometry issues still come first in the report
    attribute_issues = _Issues()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="is-valid") as pool:
        if spec.geometry_type is not None:
            geoms = np.asarray(frame.geometry.values, dtype=object)
            geoms, used = _to_wgs84(spec, raw, geoms, crs, strict, area, issues, force_crs)
            report["crs"] = used
            valid = pool.submit(shapely.is_valid, geoms)
            attrs_frame = pd.DataFrame(frame.drop(columns=frame.geometry.name))
        else:
            if isinstance(frame, gpd.GeoDataFrame) and frame.geometry.name in frame:
                frame = frame.drop(columns=frame.geometry.name)
                issues.add("geometry_ignored", "warning",
                           f"{spec.name} has no geometry; ignored it")
            attrs_frame = pd.DataFrame(frame)
            report["crs"] = None
        out, used_map = _map_attributes(spec, attrs_frame, mapping, raw.coordinate_columns)
        report["mapping"] = used_map
        unmapped = [c for c in attrs_frame.columns if c not in used_map.values()]
        report["attrs_fields"] = unmapped
        changed: set[str] = set()  # columns some of whose file values were mapped or emptied
        out = _apply_value_maps(spec, out, value_maps, used_map, attribute_issues, changed)
        out, bad, emptied = _convert(spec, out, rows, attribute_issues)
        rejected |= bad
        changed |= emptied
        if geoms is not None:
            geoms, bad = _clean_geometries(spec, geoms, rows, issues, valid.result())
            rejected |= bad
            if on_geometries is not None:
                on_geometries(geoms)
    issues.items += attribute_issues.items
    if spec.name == "grid_cells":
        out, bad = _grid_codes(out, rows, issues)
        rejected |= bad
    out, bad = _ids(spec, out, geoms, rows, rejected, issues,
                    lambda: _attrs_json(attrs_frame[unmapped]) if unmapped else None)
    rejected |= bad
    named = out[spec.id_field].notna().to_numpy()
    issues.named_rows = rows[named]
    issues.named_ids = out[spec.id_field].to_numpy(dtype=object)[named]
    bad, emptied = _fit(spec, out, rows, rejected, issues)
    rejected |= bad
    changed |= emptied
    _apply_defaults(spec, out, given_defaults, rejected, issues)
    rejected |= _required(spec, out, rows, rejected, issues)
    keep = ~rejected
    # the file's fields no column takes, and the file's values of columns the loader changed
    # (value maps, values that did not fit): nothing staff send is lost
    originals = [used_map[c] for c in spec.column_names if c in changed and c in used_map]
    kept = unmapped + originals
    out = out[keep].reset_index(drop=True)
    out["attrs"] = _attrs_json(attrs_frame.loc[keep, kept].reset_index(drop=True)) \
        if kept else None
    report["attrs_fields"] = kept
    geoms, rows = _take(geoms, keep), rows[keep]
    if geoms is not None:
        whole = len(out)
        out, geoms, rows = _split_multipart(spec, out, geoms, rows, issues)
        dup = duplicated(out[spec.id_field]) if len(out) > whole else None
        if dup is not None and dup.any():  # a split id like B1-2 that the file also uses
            _reject_duplicates(spec, out, rows, dup, issues)
            out, geoms, rows = out[~dup].reset_index(drop=True), geoms[~dup], rows[~dup]
        _far_outside(out[spec.id_field], geoms, rows, area, issues, force_crs)
        if spec.name == "grid_cells":
            _grid_topology(out, geoms, rows, area, issues)
    report["counts"]["split_parts_added"] = int(len(out) - len(pd.unique(rows)))
    _strict_gate(strict, issues, report)
    if len(out) == 0:
        top = ", ".join(f"{k} {v}" for k, v in issues.count("rejected").most_common(4))
        first = next((i for i in issues.items if i["severity"] == "rejected"), None)
        example = f"; e.g. row {first.get('row')}: {first['message']}" if first else ""
        raise LoadError(
            f"no feature of {raw.file.name} could be loaded into {spec.name} ({top}){example}. "
            "Fix the file, map fields with --map FIELD=SOURCE, or give values the file lacks "
            "with --set FIELD=VALUE; --report FILE.json lists all."
        )
    if geoms is not None:
        out = gpd.GeoDataFrame(out, geometry=geoms, crs=tcrs.WGS84, copy=False)
    try:  # every geometry was tested (and repaired) by _clean_geometries
        return validate_layer_frame(spec, out, check_validity=False), rows
    except ValidationError as exc:  # a rule the loader should have caught row by row
        raise LoadError(f"{spec.name}: {exc}") from None


def _take(geoms, keep):
    return None if geoms is None else geoms[keep]


def _strict_gate(strict: bool, issues: _Issues, report: dict) -> None:
    if not strict:
        return
    bad = [
        i
        for i in issues.items
        if i["severity"] in ("repaired", "rejected") or i["kind"] in STRICT_KINDS
    ]
    if bad:
        kinds = Counter(i["kind"] for i in bad)
        first = bad[0]
        where = f"row {first['row']}" if "row" in first else "the file"
        raise LoadError(
            f"rejected under --strict: {len(bad)} issue(s) "
            f"({', '.join(f'{k} {v}' for k, v in kinds.most_common(4))}); first, {where}: "
            f"{first['message']}. Fix the file, or load without --strict to repair and report."
        )


# -- coordinates ---------------------------------------------------------------------------------


def _centres(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = shapely.bounds(geoms)
    return (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2


def _example(x, y) -> str:
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return ""
    i = int(np.flatnonzero(ok)[0])
    fmt = ".2f" if max(abs(x[i]), abs(y[i])) > 1000 else ".6f"
    return f" (e.g. x={x[i]:{fmt}}, y={y[i]:{fmt}})"


def _crs_hint(x, y, area) -> str:
    epsg = tcrs.detect_gk_zone(x, y)
    if epsg:
        return (
            f" The numbers look like CGCS2000 Gauss-Krüger with a zone prefix: try --crs {epsg}"
            " (or --crs cgcs2000)."
        )
    if tcrs.looks_like_unprefixed_gk(x, y):
        lon = shapely.centroid(area).x if area is not None else None
        guess = tcrs.suggest_gk_epsg(lon) if lon is not None else None
        near = f" here, EPSG:{guess}" if guess else ""
        return (
            " The numbers look like CGCS2000 Gauss-Krüger without a zone prefix: give the "
            f"zone's EPSG code (4534-4554 by central meridian{near})."
        )
    return " Give the CRS the surveyor used (an EPSG code, e.g. --crs 4547)."


def _insist(force: bool, message: str, issues: _Issues) -> None:
    """Refuse a load whose coordinates are in doubt, unless forced: then warn."""
    if not force:
        raise LoadError(f"{message} Nothing was loaded; fix --crs, or add --force-crs to load "
                        "the features where they land.")
    issues.add("crs_forced", "warning", f"{message} Loaded anyway (--force-crs).")


def _contradiction(raw: RawData, choice: tcrs.CrsChoice, crs, x, y, projected: bool) -> str:
    """Say how ``--crs`` contradicts the CRS the file states and its coordinates fit ('' if not).

    A file whose stated CRS does not fit its numbers (a wrong .prj) is what ``--crs`` is for;
    two systems in degrees, or GCJ-02/BD-09 over degrees, differ by metres, not kilometres.
    """
    if not raw.crs_stated or raw.crs is None or choice.crs.equals(raw.crs):
        return ""
    if raw.crs.is_geographic and (choice.offset or choice.crs.is_geographic):
        return ""
    fits = not projected if raw.crs.is_geographic else not tcrs.looks_like_degrees(x, y)
    if not fits:
        return ""
    unit = "degrees" if raw.crs.is_geographic else "metres"
    return (
        f"{raw.file.name} says its CRS is {_crs_name(raw.crs)} ({unit}) and its coordinates "
        f"fit it{_example(x, y)}; --crs {crs} ({_crs_name(choice.crs)}) contradicts it and "
        "would move every feature. Leave --crs out to use the file's own CRS."
    )


def _landing(choice: tcrs.CrsChoice, crs, x0, y0, geoms, force: bool, issues: _Issues) -> None:
    """Doubt a --crs under which the features collapse onto one point, or lie outside China.

    The second only for a Chinese CRS (CGCS2000 and its zones, GCJ-02, BD-09 …).
    """
    x, y = _centres(geoms)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return
    distinct = len(np.unique(np.column_stack([x0[ok], y0[ok]]), axis=0))
    span_m = max(np.ptp(x[ok]) * np.cos(np.radians(np.nanmedian(y[ok]))), np.ptp(y[ok])) * 111e3
    if distinct >= 3 and span_m < 1.0:
        _insist(force, f"under --crs {crs} the {distinct} distinct positions of the file fall "
                f"within {span_m:.2f} m of each other{_example(x, y)}: a CRS in metres for "
                "numbers in degrees?", issues)
    if tcrs.is_chinese(choice) and not tcrs.in_china(x[ok], y[ok]).any():
        _insist(force, f"--crs {crs} is a Chinese CRS but under it no feature lies in China"
                f"{_example(x, y)}.", issues)


def _to_wgs84(spec, raw: RawData, geoms, crs, strict, area, issues: _Issues, force=False):
    """Reproject (and de-offset) geometries to EPSG:4326; returns them and what was done."""
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)
        issues.add("z_dropped", "warning", "3D coordinates: heights (Z) were dropped")
    x, y = _centres(geoms)
    choice = tcrs.parse_crs(crs) if crs is not None else None
    projected_numbers = tcrs.looks_projected(x, y)
    used: dict[str, Any] = {"declared": raw.crs.to_string() if raw.crs else None}
    if choice is not None:
        source, how = choice.crs, "--crs " + str(crs)
        why = _contradiction(raw, choice, crs, x, y, projected_numbers)
        if why:
            _insist(force, why, issues)
        if choice.crs.is_projected and tcrs.looks_like_degrees(x, y):
            _insist(force, f"--crs {crs} is in metres but the coordinates look like degrees"
                    f"{_example(x, y)}: every feature would fall within metres of the CRS's "
                    "origin. Give the degrees' CRS (4326, cgcs2000, gcj02, bd09).", issues)
        if choice.crs.is_geographic and projected_numbers:
            zone = tcrs.detect_gk_zone(x, y) if choice.label == tcrs.CGCS2000 else None
            if zone is None:
                raise LoadError(
                    f"--crs {crs} is in degrees but the coordinates are not{_example(x, y)}."
                    + _crs_hint(x, y, area)
                )
            source = pyproj.CRS.from_epsg(zone)
            how = f"--crs {crs}; Gauss-Krüger zone EPSG:{zone} detected from the easting prefix"
    elif raw.crs is None:
        if projected_numbers:
            raise LoadError(
                f"{raw.file.name} has no CRS and its coordinates are projected numbers"
                f"{_example(x, y)}; say which CRS with --crs." + _crs_hint(x, y, area)
            )
        source, how = pyproj.CRS.from_epsg(4326), "none in the file; assumed WGS84 (EPSG:4326)"
        issues.add(
            "crs_assumed",
            "warning",
            "the file has no CRS; its numbers look like degrees and were read as WGS84 lon/lat. "
            "Use --crs gcj02 / bd09 / cgcs2000 if they come from a web map or a survey",
        )
    else:
        source, how = raw.crs, raw.crs_how
        if raw.crs.is_geographic and projected_numbers:
            raise LoadError(
                f"{raw.file.name} says its CRS is {_crs_name(raw.crs)} (degrees) but the "
                f"coordinates are projected numbers{_example(x, y)}: the .prj is wrong. "
                "Load it with --crs." + _crs_hint(x, y, area)
            )
        ok = np.isfinite(x)
        if (
            raw.crs.is_projected
            and ok.any()
            and (np.abs(x[ok]) <= 180).all()
            and (np.abs(y[ok]) <= 90).all()
        ):
            raise LoadError(
                f"{raw.file.name} says its CRS is {_crs_name(raw.crs)} (metres) but the "
                f"coordinates look like degrees{_example(x, y)}: the .prj is wrong. Load it with "
                "--crs 4326 (or gcj02, bd09, cgcs2000 — whatever the data really are)."
            )
    used.update({"used": _crs_name(source), "how": how})
    if source.is_geographic:
        geoms = _fix_swapped(geoms, x, y, area, issues)
    if choice is not None and choice.offset:
        geoms, shifted = _remove_offset(geoms, choice.offset)
        used["converted"] = f"{choice.offset} → WGS84"
        used["error_bound"] = (
            "inverse exact to 1e-9°; the public GCJ-02 model is within a few metres of AMap's "
            "conversion in eastern China (worse on the western plateau)"
        )
        kept = int(np.sum(~shifted & ~shapely.is_missing(geoms)))
        if kept:
            issues.add(
                "outside_china_not_shifted",
                "warning",
                f"{kept} feature(s) lie outside the region where {choice.offset} has an offset "
                "(China's land with Hong Kong, Macau, Taiwan and its seas; see "
                "docs/loading.md); they were not shifted",
            )
    if not source.equals(tcrs.WGS84):
        if source.equals(tcrs.CGCS2000):
            used["note"] = "CGCS2000 and WGS84 agree to a few centimetres; no datum shift applied"
        geoms = gpd.GeoSeries(geoms, crs=source).to_crs(tcrs.WGS84).values
        geoms = np.asarray(geoms, dtype=object)
    if choice is not None:
        _landing(choice, crs, x, y, geoms, force, issues)
    return geoms, used


def _crs_name(crs: pyproj.CRS) -> str:
    epsg = crs.to_epsg(min_confidence=70)
    return f"EPSG:{epsg}" if epsg else crs.name


def _fix_swapped(geoms, x, y, area, issues: _Issues):
    expected = tcrs.CHINA_OUTLINE
    if area is not None:
        expected = shapely.union(expected, shapely.buffer(shapely.envelope(area), 1.0))
    flagged = tcrs.detect_swapped(x, y, expected=expected) & np.isfinite(x)
    if not flagged.any():
        return geoms
    geoms = geoms.copy()
    geoms[flagged] = shapely.transform(geoms[flagged], lambda c: c[:, ::-1])
    rows = np.flatnonzero(flagged) + 1
    msgs = [
        f"longitude and latitude were swapped ({xi:.6f}, {yi:.6f}); swapped them back"
        for xi, yi in zip(x[flagged], y[flagged], strict=True)
    ]
    issues.add_rows("swapped_lonlat", "repaired", rows, None, msgs)
    return geoms


def _remove_offset(geoms, offset: str):
    coords = shapely.get_coordinates(geoms)
    convert = tcrs.gcj02_to_wgs84 if offset == "gcj02" else tcrs.bd09_to_wgs84
    lon, lat = convert(coords[:, 0], coords[:, 1])
    geoms = shapely.set_coordinates(geoms.copy(), np.column_stack([lon, lat]))
    x, y = _centres(geoms)
    return geoms, tcrs.in_china(np.nan_to_num(x), np.nan_to_num(y))


# -- geometry ------------------------------------------------------------------------------------


def _clean_geometries(spec: LayerSpec, geoms, rows, issues: _Issues, valid: np.ndarray):
    """Reject empty/wrong-typed geometries, repair invalid ones keeping the declared type.

    *valid* is ``shapely.is_valid`` of *geoms* (computed beside the attribute conversion).
    """
    n = len(geoms)
    rejected = np.zeros(n, dtype=bool)
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    issues.add_rows(
        "empty_geometry",
        "rejected",
        rows[empty],
        None,
        "the feature has no geometry (null or empty)",
    )
    rejected |= empty
    allowed = [GEOMETRY_TYPE_IDS[t] for t in spec.geometry_types]
    allowed_multi = [MULTI_TYPE_IDS[t] for t in allowed]
    types = shapely.get_type_id(geoms)
    # collections of allowed parts are taken apart later; other types are rejected
    coll = (types == 7) & ~empty
    if coll.any():
        geoms = geoms.copy()
        geoms[coll] = _extract(geoms[coll], allowed)
        types = shapely.get_type_id(geoms)
        valid = valid.copy()
        valid[coll] = shapely.is_valid(geoms[coll])
    wrong = ~empty & ~np.isin(types, allowed + allowed_multi)
    if 3 in allowed and 1 not in allowed:
        # a closed line where an area is wanted is the outline of one (CAD, GPS traces)
        ring = wrong & (types == 1)
        ring[ring] = shapely.is_closed(geoms[ring]) & \
            (shapely.get_num_coordinates(geoms[ring]) >= 4)
        if ring.any():
            coords, which = shapely.get_coordinates(geoms[ring], return_index=True)
            geoms = geoms.copy()
            geoms[ring] = shapely.polygons(shapely.linearrings(coords, indices=which))
            valid = valid.copy()
            valid[ring] = shapely.is_valid(geoms[ring])
            wrong &= ~ring
            issues.add_rows("ring_to_polygon", "repaired", rows[ring], None,
                            f"a closed LineString where {spec.name} takes areas: taken as the "
                            "outline of a Polygon")
    names = [GEOMETRY_TYPE_NAMES.get(int(t), "?") for t in types[wrong]]
    issues.add_rows(
        "wrong_geometry_type",
        "rejected",
        rows[wrong],
        None,
        [f"{spec.name} takes {'/'.join(spec.geometry_types)}; this is a {t}" for t in names],
    )
    rejected |= wrong
    ok = ~rejected
    invalid = ok & ~valid
    if invalid.any():
        geoms = geoms.copy()
        reasons = shapely.is_valid_reason(geoms[invalid])
        fixed = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
        fixed = _extract(fixed, allowed)
        gone = shapely.is_missing(fixed) | shapely.is_empty(fixed)
        geoms[invalid] = fixed
        idx = np.flatnonzero(invalid)
        issues.add_rows(
            "degenerate_geometry",
            "rejected",
            rows[idx[gone]],
            None,
            [
                f"invalid geometry ({r}) collapses to nothing when repaired: fewer than 3 distinct "
                "corners (a two-point ring?)"
                for r in reasons[gone]
            ],
        )
        issues.add_rows(
            "invalid_geometry_repaired",
            "repaired",
            rows[idx[~gone]],
            None,
            [f"invalid geometry ({r}) repaired with make_valid" for r in reasons[~gone]],
        )
        rejected[idx[gone]] = True
    return geoms, rejected


def _extract(geoms, allowed: list[int]):
    """Keep only the parts of the allowed types (e.g. polygons out of a GeometryCollection).

    A row whose parts are of several allowed types keeps those of the first (declared) type.
    """
    parts, index = shapely.get_parts(geoms, return_index=True)
    types = shapely.get_type_id(parts)
    out = np.full(len(geoms), None, dtype=object)
    taken = np.zeros(len(geoms), dtype=bool)
    collect = {0: shapely.multipoints, 1: shapely.multilinestrings, 3: shapely.multipolygons}
    for t in allowed:
        sel = types == t
        sel &= ~taken[index]
        if not sel.any():
            continue
        buf = np.full(len(geoms), None, dtype=object)
        collect[t](parts[sel], indices=index[sel], out=buf)
        rows = np.unique(index[sel])
        made = buf[rows]
        one = shapely.get_num_geometries(made) == 1
        made[one] = shapely.get_geometry(made[one], 0)
        out[rows] = made
        taken[rows] = True
    return out


def _split_multipart(spec: LayerSpec, out: pd.DataFrame, geoms, rows, issues: _Issues):
    """Split multi-part geometries into single parts with ids id, id-2, id-3 …."""
    if spec.geometry_type == "LineString":
        multi_lines = shapely.get_type_id(geoms) == 5
        if multi_lines.any():  # touching pieces of one road become one line first
            geoms = geoms.copy()
            geoms[multi_lines] = shapely.line_merge(geoms[multi_lines])
    multi = np.isin(shapely.get_type_id(geoms), [4, 5, 6, 7])
    if not multi.any():
        return out, geoms, rows
    parts, index = shapely.get_parts(geoms, return_index=True)
    order = pd.Series(index).groupby(index).cumcount().to_numpy() + 1
    new = out.iloc[index].reset_index(drop=True)
    ids = new[spec.id_field].astype(str).to_numpy(dtype=object)
    suffix = np.where(order > 1, np.char.add("-", order.astype(str)), "")
    new[spec.id_field] = np.char.add(ids.astype(str), suffix).astype(object)
    counts = np.bincount(index, minlength=len(geoms))
    for i in np.flatnonzero(multi & (counts > 1)):  # one part: a Multi… type, nothing split
        base = out[spec.id_field].iloc[i]
        made = [str(base)] + [f"{base}-{k}" for k in range(2, counts[i] + 1)]
        issues.add(
            "split_multipart",
            "repaired",
            f"{counts[i]} parts; {spec.name} takes single parts: split into {', '.join(made)}",
            rows[i],
            base,
        )
    return new, parts, rows[index]


def _far_outside(ids: pd.Series, geoms, rows, area, issues: _Issues, force=False) -> None:
    if len(geoms) == 0:
        return
    x, y = _centres(geoms)
    if area is not None:
        # "inside" is answered in degrees by the prepared boundary (an edge moves by millimetres
        # between the two CRSs, far less than the 2 km reported); only the features outside
        # are projected, to test "within 2 km" and measure the far few exactly
        shapely.prepare(area)
        dist = np.zeros(len(x))
        out = np.flatnonzero(~shapely.contains_xy(area, x, y))
        metric = tcrs.local_metric_crs(area)
        fwd = pyproj.Transformer.from_crs(tcrs.WGS84, metric, always_xy=True)
        area_m = shapely.transform(area, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
        shapely.prepare(area_m)
        points = shapely.points(*fwd.transform(x[out], y[out]))
        near = shapely.dwithin(area_m, points, FAR_FROM_AREA_M)
        dist[out] = np.nan  # outside but near: not reported
        dist[out[~near]] = shapely.distance(area_m, points[~near])
        far = dist > FAR_FROM_AREA_M
        what = "the community boundary"
        if far.all():  # not one feature near: the wrong file, store or CRS
            _insist(force, f"every feature lies more than {FAR_FROM_AREA_M / 1000:g} km outside "
                    f"the community boundary (the nearest {np.min(dist) / 1000:,.1f} km): the "
                    "wrong file or store, or wrong coordinates?", issues)
    else:
        mx, my = np.nanmedian(x), np.nanmedian(y)
        _, _, dist = pyproj.Geod(ellps="WGS84").inv(np.full_like(x, mx), np.full_like(y, my), x, y)
        dist = np.asarray(dist)
        threshold = max(FAR_FROM_MEDIAN_M, 10 * float(np.median(dist)))
        far = dist > threshold
        what = "the middle of the data"
    issues.add_rows(
        "far_outside",
        "warning",
        rows[far],
        ids.to_numpy()[far],
        [f"{d / 1000:.1f} km from {what} — wrong coordinates or CRS?" for d in dist[far]],
    )


# -- attributes ----------------------------------------------------------------------------------


def _targets(spec: LayerSpec) -> list[Column]:
    assigned = {c.name for c in ASSIGNED_COLUMNS} if spec.located else set()
    return [c for c in spec.columns if c.name not in assigned]


def _map_attributes(spec: LayerSpec, src: pd.DataFrame, mapping: dict, coordinate_columns):
    """Match source fields to declared columns; everything else goes to ``attrs`` (JSON).

    Order: --map, then per column its name, aliases, zh and en labels (exact, then any case).
    """
    targets = {c.name: c for c in _targets(spec)}
    columns = [c for c in src.columns]
    used: dict[str, str] = {}
    for field, source in mapping.items():
        if field not in targets:
            raise LoadError(
                f"--map {field}={source}: {spec.name} has no field {field!r}; its fields are "
                f"{list(targets)}."
            )
        if source not in columns:
            raise LoadError(
                f"--map {field}={source}: the file has no field {source!r}; its fields are "
                f"{columns}."
            )
        used[field] = source
    taken = set(used.values()) | set(coordinate_columns)
    lower: dict[str, str] = {}
    for c in columns:
        lower.setdefault(c.lower(), c)
    for name, col in targets.items():
        if name in used:
            continue
        for candidate in (name, *col.aliases, col.label_zh, col.label_en):
            hit = candidate if candidate in columns else lower.get(candidate.lower())
            if hit is not None and hit not in taken:
                used[name] = hit
                taken.add(hit)
                break
    # the columns keep their dtypes: text read through Arrow converts cheaply from there;
    # ``attrs`` is made by _check once it knows which rows load and which values changed
    out = pd.DataFrame({name: src[source] for name, source in used.items()}, index=src.index)
    return out, used


def _attrs_json(extra: pd.DataFrame) -> pd.Series:
    """One JSON object per row holding every unmapped source field, as canonical text.

    Canonical (sorted keys, the separators of :func:`twin.schema.coerce_series`) so that the
    validation after it recognises the text instead of parsing and writing it again; written
    with ``json.dumps`` rather than ``DataFrame.to_json``, which rounds floats to 10 digits.
    """
    frame = extra.copy()
    for c in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[c]) or frame[c].dtype == object:
            frame[c] = frame[c].map(_plain, na_action="ignore")
    frame = frame.astype(object).where(frame.notna(), None)
    records = frame.to_dict("records")  # numpy scalars come out as Python ones
    if "attrs" in frame.columns:  # a re-loaded export: merge its attrs instead of nesting them
        records = [_merge_attrs(record) for record in records]
    dumps = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str).encode
    return pd.Series([dumps(r) for r in records], index=extra.index, dtype=object)


def _plain(value):
    if isinstance(value, (pd.Timestamp,)) or hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _merge_attrs(obj: dict) -> dict:
    inner = obj.pop("attrs", None)
    if isinstance(inner, str):
        try:
            inner = json.loads(inner)
        except ValueError:
            inner = {"attrs": inner}
    if isinstance(inner, dict):
        obj = {**inner, **obj}
    return obj


_KEPT = "left empty; the file's value is kept in attrs"


def _unfit(col: Column, rows, ids, bad, kind: str, messages, issues: _Issues) -> bool:
    """Report values of *col* that do not fit it: a required column rejects their rows.

    An optional one only loses the value (the caller empties it): attributes never cost a
    feature its geometry. Returns whether the rows are rejected.
    """
    if col.required:
        issues.add_rows(kind, "rejected", rows[bad], ids,
                        [f"{m}; {col.name} is required" for m in messages])
        return True
    issues.add_rows(kind, "repaired", rows[bad], ids, [f"{m}; {_KEPT}" for m in messages])
    return False


def _reject_or_empty(col: Column, rows, out: pd.DataFrame, id_field: str, bad, kind: str,
                     messages, issues: _Issues, emptied: set[str]) -> np.ndarray:
    """Report unfit values of *col* (:func:`_unfit`); return the rows that must be rejected.

    In an optional column the values are emptied instead (and the column noted in *emptied*),
    so no row is rejected.
    """
    if _unfit(col, rows, out[id_field][bad], bad, kind, messages, issues):
        return bad
    out.loc[bad, col.name] = None
    emptied.add(col.name)
    return np.zeros(len(out), dtype=bool)


def _convert(spec: LayerSpec, out: pd.DataFrame, rows, issues: _Issues):
    """Convert mapped fields to their declared types.

    A value that does not convert is left empty (its column is returned in the set of emptied
    columns) or, in a required column, rejects its row.
    """
    rejected = np.zeros(len(out), dtype=bool)
    emptied: set[str] = set()
    for col in _targets(spec):
        if col.name not in out:
            continue
        s = out[col.name]
        converted, bad = _convert_series(s, col)
        out[col.name] = converted
        if bad.any():
            messages = [f"{col.name}: {v!r} is not {_DTYPE_WORDS[col.dtype]}" for v in s[bad]]
            if _unfit(col, rows, None, bad, "bad_value", messages, issues):
                rejected |= bad
            else:
                emptied.add(col.name)
    return out, rejected, emptied


# -- value maps and defaults ---------------------------------------------------------------------


def _norm_keys(values: pd.Series) -> pd.Series:
    """Return values as value maps match them: text, stripped, lower case, 3.0 as 3.

    Arrow's string kernels do it, with no loop in Python.
    """
    text = values.astype("string[pyarrow]").str.strip().str.lower()
    return text.str.replace(r"^(-?\d+)\.0$", r"\1", regex=True).astype(object)


def _value_maps(spec: LayerSpec, given: dict) -> dict[str, dict[str, Any]]:
    """Return the value map of every column: the declared one, overridden by *given*."""
    targets = {c.name: c for c in _targets(spec)}
    unknown = [name for name in given if name not in targets]
    if unknown:
        raise LoadError(
            f"--values {unknown[0]}:…: {spec.name} has no field {unknown[0]!r}; its fields are "
            f"{list(targets)}."
        )
    maps: dict[str, dict[str, Any]] = {}
    for name, col in targets.items():
        pairs = list(col.values) + list((given.get(name) or {}).items())
        if not pairs:
            continue
        keys = _norm_keys(pd.Series([k for k, _ in pairs], dtype=object)).tolist()
        table = dict(zip(keys[: len(col.values)], [v for _, v in col.values], strict=True))
        for key, (source, value) in zip(keys[len(col.values):], pairs[len(col.values):],
                                        strict=True):
            if isinstance(value, str) and value.strip() == "":
                value = None
            if col.choices is not None and value is not None and value not in col.choices:
                raise LoadError(
                    f"--values {name}:{source}={value}: {value!r} is not one of "
                    f"{list(col.choices)}; map to one of them (or to nothing: {name}:{source}=)."
                )
            table[key] = value
        table = {k: v for k, v in table.items() if k != v}  # case is _fit's to normalise
        if table:
            maps[name] = table
    return maps


def _apply_value_maps(spec, out: pd.DataFrame, maps, used_map, issues: _Issues, changed):
    """Replace the file's values by their mapped ones; report what was mapped, per column."""
    for name, table in maps.items():
        if name not in out:
            continue
        s = out[name]
        col = spec.column(name)
        todo = s.notna().to_numpy()
        if col.choices is not None:  # values already a choice need no look-up
            todo = todo & ~s.isin(col.choices).to_numpy()
        if not todo.any():
            continue
        keys = _norm_keys(s[todo])
        hit = keys.isin(table.keys()).to_numpy()
        if not hit.any():
            continue
        where = np.flatnonzero(todo)[hit]
        mapped = keys[hit].map(table)
        new = s.astype(object)
        new.iloc[where] = mapped.to_numpy(dtype=object)
        out[name] = new
        changed.add(name)
        pairs = pd.DataFrame({"from": s.iloc[where].astype(str).to_numpy(),
                              "to": mapped.to_numpy(dtype=object)})
        counts = pairs.value_counts(dropna=False)
        listed = ", ".join(f"{f!r} → {'(empty)' if pd.isna(t) else t} ×{n}"
                           for (f, t), n in counts.head(12).items())
        more = f" and {len(counts) - 12} more" if len(counts) > 12 else ""
        issues.add(
            "values_mapped",
            "info",
            f"{name} (from {used_map.get(name, name)}): {len(where):,} value(s) mapped: "
            f"{listed}{more}; the file's values are kept in attrs",
        )
    return out


def _given_defaults(spec: LayerSpec, given: dict) -> dict[str, Any]:
    """Check the defaults given for a load (``--set``): known columns, values that fit them."""
    targets = {c.name: c for c in _targets(spec)}
    out = {}
    for name, value in given.items():
        col = targets.get(name)
        if col is None or name == spec.id_field:
            what = "is the id (ids cannot have a default)" if name == spec.id_field else \
                f"is not one of its fields {list(targets)}"
            raise LoadError(f"--set {name}={value}: {name!r} {what}.")
        converted, bad = _convert_series(pd.Series([value], dtype=object), col)
        fits = not bad.any() and converted.notna().all()
        v = converted.iloc[0] if fits else None
        if fits and col.choices is not None and v not in col.choices:
            fits = False
        if fits and col.dtype in ("int", "float"):
            fits = (col.min is None or v >= col.min) and (col.max is None or v <= col.max)
        if not fits:
            allowed = list(col.choices) if col.choices else _DTYPE_WORDS[col.dtype]
            bounds = f" in [{col.min}, {col.max}]" if col.min is not None else ""
            raise LoadError(f"--set {name}={value}: {value!r} does not fit {name} "
                            f"({allowed}{bounds}).")
        out[name] = v.item() if hasattr(v, "item") else v
    return out


def _apply_defaults(spec, out: pd.DataFrame, given: dict, rejected, issues: _Issues) -> None:
    """Fill empty values with the given defaults, else the declared ones; report each column.

    Empty are the values the file lacks, those a value map empties and those emptied because
    they did not fit (their rows are reported). Declared defaults that are functions of the
    frame run last, on the values filled before them.
    """
    plain = [c for c in _targets(spec) if c.name != spec.id_field
             and (c.name in given or (c.default is not None and not callable(c.default)))]
    computed = [c for c in _targets(spec) if c.name not in given and callable(c.default)]
    live = ~rejected
    for col in plain + computed:
        s = out[col.name] if col.name in out else pd.Series(None, index=out.index, dtype=object)
        empty = s.isna().to_numpy() & live
        if not empty.any():
            continue
        if col.name in given:
            value, how = given[col.name], "given (--set)"
        elif callable(col.default):
            value, how = np.asarray(col.default(out), dtype=object), "declared"
            value = np.where(pd.isna(value), None, value)
            empty &= pd.notna(value)
            if not empty.any():
                continue
            value = value[empty]
        else:
            value, how = col.default, "declared"
        filled = s.astype(object).copy()
        filled[empty] = value
        out[col.name] = _convert_series(filled, col)[0]
        shown = value if not isinstance(value, np.ndarray) else \
            ", ".join(sorted({str(v) for v in value}))
        doc = f" ({col.doc})" if col.doc and how == "declared" else ""
        issues.add(
            "default_applied",
            "info",
            f"{col.name}: {int(empty.sum()):,} feature(s) had none; set to {shown}, the {how} "
            f"default{doc}",
        )


_DTYPE_WORDS = {
    "text": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "yes/no",
    "date": "a date",
    "datetime": "a date and time",
    "json": "JSON",
}


def _convert_series(s: pd.Series, col: Column) -> tuple[pd.Series, np.ndarray]:
    present = s.notna().to_numpy()
    if col.dtype == "text":
        if pd.api.types.is_float_dtype(s) and (s.dropna() % 1 == 0).all():
            s = s.astype("Int64")  # a numeric code in a .dbf: 1203.0 → "1203"
        if s.dtype == object and pd.api.types.infer_dtype(s, skipna=True) == "string":
            text = s.where(present, None) if not present.all() else s
        else:  # text read as text by Arrow, or numbers, dates … as their text
            text = pd.Series(s.astype("string").to_numpy(dtype=object, na_value=None),
                             index=s.index, dtype=object)
        return text, np.zeros(len(s), dtype=bool)
    if col.dtype in ("int", "float"):
        if pd.api.types.is_integer_dtype(s) or (
            col.dtype == "float" and pd.api.types.is_float_dtype(s)
        ):  # numbers read as numbers (the usual case): nothing can fail
            return s.astype("Int64" if col.dtype == "int" else "float64"), np.zeros(len(s), bool)
        raw = s
        if s.dtype == object or pd.api.types.is_string_dtype(s):
            raw = s.astype("string").str.replace(",", "", regex=False)
            if col.unit:
                raw = raw.str.replace(rf"\s*{re.escape(col.unit)}\s*$", "", regex=True)
        num = pd.to_numeric(raw, errors="coerce")
        num = num.astype("float64") if not pd.api.types.is_bool_dtype(num) else num.astype(float)
        bad = present & num.isna().to_numpy()
        if col.dtype == "int":
            bad |= present & ~num.isna().to_numpy() & (num.fillna(0) % 1 != 0).to_numpy()
            return num.where(~bad).round().astype("Int64"), bad
        return num.where(~bad), bad
    if col.dtype == "bool":
        key = s.map(lambda v: str(v).strip().lower(), na_action="ignore")
        val = key.map(BOOLEAN_WORDS)
        bad = present & val.isna().to_numpy()
        return val.astype("boolean"), bad
    if col.dtype in ("date", "datetime"):
        when = pd.to_datetime(s, errors="coerce", utc=col.dtype == "datetime", format="mixed")
        bad = present & when.isna().to_numpy()
        return (when.dt.date.where(when.notna(), None) if col.dtype == "date" else when), bad
    # json
    bad = np.zeros(len(s), dtype=bool)
    for i, v in enumerate(s.tolist()):
        if isinstance(v, str):
            try:
                json.loads(v)
            except ValueError:
                bad[i] = True
    return s.where(~bad, None), bad


def _ids(spec: LayerSpec, out: pd.DataFrame, geoms, rows, rejected, issues: _Issues,
         attrs_of: Callable[[], pd.Series | None] = lambda: None):
    """Reject duplicate ids; give features without one a stable id from their geometry."""
    idf = spec.id_field
    if idf not in out:
        out[idf] = None
    ids = out[idf]
    empty = ids.isna().to_numpy()  # which ids are empty is found once, then kept up to date
    if ids.dtype != object or empty.any():  # text the loader converted is object already
        ids = ids.astype(object).where(~empty, None)
    if pd.api.types.infer_dtype(ids, skipna=True) == "string":  # the usual case: vectorised
        padded, blank = _padded(ids)
        if padded.any():
            stripped = ids[padded].str.strip()
            ids = ids.copy()
            ids[padded] = stripped
            blank = blank.copy()  # Arrow's array may be read-only
            blank[padded] = (stripped == "").to_numpy()
        if blank.any():
            ids = ids.where(~blank, None)
            empty = empty | blank
    else:
        ids = ids.map(lambda v: v.strip() or None if isinstance(v, str) else v)
        empty = ids.isna().to_numpy()
    out[idf] = ids
    live = ~rejected
    has = ~empty & live
    if has.all():  # every row named and live (the usual case): no copy of the ids
        dup = duplicated(ids)
    else:
        dup = np.zeros(len(out), dtype=bool)
        dup[has] = duplicated(ids[has])
    if dup.any():
        _reject_duplicates(spec, out, rows, dup, issues)
    missing = empty & live
    if missing.any():
        gen = _stable_ids(spec, out, geoms, missing, attrs_of)
        out.loc[missing, idf] = gen
        issues.add(
            "generated_ids",
            "info",
            f"{int(missing.sum())} feature(s) had no {idf}; gave them stable ids from "
            f"their geometry (e.g. {gen[0]}); reloading the same file gives the same ids",
        )
    return out, dup


_SPACE = r"[\s\pZ\x0b\x1c-\x1f\x85]"  # RE2's \s is ASCII only; str.isspace is not


def _padded(texts: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Which texts (None allowed) start or end with whitespace, and which are "", found by Arrow.

    Whitespace as :meth:`str.strip` knows it, full-width spaces (U+3000) included. The texts
    become Arrow text once, for both tests.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow = pa.array(texts.to_numpy(dtype=object), pa.large_string())
    padded = pc.match_substring_regex(arrow, f"^{_SPACE}|{_SPACE}$")
    blank = pc.equal(arrow, "")
    return (padded.fill_null(False).to_numpy(zero_copy_only=False),
            blank.fill_null(False).to_numpy(zero_copy_only=False))


def _reject_duplicates(spec, out, rows, dup, issues: _Issues) -> None:
    ids = out[spec.id_field]
    groups = pd.Series(rows[dup]).groupby(ids[dup].astype(str).to_numpy()).agg(list)
    for value, where in groups.items():
        issues.add_rows(
            "duplicate_id",
            "rejected",
            np.asarray(where),
            [value] * len(where),
            f"{spec.id_field} {value} is used by rows {', '.join(map(str, where[:10]))}; "
            "ids must be unique",
        )


def _stable_ids(spec: LayerSpec, out: pd.DataFrame, geoms, missing, attrs_of) -> np.ndarray:
    if geoms is not None:
        blobs = shapely.to_wkb(geoms[missing], hex=False, output_dimension=2)
        blobs = [b if b is not None else b"" for b in blobs]
    else:
        cols = [c for c in out.columns if c != spec.id_field]
        rows = out.loc[missing, cols]
        attrs = attrs_of()  # the file's other fields, as in attrs, tell rows apart too
        rows["attrs"] = attrs[missing].to_numpy() if attrs is not None else None
        blobs = (
            rows
            .to_json(orient="records", lines=True, force_ascii=False)
            .encode()
            .rstrip(b"\n")  # pandas ends the lines with one: not one more row
            .split(b"\n")
        )
    prefix = spec.name.encode() + b"\0"
    base = np.array([hashlib.sha1(prefix + b).hexdigest()[:12] for b in blobs], dtype=object)
    base = np.char.add(f"{spec.name[:3]}-", base.astype(str)).astype(object)
    # identical geometries twice: number them in file order so the ids stay stable
    order = pd.Series(base).groupby(base).cumcount().to_numpy() + 1
    return np.where(
        order > 1, np.char.add(np.char.add(base.astype(str), "-"), order.astype(str)), base
    ).astype(object)


def _fit(spec: LayerSpec, out: pd.DataFrame, rows, rejected, issues: _Issues):
    """Check choice and range rules (vectorised per column): the rows rejected, columns emptied.

    A value outside its choices or range is left empty (its row is reported) or, in a required
    column, rejects its row (see :func:`_unfit`).
    """
    bad_all = np.zeros(len(out), dtype=bool)
    emptied: set[str] = set()
    live = ~rejected
    for col in _targets(spec):
        if col.name == spec.id_field or col.name not in out:
            continue
        s = out[col.name]
        if col.choices is not None:
            odd = s.notna() & ~s.isin(col.choices)  # normalise only values not already a choice
            norm = s[odd].astype(str).str.strip().str.lower().str.replace(" ", "_", regex=False)
            fixable = pd.Series(False, index=s.index)
            fixable[odd] = norm.isin(col.choices).to_numpy()
            if fixable.any():
                s = s.where(~fixable, norm)
                out[col.name] = s
            bad = live & (s.notna() & ~s.isin(col.choices)).to_numpy()
            if bad.any():
                messages = [f"{col.name}: {v!r} is not one of {list(col.choices)}"
                            for v in s[bad]]
                bad_all |= _reject_or_empty(col, rows, out, spec.id_field, bad, "bad_choice",
                                            messages, issues, emptied)
        if col.min is not None or col.max is not None:
            num = pd.to_numeric(s, errors="coerce").astype("float64")
            lo = num < col.min if col.min is not None else pd.Series(False, index=num.index)
            hi = num > col.max if col.max is not None else pd.Series(False, index=num.index)
            bad = live & (lo | hi).to_numpy()
            if bad.any():
                unit = f" {col.unit}" if col.unit else ""
                messages = [f"{col.name}: {v} is outside [{col.min}, {col.max}]{unit}"
                            for v in num[bad]]
                bad_all |= _reject_or_empty(col, rows, out, spec.id_field, bad, "out_of_range",
                                            messages, issues, emptied)
    return bad_all, emptied


def _required(spec: LayerSpec, out: pd.DataFrame, rows, rejected, issues: _Issues) -> np.ndarray:
    """Reject rows whose required values are empty (after value maps and defaults)."""
    bad_all = np.zeros(len(out), dtype=bool)
    live = ~rejected
    for col in _targets(spec):
        if col.name == spec.id_field or not col.required:
            continue
        s = out[col.name] if col.name in out else pd.Series(None, index=out.index, dtype=object)
        bad = live & s.isna().to_numpy()
        issues.add_rows(
            "missing_value",
            "rejected",
            rows[bad],
            out[spec.id_field][bad],
            f"{col.name} is required but empty (map a field with --map {col.name}=SOURCE if "
            f"the file names it differently, or give a default with --set {col.name}=VALUE)",
        )
        bad_all |= bad
    return bad_all


# -- grid cells ----------------------------------------------------------------------------------

_PART_RULES = {
    "county_code": r"\d{6}",
    "street_code": r"\d{3}",
    "community_code": r"\d{3}",
    "sequence": r"\d{1,4}",
}
_PART_WORDS = {
    "county_code": "6 digits",
    "street_code": "3 digits",
    "community_code": "3 digits",
    "sequence": "1-4 digits",
}


def _grid_codes(out: pd.DataFrame, rows, issues: _Issues):
    """Derive grid_code from its parts (or the parts from the code); reject malformed codes."""
    from twin.layers.grid_cells import full_code

    for name in ("grid_code", *_PART_RULES):
        if name not in out:
            out[name] = None
    code = out["grid_code"].astype(object)
    parts = out[list(_PART_RULES)]
    have_parts = parts.notna().all(axis=1).to_numpy()
    no_parts = parts.isna().all(axis=1).to_numpy()
    derive_code = code.isna().to_numpy() & have_parts
    if derive_code.any():
        made = [full_code(*p) for p in parts[derive_code].itertuples(index=False)]
        out.loc[derive_code, "grid_code"] = made
        issues.add(
            "grid_code_derived",
            "info",
            f"grid_code derived from its parts for {int(derive_code.sum())} grid(s)",
        )
    digits = code.astype(str).str.fullmatch(r"\d{13,16}").to_numpy() & code.notna().to_numpy()
    derive_parts = no_parts & digits
    if derive_parts.any():
        c = code[derive_parts].astype(str)
        out.loc[derive_parts, "county_code"] = c.str[:6]
        out.loc[derive_parts, "street_code"] = c.str[6:9]
        out.loc[derive_parts, "community_code"] = c.str[9:12]
        out.loc[derive_parts, "sequence"] = c.str[12:]
        issues.add(
            "grid_parts_derived",
            "info",
            f"county/street/community/sequence taken from grid_code for "
            f"{int(derive_parts.sum())} grid(s)",
        )
    bad = np.zeros(len(out), dtype=bool)
    why = np.full(len(out), "", dtype=object)
    for name, pattern in _PART_RULES.items():
        s = out[name]
        wrong = (s.notna() & ~s.astype(str).str.fullmatch(pattern)).to_numpy()
        why[wrong & ~bad] = [f"{name} {v!r} is not {_PART_WORDS[name]}" for v in s[wrong & ~bad]]
        bad |= wrong
    full = (
        out["county_code"].astype(str)
        + out["street_code"].astype(str)
        + out["community_code"].astype(str)
        + out["sequence"].astype(str)
    )
    complete = out[list(_PART_RULES)].notna().all(axis=1) & out["grid_code"].notna()
    mismatch = (complete & (out["grid_code"].astype(str) != full)).to_numpy() & ~bad
    why[mismatch] = [
        f"grid_code {c} differs from its parts {f}"
        for c, f in zip(out["grid_code"][mismatch], full[mismatch], strict=True)
    ]
    bad |= mismatch
    issues.add_rows("malformed_code", "rejected", rows[bad], out["grid_code"][bad], why[bad])
    return out, bad


def _grid_topology(out: pd.DataFrame, geoms, rows, area, issues: _Issues) -> None:
    """Overlaps between unit grids of one community and gaps against the boundary, in m²."""
    if len(geoms) == 0:
        return
    metric = tcrs.local_metric_crs(geoms)
    gm = np.asarray(gpd.GeoSeries(geoms, crs=tcrs.WGS84).to_crs(metric).values, dtype=object)
    community = (
        out["county_code"].astype(str)
        + out["street_code"].astype(str)
        + out["community_code"].astype(str)
    ).to_numpy()
    tree = shapely.STRtree(gm)
    left, right = tree.query(gm, predicate="intersects")
    pair = (left < right) & (community[left] == community[right])
    left, right = left[pair], right[pair]
    if left.size:
        overlap = shapely.area(shapely.intersection(gm[left], gm[right]))
        big = overlap > TOPOLOGY_TOLERANCE_M2
        codes = out["grid_code"].to_numpy()
        for i, j, a in zip(left[big], right[big], overlap[big], strict=True):
            issues.add(
                "grid_overlap",
                "warning",
                f"unit grid {codes[i]} overlaps {codes[j]} by {a:,.1f} m²",
                rows[i],
                codes[i],
            )
    if area is None:
        return
    fwd = pyproj.Transformer.from_crs(tcrs.WGS84, metric, always_xy=True)
    area_m = shapely.transform(area, lambda c: np.column_stack(fwd.transform(c[:, 0], c[:, 1])))
    cells = shapely.union_all(gm)
    gap = shapely.area(shapely.difference(area_m, cells))
    outside = shapely.area(shapely.difference(cells, area_m))
    if gap > TOPOLOGY_TOLERANCE_M2:
        issues.add(
            "grid_gap",
            "warning",
            f"the unit grids leave {gap:,.1f} m² of the community boundary uncovered",
        )
    if outside > TOPOLOGY_TOLERANCE_M2:
        issues.add(
            "grid_outside_boundary",
            "warning",
            f"{outside:,.1f} m² of the unit grids lie outside the community boundary",
        )
