"""Query 8: what-if — add, move or remove cameras or facilities without saving, and compare."""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from twin import layers
from twin.errors import NotFoundError, ValidationError
from twin.query import lifecircle
from twin.query import viewshed as cov_mod
from twin.query._common import (
    QueryResult,
    check_in_area,
    lonlat,
    positive,
    read,
    study_area,
)
from twin.schema import CRS, validate_layer_frame

LOGGER = logging.getLogger(__name__)

TARGETS = {"coverage": "cameras", "life_circles": "facilities"}


def edit_layer(
    frame: gpd.GeoDataFrame,
    layer: str,
    *,
    add: Any = None,
    move: Any = None,
    remove: Any = None,
    area: shapely.Geometry | None = None,
) -> gpd.GeoDataFrame:
    """Return a changed copy of *frame*; the stored layer is untouched.

    Parameters
    ----------
    frame
        The layer as read.
    layer
        Its name (``cameras`` or ``facilities``).
    add
        New features: a GeoDataFrame, or records with ``lon`` and ``lat`` and the declared
        columns (ids must be new).
    move
        ``{id: (lon, lat)}``.
    remove
        Ids to leave out.
    area
        When given, new and moved points must lie in it.

    Raises
    ------
    ValidationError, NotFoundError
        Declared rules broken by the new features, unknown ids, points outside the area.
    """
    spec = layers.get_layer(layer)
    idf = spec.id_field
    out = frame.copy()
    ids = set(out[idf].astype(str))
    if remove:
        remove = [remove] if isinstance(remove, str) else list(remove)
        unknown = [r for r in remove if str(r) not in ids]
        if unknown:
            raise NotFoundError(f"cannot remove {unknown}: no such {idf} in {layer}")
        out = out[~out[idf].astype(str).isin([str(r) for r in remove])]
    if move:
        for fid, where in dict(move).items():
            lon, lat = lonlat(where, f"new place of {fid}")
            check_in_area(area, lon, lat, f"new place of {fid}")
            hit = out[idf].astype(str) == str(fid)
            if not hit.any():
                raise NotFoundError(f"cannot move {fid!r}: no such {idf} in {layer}")
            out.loc[hit, "geometry"] = shapely.Point(lon, lat)
    if add is not None and len(add):
        if not isinstance(add, gpd.GeoDataFrame):
            recs = pd.DataFrame(list(add) if not isinstance(add, pd.DataFrame) else add)
            if not {"lon", "lat"} <= set(recs.columns):
                raise ValidationError("features to add need lon and lat (or pass a GeoDataFrame)")
            pts = [
                lonlat((x, y), "added feature")
                for x, y in zip(recs["lon"], recs["lat"], strict=True)
            ]
            add = gpd.GeoDataFrame(
                recs.drop(columns=["lon", "lat"]), geometry=[shapely.Point(p) for p in pts], crs=CRS
            )
        for p in add.to_crs(CRS).geometry.representative_point():
            check_in_area(area, p.x, p.y, "added feature")
        new = validate_layer_frame(spec, add)
        clash = sorted(set(new[idf].astype(str)) & set(out[idf].astype(str)))
        if clash:
            raise ValidationError(f"{layer} already has {idf} {clash}; give the new ones new ids")
        out = pd.concat([out, new], ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=CRS).reset_index(drop=True)


