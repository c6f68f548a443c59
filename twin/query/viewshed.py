"""Query 3: camera view cones cut by building shadows, coverage of public space, blind spots."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin.errors import ValidationError
from twin.query._common import (
    QueryResult,
    check_in_area,
    lonlat,
    positive,
    read,
    read_optional,
    to_metric,
    to_wgs84,
    utm_of_frame,
)
from twin.schema import CRS

LOGGER = logging.getLogger(__name__)

ARC_SEGMENTS = 64  # points on a cone's arc; 64 over the field of view keeps area error < 0.2 %
FAR_FACTOR = 50.0  # shadow vertices are thrown this many ranges away from the camera
MOUNTED_M = 0.5  # a camera this close to a footprint is mounted on it: no shadow from it


@dataclass
class Coverage:
    """Everything the coverage queries need, in the metric CRS."""

    crs: str
    cameras: gpd.GeoDataFrame  # EPSG:4326, as read
    cones: np.ndarray  # full view cone per camera
    visible: np.ndarray  # cone minus buildings and their shadows
    grids: gpd.GeoDataFrame | None
    public: np.ndarray | None  # per grid: the cell minus building footprints

    @property
    def covered(self) -> shapely.Geometry:
        return shapely.union_all(self.visible)


def view_cones(
    xy: np.ndarray, heading_deg, fov_deg, range_m, segments: int = ARC_SEGMENTS
) -> np.ndarray:
    """View cones as polygons in a metric CRS, built in one go (no per-camera loop).

    Heading is clockwise from north; a field of view of 360° gives a disc.
    """
    heading = np.asarray(heading_deg, dtype=float)[:, None]
    fov = np.minimum(np.asarray(fov_deg, dtype=float), 360.0)[:, None]
    rng = np.asarray(range_m, dtype=float)[:, None]
    steps = np.linspace(0.0, 1.0, segments + 1)[None, :]
    bearing = np.radians(heading - fov / 2 + fov * steps)  # clockwise from north
    arc_x = xy[:, 0:1] + rng * np.sin(bearing)
    arc_y = xy[:, 1:2] + rng * np.cos(bearing)
    full = (fov >= 360.0)[:, 0]
    apex = np.where(full[:, None], np.c_[arc_x[:, 0], arc_y[:, 0]], xy)
    coords = np.concatenate(
        [apex[:, None, :], np.stack([arc_x, arc_y], axis=2), apex[:, None, :]], axis=1
    )
    return shapely.polygons(coords)


def _shadows(xy, rng, cones, footprints) -> np.ndarray:
    """Per camera, the union of footprints in view and the shadows they cast (None if none).

    The shadow of a footprint seen from a camera is the convex hull of its vertices and the same
    vertices thrown far away along the rays from the camera: exact for convex footprints, a
    slight over-estimate in the notch of a concave one.
    """
    n = len(cones)
    blocked = np.full(n, None, dtype=object)
    if len(footprints) == 0 or n == 0:
        return blocked
    cam, bld = shapely.STRtree(footprints).query(cones, predicate="intersects")
    if len(cam) == 0:
        return blocked
    fp = footprints[bld]
    gap = shapely.distance(shapely.points(xy[cam]), fp)
    coords, part = shapely.get_coordinates(fp, return_index=True)
    origin = xy[cam][part]
    ray = coords - origin
    length = np.hypot(ray[:, 0], ray[:, 1])
    length[length == 0] = 1e-9
    far = origin + ray * (FAR_FACTOR * rng[cam][part] / length)[:, None]
    owner = np.concatenate([part, part])
    order = np.argsort(owner, kind="stable")
    hulls = shapely.convex_hull(
        shapely.multipoints(np.concatenate([coords, far])[order], indices=owner[order])
    )
    hulls = np.where(gap < MOUNTED_M, fp, hulls)  # a camera on a wall: only the wall blocks
    order = np.argsort(cam, kind="stable")
    cam, hulls = cam[order], hulls[order]
    slot = np.arange(len(cam)) - np.searchsorted(cam, cam, side="left")
    table = np.full((n, int(slot.max()) + 1), None, dtype=object)
    table[cam, slot] = hulls
    unions = shapely.union_all(table, axis=1)
    has = np.zeros(n, dtype=bool)
    has[cam] = True
    blocked[has] = unions[has]
    return blocked


def compute(
    cameras: gpd.GeoDataFrame,
    buildings: gpd.GeoDataFrame | None,
    grids: gpd.GeoDataFrame | None,
    crs: str | None = None,
) -> Coverage:
    """Cones, visible parts and public space for frames in EPSG:4326 (what-if uses this too)."""
    crs = crs or utm_of_frame(grids, cameras)
    cams = to_metric(cameras, crs) if len(cameras) else np.array([], dtype=object)
    xy = shapely.get_coordinates(cams) if len(cams) else np.zeros((0, 2))
    rng = cameras["range_m"].to_numpy(dtype=float)
    cones = view_cones(
        xy,
        cameras["heading_deg"].to_numpy(dtype=float),
        cameras["fov_deg"].to_numpy(dtype=float),
        rng,
    )
    footprints = (
        to_metric(buildings, crs)
        if buildings is not None and len(buildings)
        else np.array([], dtype=object)
    )
    blocked = _shadows(xy, rng, cones, footprints)
    has = ~shapely.is_missing(blocked)
    visible = cones.copy()
    if has.any():
        visible[has] = shapely.difference(cones[has], blocked[has])
    public = None
    if grids is not None and len(grids):
        cells = to_metric(grids, crs)
        public = cells
        if len(footprints):
            public = shapely.difference(cells, shapely.union_all(footprints))
    return Coverage(crs, cameras, cones, visible, grids, public)


def _inputs(store: Any, versions: dict, only_online: bool, need_grids: bool):
    cameras = read(store, "cameras", versions)
    if only_online and "status" in cameras:
        cameras = cameras[cameras["status"].fillna("online") == "online"]
    buildings = read_optional(store, "buildings", versions)
    grids = read_optional(store, "grid_cells", versions) if need_grids else None
    if need_grids and (grids is None or not len(grids)):
        raise ValidationError("coverage per grid needs the grid_cells layer; load it first")
    return cameras.reset_index(drop=True), buildings, grids


def camera_views(cov: Coverage) -> gpd.GeoDataFrame:
    """One row per camera: its visible area (polygon) and how much of its cone is blocked."""
    out = pd.DataFrame(cov.cameras.drop(columns="geometry"))
    out["cone_area_m2"] = shapely.area(cov.cones)
    out["visible_area_m2"] = shapely.area(cov.visible)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["blocked_share"] = np.where(
            out["cone_area_m2"] > 0, 1 - out["visible_area_m2"] / out["cone_area_m2"], 0.0
        )
    return gpd.GeoDataFrame(out, geometry=to_wgs84(cov.visible, cov.crs).values, crs=CRS)


def grid_coverage(cov: Coverage) -> gpd.GeoDataFrame:
    """Per unit grid: public space (cell minus buildings), the part of it seen, and the share."""
    seen = shapely.intersection(cov.public, cov.covered)
    public_area = shapely.area(cov.public)
    seen_area = shapely.area(seen)
    out = pd.DataFrame(
        {
            "grid_code": cov.grids["grid_code"].to_numpy(),
            "name": cov.grids["name"].to_numpy(),
            "public_area_m2": public_area,
            "covered_area_m2": seen_area,
        }
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        out["coverage_share"] = np.where(public_area > 0, seen_area / public_area, 0.0)
    return gpd.GeoDataFrame(out, geometry=cov.grids.geometry.values, crs=CRS)


def blind_spot_frame(cov: Coverage, min_area_m2: float) -> gpd.GeoDataFrame:
    """Parts of public space no camera sees, as separate polygons of at least *min_area_m2*."""
    unseen = shapely.difference(cov.public, cov.covered)
    parts, owner = shapely.get_parts(unseen, return_index=True)
    area = shapely.area(parts)
    keep = (shapely.get_type_id(parts) == 3) & (area >= min_area_m2)
    parts, owner, area = parts[keep], owner[keep], area[keep]
    codes = cov.grids["grid_code"].to_numpy()[owner]
    out = pd.DataFrame({"grid_code": codes, "area_m2": area})
    out = gpd.GeoDataFrame(out, geometry=to_wgs84(parts, cov.crs).values, crs=CRS)
    out = out.sort_values(["area_m2", "grid_code"], ascending=[False, True]).reset_index(drop=True)
    out.insert(0, "blind_spot", np.arange(1, len(out) + 1))
    return out


def coverage(
    store: Any, *, output: str = "grids", min_area_m2: float = 10.0, only_online: bool = False
) -> QueryResult:
    """Camera coverage per camera, per unit grid, or the blind spots.

    ``output`` = ``"cameras"`` (visible area per camera), ``"grids"`` (share of each unit grid's
    public space seen) or ``"blind_spots"`` (unseen public space).

    Parameters
    ----------
    store
        An open store with cameras, buildings and (for grids / blind spots) grid_cells.
    output
        ``"cameras"``, ``"grids"`` or ``"blind_spots"``.
    min_area_m2
        Blind spots smaller than this are left out (slivers along walls).
    only_online
        Count only cameras whose status is ``online`` (or unknown).

    Returns
    -------
    QueryResult
        Method ``"view-cone-shadow"``; areas in m² in the UTM zone of the data.

    Raises
    ------
    LayerNotFoundError, ValidationError
        No cameras layer, no grid_cells for grids or blind spots, bad output or area.
    """
    outputs = ("cameras", "grids", "blind_spots")
    if output not in outputs:
        raise ValidationError(f"output must be one of {', '.join(outputs)}, got {output!r}")
    min_area = positive("min_area_m2", min_area_m2)
    versions: dict[str, Any] = {}
    cameras, buildings, grids = _inputs(store, versions, only_online, output != "cameras")
    cov = compute(cameras, buildings, grids)
    frame = (
        camera_views(cov)
        if output == "cameras"
        else grid_coverage(cov)
        if output == "grids"
        else blind_spot_frame(cov, min_area)
    )
    params = {"output": output, "min_area_m2": min_area, "only_online": only_online}
    notes = {}
    if cov.public is not None:
        public = float(shapely.area(cov.public).sum())
        seen = float(shapely.area(shapely.intersection(cov.public, cov.covered)).sum())
        notes = {
            "public_area_m2": public,
            "covered_area_m2": seen,
            "coverage_share": seen / public if public else 0.0,
        }
    return QueryResult(
        f"coverage_{output}", frame, params, cov.crs, versions, "view-cone-shadow", notes=notes
    )


def cameras_seeing(store: Any, point: Any, *, only_online: bool = False) -> QueryResult:
    """Find the cameras whose view (cone minus building shadows) covers *point* (lon, lat).

    Raises
    ------
    ValidationError
        A bad point, or one outside the community area.
    """
    from twin.query._common import study_area

    lon, lat = lonlat(point)
    versions: dict[str, Any] = {}
    check_in_area(study_area(store, versions), lon, lat)
    cameras, buildings, _ = _inputs(store, versions, only_online, False)
    cov = compute(cameras, buildings, None)
    pt = gpd.GeoSeries([shapely.Point(lon, lat)], crs=CRS).to_crs(cov.crs).values[0]
    sees = shapely.covers(cov.visible, pt)
    out = cameras[sees].copy()
    out["distance_m"] = shapely.distance(to_metric(out, cov.crs), pt)
    out = out.sort_values(["distance_m", "camera_id"]).reset_index(drop=True)
    return QueryResult(
        "cameras_seeing",
        gpd.GeoDataFrame(out, crs=CRS),
        {"point": point, "only_online": only_online},
        cov.crs,
        versions,
        "view-cone-shadow",
    )
