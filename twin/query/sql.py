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
import psycopg
import shapely
import sqlalchemy as sa

from twin.errors import StoreUnavailableError, ValidationError
from twin.query._cache import crs_object
from twin.query._common import geoframe, none_for_null
from twin.schema import CRS, LAYER_VERSIONS, Column, LayerSpec, coerce_series
from twin.store.base import current_stamps
from twin.store.dialect import quote

LOGGER = logging.getLogger(__name__)

_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    """Double-quote an SQL identifier; only names of the declared specs ever reach here."""
    if not _SAFE.match(name):  # a second line of defence behind spec_of/field_of
        raise ValidationError(f"refusing the name {name!r} in SQL")
    return quote(name)


def reader(store: Any) -> Any:
    """Return the store's fast reader (:meth:`twin.store.base.Store.fast_reader`).

    Raises
    ------
    ValidationError
        If the store runs no SQL for the planner queries (the embedded store).
    """
    found = store.fast_reader()
    if found is None:
        raise ValidationError(
            f"{store!r} runs no planner queries in SQL; use engine='memory' (or a PostGIS store)"
        )
    return found


def table(store: Any, name: str) -> str:
    """Name the schema-qualified table of a layer's current version (or of events/cases)."""
    return f"{ident(reader(store).schema)}.{ident(name)}"


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
    names, rows = run_read(store, sql, params)
    return pd.DataFrame(rows, columns=names)


def run_read(store: Any, sql: str, params: dict[str, Any], *, one_plan: bool = False
             ) -> tuple[list[str], list[Any]]:
    """Run one read-only statement through the store's fast reader; return names and rows.

    *sql* binds its parameters as ``:name``. One round trip (autocommit, no ping: see
    :class:`twin.store.postgis.PostGISReader`), on the pooled connection's own driver cursor:
    a planner read is a single SELECT, so SQLAlchemy's statement and result machinery would
    only add time. A pooled connection the server has dropped since (a restart) fails at once, is
    discarded, and the statement is run again once on a new connection; a server that does not
    answer gives :class:`StoreUnavailableError`.

    With *one_plan*, the statement's best plan does not depend on its parameter values (a
    point query: the GiST index is right wherever the point is), so it is prepared at once and
    planned once per connection (``plan_cache_mode = force_generic_plan``) instead of at every
    call, which PostgreSQL otherwise keeps doing for PostGIS statements (about 0.2 ms each).
    Statements whose plan does depend on their values (a period over the event tables) keep
    PostgreSQL's own choice.
    """
    statement = _driver_sql(sql)
    try:
        try:
            return _read_once(store, statement, params, one_plan)
        except _Dropped:
            return _read_once(store, statement, params, one_plan)  # on a new connection
    except (_Dropped, sa.exc.OperationalError, psycopg.OperationalError) as exc:
        reason = getattr(exc, "orig", None) or exc  # a connection refused is the driver's own
        raise StoreUnavailableError(
            f"the PostGIS store did not answer ({str(reason).splitlines()[0]}); "
            "check that the server is running"
        ) from None


class _Dropped(Exception):
    """The pooled connection was dropped by the server (it has been discarded)."""


_PLAN_MODE = "plan_cache_mode"


def _read_once(store: Any, statement: str, params: dict[str, Any], one_plan: bool
               ) -> tuple[list[str], list[Any]]:
    pooled = reader(store).connection()  # a failed connect: psycopg.OperationalError
    try:
        driver = pooled.driver_connection
        try:
            with driver.cursor(binary=True) as cursor:  # geometries as bytes, not hex text
                mode = "force_generic_plan" if one_plan else "auto"
                if pooled.info.get(_PLAN_MODE, "auto") != mode:  # a round trip only on a change
                    cursor.execute(f"SET plan_cache_mode = {mode}")
                    pooled.info[_PLAN_MODE] = mode
                cursor.execute(statement, params, prepare=True if one_plan else None)
                return [c.name for c in cursor.description], cursor.fetchall()
        except psycopg.OperationalError as exc:
            if driver.broken or driver.closed:
                pooled.invalidate()
                raise _Dropped(str(exc)) from None
            raise
    finally:
        pooled.close()  # back to the pool (or gone, when invalidated)


_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")  # SQLAlchemy's text() bind names