def what_if(
    store: Any,
    query: str = "coverage",
    *,
    add: Any = None,
    move: Any = None,
    remove: Any = None,
    **params: Any,
) -> QueryResult:
    """Run *query* before and after changing cameras (coverage) or facilities (life circles).

    Parameters
    ----------
    store
        An open store; nothing is written to it.
    query
        ``"coverage"`` (edits cameras) or ``"life_circles"`` (edits facilities).
    add, move, remove
        The changes, see :func:`edit_layer`.
    **params
        Parameters of the query (life circles: circles, kinds, method, uses,
        persons_per_household; coverage: only_online, min_area_m2 of a blind spot).

    Returns
    -------
    QueryResult
        Coverage: per unit grid ``coverage_share_before`` / ``_after`` / ``delta``, and
        ``blind_spots_before`` / ``_after`` / ``blind_spots_closed`` (blind spots of before now
        seen but for less than ``min_area_m2``); life circles: per building lacks before and
        after. ``summary`` compares the totals (coverage: also blind spots and their area).

    Raises
    ------
    ValidationError, NotFoundError
        Unknown query or parameter, bad changes.
    """
    if query not in TARGETS:
        raise ValidationError(f"what-if runs {' or '.join(TARGETS)}, not {query!r}")
    if add is None and not move and not remove:
        raise ValidationError("say what changes: add=, move= or remove=")
    versions: dict[str, Any] = {}
    area = study_area(store, versions)
    layer = TARGETS[query]
    before = read(store, layer, versions)
    after = edit_layer(before, layer, add=add, move=move, remove=remove, area=area)
    change = {"add": None if add is None else len(add), "move": move, "remove": remove}
    if query == "coverage":
        allowed = {"only_online", "min_area_m2"}
        _check(params, allowed)
        min_area = positive("min_area_m2", params.get("min_area_m2", 10.0))
        cams_b, buildings, grids = cov_mod._inputs(
            store, versions, bool(params.get("only_online")), True
        )
        if params.get("only_online") and "status" in after:
            after = after[after["status"].fillna("online") == "online"].reset_index(drop=True)
        b = cov_mod.compute(cams_b, buildings, grids)
        a = cov_mod.compute(after, buildings, grids, crs=b.crs)
        gb, ga = cov_mod.grid_coverage(b), cov_mod.grid_coverage(a)
        frame = ga.rename(
            columns={
                "covered_area_m2": "covered_area_m2_after",
                "coverage_share": "coverage_share_after",
            }
        )
        frame.insert(3, "covered_area_m2_before", gb["covered_area_m2"].to_numpy())
        frame.insert(4, "coverage_share_before", gb["coverage_share"].to_numpy())
        frame["delta"] = frame["coverage_share_after"] - frame["coverage_share_before"]
        spots = _blind_spots(b, a, min_area)
        for col, values in spots.items():
            frame[col] = values
        public = float(gb["public_area_m2"].sum())
        summary = pd.DataFrame(
            {
                "measure": [
                    "covered_area_m2",
                    "coverage_share",
                    "cameras",
                    "blind_spots",
                    "blind_spot_area_m2",
                ],
                "before": [
                    gb["covered_area_m2"].sum(),
                    gb["covered_area_m2"].sum() / public,
                    len(cams_b),
                    spots["blind_spots_before"].sum(),
                    spots["blind_spot_area_m2_before"].sum(),
                ],
                "after": [
                    ga["covered_area_m2"].sum(),
                    ga["covered_area_m2"].sum() / public,
                    len(after),
                    spots["blind_spots_after"].sum(),
                    spots["blind_spot_area_m2_after"].sum(),
                ],
            }
        )
        summary["delta"] = summary["after"] - summary["before"]
        versions[layer] = f"{versions.get(layer)}+what-if"
        notes = {"blind_spots_closed": int(spots["blind_spots_closed"].sum())}
        return QueryResult(
            "what_if_coverage",
            frame,
            {"query": query, **change, **params},
            b.crs,
            versions,
            "view-cone-shadow",
            summary=summary,
            notes=notes,
        )
    allowed = {"circles", "kinds", "method", "uses", "persons_per_household"}
    _check(params, allowed)
    method = params.get("method", "auto")
    if method not in lifecircle.METHODS:
        raise ValidationError(f"method must be one of {', '.join(lifecircle.METHODS)}")
    circles = lifecircle._circles(params.get("circles"))
    pph = float(params.get("persons_per_household", lifecircle.PERSONS_PER_HOUSEHOLD))
    buildings, _fac, roads = lifecircle.inputs(
        store, versions, params.get("uses", lifecircle.RESIDENTIAL_USES)
    )
    kinds = lifecircle._kinds(params.get("kinds"), pd.concat([before[["kind"]], after[["kind"]]]))
    kw = {"circles": circles, "kinds": kinds, "method": method, "persons_per_household": pph}
    fb, sb, used, crs = lifecircle.compute(buildings, before, roads, **kw)
    fa, sa, _, _ = lifecircle.compute(buildings, after, roads, crs=crs, **kw)
    frame = fa[["building_code", "name", "residents", "geometry"]].copy()
    for minutes in circles:
        col = f"lacks_{minutes}min"
        frame[f"{col}_before"] = fb[col].to_numpy()
        frame[f"{col}_after"] = fa[col].to_numpy()
        frame[f"{col}_changed"] = fb[col].to_numpy() != fa[col].to_numpy()
    summary = sb.rename(
        columns={
            "buildings_lacking": "buildings_lacking_before",
            "residents_lacking": "residents_lacking_before",
        }
    )
    summary["buildings_lacking_after"] = sa["buildings_lacking"].to_numpy()
    summary["residents_lacking_after"] = sa["residents_lacking"].to_numpy()
    summary["buildings_delta"] = (
        summary["buildings_lacking_after"] - summary["buildings_lacking_before"]
    )
    summary["residents_delta"] = (
        summary["residents_lacking_after"] - summary["residents_lacking_before"]
    )
    versions[layer] = f"{versions.get(layer)}+what-if"
    return QueryResult(
        "what_if_life_circles",
        gpd.GeoDataFrame(frame, crs=CRS),
        {"query": query, **change, **params, "kinds": kinds},
        crs,
        versions,
        used,
        summary=summary,
    )


def _blind_spots(before, after, min_area: float) -> dict[str, np.ndarray]:
    """Per unit grid: blind spots (and their area) before and after, and those closed.

    A blind spot of *before* is closed when every piece left of it unseen after the change is
    smaller than *min_area* (a sliver along a wall is not a blind spot, as in
    :func:`~twin.query.viewshed.blind_spot_frame`).
    """
    n = len(before.public)

    def parts(cov):
        unseen = shapely.difference(cov.public, cov.covered)
        geoms, owner = shapely.get_parts(unseen, return_index=True)
        area = shapely.area(geoms)
        keep = (shapely.get_type_id(geoms) == 3) & (area >= min_area)
        return geoms[keep], owner[keep], area[keep]

    gb, ob, ab = parts(before)
    _ga, oa, aa = parts(after)
    left = np.zeros(len(gb))  # largest piece of each blind spot of before still unseen
    if len(gb):
        pieces, of = shapely.get_parts(shapely.difference(gb, after.covered), return_index=True)
        np.maximum.at(left, of, shapely.area(pieces))
    closed = left < min_area
    return {
        "blind_spots_before": np.bincount(ob, minlength=n),
        "blind_spots_after": np.bincount(oa, minlength=n),
        "blind_spots_closed": np.bincount(ob[closed], minlength=n),
        "blind_spot_area_m2_before": np.bincount(ob, weights=ab, minlength=n),
        "blind_spot_area_m2_after": np.bincount(oa, weights=aa, minlength=n),
    }


def _check(params: dict, allowed: set) -> None:
    bad = sorted(set(params) - allowed)
    if bad:
        raise ValidationError(f"unknown parameters {bad}; this what-if takes {sorted(allowed)}")
