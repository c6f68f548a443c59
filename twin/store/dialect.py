"""What tells the two SQL stores apart in their SQL: quoting, types, bound values, indexes, names.

:class:`twin.store.sql.SQLStore` writes every statement the stores share once, over a
:class:`Dialect`: :data:`SQLITE` (the embedded GeoPackage file) or :data:`POSTGRES` (PostGIS).
Nothing here touches a connection.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from twin.schema import CASES, EVENTS, OUTBOX, SMALL, Column, TableSpec, is_missing
from twin.timeutil import to_utc

#: A layer's table of every version is its name and this suffix (both stores).
HISTORY_SUFFIX = "__history"
#: The version column of a layer's history table (both stores).
VERSION_COLUMN = "_version"
SRID = 4326
#: Secondary indexes by the filters read_cases / case_counts offer (a tuple: a composite index).
CASE_INDEXES: tuple[str | tuple[str, ...], ...] = (
    "status", "grid_code", "requested_at", "filed_at", ("grid_code", "requested_at"),
)
#: The delivery workers claim the due rows of the outbox (twin.notify) by status and time.
OUTBOX_INDEXES: tuple[str | tuple[str, ...], ...] = (("status", "next_at"),)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.lru_cache(maxsize=4096)
def quote(name: str) -> str:
    """Quote an SQL identifier that comes from a declaration (never from user input).

    The one quoting function of the stores (SQLite and PostgreSQL quote alike).

    Raises
    ------
    ValueError
        If *name* is not a plain identifier: a declaration is wrong, not the user's data.
    """
    if not _NAME.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'


def key_columns(table: TableSpec) -> list[str]:
    """Return the columns of a table's declared key, in order."""
    return [k.strip() for k in table.key.split(",")]


def canonical_json(value: Any) -> str | None:
    """JSON text as the stores keep it (sorted keys, UTF-8 as is); None stays None."""
    return (
        None
        if value is None
        else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    )


def utc(value: Any) -> pd.Timestamp:
    """Return a time as a UTC Timestamp (a naive one is taken as UTC)."""
    return to_utc(pd.Timestamp(value))


# -- GeoPackage values (SQLite) ---------------------------------------------------------------


#: Per unit of a pandas time column: what its integers are multiplied, then floor-divided by,
#: to give milliseconds or microseconds.
_SCALE = {"ms": {"s": (1000, 1), "ms": (1, 1), "us": (1, 1000), "ns": (1, 1_000_000)},
          "us": {"s": (1_000_000, 1), "ms": (1000, 1), "us": (1, 1), "ns": (1, 1000)}}


