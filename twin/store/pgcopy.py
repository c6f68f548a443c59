"""PostgreSQL's bulk paths: binary and text COPY encoded column-wise, and packed reads.

The PostGIS store writes layer versions, events and declared rows through COPY, and reads many
case columns and count rows as values the server packs (no Python object per row).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa

from twin.schema import CASES, Column, LayerSpec
from twin.store.base import count_columns, read_csv_columns
from twin.store.dialect import SRID, quote

COPY_CHUNK_ROWS = 50_000
COPY_CHUNK_BYTES = 8 << 20  # COPY text handed to psycopg this many bytes at a time

# -- COPY text format, built column-wise (no per-row Python) ------------------------------------

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def copy_field(series: pd.Series, dtype: str) -> np.ndarray:
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


def copy_rows(conn: sa.Connection, table: str, fields: dict[str, np.ndarray]) -> None:
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


def json_texts(series: pd.Series) -> bool:
    """Whether *series* holds only JSON texts (or missing values): one C pass over it."""
    kind = series.dtype
    textual = pd.api.types.is_object_dtype(kind) or isinstance(kind, pd.StringDtype)
    return textual and pd.api.types.infer_dtype(series, skipna=True) == "string"


def copy_events(conn: sa.Connection, table: str, names: list[str], rows: memoryview) -> None:
    """COPY events given as binary COPY tuples into *table* (one batch: no writer thread)."""
    copy_binary(conn, table, names, [rows], queued=False)


# -- binary COPY tuples, built column-wise (the server parses no text: no number, time or
# escape parsing; about a quarter less server time per event than the text format) ---------

_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no extension
_BINARY_TRAILER = b"\xff\xff"


def binary_rows(columns: Sequence[Column], frame: pd.DataFrame) -> memoryview:
    """Return the rows of a coerced frame as binary COPY tuples (no header or trailer)."""
    if len(frame) == 0:
        return memoryview(b"")
    parts = [p for c in columns for p in binary_parts(frame[c.name], c.dtype)]
    return binary_tuples(len(columns).to_bytes(2, "big"), parts)


def binary_tuples(head: bytes, parts: list[Any]) -> memoryview:
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


def binary_parts(series: pd.Series, dtype: str) -> list[Any]:
    """One column of a canonical layer frame as binary COPY fields: pieces to join.

    A field is its 4-byte length (-1 for NULL) and its bytes; the pieces are returned as
    separate arrays (lengths, values …) that :func:`binary_tuples` concatenates row by row,
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


def binary_ewkb(values: np.ndarray) -> list[Any]:
    """Binary COPY fields of 2D geometries as EWKB with SRID 4326 (pieces to join).

    Points, lines and polygons without holes (nearly every footprint, camera and road) are
    written by :func:`simple_ewkb`; anything else by GEOS, whose little-endian WKB gets the
    "has an SRID" flag set in the type's high byte and the SRID's 4 bytes after the 5-byte header.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    simple = simple_ewkb(values)
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


def simple_ewkb(values: np.ndarray) -> list[Any] | None:
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


def layer_copy_binary(spec: LayerSpec, frame: pd.DataFrame, version: int) -> memoryview:
    """Return a validated layer frame as binary COPY rows of ``<name>__history`` (no header).

    Geometries go as EWKB bytes, numbers as their binary values, so the server parses no hex or
    decimal text; the rows are joined by Arrow from per-column arrays (no Python per row).
    """
    if len(frame) == 0:
        return memoryview(b"")
    count = 1 + len(spec.all_columns) + (1 if spec.geometry_type else 0)
    # each row: its field count, then the version as a 4-byte integer field
    head = count.to_bytes(2, "big") + (4).to_bytes(4, "big") + int(version).to_bytes(4, "big")
    parts = [p for c in spec.all_columns for p in binary_parts(frame[c.name], c.dtype)]
    if spec.geometry_type:
        parts += binary_ewkb(np.asarray(frame.geometry.values, dtype=object))
    return binary_tuples(head, parts)


def copy_binary(
    conn: sa.Connection,
    table: str,
    columns: list[str],
    pieces: Iterable[memoryview],
    *,
    freeze: bool = False,
    queued: bool = True,
) -> None:
    """COPY binary COPY rows, given in pieces, into *table* on the transaction's connection.

    The pieces are rows without the stream's header and trailer (:func:`binary_rows`,
    :func:`layer_copy_binary`). With *queued*, a psycopg writer thread sends each piece while
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



_CASE_COLUMN = {c.name: c for c in CASES.columns}


_NULL_INT = -(2**63)  # also PostgreSQL's binary '-infinity' timestamp
_EPOCH_2000_US = 946_684_800_000_000


def csv_expression(column: Column) -> str:
    """Return SQL writing a text column as one CSV field (NULL: empty, text: quoted)."""
    name = quote(column.name)
    quoted = f"""'"' || replace({name}::text, '"', '""') || '"'"""
    return f"CASE WHEN {name} IS NULL THEN '' ELSE {quoted} END"


def aggregate(column: Column) -> str:
    """Return the aggregate packing one column of a chunk of cases into one value."""
    name = quote(column.name)
    if column.dtype in ("text", "json", "date"):
        return f"string_agg({csv_expression(column)}, E'\\n')"
    if column.dtype == "datetime":
        return f"string_agg(timestamptz_send(COALESCE({name}, '-infinity')), ''::bytea)"
    if column.dtype == "bool":
        flag = f"(CASE WHEN {name} THEN 1 WHEN NOT {name} THEN 0 ELSE 2 END)::smallint"
        return f"string_agg(int2send({flag}), ''::bytea)"
    if column.dtype == "float":
        return f"string_agg(float8send(COALESCE({name}, 'NaN')), ''::bytea)"
    return f"string_agg(int8send(COALESCE({name}, {_NULL_INT})), ''::bytea)"


def count_rows(conn: sa.Connection, query: Any) -> pd.DataFrame | list[tuple]:
    """Run a :class:`~twin.store.base.CountQuery`: its rows as a frame, parsed in bulk.

    A grid × month table is a few hundred thousand rows: building Python rows (or reading
    one COPY message per row) costs more than the ``GROUP BY`` itself. The server packs the
    whole result into one CSV text (as :func:`aggregate` packs case columns), which pyarrow
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
        csv_expression(c) if c.dtype == "text" else f"COALESCE({quote(c.name)}::text, '')"
        for c in columns
    ]
    line = " || ',' || ".join(fields)
    packed = conn.execute(
        sa.text(f"SELECT string_agg({line}, E'\\n') FROM ({query.sql}) AS _counted"), params
    ).scalar()
    if not packed:
        return []
    table = read_csv_columns((packed + "\n").encode("utf-8"), columns)
    return table.to_pandas().astype({c.name: "str" for c in columns if c.dtype == "text"})


def unpack_columns(chunks: Sequence[Sequence[Any]], columns: Sequence[Column]) -> pd.DataFrame:
    """Typed frame (id order) from the packed chunks of :func:`aggregate` (vectorised)."""
    def packed(i: int, dtype: str) -> np.ndarray:
        parts = [np.frombuffer(bytes(chunk[i]), dtype=dtype) for chunk in chunks if chunk[i]]
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    import pyarrow.compute as pc

    def text(i: int, column: Column) -> Any:
        data = b"".join((chunk[i] + "\n").encode("utf-8") for chunk in chunks)
        return read_csv_columns(data, [column]).column(0)

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


