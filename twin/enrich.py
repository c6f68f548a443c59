"""Vectorised enrichment: the unit grid, building, parking lot and cameras of each feature."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from twin.crs import offset_lonlat
from twin.errors import ValidationError
from twin.schema import ASSIGNED_COLUMNS

LOGGER = logging.getLogger(__name__)

ASSIGNED_NAMES = tuple(c.name for c in ASSIGNED_COLUMNS)
#: the columns of the grid_cells layer that :func:`grid_index` reads (and the geometry)
GRID_INDEX_COLUMNS = ("grid_code", "county_code", "street_code", "community_code", "resp_grid_id")
#: Segments along a view cone's arc; 32 keeps the area within 0.2 % of the true sector for 60°.
CONE_SEGMENTS = 32


def representative_points(geoms: np.ndarray | gpd.GeoSeries) -> np.ndarray:
    """One point per geometry that lies on it: the point itself, or ``shapely.point_on_surface``.

    Missing or empty geometries give ``None``. Points are passed through as they are (only the
    other geometry types pay for ``point_on_surface``).
    """
    values = np.asarray(geoms.values if isinstance(geoms, gpd.GeoSeries) else geoms, dtype=object)
    kinds = shapely.get_type_id(values)  # -1 missing, 0 point
    out = values.copy()
    out[kinds < 0] = None
    if (kinds == 0).any():
        points = np.flatnonzero(kinds == 0)
        out[points[shapely.is_empty(values[points])]] = None
    other = np.flatnonzero(kinds > 0)
    if len(other):
        shapes = values[other]
        full = ~shapely.is_empty(shapes)
        out[other] = None
        out[other[full]] = shapely.point_on_surface(shapes[full])
    return out


def _first_by_rank(hits: np.ndarray, found: np.ndarray, rank: Callable[[], np.ndarray]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Reduce STRtree query pairs to one per input: the candidate of smallest rank.

    *hits* and *found* are the pairs ``STRtree.query`` returns (input position, tree position);
    *rank* gives the tie-break rank of every tree geometry and is only called when an input
    has several candidates. Returns the distinct input positions (increasing) and the chosen
    tree position of each.
    """
    if len(hits) > 1 and not (hits[1:] >= hits[:-1]).all():  # shapely returns them in order
        order = np.argsort(hits, kind="stable")
        hits, found = hits[order], found[order]
    starts = np.flatnonzero(np.r_[True, hits[1:] != hits[:-1]])
    if len(starts) == len(hits):
        return hits, found
    # ties (shared edges, overlaps): the smallest rank within each run of equal inputs
    ranks = rank()
    best = np.minimum.reduceat(ranks[found], starts)
    by_rank = np.empty(len(ranks), dtype=np.int64)
    by_rank[ranks] = np.arange(len(ranks))
    return hits[starts], by_rank[best]