@functools.lru_cache(maxsize=256)
def _driver_sql(sql: str) -> str:
    """Return *sql* with its ``:name`` parameters as psycopg's ``%(name)s`` (``%`` doubled)."""
    return _BIND.sub(r"%(\1)s", sql.replace("%", "%%"))


def layer_frame(spec: LayerSpec, raw: pd.DataFrame, extra: list[str] = ()) -> gpd.GeoDataFrame:
    """Rows of a layer read by SQL as a typed GeoDataFrame like the store's ``read_layer``."""
    names = list(raw.columns)
    rows = list(raw.itertuples(index=False, name=None))
    return typed_frame(spec, names, rows, extra)


def run_versioned(
    store: Any, body: str, params: dict[str, Any], layers: list[str], *, one_plan: bool = False
) -> tuple[list[str], list[tuple], dict[str, tuple[int, str] | None]]:
    """Run the SELECT *body* and read the current versions of *layers* in the same statement.

    One round trip and one snapshot: the versions are those of the rows returned. *body* keeps
    its own ORDER BY; the rows come back in that order. *one_plan* as in :func:`run_read`.

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
    names, rows = _execute(store, sql, params, layers, one_plan)
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
    names, rows = _execute(store, sql, params, layers, False)
    return dict(zip(names[1:], rows[0][1:], strict=True)), _stamps(rows, layers)


def _versions_cte(store: Any) -> str:
    """Return the CTE ``_v``: the current versions asked for (``:_layers``) as one JSON text."""
    return (
        "_v AS (SELECT json_agg(json_build_array(layer, version, created_at::text))::text "
        f"AS _versions FROM {table(store, LAYER_VERSIONS.name)} "
        "WHERE current AND layer = ANY(:_layers))"
    )


def _execute(
    store: Any, sql: str, params: dict[str, Any], layers: list[str], one_plan: bool
) -> tuple[list[str], list[Any]]:
    """Run *sql* with bound parameters; return its column names and rows."""
    try:
        return run_read(store, sql, {**params, "_layers": list(layers)}, one_plan=one_plan)
    except psycopg.errors.UndefinedTable:  # a layer never loaded
        from twin.query import _cache

        for name, stamp in _cache.stamps(store, layers).items():
            if stamp is None:
                _cache.layer(store, name, None)  # raises the store's LayerNotFoundError
        raise


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


_NONE = type(None)
#: The Python types the driver gives for each declared dtype (None for NULL).
_KINDS = {
    "text": frozenset({str, _NONE}),
    "date": frozenset({datetime.date, _NONE}),
    "int": frozenset({int, _NONE}),
    "float": frozenset({float, int, _NONE}),
    "bool": frozenset({bool, _NONE}),
    "json": frozenset({str, _NONE}),  # JSON is selected as text
}


def _typed(values: tuple, column: Column) -> Any:
    dtype = column.dtype
    kinds = set(map(type, values))
    try:
        if dtype in _KINDS and kinds <= _KINDS[dtype]:
            nulls = _NONE in kinds
            if dtype in ("text", "date"):
                out = np.empty(len(values), dtype=object)
                out[:] = values
                return out
            if dtype == "float":
                return np.array([np.nan if v is None else v for v in values] if nulls else values,
                                dtype=float)
            if dtype == "json":  # written canonically, as twin.schema.coerce_series does
                out = np.empty(len(values), dtype=object)
                out[:] = [None if v is None else _canonical_json(v) for v in values]
                return out
            if nulls:
                mask = np.array([v is None for v in values], dtype=bool)
                values = [False if v is None else v for v in values]
            else:
                mask = np.zeros(len(values), dtype=bool)
            if dtype == "int":
                return pd.arrays.IntegerArray(np.array(values, dtype="int64"), mask)
            return pd.arrays.BooleanArray(np.array(values, dtype=bool), mask)
    except (TypeError, ValueError):  # pragma: no cover - falls back to the general path
        pass
    # as read_layer builds its raw columns (pandas infers the dtype, nulls included)
    out = coerce_series(pd.Series(list(values)), column)
    return none_for_null(out) if dtype == "json" else out.array


def _canonical_json(text: str) -> str:
    return json.dumps(json.loads(text), ensure_ascii=False, sort_keys=True, default=str)


def srid(crs: str) -> int:
    return int(crs.split(":")[1])