def utc_ticks(series: pd.Series, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Return a time-zone aware column as UTC integers in *unit* (floored) and where it is NaT.

    Its values are UTC instants whatever its zone; missing ones are given as 0.
    """
    ticks = series.array.asi8
    missing = ticks == np.iinfo(np.int64).min  # NaT
    times, over = _SCALE[unit][series.dtype.unit]
    return np.where(missing, 0, ticks) * times // over, missing


def format_datetimes(series: pd.Series) -> pd.Series:
    """UTC 'YYYY-MM-DDTHH:MM:SS.SSSZ' text (None where missing), floored to milliseconds.

    GDAL reads a GeoPackage DATETIME in this form; its fixed width keeps text comparison in SQL
    equal to time order.
    """
    return pd.Series(_ms_texts(series), index=series.index, dtype=object)


def _ms_texts(series: pd.Series) -> np.ndarray:
    """:func:`format_datetimes` as an object array (formatted by numpy in C; years 0-9999)."""
    ms, missing = utc_ticks(series, "ms")
    text = np.char.add(np.datetime_as_string(ms.astype("datetime64[ms]"), unit="ms"), "Z")
    out = text.astype(object)
    out[missing] = None
    return out


def _small_sql_values(series: pd.Series, dtype: str) -> list | None:
    """:func:`to_sql_values` value by value for a short column (None where it cannot be)."""
    if dtype in ("datetime", "date"):
        return None
    values = series.tolist()
    if dtype == "bool":
        return [None if is_missing(v) else int(v) for v in values]
    return [None if is_missing(v) else v for v in values]


def _ms_text(stamp: pd.Timestamp) -> str:
    """One UTC time as :func:`format_datetimes` writes it (floored to the millisecond)."""
    return (f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d}T{stamp.hour:02d}:"
            f"{stamp.minute:02d}:{stamp.second:02d}.{stamp.microsecond // 1000:03d}Z")


def _sqlite_value(value: Any, dtype: str) -> Any:
    """Return the value sqlite3 binds for one canonical value (see ``coerce_records``)."""
    if value is None:
        return None
    if dtype == "datetime":
        return _ms_text(value)
    if dtype == "bool":
        return int(value)
    return value


def to_sql_values(series: pd.Series, dtype: str) -> list:
    """Python values that sqlite3 binds, for a series already coerced to *dtype*."""
    if len(series) <= SMALL:
        done = _small_sql_values(series, dtype)
        if done is not None:
            return done
    if dtype == "datetime":
        return _ms_texts(series).tolist()
    if dtype == "date":
        text = pd.to_datetime(series).dt.strftime("%Y-%m-%d")
        return text.astype(object).where(series.notna(), None).tolist()
    if dtype == "bool":
        series = series.astype("Int64")
    return series.astype(object).where(series.notna(), None).tolist()


def _sqlite_time(value: Any) -> str:
    return format_datetimes(pd.Series([utc(value)]))[0]


def _sqlite_now() -> pd.Timestamp:
    # milliseconds: the precision a GeoPackage DATETIME keeps, so what is returned is stored
    return pd.Timestamp.now(tz="UTC").floor("ms")


# -- PostgreSQL values --------------------------------------------------------------------------


def python_value(value: Any, dtype: str) -> Any:
    """Return a coerced cell as a plain Python value (None when missing; Timestamps stay)."""
    if value is None or (not isinstance(value, (str, bytes, dict, list)) and pd.isna(value)):
        return None
    if dtype == "int":
        return int(value)
    if dtype == "float":
        return float(value)
    if dtype == "bool":
        return bool(value)
    if dtype == "datetime":
        return pd.Timestamp(value).tz_convert("UTC")
    return value


def _pg_value(value: Any, dtype: str) -> Any:
    value = python_value(value, dtype)
    if isinstance(value, pd.Timestamp):  # PostgreSQL keeps microseconds (truncated)
        return (value.floor("us") if value.nanosecond else value).to_pydatetime()
    return value


def _pg_values(series: pd.Series, dtype: str) -> list:
    if dtype == "datetime" and isinstance(series.dtype, pd.DatetimeTZDtype):
        # microseconds (PostgreSQL's precision, floored) as UTC datetimes, in numpy steps
        us, missing = utc_ticks(series, "us")
        stamps = us.astype("datetime64[us]").astype(object)  # naive datetimes (years 1-9999)
        if all(m or isinstance(t, datetime) for t, m in zip(stamps, missing, strict=True)):
            return [None if m else t.replace(tzinfo=UTC)
                    for t, m in zip(stamps, missing, strict=True)]
    return [_pg_value(v, dtype) for v in series.tolist()]


def _pg_time(value: Any) -> datetime:
    return utc(value).to_pydatetime()


def _pg_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


# -- the dialects ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialect:
    """How one database spells what both stores say.

    Attributes
    ----------
    name
        ``"sqlite"`` or ``"postgresql"``.
    types
        Column.dtype → SQL type.
    values
        ``values(series, dtype)``: a coerced column as the values the driver binds.
    value
        ``value(v, dtype)``: one canonical value (:func:`twin.schema.coerce_records`) as the
        driver binds it.
    time
        A time as the bound value compared with a stored time column.
    now
        The current time at the precision the store keeps.
    indexes
        Table name → its secondary indexes (a tuple: a composite index).
    index_name
        ``index_name(table, columns)``: the name an index has in this store.
    fence
        SQL ending a FROM subquery so that the planner keeps it as one step.
    json_cast
        Whether JSON is a type of its own (bound as text and cast; read back as text).
    collate
        What makes an ORDER BY compare text bytewise (as Python sorts it).
    greatest
        The SQL of the later of ``{a}`` (a stored time that may be NULL) and ``{b}``.
    false
        The SQL of false.
    position
        The function giving the 1-based place of a substring in a text, 0 if absent
        (``position(haystack, needle)``): a substring test with no LIKE wildcards to escape.
    """

    name: str
    types: dict[str, str]
    values: Callable[[pd.Series, str], list]
    value: Callable[[Any, str], Any]
    time: Callable[[Any], Any]
    now: Callable[[], pd.Timestamp]
    indexes: dict[str, tuple[str | tuple[str, ...], ...]]
    index_name: Callable[[str, str | tuple[str, ...]], str]
    fence: str
    json_cast: bool
    collate: str
    greatest: str
    false: str
    position: str
    any_of: Callable[[str, str, Sequence[Any], dict[str, Any]], str] = field(repr=False)

    def mark(self, column: Column, name: str | None = None) -> str:
        """Return the bound parameter ``:name`` of *column* (JSON cast where it is a type)."""
        mark = f":{name or column.name}"
        return f"CAST({mark} AS jsonb)" if self.json_cast and column.dtype == "json" else mark

    def select(self, column: Column | str, dtype: str = "text") -> str:
        """Return a column in a SELECT list, JSON as text (both stores give the same values)."""
        name, dtype = (column.name, column.dtype) if isinstance(column, Column) else (column, dtype)
        return quote(name) + ("::text" if self.json_cast and dtype == "json" else "")

    def as_text(self, name: str) -> str:
        """Return a stored time column as text (compared only with this store's own text)."""
        return quote(name) + ("::text" if self.json_cast else "")

    def order(self, name: str) -> str:
        """Return an ORDER BY term of a text column, compared bytewise."""
        return quote(name) + self.collate

    def index_ddl(self, table: TableSpec) -> list[str]:
        """``CREATE INDEX IF NOT EXISTS`` statements of the declared indexes of *table*."""
        out = []
        for columns in self.indexes.get(table.name, ()):
            names = (columns,) if isinstance(columns, str) else columns
            out.append(
                f"CREATE INDEX IF NOT EXISTS {quote(self.index_name(table.name, columns))} "
                f"ON {quote(table.name)} ({', '.join(quote(c) for c in names)})"
            )
        return out


def _in_list(column: str, name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    if not values:
        return "0"
    marks = []
    for i, value in enumerate(values):
        params[f"{name}_{i}"] = value
        marks.append(f":{name}_{i}")
    return f"{quote(column)} IN ({', '.join(marks)})"


def _any_array(column: str, name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
    params[name] = list(values)
    return f"{quote(column)} = ANY(:{name})"


def _names(columns: str | tuple[str, ...]) -> tuple[str, ...]:
    return (columns,) if isinstance(columns, str) else columns


#: The embedded store: a GeoPackage file (GeoPackage 1.3 column types; times as fixed-width
#: UTC text, which compares in time order).
SQLITE = Dialect(
    name="sqlite",
    types={
        "text": "TEXT", "int": "INTEGER", "float": "REAL", "bool": "BOOLEAN", "date": "DATE",
        "datetime": "DATETIME", "json": "TEXT",
    },
    values=to_sql_values,
    value=_sqlite_value,
    time=_sqlite_time,
    now=_sqlite_now,
    indexes={EVENTS.name: ("observed_at", "grid_code"), CASES.name: CASE_INDEXES,
             OUTBOX.name: OUTBOX_INDEXES},
    index_name=lambda table, columns: f"{table}__{'__'.join(_names(columns))}",
    # SQLite keeps a FROM subquery ending so as one step (no flattening)
    fence=" LIMIT -1",
    json_cast=False,
    collate="",  # SQLite compares text bytewise
    greatest="max(coalesce({a}, ''), {b})",
    false="0",
    position="instr",
    any_of=_in_list,
)

#: The PostGIS store. Events keep no secondary btree index: they are written at feed rate (a
#: BRIN index instead, see ``twin.store.migrations.APPEND_ONLY``).
POSTGRES = Dialect(
    name="postgresql",
    types={
        "text": "TEXT", "int": "BIGINT", "float": "DOUBLE PRECISION", "bool": "BOOLEAN",
        "date": "DATE", "datetime": "TIMESTAMPTZ", "json": "JSONB",
    },
    values=_pg_values,
    value=_pg_value,
    time=_pg_time,
    now=_pg_now,
    indexes={CASES.name: CASE_INDEXES, OUTBOX.name: OUTBOX_INDEXES},
    index_name=lambda table, columns: f"{table}_{'_'.join(_names(columns))}_idx",
    # OFFSET 0 keeps a FROM subquery as one plan step (not pulled up)
    fence=" OFFSET 0",
    json_cast=True,
    collate=' COLLATE "C"',
    greatest="GREATEST({a}, {b})",
    false="false",
    position="strpos",
    any_of=_any_array,
)