class PointBatch:
    """The points of one batch, with their coordinates and an STRtree over them built on demand.

    Several indexes answer the same batch (grid, building, lot, cameras): the batch's tree is
    built once and shared by all of them.
    """

    def __init__(
        self, points: np.ndarray, xy: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        self.points = np.asarray(points, dtype=object)
        self._tree: shapely.STRtree | None = None
        self._xy = xy  # the points' coordinates, when the caller has them already

    def __len__(self) -> int:
        return len(self.points)

    @property
    def tree(self) -> shapely.STRtree:
        """An STRtree over the points (missing and empty points are left out)."""
        if self._tree is None:
            self._tree = shapely.STRtree(self.points)
        return self._tree

    @property
    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """The points' coordinates (NaN where a point is missing)."""
        if self._xy is None:
            self._xy = (shapely.get_x(self.points), shapely.get_y(self.points))
        return self._xy


def intersecting_pairs(
    batch: PointBatch, polygons: np.ndarray, tree: shapely.STRtree
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (point, polygon) position pairs where a point lies in or on a polygon.

    Whichever side is smaller is looked up in the other's tree: for a large batch, the polygons'
    envelopes are queried against the batch's point tree and the candidates tested with
    ``shapely.intersects_xy`` on the (prepared) polygons, which is several times faster than a
    tree query per point; for a small batch, one query per point against the polygons' *tree*.
    Both give the same pairs (the boundary counts as inside).
    """
    if len(batch) == 0 or len(polygons) == 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    if len(batch) <= len(polygons):
        return tree.query(batch.points, predicate="intersects")
    shapes, candidates = batch.tree.query(polygons)
    x, y = batch.xy
    inside = shapely.intersects_xy(polygons[shapes], x[candidates], y[candidates])
    return candidates[inside], shapes[inside]


class PolygonIndex:
    """An STRtree over polygons and their attribute arrays: built once, queried per batch.

    A point that touches several polygons (a shared edge, overlapping polygons) goes to the one
    with the smallest key, so the answer never depends on the order of the polygons.

    Parameters
    ----------
    polygons
        The polygons, with a CRS, and the attribute columns to hand out.
    key
        Column that identifies a polygon and breaks ties (smallest wins).
    columns
        Attribute columns to keep for :meth:`lookup`; default every non-geometry column.

    Raises
    ------
    ValidationError
        If *key* or one of *columns* is not a column of *polygons*.
    """

    def __init__(
        self, polygons: gpd.GeoDataFrame, key: str, columns: Sequence[str] | None = None
    ) -> None:
        names = [c for c in polygons.columns if c != polygons.geometry.name]
        wanted = list(names if columns is None else columns)
        missing = [c for c in [key, *wanted] if c not in polygons.columns]
        if missing:
            raise ValidationError(
                f"polygon index: columns {missing} are not in the polygons; they have {names}."
            )
        values = np.asarray(polygons.geometry.values, dtype=object)
        usable = ~(shapely.is_missing(values) | shapely.is_empty(values))
        self.crs: CRS | None = polygons.crs
        self.geometries = values[usable]
        self.key = key
        self.keys = np.asarray(polygons[key], dtype=object)[usable]
        self._rank_cache: np.ndarray | None = None
        self._same_crs: dict[str, bool] = {}
        self.attrs = {c: np.asarray(polygons[c], dtype=object)[usable] for c in wanted}
        self.tree = shapely.STRtree(self.geometries)
        shapely.prepare(self.geometries)  # for the large-batch path of intersecting_pairs

    def __len__(self) -> int:
        return len(self.geometries)

    @property
    def _rank(self) -> np.ndarray:
        """Rank of each polygon by key (ties resolve to the smallest key); built on first tie."""
        if self._rank_cache is None:
            rank = np.empty(len(self.keys), dtype=np.int64)
            rank[np.argsort(self.keys.astype(str), kind="stable")] = np.arange(len(self.keys))
            self._rank_cache = rank
        return self._rank_cache

    def _needs_transform(self, crs: CRS | str | int | None) -> bool:
        if crs is None or self.crs is None or crs is self.crs:
            return False
        given = CRS.from_user_input(crs)
        key = given.srs or given.to_wkt()
        if key not in self._same_crs:  # comparing CRSs is slow (WKT): once per CRS
            self._same_crs[key] = not given.equals(self.crs)
        return self._same_crs[key]

    def locate_points(self, points: np.ndarray | PointBatch) -> np.ndarray:
        """Return the position of the polygon each point (in the index's CRS) lies in, or -1.

        The fast path for points already built (a :class:`PointBatch` is shared by several
        indexes): no representative point, no CRS check. Missing or empty points give -1.
        """
        batch = points if isinstance(points, PointBatch) else PointBatch(points)
        result = np.full(len(batch), -1, dtype=np.int64)
        hits, polys = intersecting_pairs(batch, self.geometries, self.tree)
        if len(hits):
            where, chosen = _first_by_rank(hits, polys, lambda: self._rank)
            result[where] = chosen
        return result

    def locate(
        self, geoms: np.ndarray | gpd.GeoSeries, crs: CRS | str | int | None = None
    ) -> np.ndarray:
        """Return the position of the polygon each representative point falls in, or -1.

        Parameters
        ----------
        geoms
            Points, lines or polygons (lines and polygons use ``shapely.point_on_surface``).
        crs
            CRS of *geoms* (taken from a GeoSeries when not given); converted to the index's CRS
            when they differ.
        """
        if isinstance(geoms, gpd.GeoSeries):
            crs = geoms.crs if crs is None else crs
        points = representative_points(geoms)
        if not self._needs_transform(crs):
            return self.locate_points(points)  # a missing point has no hit: -1
        result = np.full(len(points), -1, dtype=np.int64)
        present = np.flatnonzero(~shapely.is_missing(points))
        if len(present):
            query = gpd.GeoSeries(points[present], crs=crs).to_crs(self.crs).values
            result[present] = self.locate_points(np.asarray(query, dtype=object))
        return result

    def lookup(
        self,
        geoms: np.ndarray | gpd.GeoSeries,
        columns: Sequence[str] | None = None,
        crs: CRS | str | int | None = None,
    ) -> pd.DataFrame:
        """Return the attributes of the polygon each geometry falls in (``None`` if in none).

        Returns
        -------
        pandas.DataFrame
            One row per geometry, in order, with the key column and the asked *columns*.
        """
        where = self.locate(geoms, crs=crs)
        names = [self.key, *(self.attrs if columns is None else columns)]
        return pd.DataFrame({name: self.take(name, where) for name in names}, dtype=object)

    def take(self, name: str, where: np.ndarray) -> np.ndarray:
        """Return column *name* (the key or an attribute) at positions *where* (-1 gives None)."""
        source = self.keys if name == self.key else self.attrs[name]
        found = where >= 0
        column = np.full(len(where), None, dtype=object)
        column[found] = source[where[found]]
        return column


def grid_index(grid_cells: gpd.GeoDataFrame) -> PolygonIndex:
    """Build a :class:`PolygonIndex` over unit grids that hands out the four assigned columns.

    The community (12 digits) and street (9 digits) codes are built from the grid's stored parts
    (``county_code`` + ``street_code`` + ``community_code``); where the parts are missing they are
    read off the grid code's leading digits.

    Raises
    ------
    ValidationError
        If the grids have no ``grid_code`` column.
    """
    if "grid_code" not in grid_cells.columns:
        raise ValidationError(
            "grid cells need a 'grid_code' column; load them with scripts/load_layer.py grid_cells."
        )
    code = grid_cells["grid_code"].astype("string")

    def part(name: str, start: int, stop: int) -> pd.Series:
        fallback = code.str.slice(start, stop)
        if name not in grid_cells.columns:
            return fallback
        return grid_cells[name].astype("string").fillna(fallback)

    street9 = part("county_code", 0, 6) + part("street_code", 6, 9)
    community12 = street9 + part("community_code", 9, 12)
    resp = (
        grid_cells["resp_grid_id"]
        if "resp_grid_id" in grid_cells.columns
        else pd.Series(None, index=grid_cells.index, dtype=object)
    )
    frame = gpd.GeoDataFrame(
        {
            "grid_code": code.astype(object),
            "resp_grid_id": resp.astype(object).where(resp.notna(), None),
            "community_code": community12.astype(object),
            "street_code": street9.astype(object),
        },
        geometry=grid_cells.geometry.values,
        crs=grid_cells.crs,
    )
    return PolygonIndex(frame, key="grid_code", columns=ASSIGNED_NAMES[1:])


def assign_grids(
    features: gpd.GeoDataFrame,
    grid_cells: gpd.GeoDataFrame | PolygonIndex,
    *,
    located: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """Return a copy of *features* with the codes of the unit grid each one lies in.

    The columns filled are ``grid_code``, ``resp_grid_id``, ``community_code`` (12 digits) and
    ``street_code`` (9 digits).

    Points are tested as they are; lines and polygons by their representative point
    (``shapely.point_on_surface``). A point on an edge shared by two grids goes to the smaller
    grid code. Features outside every grid (or without geometry) get ``None``.

    Parameters
    ----------
    features
        Located features with a CRS.
    grid_cells
        The unit grids (a ``grid_cells`` layer frame), or a :func:`grid_index` built from them
        once for many batches.
    located
        What ``grid_cells.locate`` (a :func:`grid_index`) returned for these features'
        geometries, in order, when the caller computed it already (:func:`twin.load.load_layer`
        does, while the frame is being validated).

    Raises
    ------
    ValidationError
        If the features are not a GeoDataFrame or the grids have no ``grid_code``.
    """
    if not isinstance(features, gpd.GeoDataFrame):
        raise ValidationError(
            f"assign_grids needs a GeoDataFrame of located features; got {type(features).__name__}."
        )
    index = grid_cells if isinstance(grid_cells, PolygonIndex) else grid_index(grid_cells)
    if located is None:
        located = index.locate(features.geometry)
    elif not isinstance(grid_cells, PolygonIndex) or len(located) != len(features):
        raise ValueError("located must come from the same grid index and these features")
    out = features.copy()
    for name in ASSIGNED_NAMES:
        out[name] = pd.Series(index.take(name, located), index=out.index, dtype=object)
    missed = int((located < 0).sum())
    if missed:
        LOGGER.debug("%d of %d features lie in no unit grid", missed, len(out))
    return out


# -- camera view cones (also drawn by twin.deck) -----------------------------------------------


def camera_cones(cameras: gpd.GeoDataFrame, segments: int = CONE_SEGMENTS) -> gpd.GeoDataFrame:
    """Return the ground area each camera sees: a circular sector, as polygons in EPSG:4326.

    The sector opens ``fov_deg`` around ``heading_deg`` (clockwise from north) out to
    ``range_m`` metres. All wedges are built at once, in true metres and bearings around each
    camera (:func:`twin.crs.offset_lonlat`).

    Returns
    -------
    GeoDataFrame
        ``camera_id`` and the wedge geometry, for cameras with heading, field of view and range.

    Raises
    ------
    ValidationError
        If the frame lacks one of the columns ``camera_id``, ``heading_deg``, ``fov_deg``,
        ``range_m``.
    """
    needed = ["camera_id", "heading_deg", "fov_deg", "range_m"]
    absent = [c for c in needed if c not in cameras]
    if absent:
        raise ValidationError(
            f"camera view cones need the columns {needed}; missing {absent}. "
            "Load the cameras layer through scripts/load_layer.py, which declares them."
        )
    numbers = cameras[needed[1:]].apply(pd.to_numeric, errors="coerce")
    ok = numbers.notna().all(axis=1).to_numpy() & (numbers["range_m"] > 0).to_numpy()
    cams = cameras[ok]
    if len(cams) == 0:
        return gpd.GeoDataFrame({"camera_id": []}, geometry=[], crs=4326)
    centres = cams.geometry if cams.crs is None else cams.geometry.to_crs(4326)
    x0 = centres.x.to_numpy()[:, None]
    y0 = centres.y.to_numpy()[:, None]
    heading = numbers.loc[ok, "heading_deg"].to_numpy()[:, None]
    fov = np.clip(numbers.loc[ok, "fov_deg"].to_numpy()[:, None], 0.0, 360.0)
    reach = numbers.loc[ok, "range_m"].to_numpy()[:, None]
    # bearings along the arc, clockwise from north: east = r·sin(bearing), north = r·cos(bearing),
    # laid out in metres around each camera (no projection of every vertex)
    steps = np.linspace(0.0, 1.0, segments + 1)[None, :]
    bearing = np.radians(heading - fov / 2 + fov * steps)
    arc_x, arc_y = offset_lonlat(x0, y0, reach * np.sin(bearing), reach * np.cos(bearing))
    ring_x = np.hstack([x0, arc_x, x0])
    ring_y = np.hstack([y0, arc_y, y0])
    wedges = shapely.polygons(np.stack([ring_x, ring_y], axis=-1))
    return gpd.GeoDataFrame(
        {"camera_id": cams["camera_id"].astype("string").astype(object).to_numpy()},
        geometry=wedges,
        crs=4326,
    )


class ConeIndex:
    """An STRtree over camera view cones: which cameras see each point, for whole batches.

    Parameters
    ----------
    cameras
        Camera points with ``camera_id``, ``heading_deg`` (clockwise from north), ``fov_deg``
        and ``range_m`` (metres); the cones are built once with :func:`camera_cones`.
    """

    def __init__(self, cameras: gpd.GeoDataFrame) -> None:
        cones = camera_cones(cameras) if len(cameras) else gpd.GeoDataFrame(
            {"camera_id": []}, geometry=[], crs=4326
        )
        self.cones = cones
        self.camera_ids = np.asarray(cones["camera_id"], dtype=object)
        self.geometries = np.asarray(cones.geometry.values, dtype=object)
        self.tree = shapely.STRtree(self.geometries)
        shapely.prepare(self.geometries)

    def __len__(self) -> int:
        return len(self.camera_ids)

    def covering(self, points: np.ndarray | PointBatch) -> np.ndarray:
        """Return, per point (EPSG:4326), the sorted tuple of cameras whose cone covers it."""
        batch = points if isinstance(points, PointBatch) else PointBatch(points)
        out = _no_cameras(len(batch))
        hits, cones = intersecting_pairs(batch, self.geometries, self.tree)
        if len(hits):
            ids = self.camera_ids[cones].astype(str)
            order = np.lexsort((ids, hits))
            hits, ids = hits[order], ids[order].tolist()
            starts = np.flatnonzero(np.r_[True, hits[1:] != hits[:-1]])
            bounds = zip(starts.tolist(), [*starts[1:].tolist(), len(ids)], strict=True)
            # one tuple per covered point: only the covered points pay for Python objects
            out[hits[starts]] = np.fromiter((tuple(ids[a:b]) for a, b in bounds), dtype=object,
                                            count=len(starts))
        return out


#: The columns :class:`Enricher` adds: the four grid columns, building, lot and cameras.
ENRICHED_COLUMNS = (*ASSIGNED_NAMES, "building_code", "lot_id", "camera_ids")


class Enricher:
    """The unit grid, building, parking lot and covering cameras of points, for whole batches.

    Built once from the twin's layers (each optional), then :meth:`enrich` answers a batch of
    points with STRtree queries only. Parking lots given as points are not matched by
    location (sensors name their lot in ``ref_lot``).

    Parameters
    ----------
    grid_cells, buildings, parking, cameras
        Layer frames as the store returns them (EPSG:4326), or None when absent.
    """

    def __init__(
        self,
        *,
        grid_cells: gpd.GeoDataFrame | None = None,
        buildings: gpd.GeoDataFrame | None = None,
        parking: gpd.GeoDataFrame | None = None,
        cameras: gpd.GeoDataFrame | None = None,
    ) -> None:
        self.grids = grid_index(grid_cells) if _has(grid_cells) else None
        self.buildings = (
            PolygonIndex(_polygons(buildings), key="building_code", columns=())
            if _has(buildings) else None
        )
        self.lots = (
            PolygonIndex(_polygons(parking), key="lot_id", columns=())
            if _has(parking) else None
        )
        self.cones = ConeIndex(cameras) if _has(cameras) else None

    def enrich(self, lon: np.ndarray | pd.Series, lat: np.ndarray | pd.Series) -> pd.DataFrame:
        """Return one row per (lon, lat) with :data:`ENRICHED_COLUMNS` (None where nothing).

        Missing coordinates give empty answers; ``camera_ids`` is a tuple (maybe empty).
        """
        x = np.asarray(lon, dtype=float)
        y = np.asarray(lat, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        points = np.full(len(x), None, dtype=object)
        if ok.any():
            points[ok] = shapely.points(x[ok], y[ok])
        # one batch (its points and, when large, a tree over them) for every index (EPSG:4326)
        points = PointBatch(points, xy=(np.where(ok, x, np.nan), np.where(ok, y, np.nan)))
        none = np.full(len(x), None, dtype=object)
        columns: dict[str, np.ndarray] = {}
        if self.grids is not None:
            where = self.grids.locate_points(points)
            columns.update({name: self.grids.take(name, where) for name in ASSIGNED_NAMES})
        else:
            columns.update({name: none for name in ASSIGNED_NAMES})
        for name, index in (("building_code", self.buildings), ("lot_id", self.lots)):
            columns[name] = (
                index.take(name, index.locate_points(points)) if index is not None else none
            )
        if self.cones is not None:
            columns["camera_ids"] = self.cones.covering(points)
        else:
            columns["camera_ids"] = _no_cameras(len(x))
        # dtype=object keeps None as None (pandas would turn it into NaN in a str column)
        return pd.DataFrame(columns, dtype=object)


def _no_cameras(n: int) -> np.ndarray:
    return np.fromiter(((),) * n, dtype=object, count=n)


def _has(frame: gpd.GeoDataFrame | None) -> bool:
    return frame is not None and len(frame) > 0


def _polygons(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    kinds = shapely.get_type_id(np.asarray(frame.geometry.values, dtype=object))
    return frame[np.isin(kinds, (3, 6))]
