"""The PostGIS store: versioned layers, events, cases and audit in PostgreSQL through psycopg 3."""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from twin import audit_anchor, layers
from twin.errors import (
    ConfigError,
    DuplicateIdError,
    LayerNotFoundError,
    NotFoundError,
    StaleUpdateError,
    StoreUnavailableError,
    ValidationError,
)
from twin.schema import (
    AUDIT,
    CASE_HISTORY,
    CASES,
    CRS,
    EVENTS,
    Column,
    LayerSpec,
    TableSpec,
    coerce_series,
    coerce_table,
    layer_frame_to_store,
)
from twin.store import rollup
from twin.store.base import (
    GRID_NAMES,
    BBox,
    LayerVersion,
    PreparedEvents,
    Store,
    audit_hash,
    case_columns,
    check_expected,
    checked_events,
    count_columns,
    count_frame,
    current_stamps,
    layer_audit,
    plan_case_counts,
    prepare_case_grids,
    prepare_equals,
    prepare_rows,
    purge_plan,
    regrid_plan,
    utcnow,
    with_points,
)
from twin.store.base import read_csv_columns as _read_copy_csv
from twin.store.migrations import (
    HISTORY_SUFFIX,
    SRID,
    VERSION_COLUMN,
    attach_ddl,
    key_columns,
    layer_ddl,
    lock,
    migrate,
    missing_columns,
    partition_ddl,
    partition_index_ddl,
    partition_name,
    point_view,
    quote,
    table_exists,
)

LOGGER = logging.getLogger(__name__)

SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
COPY_CHUNK_ROWS = 50_000
COPY_CHUNK_BYTES = 8 << 20  # COPY text handed to psycopg this many bytes at a time
# rows of a layer encoded at a time: the server parses one piece while the next is encoded
LAYER_COPY_ROWS = 10_000
AGG_CHUNK_ROWS = 2_000_000  # about this many rows per packed value of a column read
# OFFSET 0 keeps a FROM subquery as one plan step (not pulled up): each case's period and its
# as-of are computed once, not once per count that uses them
_FENCE = " OFFSET 0"
# hash aggregation of a few hundred thousand (grid, month) groups fits in memory with this
COUNT_WORK_MEM = "256MB"
_ENGINES: dict[tuple[str, str | None, bool], sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _engine(url: sa.URL, schema: str | None, *, reads: bool = False) -> sa.Engine:
    """One engine per (URL, schema, kind) per process; sessions run in UTC with the schema first.

    The *reads* engine serves single read-only statements (the planner queries): it runs them
    in autocommit, one round trip each — a lone SELECT sees one snapshot without BEGIN and
    ROLLBACK around it — and does not ping a pooled connection before use; its callers retry
    once on a connection the server has dropped (:func:`twin.query.sql.run_read`).
    """
    key = (url.render_as_string(hide_password=False), schema, reads)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            options = "-ctimezone=UTC" + (f" -csearch_path={schema},public" if schema else "")
            connect_args: dict[str, Any] = {"options": options, "application_name": "gridtwin"}
            if "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = 5
            if reads:
                engine = sa.create_engine(url, connect_args=connect_args,
                                          isolation_level="AUTOCOMMIT")
            else:
                engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
            _ENGINES[key] = engine
        return engine


def _forget_engine(engine: sa.Engine) -> None:
    with _ENGINES_LOCK:
        for key in [k for k, e in _ENGINES.items() if e is engine]:
            del _ENGINES[key]


def _canonical_json(value: Any) -> str | None:
    return (
        None
        if value is None
        else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    )


def _python(value: Any, column: Column) -> Any:
    """Return a coerced pandas value as a plain Python value (datetimes stay Timestamps)."""
    if value is None or (not isinstance(value, (str, bytes, dict, list)) and pd.isna(value)):
        return None
    if column.dtype == "int":
        return int(value)
    if column.dtype == "float":
        return float(value)
    if column.dtype == "bool":
        return bool(value)
    if column.dtype == "datetime":
        return pd.Timestamp(value).tz_convert("UTC")
    return value


def _row_value(value: Any, column: Column) -> Any:
    """One fetched cell as the Python value a case dict holds (what _frame + _python give)."""
    if value is None:
        return None
    if column.dtype == "datetime":
        return pd.Timestamp(value).tz_convert("UTC")
    if column.dtype == "json":  # fetched as text; stored canonical, re-serialised the same way
        return _canonical_json(json.loads(value))
    if column.dtype in ("int", "float", "bool"):
        return {"int": int, "float": float, "bool": bool}[column.dtype](value)
    return value


def _param(value: Any, column: Column) -> Any:
    """Return a coerced value as a bound parameter for psycopg."""
    value = _python(value, column)
    if isinstance(value, pd.Timestamp):  # PostgreSQL keeps microseconds (as before, truncated)
        return value.floor("us").to_pydatetime()
    return value


def _utc(value: datetime | pd.Timestamp | str) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


# -- COPY text format, built column-wise (no per-row Python) ------------------------------------

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _copy_field(series: pd.Series, dtype: str) -> np.ndarray:
    r"""Return one column as COPY text fields: escaped, ``\N`` for NULL."""
    null = series.isna().to_numpy()
    if dtype in ("text", "json"):
        text = series.where(~series.isna(), "").astype(str)
        for old, new in _ESCAPES:
            text = text.str.replace(old, new, regex=False)
    elif dtype == "bool":
        text = series.map({True: "t", False: "f"})
    elif dtype == "datetime":
        text = series.dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    else:  # int, float, date: their str() is what PostgreSQL reads
        text = series.astype(str)
    out = np.asarray(text, dtype=object)
    out[null] = "\\N"
    return out


def _copy_rows(conn: sa.Connection, table: str, fields: dict[str, np.ndarray]) -> None:
    """COPY the given columns of text fields into *table* on the transaction's connection."""
    names = list(fields)
    n = len(fields[names[0]]) if names else 0
    if n == 0:
        return
    statement = f"COPY {quote(table)} ({', '.join(quote(c) for c in names)}) FROM STDIN"
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for start in range(0, n, COPY_CHUNK_ROWS):
            stop = min(start + COPY_CHUNK_ROWS, n)
            line = fields[names[0]][start:stop]
            for name in names[1:]:
                line = line + "\t" + fields[name][start:stop]
            copy.write("\n".join(line.tolist()) + "\n")


def _json_texts(series: pd.Series) -> bool:
    """Whether *series* holds only JSON texts (or missing values): one C pass over it."""
    kind = series.dtype
    textual = pd.api.types.is_object_dtype(kind) or isinstance(kind, pd.StringDtype)
    return textual and pd.api.types.infer_dtype(series, skipna=True) == "string"


def _copy_events(conn: sa.Connection, table: str, names: list[str], rows: memoryview) -> None:
    """COPY events given as binary COPY tuples into *table* (one batch: no writer thread)."""
    _copy_binary(conn, table, names, [rows], queued=False)


# -- binary COPY tuples, built column-wise (the server parses no text: no number, time or
# escape parsing; about a quarter less server time per event than the text format) ---------

_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_BINARY_TRAILER = b"\xff\xff"


def _binary_rows(columns: Sequence[Column], frame: pd.DataFrame) -> memoryview:
    """Return the rows of a coerced frame as binary COPY tuples (no header or trailer)."""
    if len(frame) == 0:
        return memoryview(b"")
    parts = [p for c in columns for p in _binary_parts(frame[c.name], c.dtype)]
    return _binary_tuples(len(columns).to_bytes(2, "big"), parts)


def _binary_tuples(head: bytes, parts: list[Any]) -> memoryview:
    """Join per-column field pieces after *head* into rows, back to back.

    A piece is an Arrow binary array or a numpy array of fixed-size items (one per row):
    lengths, numbers. Each run of numpy pieces is packed into one record per row first, so
    that the row join, whose cost grows with the number of pieces, sees one piece per run.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(parts[0])
    if head:
        parts = [np.broadcast_to(np.frombuffer(head, dtype=f"V{len(head)}"), (n,)), *parts]
    pieces: list[Any] = []  # Arrow arrays, and lists of numpy arrays to pack
    for part in parts:
        if not isinstance(part, np.ndarray):
            pieces.append(part)
        elif pieces and isinstance(pieces[-1], list):
            pieces[-1].append(part)
        else:
            pieces.append([part])
    arrays = [_packed(p) if isinstance(p, list) else p for p in pieces]
    return _joined(pc.binary_join_element_wise(*arrays, pa.scalar(b"", pa.large_binary())))


def _packed(run: list[np.ndarray]) -> Any:
    """Numpy arrays of fixed-size items packed row by row as one Arrow large_binary array."""
    import pyarrow as pa

    record = np.empty(len(run[0]), dtype=[(f"f{i}", part.dtype) for i, part in enumerate(run)])
    for i, part in enumerate(run):
        record[f"f{i}"] = part
    fixed = pa.Array.from_buffers(pa.binary(record.dtype.itemsize), len(record),
                                  [None, pa.py_buffer(record)])
    return fixed.cast(pa.large_binary())


def _joined(rows: Any) -> memoryview:
    """Return the bytes of an Arrow binary/string array's values, back to back (no copy)."""
    _, offsets, data = rows.buffers()
    off = np.frombuffer(offsets, dtype=np.int64)[rows.offset : rows.offset + len(rows) + 1]
    return memoryview(data)[int(off[0]) : int(off[-1])]


# -- binary COPY of a layer version (the server skips parsing text: hex EWKB, numbers) -------

_PG_EPOCH_DAYS = 10_957  # 2000-01-01, PostgreSQL's epoch, in days since 1970-01-01
_FIXED_BINARY = {"int": ">i8", "float": ">f8", "bool": "u1", "date": ">i4", "datetime": ">i8"}


def _binary_lengths(lengths: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Each field's 4-byte big-endian length, -1 for NULL (a numpy piece of a row)."""
    return np.where(null, -1, lengths).astype(">i4")


def _binary_values(values: Any) -> tuple[Any, np.ndarray]:
    """Return an Arrow binary array with NULLs as empty values, and where the NULLs were."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = values.cast(pa.large_binary())
    null = values.is_null().to_numpy(zero_copy_only=False)
    if values.null_count:
        values = pc.fill_null(values, pa.scalar(b"", pa.large_binary()))
    return values, null


def _binary_parts(series: pd.Series, dtype: str) -> list[Any]:
    """One column of a canonical layer frame as binary COPY fields: pieces to join.

    A field is its 4-byte length (-1 for NULL) and its bytes; the pieces are returned as
    separate arrays (lengths, values …) that :func:`_binary_tuples` concatenates row by row,
    so no buffer is rewritten here: numpy arrays for what has a fixed size (lengths, numbers
    without NULLs), Arrow arrays for the rest.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if dtype in ("text", "json"):
        text = pa.array(series.to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
        values, null = _binary_values(text)
        lengths = pc.binary_length(values).to_numpy(zero_copy_only=False)
        if dtype == "text":
            return [_binary_lengths(lengths, null), values]
        # jsonb's binary input is a version byte (1) and the JSON text
        if not null.any():
            return [_binary_lengths(lengths + 1, null), np.ones(len(null), np.uint8), values]
        version = pc.if_else(pa.array(null), pa.scalar(b"", pa.large_binary()),
                             pa.scalar(b"\x01", pa.large_binary()))
        return [_binary_lengths(lengths + 1, null), version, values]
    null = series.isna().to_numpy()
    if dtype == "int":
        values = series.to_numpy(dtype="int64", na_value=0)
    elif dtype == "float":
        values = series.to_numpy(dtype="float64", na_value=0.0)
    elif dtype == "bool":
        values = series.to_numpy(dtype="bool", na_value=False).astype(np.uint8)
    elif dtype == "date":
        days = pd.to_datetime(series).to_numpy(dtype="datetime64[D]")
        values = np.where(null, 0, days.astype("int64") - _PG_EPOCH_DAYS)
    else:  # datetime: microseconds since 2000-01-01 UTC
        micros = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[us]")
        values = np.where(null, 0, micros.astype("int64") - _PG_EPOCH_DAYS * 86_400_000_000)
    kind = np.dtype(_FIXED_BINARY[dtype])
    values = np.asarray(values).astype(kind)
    lengths = _binary_lengths(np.full(len(null), kind.itemsize), null)
    if not null.any():  # every field the same size: its length and value are numpy pieces
        return [lengths, values]
    valid = pa.py_buffer(np.packbits(~null, bitorder="little"))
    fixed = pa.Array.from_buffers(pa.binary(kind.itemsize), len(null),
                                  [valid, pa.py_buffer(values.tobytes())])
    return [lengths, _binary_values(fixed)[0]]


def _binary_ewkb(values: np.ndarray) -> list[Any]:
    """Binary COPY fields of 2D geometries as EWKB with SRID 4326 (pieces to join).

    Points, lines and polygons without holes (nearly every footprint, camera and road) are
    written by :func:`_simple_ewkb`; anything else by GEOS, whose little-endian WKB gets the
    "has an SRID" flag set in the type's high byte and the SRID's 4 bytes after the 5-byte header.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    simple = _simple_ewkb(values)
    if simple is not None:
        return simple
    wkb = shapely.to_wkb(values, hex=False, output_dimension=2, byte_order=1)
    wkb = pa.array(wkb, type=pa.large_binary(), from_pandas=True)
    n = len(wkb)
    validity, offsets, data = wkb.buffers()
    off = np.frombuffer(offsets, dtype=np.int64)[: n + 1]
    null = wkb.is_null().to_numpy(zero_copy_only=False)
    raw = np.frombuffer(data, dtype=np.uint8).copy() if data is not None else np.zeros(0, np.uint8)
    raw[off[:-1][~null] + 4] |= 0x20
    flagged = pa.Array.from_buffers(
        pa.large_binary(), n, [validity, offsets, pa.py_buffer(raw)], null_count=wkb.null_count
    )
    flagged, null = _binary_values(flagged)
    lengths = np.diff(off)
    srid = pc.if_else(pa.array(null), pa.scalar(b"", pa.large_binary()),
                      pa.scalar(SRID.to_bytes(4, "little"), pa.large_binary()))
    rest = pc.binary_slice(flagged, 5, max(int(lengths.max(initial=0)), 5))
    return [_binary_lengths(lengths + 4, null), pc.binary_slice(flagged, 0, 5), srid, rest]


_EWKB_SRID_FLAG = 0x20000000
# shapely type id → (WKB type code, the counts between the head and the coordinates)
_SIMPLE_WKB = {0: (1, ()), 1: (2, ("<u4",)), 3: (3, ("<u4", "<u4"))}


def _simple_ewkb(values: np.ndarray) -> list[Any] | None:
    """EWKB fields of points, lines and one-ring polygons, all of one type, built with numpy.

    Each field is a fixed head — the field's length, byte order, type with the SRID flag, the
    SRID, then (a polygon's) ring count and (a line's or ring's) point count — followed by
    the coordinates, which are the one buffer :func:`shapely.get_coordinates` returns, sliced
    by offsets: nothing is copied per geometry. None when the geometries are not all such.
    """
    import pyarrow as pa

    if len(values) == 0 or shapely.is_missing(values).any():
        return None
    kinds = np.unique(shapely.get_type_id(values))
    if len(kinds) != 1 or int(kinds[0]) not in _SIMPLE_WKB:
        return None
    kind = int(kinds[0])
    if kind == 3 and shapely.get_num_interior_rings(values).any():
        return None
    counts = shapely.get_num_coordinates(values)
    if shapely.has_z(values).any() or (counts == 0).any():
        return None
    coords = shapely.get_coordinates(values).astype("<f8", copy=False)
    code, extra = _SIMPLE_WKB[kind]
    head = np.dtype([("length", ">i4"), ("order", "u1"), ("type", "<u4"), ("srid", "<u4")]
                    + [(f"n{i}", t) for i, t in enumerate(extra)])
    rows = np.zeros(len(values), dtype=head)
    rows["length"] = head.itemsize - 4 + 16 * counts
    rows["order"] = 1  # little-endian
    rows["type"] = code | _EWKB_SRID_FLAG
    rows["srid"] = SRID
    if kind == 3:
        rows["n0"], rows["n1"] = 1, counts
    elif kind == 1:
        rows["n0"] = counts
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(16 * counts, out=offsets[1:])
    points = pa.Array.from_buffers(pa.large_binary(), len(values),
                                   [None, pa.py_buffer(offsets), pa.py_buffer(coords)])
    return [rows, points]


def _layer_copy_binary(spec: LayerSpec, frame: pd.DataFrame, version: int) -> memoryview:
    """Return a validated layer frame as binary COPY rows of ``<name>__history`` (no header).

    Geometries go as EWKB bytes, numbers as their binary values, so the server parses no hex or
    decimal text; the rows are joined by Arrow from per-column arrays (no Python per row).
    """
    if len(frame) == 0:
        return memoryview(b"")
    count = 1 + len(spec.all_columns) + (1 if spec.geometry_type else 0)
    # each row: its field count, then the version as a 4-byte integer field
    head = count.to_bytes(2, "big") + (4).to_bytes(4, "big") + int(version).to_bytes(4, "big")
    parts = [p for c in spec.all_columns for p in _binary_parts(frame[c.name], c.dtype)]
    if spec.geometry_type:
        parts += _binary_ewkb(np.asarray(frame.geometry.values, dtype=object))
    return _binary_tuples(head, parts)


def _copy_binary(
    conn: sa.Connection,
    table: str,
    columns: list[str],
    pieces: Iterable[memoryview],
    *,
    freeze: bool = False,
    queued: bool = True,
) -> None:
    """COPY binary COPY rows, given in pieces, into *table* on the transaction's connection.

    The pieces are rows without the stream's header and trailer (:func:`_binary_rows`,
    :func:`_layer_copy_binary`). With *queued*, a psycopg writer thread sends each piece while
    the next one is being built, so the server parses rows while the client encodes the
    following ones (for one small piece, as a feed batch is, the thread costs more than it
    hides). *freeze* (only for a table created in this transaction) writes the rows frozen:
    nobody has to set their hint bits later.
    """
    from psycopg.copy import QueuedLibpqWriter

    options = "FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY"
    statement = (f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) "
                 f"FROM STDIN ({options})")
    # the stream's signature first and its trailer last
    pieces = itertools.chain([memoryview(_BINARY_HEADER)], pieces, [memoryview(_BINARY_TRAILER)])
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:
        writer = QueuedLibpqWriter(cursor) if queued else None
        with cursor.copy(statement, writer=writer) as copy:
            for piece in pieces:
                for start in range(0, len(piece), COPY_CHUNK_BYTES):
                    copy.write(piece[start : start + COPY_CHUNK_BYTES])


def _select_list(columns: tuple[Column, ...] | list[Column], geometry: bool) -> str:
    # json read back as text so that coerce_series re-serialises it canonically (as embedded does)
    parts = [quote(c.name) + ("::text" if c.dtype == "json" else "") for c in columns]
    if geometry:
        parts.append("ST_AsBinary(geom) AS geom")
    return ", ".join(parts)


def _frame(
    result: sa.CursorResult, columns: tuple[Column, ...] | list[Column], geometry: bool
) -> pd.DataFrame | gpd.GeoDataFrame:
    """Rows of *result* as a frame with the columns coerced to their canonical dtypes."""
    names = [c.name for c in columns] + (["geom"] if geometry else [])
    # plain tuples: from_records probes each SQLAlchemy Row for attributes (an exception per
    # row and column), which made reading 24,000 grid cells ~7x slower than the rows themselves
    raw = pd.DataFrame.from_records([tuple(r) for r in result.fetchall()], columns=names)
    out = pd.DataFrame({c.name: coerce_series(raw[c.name], c) for c in columns}, index=raw.index)
    if not geometry:
        return out
    wkb = raw["geom"].to_numpy(dtype=object)
    return gpd.GeoDataFrame(out, geometry=shapely.from_wkb(wkb), crs=CRS)


_CASE_COLUMN = {c.name: c for c in CASES.columns}


_NULL_INT = -(2**63)  # also PostgreSQL's binary '-infinity' timestamp
_EPOCH_2000_US = 946_684_800_000_000


def _csv_expression(column: Column) -> str:
    """Return SQL writing a text column as one CSV field (NULL: empty, text: quoted)."""
    name = quote(column.name)
    quoted = f"""'"' || replace({name}::text, '"', '""') || '"'"""
    return f"CASE WHEN {name} IS NULL THEN '' ELSE {quoted} END"


def _aggregate(column: Column) -> str:
    """Return the aggregate packing one column of a chunk of cases into one value."""
    name = quote(column.name)
    if column.dtype in ("text", "json", "date"):
        return f"string_agg({_csv_expression(column)}, E'\\n')"
    if column.dtype == "datetime":
        return f"string_agg(timestamptz_send(COALESCE({name}, '-infinity')), ''::bytea)"
    if column.dtype == "bool":
        flag = f"(CASE WHEN {name} THEN 1 WHEN NOT {name} THEN 0 ELSE 2 END)::smallint"
        return f"string_agg(int2send({flag}), ''::bytea)"
    if column.dtype == "float":
        return f"string_agg(float8send(COALESCE({name}, 'NaN')), ''::bytea)"
    return f"string_agg(int8send(COALESCE({name}, {_NULL_INT})), ''::bytea)"


def _count_rows(conn: sa.Connection, query: Any) -> pd.DataFrame | list[tuple]:
    """Run a :class:`~twin.store.base.CountQuery`: its rows as a frame, parsed in bulk.

    A grid × month table is a few hundred thousand rows: building Python rows (or reading
    one COPY message per row) costs more than the ``GROUP BY`` itself. The server packs the
    whole result into one CSV text (as :func:`_aggregate` packs case columns), which pyarrow
    parses in C. Slices of other types than text and numbers come back as plain tuples.
    """
    params = query.params
    names = count_columns(query)
    columns = [_CASE_COLUMN[k] for k in query.by] + [
        Column(n, "int", n, n) for n in names[len(query.by):]
    ]
    if any(c.dtype not in ("text", "int", "float") for c in columns):
        return [tuple(r) for r in conn.execute(sa.text(query.sql), params)]
    fields = [
        _csv_expression(c) if c.dtype == "text" else f"COALESCE({quote(c.name)}::text, '')"
        for c in columns
    ]
    line = " || ',' || ".join(fields)
    packed = conn.execute(
        sa.text(f"SELECT string_agg({line}, E'\\n') FROM ({query.sql}) AS _counted"), params
    ).scalar()
    if not packed:
        return []
    table = _read_copy_csv((packed + "\n").encode("utf-8"), columns)
    return table.to_pandas().astype({c.name: "str" for c in columns if c.dtype == "text"})


def _unpack_columns(chunks: Sequence[Sequence[Any]], columns: Sequence[Column]) -> pd.DataFrame:
    """Typed frame (id order) from the packed chunks of :func:`_aggregate` (vectorised)."""
    def packed(i: int, dtype: str) -> np.ndarray:
        parts = [np.frombuffer(bytes(chunk[i]), dtype=dtype) for chunk in chunks if chunk[i]]
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    import pyarrow.compute as pc

    def text(i: int, column: Column) -> Any:
        data = b"".join((chunk[i] + "\n").encode("utf-8") for chunk in chunks)
        return _read_copy_csv(data, [column]).column(0)

    order = pc.sort_indices(text(0, _CASE_COLUMN["id"])).to_numpy()
    out = {}
    texts = [c for c in columns if c.dtype in ("text", "json", "date")]
    for c in texts:
        values = text(1 + columns.index(c), c).take(order)
        out[c.name] = pd.Series(values.to_pandas(), dtype="str")
    for i, c in enumerate(columns, start=1):
        if c.dtype == "datetime":
            raw = packed(i, ">i8").astype("int64")
            missing = raw == _NULL_INT
            stamps = np.where(missing, 0, raw + _EPOCH_2000_US).astype("datetime64[us]")
            stamps[missing] = np.datetime64("NaT")
            out[c.name] = pd.DatetimeIndex(stamps[order]).tz_localize("UTC")
        elif c.dtype == "bool":
            flags = packed(i, ">i2")[order]
            out[c.name] = pd.array(flags == 1, dtype="boolean")
            out[c.name][flags == 2] = pd.NA
        elif c.dtype == "float":
            out[c.name] = packed(i, ">f8").astype("float64")[order]
        elif c.dtype == "int":
            raw = packed(i, ">i8").astype("int64")[order]
            values = pd.array(raw, dtype="Int64")
            values[raw == _NULL_INT] = pd.NA
            out[c.name] = values
    return pd.DataFrame(
        {c.name: np.asarray(out[c.name]) if c.dtype in ("text", "json", "date") else out[c.name]
         for c in columns},
        index=pd.RangeIndex(len(order)),
    ).astype({c.name: "str" for c in texts})


def _table_row(table: TableSpec, values: dict[str, Any]) -> dict[str, Any]:
    """*values* typed per *table* (ValidationError naming unknown fields or bad values)."""
    frame = coerce_table(table, pd.DataFrame([values]))
    return {c.name: frame[c.name].iloc[0] for c in table.columns}


def _value_sql(column: Column) -> str:
    return f"CAST(:p_{column.name} AS jsonb)" if column.dtype == "json" else f":p_{column.name}"


class PostGISStore(Store):
    """A twin kept in a PostgreSQL + PostGIS database (one schema per twin).

    Parameters
    ----------
    url
        ``postgresql+psycopg://user:password@host:port/db`` (``postgresql://`` works too; an
        optional ``?schema=NAME`` selects the schema).
    schema
        Schema holding the twin's tables; created if missing. None means ``public``.
    drop_schema_on_close
        Drop the schema and everything in it on :meth:`close` (tests).

    Raises
    ------
    ConfigError
        If the URL or schema name is not usable, or the database lacks the postgis extension.
    StoreUnavailableError
        If the server does not answer or refuses the login.
    """

    def __init__(
        self, url: str, schema: str | None = None, drop_schema_on_close: bool = False
    ) -> None:
        try:
            parsed = sa.make_url(str(url))
        except sa.exc.ArgumentError:
            raise ConfigError(
                "not a PostgreSQL URL; use postgresql+psycopg://user:password@host:port/db"
            ) from None
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.drivername != "postgresql+psycopg":
            raise ConfigError(
                f"PostGIS store URLs use the psycopg 3 driver; got {parsed.drivername!r}. "
                "Write postgresql+psycopg://user:password@host:port/db"
            )
        if "schema" in parsed.query:
            schema = schema or str(parsed.query["schema"])
            parsed = parsed.difference_update_query(["schema"])
        if schema is not None and not SCHEMA_NAME.match(schema):
            raise ConfigError(
                f"schema name {schema!r} is not allowed; use lower-case letters, digits and _ "
                "(at most 63, not starting with a digit), e.g. twin_demo"
            )
        self._url = parsed
        self.url = parsed.render_as_string(hide_password=True)
        self.schema = schema
        self._drop_schema_on_close = drop_schema_on_close
        self.engine = _engine(parsed, schema)
        self.read_engine = _engine(parsed, schema, reads=True)
        self._closed = False
        try:
            self._open()
        except Exception:
            for engine in (self.engine, self.read_engine):
                engine.dispose()
                _forget_engine(engine)
            raise
        LOGGER.info("opened PostGIS store %s (schema %s)", self.url, schema or "public")

    # -- connections ------------------------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = reason[0] if reason else type(exc).__name__
        if self._url.password:
            text = text.replace(str(self._url.password), "***")
        where = f"{self._url.host or 'localhost'}:{self._url.port or 5432}/{self._url.database}"
        LOGGER.warning("PostGIS store %s unavailable: %s", self.url, text)
        return StoreUnavailableError(
            f"PostgreSQL at {where} does not answer or refuses the login ({text}). "
            "Start PostgreSQL there (e.g. `pg_ctlcluster 15 main start`) and check "
            "TWIN_DATABASE_URL (host, port, database, user and password)."
        )

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """Yield a connection in a transaction, committed on success; lost server → unavailable."""
        try:
            conn = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise self._unavailable(exc) from None
        try:
            with conn.begin():
                yield conn
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise self._unavailable(exc) from None
            raise
        finally:
            conn.close()

    def _lock(self, conn: sa.Connection, *what: str) -> None:
        lock(conn, ":".join(("gridtwin", self.schema or "public", *what)))

    def _open(self) -> None:
        with self._begin() as conn:
            if (
                conn.execute(
                    sa.text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'")
                ).scalar()
                is None
            ):
                raise ConfigError(
                    f"database {self._url.database!r} at {self._url.host}:{self._url.port or 5432} "
                    "has no PostGIS; as a superuser run `CREATE EXTENSION postgis;` in it "
                    "(install the package first, e.g. apt-get install postgresql-15-postgis-3)"
                )
            applied = migrate(conn, self.schema)
        if applied:
            LOGGER.info("schema %s migrated to %s", self.schema or "public", applied[-1])

    def close(self) -> None:
        """Dispose of the connections; drop the schema when asked to at construction."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._drop_schema_on_close and self.schema:
                with self._begin() as conn:
                    conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {quote(self.schema)} CASCADE"))
                _forget_engine(self.engine)
                _forget_engine(self.read_engine)
        finally:
            self.engine.dispose()
            self.read_engine.dispose()

    # -- layers -----------------------------------------------------------------------------------

    def _ensure_layer_tables(self, conn: sa.Connection, spec: LayerSpec) -> None:
        """Create the partitioned history of *spec*, or add the columns declared since.

        A column added to the parent is added to every partition (old versions read it empty).
        """
        history = spec.name + HISTORY_SUFFIX
        wanted = [(c.name, c.dtype) for c in spec.all_columns]
        statements = missing_columns(conn, history, wanted)
        if len(statements) == len(wanted):  # no table yet
            statements = layer_ddl(spec)
        for statement in statements:
            LOGGER.info("layer %s: %s", spec.name, statement.splitlines()[0])
            conn.execute(sa.text(statement))

    @staticmethod
    def _point_current(conn: sa.Connection, spec: LayerSpec, version: int) -> None:
        """Make the view ``<name>`` show *version*'s partition (same transaction)."""
        columns = spec.column_names + (["geom"] if spec.geometry_type else [])
        point_view(conn, spec.name, version, columns)

    def _after_rows_written(self, spec: LayerSpec, version: int) -> None:
        """Run inside the write transaction once the rows are in (a hook); raising rolls back."""

    def write_layers(
        self,
        frames: dict[str, gpd.GeoDataFrame | pd.DataFrame],
        *,
        actor: str,
        source: str,
        note: str = "",
        report: dict | None = None,
        case_grids: pd.DataFrame | None = None,
        expect: Mapping[str, int | None] | None = None,
        _prevalidated: Collection[str] = (),
    ) -> list[LayerVersion]:
        """Store several layers (and re-grid cases) in one transaction; see :class:`Store`.

        Each version is a new partition of ``<name>__history``, filled by COPY and indexed before
        it is attached; the view ``<name>`` is then pointed at it. Nothing is visible to readers
        before the commit. Layers are locked in name order, so two loads of overlapping layers
        cannot deadlock.
        """
        checked = [
            (
                spec := layers.get_layer(name),
                layer_frame_to_store(spec, frame, prevalidated=name in _prevalidated),
            )
            for name, frame in frames.items()
        ]
        wanted = None if case_grids is None else prepare_case_grids(case_grids)
        created_at = pd.Timestamp(utcnow())
        written = []
        expect = dict(expect or {})
        with self._begin() as conn:
            for name in sorted(set(frames) | set(expect)):
                self._lock(conn, "layer", name)
            if expect:
                check_expected(expect, self._current_stamps(conn, list(expect)))
            if wanted is not None and len(wanted):
                self._regrid_cases(conn, wanted, actor=actor, source=source, note=note,
                                   at=created_at)
            for spec, frame in checked:
                version = self._write_one(conn, spec, frame, created_at, actor, source, note,
                                          report)
                self._audit(conn, actor, "layer.write", f"layer:{spec.name}",
                            layer_audit(version), source)
                self._after_rows_written(spec, version.version)
                written.append(version)
            # last, just before the commit: repointing a view locks its readers out until then
            for (spec, _), version in zip(checked, written, strict=True):
                self._point_current(conn, spec, version.version)
        for version in written:
            LOGGER.info("layer %s: version %d written (%d rows) by %s", version.layer,
                        version.version, version.rows, actor)
        return written

    def _write_one(
        self,
        conn: sa.Connection,
        spec: LayerSpec,
        frame: gpd.GeoDataFrame | pd.DataFrame,
        created_at: pd.Timestamp,
        actor: str,
        source: str,
        note: str,
        report: dict | None,
    ) -> LayerVersion:
        """Write one validated layer frame as its next version, recorded as current.

        The caller points the view ``<name>`` at it (:meth:`_point_current`) before committing.

        The partition is created in this transaction, so COPY can write the rows frozen, and its
        indexes are built once over the whole version (faster than growing them row by row).
        """
        self._ensure_layer_tables(conn, spec)
        version = conn.execute(
            sa.text(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM twin_layer_versions WHERE layer = :l"
            ),
            {"l": spec.name},
        ).scalar_one()
        columns = [VERSION_COLUMN, *spec.column_names] + (["geom"] if spec.geometry_type else [])
        pieces = (
            _layer_copy_binary(spec, frame.iloc[start : start + LAYER_COPY_ROWS], version)
            for start in range(0, len(frame), LAYER_COPY_ROWS)
        )
        conn.execute(sa.text(partition_ddl(spec.name, version)))
        _copy_binary(conn, partition_name(spec.name, version), columns, pieces, freeze=True)
        for statement in partition_index_ddl(
            spec.name, version, spec.id_field, bool(spec.geometry_type)
        ):
            conn.execute(sa.text(statement))
        conn.execute(sa.text(attach_ddl(spec.name, version)))
        conn.execute(
            sa.text("UPDATE twin_layer_versions SET current = false WHERE layer = :l AND current"),
            {"l": spec.name},
        )
        conn.execute(
            sa.text(
                "INSERT INTO twin_layer_versions (layer, version, created_at, actor, source, "
                "rows, note, report, current) VALUES (:layer, :version, :created_at, :actor, "
                ":source, :rows, :note, CAST(:report AS jsonb), true)"
            ),
            {
                "layer": spec.name,
                "version": version,
                "created_at": created_at.to_pydatetime(),
                "actor": actor,
                "source": source,
                "rows": len(frame),
                "note": note,
                "report": _canonical_json(report),
            },
        )
        return LayerVersion(
            spec.name,
            int(version),
            created_at,
            actor,
            source,
            len(frame),
            note,
            json.loads(_canonical_json(report)) if report is not None else None,
            True,
        )

    def _regrid_cases(
        self,
        conn: sa.Connection,
        wanted: pd.DataFrame,
        *,
        actor: str,
        source: str,
        note: str,
        at: pd.Timestamp,
    ) -> None:
        """Move cases to new grids (inside the caller's transaction): columns, version, step."""
        stored_columns = [_CASE_COLUMN[n] for n in ("id", "version", "status", *GRID_NAMES)]
        result = conn.execute(
            sa.text(
                f"SELECT {_select_list(stored_columns, False)} FROM {quote(CASES.name)} "
                "WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
            ),
            {"ids": wanted["id"].tolist()},
        )
        updates, steps = regrid_plan(
            wanted, _frame(result, stored_columns, False), actor=actor, source=source,
            note=note, at=at,
        )
        if updates.empty:
            return
        sets = ", ".join(f"{quote(n)} = :{n}" for n in GRID_NAMES)
        conn.execute(
            sa.text(
                f"UPDATE {quote(CASES.name)} SET {sets}, version = version + 1, "
                "updated_at = GREATEST(updated_at, :at) WHERE id = :id AND version = :expected"
            ),
            [{**r, "expected": int(r["expected"]), "at": at.to_pydatetime()}
             for r in updates.to_dict("records")],
        )
        for step in steps.to_dict("records"):
            self._insert(conn, CASE_HISTORY, step)
        LOGGER.info("%d cases moved to their new grids", len(updates))

    def _versions(self, conn: sa.Connection, name: str) -> list[LayerVersion]:
        rows = conn.execute(
            sa.text(
                "SELECT layer, version, created_at, actor, source, rows, note, report::text, "
                "current FROM twin_layer_versions WHERE layer = :l ORDER BY version"
            ),
            {"l": name},
        ).fetchall()
        return [
            LayerVersion(
                r[0],
                int(r[1]),
                pd.Timestamp(r[2]).tz_convert("UTC"),
                r[3],
                r[4],
                int(r[5]),
                r[6] or "",
                json.loads(r[7]) if r[7] is not None else None,
                bool(r[8]),
            )
            for r in rows
        ]

    @staticmethod
    def _never_written(name: str) -> LayerNotFoundError:
        return LayerNotFoundError(
            f"layer {name!r} has never been loaded into this store; load it with "
            f"`python scripts/load_layer.py {name} FILE`"
        )

    @staticmethod
    def _no_version(name: str, version: int, versions: list[LayerVersion]) -> NotFoundError:
        known = ", ".join(str(v.version) for v in versions) or "none"
        return NotFoundError(f"layer {name!r} has no version {version}; its versions are: {known}")

    def read_layer(self, name: str, version: int | None = None) -> gpd.GeoDataFrame | pd.DataFrame:
        """Return the current (or the given) version of layer *name*, sorted by its id field.

        Raises
        ------
        LayerNotFoundError
            If the layer is not declared or has never been written.
        NotFoundError
            If that version does not exist.
        """
        spec = layers.get_layer(name)
        geometry = spec.geometry_type is not None
        select = _select_list(spec.all_columns, geometry)
        order = f'ORDER BY {quote(spec.id_field)} COLLATE "C"'
        with self._begin() as conn:
            # the version is chosen in this snapshot and read from its own partition: the view
            # may already show a version committed since (catalogs are not snapshot-bound)
            conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            versions = self._versions(conn, spec.name)
            if not versions:
                raise self._never_written(spec.name)
            if version is None:
                version = next((v.version for v in versions if v.current), None)
            if not any(v.version == version for v in versions):
                raise self._no_version(spec.name, version, versions)
            result = conn.execute(
                sa.text(f"SELECT {select} FROM {quote(partition_name(spec.name, version))} {order}")
            )
            return _frame(result, spec.all_columns, geometry)

    def layer_versions(self, name: str) -> list[LayerVersion]:
        """Every version of layer *name*, oldest first (empty if never written).

        Raises
        ------
        LayerNotFoundError
            If *name* is not a declared layer.
        """
        spec = layers.get_layer(name)
        with self._begin() as conn:
            return self._versions(conn, spec.name)

    def current_versions(self, names: Sequence[str]) -> dict[str, tuple[int, str] | None]:
        """Return ``{name: (version, created_at text)}`` of the current versions, in one SELECT.

        Raises
        ------
        LayerNotFoundError
            If a name is not a declared layer.
        """
        names = list(dict.fromkeys(names))
        for name in names:
            layers.get_layer(name)
        if not names:
            return {}
        with self._begin() as conn:
            return self._current_stamps(conn, names)

    @staticmethod
    def _current_stamps(conn: sa.Connection, names: list[str]) -> dict[str, tuple[int, str] | None]:
        rows = conn.execute(
            sa.text(
                "SELECT layer, version, created_at::text FROM twin_layer_versions "
                "WHERE current AND layer = ANY(:names)"
            ),
            {"names": names},
        ).fetchall()
        return current_stamps(rows, names)

    def set_current_version(self, name: str, version: int, *, actor: str) -> LayerVersion:
        """Make an existing version current again (a rollback), in one transaction.

        Raises
        ------
        NotFoundError
            If the version does not exist.
        """
        spec = layers.get_layer(name)
        with self._begin() as conn:
            self._lock(conn, "layer", spec.name)
            versions = self._versions(conn, spec.name)
            if not versions:
                raise self._never_written(spec.name)
            if not any(v.version == version for v in versions):
                raise self._no_version(spec.name, version, versions)
            self._ensure_layer_tables(conn, spec)
            previous = next((v.version for v in versions if v.current), None)
            self._point_current(conn, spec, int(version))
            conn.execute(
                sa.text("UPDATE twin_layer_versions SET current = (version = :v) WHERE layer = :l"),
                {"v": int(version), "l": spec.name},
            )
            chosen = next(v for v in self._versions(conn, spec.name) if v.version == version)
            self._audit(conn, actor, "layer.rollback", f"layer:{spec.name}",
                        layer_audit(chosen, previous=previous))
        LOGGER.info("layer %s: version %d made current by %s", spec.name, version, actor)
        return chosen

    def purge_layer_versions(self, name: str, before_version: int, *, actor: str) -> list[int]:
        """Drop older versions' partitions and records, never the current one (audited)."""
        spec = layers.get_layer(name)
        with self._begin() as conn:
            self._lock(conn, "layer", spec.name)
            versions = self._versions(conn, spec.name)
            gone = purge_plan(versions, before_version)
            if not gone:
                return []
            rows = sum(v.rows for v in versions if v.version in gone)
            for version in gone:
                if table_exists(conn, partition_name(spec.name, version)):
                    conn.execute(
                        sa.text(f"DROP TABLE {quote(partition_name(spec.name, version))}")
                    )
            conn.execute(
                sa.text(
                    "DELETE FROM twin_layer_versions WHERE layer = :l AND version = ANY(:v) "
                    "AND NOT current"
                ),
                {"l": spec.name, "v": gone},
            )
            self._audit(conn, actor, "layer.purge", f"layer:{spec.name}",
                        {"layer": spec.name, "versions": gone, "rows": int(rows)})
        LOGGER.info("%s purged versions %s of layer %s (%d rows)", actor, gone, spec.name, rows)
        return gone

    # -- events -----------------------------------------------------------------------------------

    def prepare_events(self, events: pd.DataFrame) -> PreparedEvents:
        """Coerce and check events, and encode them as binary COPY rows (no database work)."""
        payload = events["payload"] if "payload" in events else None
        if payload is not None and _json_texts(payload):
            # JSON text goes to jsonb as it is: the server parses it anyway (rejecting what is
            # not JSON) and keeps its own normal form, so canonicalising it here would be a
            # second parse and serialisation of every payload on the ingest path
            blank = pd.Series(np.full(len(events), None, dtype=object), index=events.index)
            frame = coerce_table(EVENTS, events.assign(payload=blank))
            texts = payload.to_numpy(dtype=object)
            frame["payload"] = pd.Series(np.where(pd.isna(texts), None, texts), dtype=object)
        else:
            frame = coerce_table(EVENTS, events)
        frame = checked_events(frame)
        return PreparedEvents(frame, _binary_rows(EVENTS.columns, frame))

    def append_events(self, events: pd.DataFrame | PreparedEvents) -> int:
        """Append events; ids already stored are ignored. Returns how many were new.

        The batch is COPied straight into the events table inside a savepoint: the common
        case (every id new) costs one COPY. When an id is already stored (a redelivery after a
        crash, another worker's copy, or an id twice in the batch) the COPY fails on the
        primary key, the savepoint is rolled back, and the batch goes through a temporary table
        and ``INSERT … ON CONFLICT DO NOTHING`` instead, so each id is stored exactly once.

        Raises
        ------
        ValidationError
            If a value does not convert or an id is missing (nothing is stored).
        """
        import psycopg

        if not isinstance(events, PreparedEvents) or events.encoded is None:
            events = self.prepare_events(getattr(events, "frame", events))
        if not len(events):
            return 0
        try:
            inserted = self._insert_new_events(events.encoded, len(events))
        except psycopg.errors.DataError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValidationError(
                f"table {EVENTS.name}: a payload is not JSON PostgreSQL accepts ({reason}); "
                "nothing was stored. Send payloads as objects or as valid JSON text."
            ) from None
        LOGGER.debug("events: %d sent, %d new", len(events), inserted)
        return int(inserted)

    def _insert_new_events(self, rows: memoryview, count: int) -> int:
        """COPY events (all new: one COPY; else through a temporary table); return how many new."""
        import psycopg

        names = [c.name for c in EVENTS.columns]
        columns = ", ".join(quote(c) for c in names)
        with self._begin() as conn:
            try:
                with conn.begin_nested():
                    _copy_events(conn, EVENTS.name, names, rows)
                inserted = count
            except psycopg.errors.UniqueViolation:
                conn.execute(
                    sa.text(
                        f"CREATE TEMP TABLE _twin_events_in (LIKE {quote(EVENTS.name)}) "
                        "ON COMMIT DROP"
                    )
                )
                _copy_events(conn, "_twin_events_in", names, rows)
                inserted = conn.execute(
                    sa.text(
                        f"INSERT INTO {quote(EVENTS.name)} ({columns}) SELECT {columns} "
                        "FROM _twin_events_in ON CONFLICT (id) DO NOTHING"
                    )
                ).rowcount
        return int(inserted)

    def read_events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        bbox: BBox | None = None,
        grid_code: str | None = None,
        kind: str | None = None,
    ) -> gpd.GeoDataFrame:
        """Events with ``start <= observed_at < end`` in *bbox* and grid, oldest first.

        The table has no geometry column (see ``APPEND_ONLY`` in twin.store.migrations): the
        bbox is a filter on lon/lat and the points are built from them here, as the embedded
        store does.
        """
        where, params = [], {}
        if start is not None:
            where.append("observed_at >= :start")
            params["start"] = _utc(start)
        if end is not None:
            where.append("observed_at < :end")
            params["end"] = _utc(end)
        if bbox is not None:
            x0, y0, x1, y1 = (float(v) for v in bbox)
            where.append("lon BETWEEN :x0 AND :x1 AND lat BETWEEN :y0 AND :y1")
            params.update(x0=x0, y0=y0, x1=x1, y1=y1)
        if grid_code is not None:
            where.append("grid_code = :grid_code")
            params["grid_code"] = grid_code
        if kind is not None:
            where.append("kind = :kind")
            params["kind"] = kind
        sql = (
            f"SELECT {_select_list(EVENTS.columns, False)} FROM {quote(EVENTS.name)}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + ' ORDER BY observed_at, id COLLATE "C"'
        )
        with self._begin() as conn:
            return with_points(_frame(conn.execute(sa.text(sql), params), EVENTS.columns, False))

    def _case_row(self, conn: sa.Connection, case_id: str) -> dict[str, Any] | None:
        # one keyed row through the primary key, converted value by value (no frame)
        row = conn.execute(
            sa.text(
                f"SELECT {_select_list(CASES.columns, False)} FROM {quote(CASES.name)} "
                "WHERE id = :id"
            ),
            {"id": case_id},
        ).first()
        if row is None:
            return None
        return {c.name: _row_value(v, c) for c, v in zip(CASES.columns, row, strict=True)}

    def _insert_history(
        self, conn: sa.Connection, case_id: str, version: int, history: dict[str, Any]
    ) -> None:
        step = {**history, "case_id": case_id, "version": version}
        step.setdefault("at", utcnow())
        row = _table_row(CASE_HISTORY, step)
        self._insert(conn, CASE_HISTORY, row)

    @staticmethod
    def _insert(
        conn: sa.Connection, table: TableSpec, row: dict[str, Any], on_conflict: str = ""
    ) -> sa.CursorResult:
        columns = ", ".join(quote(c.name) for c in table.columns)
        values = ", ".join(_value_sql(c) for c in table.columns)
        return conn.execute(
            sa.text(f"INSERT INTO {quote(table.name)} ({columns}) VALUES ({values}) {on_conflict}"),
            {f"p_{c.name}": _param(row[c.name], c) for c in table.columns},
        )

    # -- simple declared tables -------------------------------------------------------------------

    def put_rows(
        self, table: TableSpec, frame: pd.DataFrame, *, on_conflict: str = "ignore"
    ) -> int:
        """Insert rows (COPY into a temporary table, then one ``INSERT … ON CONFLICT``)."""
        rows = prepare_rows(table, frame, on_conflict)
        if rows.empty:
            return 0
        keys = key_columns(table)
        columns = ", ".join(quote(c.name) for c in table.columns)
        if on_conflict == "update":
            assign = ", ".join(
                f"{quote(c.name)} = EXCLUDED.{quote(c.name)}"
                for c in table.columns
                if c.name not in keys
            )
            action = f"DO UPDATE SET {assign}"
        else:
            action = "DO NOTHING"
        staging = f"_in_{table.name}"
        fields = {c.name: _copy_field(rows[c.name], c.dtype) for c in table.columns}
        with self._begin() as conn:
            conn.execute(
                sa.text(
                    f"CREATE TEMP TABLE {quote(staging)} AS SELECT {columns} "
                    f"FROM {quote(table.name)} WITH NO DATA"
                )
            )
            _copy_rows(conn, staging, fields)
            written = conn.execute(
                sa.text(
                    f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} "
                    f"FROM {quote(staging)} ON CONFLICT ({', '.join(quote(k) for k in keys)}) "
                    f"{action}"
                )
            ).rowcount
            conn.execute(sa.text(f"DROP TABLE {quote(staging)}"))
        LOGGER.debug("%s: %d of %d rows written", table.name, written, len(rows))
        return int(written)

    def read_rows(self, table: TableSpec, **equals: Any) -> pd.DataFrame:
        """Rows of a declared table matching *equals* (bound parameters), sorted by key."""
        by_name = {c.name: c for c in table.columns}
        clauses, params = [], {}
        for i, (name, typed) in enumerate(prepare_equals(table, equals)):
            values = [_param(v, by_name[name]) for v in typed.tolist()]
            if not values:
                clauses.append("false")
                continue
            marks = []
            for j, value in enumerate(values):
                params[f"v{i}_{j}"] = value
                marks.append(f":v{i}_{j}")
            clauses.append(f"{quote(name)} IN ({', '.join(marks)})")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        order = ", ".join(quote(k) for k in key_columns(table))
        with self._begin() as conn:
            result = conn.execute(
                sa.text(
                    f"SELECT {_select_list(table.columns, False)} FROM {quote(table.name)}"
                    f"{where} ORDER BY {order}"
                ),
                params,
            )
            return _frame(result, table.columns, False)

    def create_case(
        self, case: dict[str, Any], *, history: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Store a new case at version 1 (and its first step) and return it.

        Raises
        ------
        DuplicateIdError
            If a case with that id exists.
        ValidationError
            If a field is unknown or a value does not convert.
        """
        values = {**case, "version": 1}
        values.setdefault("updated_at", utcnow())
        row = _table_row(CASES, values)
        if row["id"] is None:
            raise ValidationError("a case needs an id (its service_request_id)")
        with self._begin() as conn:
            result = self._insert(conn, CASES, row, "ON CONFLICT (id) DO NOTHING RETURNING id")
            if result.first() is None:
                raise DuplicateIdError(
                    f"case {row['id']} already exists; change it with update_case or use a new id"
                )
            if history is not None:
                self._insert_history(conn, row["id"], 1, history)
            return self._case_row(conn, row["id"])

    def update_case(
        self,
        case_id: str,
        changes: dict[str, Any],
        *,
        expected_version: int,
        history: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Apply *changes* if the case is still at *expected_version*; return the new case.

        Raises
        ------
        NotFoundError
            If there is no such case.
        StaleUpdateError
            If the case was changed since *expected_version* (nothing is written).
        ValidationError
            If *changes* names unknown fields, ``id`` or ``version``, or a value does not convert.
        """
        known = {c.name for c in CASES.columns}
        bad = sorted(k for k in changes if k not in known or k in ("id", "version"))
        if bad:
            raise ValidationError(
                f"case {case_id}: cannot change {bad}; id and version are kept by the store and "
                f"the fields are {sorted(known - {'id', 'version'})}"
            )
        values = {**changes}
        values.setdefault("updated_at", utcnow())
        row = _table_row(CASES, values)
        columns = [c for c in CASES.columns if c.name in values]
        sets = ", ".join(f"{quote(c.name)} = {_value_sql(c)}" for c in columns)
        params = {f"p_{c.name}": _param(row[c.name], c) for c in columns}
        params.update(id=case_id, expected=int(expected_version))
        with self._begin() as conn:
            updated = conn.execute(
                sa.text(
                    f"UPDATE {quote(CASES.name)} SET {sets}, version = version + 1 "
                    "WHERE id = :id AND version = :expected RETURNING version"
                ),
                params,
            ).first()
            if updated is None:
                now = conn.execute(
                    sa.text(f"SELECT version FROM {quote(CASES.name)} WHERE id = :id"),
                    {"id": case_id},
                ).scalar()
                if now is None:
                    raise NotFoundError(
                        f"case {case_id!r} does not exist; check the id (read_cases lists cases)"
                    )
                raise StaleUpdateError(
                    f"case {case_id} was changed by someone else (now version {now}, you had "
                    f"{expected_version}); reload it and try again"
                )
            if history is not None:
                self._insert_history(conn, case_id, int(updated[0]), history)
            return self._case_row(conn, case_id)

    def get_case(self, case_id: str) -> dict[str, Any]:
        """One case as a dict of Python values. Raises NotFoundError if absent."""
        with self._begin() as conn:
            row = self._case_row(conn, case_id)
        if row is None:
            raise NotFoundError(
                f"case {case_id!r} does not exist; check the id (read_cases lists cases)"
            )
        return row

    def case_history(self, case_id: str) -> pd.DataFrame:
        """Every recorded step of a case, oldest first (columns of CASE_HISTORY)."""
        with self._begin() as conn:
            return _frame(
                conn.execute(
                    sa.text(
                        f"SELECT {_select_list(CASE_HISTORY.columns, False)} "
                        f"FROM {quote(CASE_HISTORY.name)} WHERE case_id = :id ORDER BY version"
                    ),
                    {"id": case_id},
                ),
                CASE_HISTORY.columns,
                False,
            )

    def read_cases(
        self,
        *,
        status: str | None = None,
        grid_code: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> gpd.GeoDataFrame | pd.DataFrame:
        """Cases, optionally of one status or unit grid, requested in ``[since, until)``, by id.

        With *columns*, only those are read, in one ``COPY (SELECT …)`` parsed by pyarrow's CSV
        reader (times travel as integer microseconds): no Python object per value.
        """
        where, params = [], {}
        for name, value in (("status", status), ("grid_code", grid_code)):
            if value is not None:
                where.append(f"{name} = :{name}")
                params[name] = value
        for name, bound, op in (("since", since, ">="), ("until", until, "<")):
            if bound is not None:
                where.append(f"requested_at {op} :{name}")
                params[name] = _utc(bound)
        if columns is not None:
            return self._read_case_columns(columns, where, params)
        sql = (
            f"SELECT {_select_list(CASES.columns, True)} FROM {quote(CASES.name)}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + ' ORDER BY id COLLATE "C"'
        )
        with self._begin() as conn:
            return _frame(conn.execute(sa.text(sql), params), CASES.columns, True)

    def _read_case_columns(
        self, columns: Sequence[str], where: list[str], params: dict[str, Any]
    ) -> pd.DataFrame | gpd.GeoDataFrame:
        wanted, points = case_columns(columns)
        fetched = list(wanted)
        if points:
            fetched += [_CASE_COLUMN[n] for n in ("lon", "lat") if _CASE_COLUMN[n] not in wanted]
        if not fetched:
            return pd.DataFrame(index=pd.RangeIndex(0))
        # Each column comes as one value per chunk of rows: packed binary (a timestamptz is
        # 8 bytes of µs since 2000) or CSV text. Fetching a million rows (or COPY messages)
        # one by one costs more in Python than everything else.
        aggregates = ", ".join(_aggregate(c) for c in [_CASE_COLUMN["id"], *fetched])
        # no ORDER BY on the server: rows are put in id order here (a bytewise sort is
        # COLLATE "C"), which saves sorting a million rows in SQL
        where_sql = " WHERE " + " AND ".join(where) if where else ""
        with self._begin() as conn:
            estimate = conn.execute(
                sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": quote(CASES.name)},
            ).scalar()
            parts = max(1, int(max(estimate or 0, 0) // AGG_CHUNK_ROWS) + 1)
            chunks = conn.execute(
                sa.text(
                    f"SELECT {aggregates} FROM {quote(CASES.name)}{where_sql} "
                    f"GROUP BY abs(hashtext(id) % {parts})"
                ),
                params,
            ).fetchall()
        frame = _unpack_columns(chunks, fetched)
        if not points:
            return frame[[c.name for c in wanted]]
        lon = frame["lon"].to_numpy(dtype=float, na_value=np.nan)
        lat = frame["lat"].to_numpy(dtype=float, na_value=np.nan)
        points = shapely.points(lon, lat)
        points[~(np.isfinite(lon) & np.isfinite(lat))] = None  # like the generated geom column
        out = gpd.GeoDataFrame(frame, geometry=points, crs=CRS)
        return out[[*(c.name for c in wanted), "geometry"]]

    def case_counts(
        self,
        components: dict[str, str] | Sequence[str] | None = None,
        *,
        by: Sequence[str] = (),
        period: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        as_of: datetime | None = None,
    ) -> pd.DataFrame:
        """Count cases per slice and period (see :meth:`Store.case_counts`).

        Months that the rollup holds (:mod:`twin.store.rollup`) are summed from it; the rest is
        ONE ``GROUP BY`` over the cases, in the same transaction (one snapshot).
        """
        with self._begin() as conn:
            conn.execute(sa.text(f"SET LOCAL work_mem = '{COUNT_WORK_MEM}'"))

            def span(where: str, params: dict[str, Any]) -> tuple[Any, Any]:
                return conn.execute(
                    sa.text(
                        f"SELECT min(filed_at), max(filed_at) FROM {quote(CASES.name)} "
                        f"WHERE {where}"
                    ),
                    params,
                ).first()

            def grouped(lo: Any, hi: Any) -> pd.DataFrame:
                query = plan_case_counts(
                    components, by, period, lo, hi, as_of, span=span, table=CASES.name,
                    quote=quote, fence=_FENCE, time=_utc,
                )
                rows = [] if query is None else _count_rows(conn, query)
                return count_frame(query, rows, by=by, components=components, period=period)

            def from_rollup(plan: rollup.RollupSplit) -> pd.DataFrame:
                query = rollup.read_query(plan, quote=quote, key=quote)
                return rollup.finish(query, _count_rows(conn, query), plan, components)

            return rollup.counts(components, by, period, since, until, as_of,
                                 from_rollup=from_rollup, grouped=grouped)

    # -- audit ------------------------------------------------------------------------------------

    def append_audit(
        self,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        """Append one row to the hash-chained audit log, serialised by an advisory lock."""
        with self._begin() as conn:
            row = self._audit(conn, actor, action, target, detail, origin)
        audit_anchor.anchor_row(self, row)  # after the commit: the head never runs ahead
        return row

    def _audit(
        self,
        conn: sa.Connection,
        actor: str,
        action: str,
        target: str,
        detail: dict[str, Any] | None = None,
        origin: str = "",
    ) -> dict[str, Any]:
        """Append one audit row inside the caller's transaction (the audit lock held to commit)."""
        self._lock(conn, "audit")
        last = conn.execute(
            sa.text(f"SELECT seq, hash FROM {quote(AUDIT.name)} ORDER BY seq DESC LIMIT 1")
        ).first()
        seq, prev_hash = audit_anchor.next_link(self, last)  # never a seq used before
        row = {
            "seq": seq,
            "at": pd.Timestamp(utcnow()),
            "actor": actor,
            "action": action,
            "target": target,
            "detail": _canonical_json(detail),
            "origin": origin,
            "prev_hash": prev_hash,
        }
        row["hash"] = audit_hash(prev_hash, row)
        self._insert(conn, AUDIT, _table_row(AUDIT, row))
        return row

    def read_audit(self, since: int | None = None) -> pd.DataFrame:
        """Return the audit log in chain order: every row, or those from seq *since* on."""
        where = "" if since is None else " WHERE seq >= :since"
        with self._begin() as conn:
            return _frame(
                conn.execute(
                    sa.text(
                        f"SELECT {_select_list(AUDIT.columns, False)} "
                        f"FROM {quote(AUDIT.name)}{where} ORDER BY seq"
                    ),
                    {} if since is None else {"since": int(since)},
                ),
                AUDIT.columns,
                False,
            )
