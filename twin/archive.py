"""GeoParquet archives of event months: written by days, read back before a month is dropped."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely

from twin import settings
from twin.errors import ValidationError
from twin.schema import EVENTS
from twin.store.eventparts import month_start

LOGGER = logging.getLogger(__name__)

_ARROW_TYPES = {"text": "string", "json": "string", "float": "float64", "int": "int64",
                "bool": "bool", "date": "date32"}


def archive_dir(folder: str | Path | None = None) -> Path:
    """Return the archive folder: *folder*, else ``TWIN_EVENTS_ARCHIVE_DIR``, else data_dir's."""
    chosen = folder or settings.get("events_archive_dir")
    return Path(chosen) if chosen else Path(settings.get("data_dir")) / "archive" / "events"


def archive_path(folder: Path, month: Any) -> Path:
    """Return a new file for *month*'s archive: an earlier archive of it is never overwritten."""
    stem = f"{EVENTS.name}_{month_start(month):%Y-%m}"
    path, n = folder / f"{stem}.parquet", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}.{n}.parquet"
    return path


def _schema() -> Any:
    import pyarrow as pa

    fields = [
        pa.field(c.name, pa.timestamp("us", tz="UTC") if c.dtype == "datetime"
                 else getattr(pa, _ARROW_TYPES[c.dtype])())
        for c in EVENTS.columns
    ]
    return pa.schema([*fields, pa.field("geometry", pa.binary())])


def _geo_metadata(frame: Any) -> bytes:
    """GeoParquet's ``geo`` metadata for the archive (without a bbox: it is written by days)."""
    from geopandas.io.arrow import _geopandas_to_arrow

    meta = json.loads(_geopandas_to_arrow(frame.iloc[:0], index=False).schema.metadata[b"geo"])
    for column in meta["columns"].values():
        column.pop("bbox", None)
    return json.dumps(meta).encode()


def _table(frame: Any, schema: Any) -> Any:
    """Return a day of events as an Arrow table: payload as JSON text, geometry as WKB."""
    import pyarrow as pa

    columns = {}
    for c in EVENTS.columns:
        values = frame[c.name]
        if c.dtype == "json":
            values = values.map(lambda v: v if v is None or isinstance(v, str)
                                else json.dumps(v, ensure_ascii=False))
        columns[c.name] = pa.array(values.to_numpy(dtype=object) if c.dtype in ("text", "json")
                                   else values, type=schema.field(c.name).type, from_pandas=True)
    geoms = np.asarray(frame.geometry.values, dtype=object)
    columns["geometry"] = pa.array(shapely.to_wkb(geoms), type=pa.binary(), from_pandas=True)
    return pa.table(columns, schema=schema)


#: Events read into memory at a time while a month is archived (a slice of the month each).
CHUNK_ROWS = 2_000_000


def export_month(store: Any, month: Any, folder: str | Path | None = None, *,
                 rows_hint: int | None = None) -> tuple[Path, int]:
    """Write the events of *month* (UTC) to a GeoParquet file, a slice at a time; check it.

    The month is read in equal time slices, as many as *rows_hint* (its expected rows; by
    default a day each) needs to keep each under :data:`CHUNK_ROWS`. The file is written
    under a temporary name and renamed once complete. Returns the path and the rows written,
    after :func:`check_archive` has read them back.
    """
    import pyarrow.parquet as pq

    start = month_start(month)
    folder = archive_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = archive_path(folder, start)
    partial = path.with_name(path.name + ".part")
    schema = _schema()
    rows, writer = 0, None
    try:
        end = start + pd.offsets.MonthBegin(1)
        slices = 31 if rows_hint is None else max(1, -(-int(rows_hint) // CHUNK_ROWS))
        bounds = pd.date_range(start, end, periods=slices + 1)
        for low, high in zip(bounds[:-1], bounds[1:], strict=True):
            frame = store.read_events(low, high)
            if writer is None:
                schema = schema.with_metadata({b"geo": _geo_metadata(frame)})
                writer = pq.ParquetWriter(partial, schema, compression="zstd")
            if len(frame):
                writer.write_table(_table(frame, schema))
                rows += len(frame)
    finally:
        if writer is not None:
            writer.close()
    os.replace(partial, path)
    check_archive(path, rows)
    LOGGER.info("events of %s archived: %d rows in %s", f"{start:%Y-%m}", rows, path)
    return path, rows


def check_archive(path: Path, rows: int) -> None:
    """Read the archive back whole (ids and geometries, batch by batch) and count its rows.

    Raises
    ------
    ValidationError
        If it cannot be read as GeoParquet or holds another number of rows than *rows*.
    """
    import pyarrow.parquet as pq

    try:
        archive = pq.ParquetFile(path)
        meta = json.loads(archive.schema_arrow.metadata[b"geo"])
        found = 0
        for batch in archive.iter_batches(columns=["id", meta["primary_column"]]):
            shapely.from_wkb(batch.column(1).to_numpy(zero_copy_only=False))
            found += batch.num_rows
    except Exception as exc:  # any failure to read it back means: do not drop the month
        raise ValidationError(f"the archive {path} cannot be read back ({exc}); nothing was "
                              "dropped. Check the archive folder's disk and try again.") from exc
    if found != rows:
        raise ValidationError(f"the archive {path} holds {found} rows, {rows} were written; "
                              "nothing was dropped. Check the archive folder's disk and try again.")
