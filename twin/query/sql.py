"""PostGIS helpers: quoted names from declared specs only, bound parameters, typed frames back."""

from __future__ import annotations

import logging
import re
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
import sqlalchemy as sa

from twin.errors import StoreUnavailableError, ValidationError
from twin.schema import CRS, Column, LayerSpec, coerce_series

LOGGER = logging.getLogger(__name__)

_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    """A double-quoted SQL identifier; only names of the declared specs ever reach here."""
    if not _SAFE.match(name):  # a second line of defence behind spec_of/field_of
        raise ValidationError(f"refusing the name {name!r} in SQL")
    return '"' + name + '"'


def table(store: Any, name: str) -> str:
    """The schema-qualified table of a layer's current version (or of events/cases)."""
    schema = getattr(store, "schema", None) or "public"
    return f"{ident(schema)}.{ident(name)}"


def select_list(columns: tuple[Column, ...] | list[Column], alias: str = "t") -> str:
    """Declared columns (JSON as text so both stores agree), then the geometry as WKB."""
    parts = []
    for c in columns:
        expr = f"{alias}.{ident(c.name)}"
        parts.append(f"{expr}::text AS {ident(c.name)}" if c.dtype == "json" else expr)
    parts.append(f"ST_AsBinary({alias}.geom) AS geom")
    return ", ".join(parts)


def run(store: Any, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """Run one read-only statement with bound parameters and return its rows."""
    try:
        with store.engine.connect() as conn:
            result = conn.execute(sa.text(sql), params)
            rows = result.fetchall()
            return pd.DataFrame(rows, columns=list(result.keys()))
    except sa.exc.OperationalError as exc:
        raise StoreUnavailableError(
            f"the PostGIS store did not answer ({str(exc.orig).splitlines()[0]}); "
            "check that the server is running"
        ) from None


def layer_frame(spec: LayerSpec, raw: pd.DataFrame, extra: list[str] = ()) -> gpd.GeoDataFrame:
    """Rows of a layer read by SQL as a typed GeoDataFrame like the store's ``read_layer``."""
    out = pd.DataFrame(index=raw.index)
    for c in spec.all_columns:
        out[c.name] = coerce_series(raw[c.name], c)
    for name in extra:
        out[name] = raw[name].astype(float) if len(raw) else pd.Series(dtype=float)
    geoms = shapely.from_wkb([bytes(v) for v in raw["geom"]]) if len(raw) else []
    return gpd.GeoDataFrame(out, geometry=gpd.GeoSeries(geoms, crs=CRS).values, crs=CRS)


def srid(crs: str) -> int:
    return int(crs.split(":")[1])
