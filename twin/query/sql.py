"""PostGIS helpers: quoted names from declared specs only, bound parameters, typed frames back."""

from __future__ import annotations

import datetime
import functools
import json
import logging
import re
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from twin.errors import StoreUnavailableError, ValidationError
from twin.query._cache import crs_object
from twin.query._common import geoframe, none_for_null
from twin.schema import CRS, Column, LayerSpec, coerce_series
from twin.store.base import current_stamps

LOGGER = logging.getLogger(__name__)

_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    """Double-quote an SQL identifier; only names of the declared specs ever reach here."""
    if not _SAFE.match(name):  # a second line of defence behind spec_of/field_of
        raise ValidationError(f"refusing the name {name!r} in SQL")
    return '"' + name + '"'


def table(store: Any, name: str) -> str:
    """Name the schema-qualified table of a layer's current version (or of events/cases)."""
    schema = getattr(store, "schema", None) or "public"
    return f"{ident(schema)}.{ident(name)}"


def select_list(columns: tuple[Column, ...] | list[Column], alias: str = "t") -> str:
    """Select the declared columns (JSON as text so both stores agree), then the geometry as WKB."""
    parts = []
    for c in columns:
        expr = f"{alias}.{ident(c.name)}"
        parts.append(f"{expr}::text AS {ident(c.name)}" if c.dtype == "json" else expr)
    parts.append(f"ST_AsBinary({alias}.geom) AS geom")
    return ", ".join(parts)


def run(store: Any, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """Run one read-only statement with bound parameters and return its rows."""
    names, rows = run_read(store, sa.text(sql), params)
    return pd.DataFrame(rows, columns=names)


def run_read(store: Any, statement: sa.TextClause, params: dict[str, Any]
             ) -> tuple[list[str], list[Any]]:
    """Run one read-only statement on the store's read engine; return column names and rows.

    One round trip (autocommit, no ping: see ``twin.store.postgis._engine``). A pooled
    connection the server has dropped since (a restart) fails at once, is discarded, and the
    statement is run again once on a new connection; a server that does not answer gives
    :class:`StoreUnavailableError`.
    """
    try:
        try:
            return _read_once(store, statement, params)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        return _read_once(store, statement, params)  # on a new connection
    except sa.exc.OperationalError as exc:
        raise StoreUnavailableError(
            f"the PostGIS store did not answer ({str(exc.orig).splitlines()[0]}); "
            "check that the server is running"
        ) from None


def _read_once(store: Any, statement: sa.TextClause, params: dict[str, Any]
               ) -> tuple[list[str], list[Any]]:
    with store.read_engine.connect() as conn:
        result = conn.execute(statement, params)
        return list(result.keys()), result.fetchall()


def layer_frame(spec: LayerSpec, raw: pd.DataFrame, extra: list[str] = ()) -> gpd.GeoDataFrame:
    """Rows of a layer read by SQL as a typed GeoDataFrame like the store's ``read_layer``."""
    names = list(raw.columns)
    rows = list(raw.itertuples(index=False, name=None))
    return typed_frame(spec, names, rows, extra)


def run_versioned(
    store: Any, body: str, params: dict[str, Any], layers: list[str]
) -> tuple[list[str], list[tuple], dict[str, tuple[int, str] | None]]:
    """Run the SELECT *body* and read the current versions of *layers* in the same statement.

    One round trip and one snapshot: the versions are those of the rows returned. *body* keeps
    its own ORDER BY; the rows come back in that order.

    Returns
    -------
    tuple
        The body's column names, its rows, and ``{layer: (version, created) or None}``.
    """
    sql = (
        f"WITH {_versions_cte(store)} SELECT _v._versions, _b.* FROM _v "
        # one row of NULLs (and _hit NULL) when the body has none, so the versions still come;
        # a nested loop over the one-row _v keeps the body's order (no renumbering and sort)
        f"LEFT JOIN (SELECT TRUE AS _hit, * FROM ({body}) _i) _b ON TRUE"
    )
    names, rows = _execute(store, sql, params, layers)
    body_rows = [tuple(r[2:]) for r in rows if r[1] is not None]
    return names[2:], body_rows, _stamps(rows, layers)


def run_versioned_row(
    store: Any, body: str, params: dict[str, Any], layers: list[str]
) -> tuple[dict[str, Any], dict[str, tuple[int, str] | None]]:
    """Like :func:`run_versioned` for a *body* that gives exactly one row (an aggregate).

    A body that packs its answer into arrays (``array_agg``) comes back as one row of Python
    lists, with the versions once.

    Returns
    -------
    tuple
        ``{column: value}`` of the body's row, and ``{layer: (version, created) or None}``.
    """
    sql = f"WITH {_versions_cte(store)} SELECT _v._versions, _b.* FROM _v, ({body}) _b"
    names, rows = _execute(store, sql, params, layers)
    return dict(zip(names[1:], rows[0][1:], strict=True)), _stamps(rows, layers)


def _versions_cte(store: Any) -> str:
    """Return the CTE ``_v``: the current versions asked for (``:_layers``) as one JSON text."""
    from twin.query._cache import versions_table

    return (
        "_v AS (SELECT json_agg(json_build_array(layer, version, created_at::text))::text "
        f"AS _versions FROM {versions_table(store)} WHERE current AND layer = ANY(:_layers))"
    )


def _execute(
    store: Any, sql: str, params: dict[str, Any], layers: list[str]
) -> tuple[list[str], list[Any]]:
    """Run *sql* with bound parameters; return its column names and rows."""
    try:
        return run_read(store, _text(sql), {**params, "_layers": list(layers)})
    except sa.exc.ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) == "42P01":  # undefined table: a layer never loaded
            from twin.query import _cache

            for name, stamp in _cache.stamps(store, layers).items():
                if stamp is None:
                    _cache.layer(store, name, None)  # raises the store's LayerNotFoundError
        raise


