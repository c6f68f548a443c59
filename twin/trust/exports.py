"""Planner answers and layer files as a user may have them: personal columns protected, audited."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from twin.trust.permissions import User, require
from twin.trust.privacy import protect, read_layer


def query_as(store, user: User | None, name: str, *, origin: str = "", **params: Any):
    """Run the planner query *name* (see :data:`twin.query.QUERIES`) and protect its answer.

    The columns about people of every layer the query read are shown as :func:`protect`
    decides for *user*; a command run without a named user gets what the public gets.

    Returns
    -------
    twin.query.QueryResult

    Raises
    ------
    PermissionDeniedError
        If *user*'s role may not run queries.
    ValidationError
        For an unknown query.
    """
    from twin.errors import ValidationError
    from twin.query import QUERIES

    require(user, "queries.run")
    if name not in QUERIES:
        raise ValidationError(f"unknown query {name!r}; queries: {', '.join(QUERIES)}")
    result = QUERIES[name](store, **params)
    frame = protect(store, user, result.frame, result.versions, what=f"query:{name}",
                    origin=origin)
    return dataclasses.replace(result, frame=frame)


def export_layer(store, user: User | None, name: str, path: str | Path, *,
                 origin: str = "") -> tuple[Path, int]:
    """Write layer *name* as *user* may see it to .geojson, .gpkg or .csv.

    Returns
    -------
    (path, rows)
        The file written and the number of features in it.
    """
    from twin.query import QueryResult

    require(user, "queries.run")
    frame = read_layer(store, user, name, origin=origin)
    current = [v.version for v in store.layer_versions(name) if v.current]
    answer = QueryResult(name, frame, {"layer": name}, None,
                         {name: current[-1] if current else None}, "read")
    return answer.to_file(path), len(frame)


def export_geopackage(store, user: User | None, path: str | Path, *,
                      origin: str = "") -> tuple[Path, dict[str, int]]:
    """Write every map layer as *user* may see it into one GeoPackage, for sharing.

    The file is what to send a GIS user instead of the store's own file: the current version
    of each map layer, its personal columns as :func:`protect` decides for *user* (full and
    audited, masked, or left out), with the standard rtree spatial index and the declared
    geometry type of each layer. It never holds the store's own tables (users and their
    password hashes, cases, audit, events) nor the residents list, whoever asks. Written to a
    temporary file first, so a failure leaves nothing half-written at *path*.

    Returns
    -------
    (path, rows)
        The file written and the number of features of each layer in it.

    Raises
    ------
    PermissionDeniedError
        If *user*'s role may not run queries.
    ValidationError
        If *path* does not end in ``.gpkg`` or the store holds no map layer yet.
    """
    import os
    import tempfile

    from twin import layers
    from twin.errors import ValidationError

    require(user, "queries.run")
    path = Path(path)
    if path.suffix.lower() != ".gpkg":
        raise ValidationError(f"cannot write {path.name!r} as a GeoPackage: name it *.gpkg")
    specs = [layers.get_layer(n) for n in layers.names()]
    mapped = [s for s in specs if s.geometry_type is not None]
    current = store.current_versions([s.name for s in mapped])
    shown = [s for s in mapped if current.get(s.name) is not None]
    if not shown:
        raise ValidationError("the store holds no map layer yet; load one (gridtwin load …)")
    handle, temp = tempfile.mkstemp(suffix=".gpkg", prefix=f".{path.stem}.", dir=path.parent)
    os.close(handle)
    os.unlink(temp)  # GDAL creates the file itself
    rows: dict[str, int] = {}
    try:
        for spec in shown:
            frame = read_layer(store, user, spec.name, origin=origin)
            _write_gpkg_layer(frame, spec, temp)
            rows[spec.name] = len(frame)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path, rows


def _write_gpkg_layer(frame, spec, path: str) -> None:
    """Add one layer to a GeoPackage through GDAL: rtree index, declared geometry type."""
    import json

    import pyogrio

    frame = frame.copy()
    for column in frame.columns:
        if column != frame.geometry.name and frame[column].dtype == object:
            frame[column] = frame[column].map(
                lambda v: json.dumps(v, ensure_ascii=False, sort_keys=True)
                if isinstance(v, (dict, list, tuple)) else v
            )
    kind = "Unknown" if spec.also_geometry_types else spec.geometry_type
    pyogrio.write_dataframe(frame, path, layer=spec.name, driver="GPKG",
                            geometry_type=kind,
                            # 1.3, as the store: GDAL before 3.7 (QGIS 3.28 LTR) warns on 1.4
                            dataset_options={"VERSION": "1.3"},
                            layer_options={"SPATIAL_INDEX": "YES",
                                           "DESCRIPTION": f"{spec.title_zh} {spec.title_en}"})
