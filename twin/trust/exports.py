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
                 origin: str = "") -> Path:
    """Write layer *name* as *user* may see it to .geojson, .gpkg or .csv; return the path."""
    from twin.query import QueryResult

    require(user, "queries.run")
    frame = read_layer(store, user, name, origin=origin)
    current = [v.version for v in store.layer_versions(name) if v.current]
    answer = QueryResult(name, frame, {"layer": name}, None,
                         {name: current[-1] if current else None}, "read")
    return answer.to_file(path)