@functools.lru_cache(maxsize=256)
def _text(sql: str) -> sa.TextClause:
    """Return ``sa.text(sql)``, parsed once per statement (its bound names found by a regex)."""
    return sa.text(sql)


def _stamps(rows: list[Any], layers: list[str]) -> dict[str, tuple[int, str] | None]:
    """Return the versions carried by the first row's first column (see :func:`_versions_cte`)."""
    found = json.loads(rows[0][0]) if rows and rows[0][0] else []
    return current_stamps((tuple(v) for v in found), layers)


def typed_frame(
    spec: LayerSpec, names: list[str], rows: list[tuple], extra: list[str] = (), rank: bool = False
) -> gpd.GeoDataFrame:
    """Build a frame of a layer's rows (declared columns, *extra* floats, ``geom`` as WKB).

    With *rank*, a ``rank`` column (1, 2 … in the rows' order) follows the *extra* ones.

    The dtypes are those of :func:`twin.schema.coerce_series` (what ``read_layer`` gives), built
    straight from the values the driver returns: text and dates as objects with None, whole
    numbers as ``Int64``, numbers as ``float64``, booleans as ``boolean``. A column whose values
    are not what its SQL type promises goes through ``coerce_series`` instead.
    """
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    by_name = dict(zip(names, columns, strict=True))
    data: dict[str, Any] = {}
    for c in spec.all_columns:
        data[c.name] = _typed(by_name[c.name], c)
    for name in extra:
        data[name] = np.array(by_name[name], dtype=float)
    if rank:
        data["rank"] = np.arange(1, len(rows) + 1)
    wkb = np.array(by_name["geom"], dtype=object)
    geoms = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
    return geoframe(data, gpd.array.from_shapely(geoms, crs=crs_object(CRS)), len(rows))


_PLAIN = {"text": (str,), "date": (datetime.date,)}


def _typed(values: tuple, column: Column) -> Any:
    dtype = column.dtype
    try:
        if dtype in _PLAIN:
            kinds = _PLAIN[dtype]
            if all(v is None or type(v) in kinds for v in values):
                out = np.empty(len(values), dtype=object)
                out[:] = values
                return out
        elif dtype == "int":
            if all(v is None or type(v) is int for v in values):
                mask = np.array([v is None for v in values], dtype=bool)
                data = np.array([0 if v is None else v for v in values], dtype="int64")
                return pd.arrays.IntegerArray(data, mask)
        elif dtype == "float":
            if all(v is None or type(v) in (float, int) for v in values):
                return np.array([np.nan if v is None else v for v in values], dtype=float)
        elif dtype == "bool":
            if all(v is None or type(v) is bool for v in values):
                mask = np.array([v is None for v in values], dtype=bool)
                data = np.array([bool(v) for v in values], dtype=bool)
                return pd.arrays.BooleanArray(data, mask)
        elif dtype == "json":
            if all(v is None or type(v) is str for v in values):
                # JSON is selected as text; written canonically as twin.schema.coerce_series does
                out = np.empty(len(values), dtype=object)
                out[:] = [None if v is None else _canonical_json(v) for v in values]
                return out
    except (TypeError, ValueError):  # pragma: no cover - falls back to the general path
        pass
    # as read_layer builds its raw columns (pandas infers the dtype, nulls included)
    out = coerce_series(pd.Series(list(values)), column)
    return none_for_null(out) if dtype == "json" else out.array


def _canonical_json(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True, default=str)


def srid(crs: str) -> int:
    return int(crs.split(":")[1])
