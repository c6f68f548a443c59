"""Vectorised enrichment: the unit grid (later building, lot, camera) each feature falls in."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from twin.errors import ValidationError
from twin.schema import ASSIGNED_COLUMNS

LOGGER = logging.getLogger(__name__)

ASSIGNED_NAMES = tuple(c.name for c in ASSIGNED_COLUMNS)


def representative_points(geoms: np.ndarray | gpd.GeoSeries) -> np.ndarray:
    """One point per geometry that lies on it: the point itself, or ``shapely.point_on_surface``.

    Missing or empty geometries give ``None``.
    """
    values = np.asarray(geoms.values if isinstance(geoms, gpd.GeoSeries) else geoms, dtype=object)
    out = np.full(len(values), None, dtype=object)
    ok = ~(shapely.is_missing(values) | shapely.is_empty(values))
    out[ok] = shapely.point_on_surface(values[ok])
    return out


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
        # rank of each polygon by key: ties resolve to the smallest key
        self._rank = np.empty(len(self.keys), dtype=np.int64)
        self._rank[np.argsort(self.keys.astype(str), kind="stable")] = np.arange(len(self.keys))
        self.attrs = {c: np.asarray(polygons[c], dtype=object)[usable] for c in wanted}
        self.tree = shapely.STRtree(self.geometries)

    def __len__(self) -> int:
        return len(self.geometries)

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
        result = np.full(len(points), -1, dtype=np.int64)
        present = np.flatnonzero(~shapely.is_missing(points))
        if len(present) == 0 or len(self) == 0:
            return result
        query = points[present]
        if (
            crs is not None
            and self.crs is not None
            and not CRS.from_user_input(crs).equals(self.crs)
        ):
            query = gpd.GeoSeries(query, crs=crs).to_crs(self.crs).values
        hits, polys = self.tree.query(np.asarray(query, dtype=object), predicate="intersects")
        if len(hits):
            order = np.lexsort((self._rank[polys], hits))
            hits, polys = hits[order], polys[order]
            first = np.flatnonzero(np.r_[True, hits[1:] != hits[:-1]])
            result[present[hits[first]]] = polys[first]
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
        found = where >= 0
        out = {}
        for name in [self.key, *(self.attrs if columns is None else columns)]:
            source = self.keys if name == self.key else self.attrs[name]
            column = np.full(len(where), None, dtype=object)
            column[found] = source[where[found]]
            out[name] = column
        return pd.DataFrame(out, dtype=object)


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
    features: gpd.GeoDataFrame, grid_cells: gpd.GeoDataFrame | PolygonIndex
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
    found = index.lookup(features.geometry, columns=ASSIGNED_NAMES[1:])
    out = features.copy()
    for name in ASSIGNED_NAMES:
        out[name] = pd.Series(found[name].to_numpy(), index=out.index, dtype=object)
    missed = int(found["grid_code"].isna().sum())
    if missed:
        LOGGER.debug("%d of %d features lie in no unit grid", missed, len(out))
    return out
