"""Reading the files staff receive (Shapefile, GeoPackage, GeoJSON, KML, CSV, xlsx) into frames."""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely

from twin.errors import ValidationError

LOGGER = logging.getLogger(__name__)

VECTOR_SUFFIXES = {
    ".shp": "Shapefile",
    ".gpkg": "GeoPackage",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".kml": "KML",
}
TABLE_SUFFIXES = {".csv": "CSV", ".txt": "CSV", ".xlsx": "Excel", ".xlsm": "Excel"}
SUFFIXES = {**VECTOR_SUFFIXES, **TABLE_SUFFIXES}
# .cpg contents → Python codec names
CPG_CODECS = {
    "936": "GBK",
    "cp936": "GBK",
    "gbk": "GBK",
    "gb2312": "GBK",
    "gb18030": "GB18030",
    "54936": "GB18030",
    "utf-8": "UTF-8",
    "utf8": "UTF-8",
    "65001": "UTF-8",
    "88591": "ISO-8859-1",
    "8859_1": "ISO-8859-1",
    "iso-8859-1": "ISO-8859-1",
    "latin1": "ISO-8859-1",
    "950": "BIG5",
    "big5": "BIG5",
}
LON_NAMES = ("lon", "lng", "long", "longitude", "x", "point_x", "经度", "东经", "经度坐标")
LAT_NAMES = ("lat", "latitude", "y", "point_y", "纬度", "北纬", "纬度坐标")
WKT_NAMES = ("wkt", "geometry", "geom", "the_geom", "shape", "几何")
_DMS = re.compile(
    r"^\s*(?P<d>\d+(?:\.\d+)?)\s*[°度:]\s*(?:(?P<m>\d+(?:\.\d+)?)\s*['′分:]?)?\s*"
    r"(?:(?P<s>\d+(?:\.\d+)?)\s*[\"″秒]?)?\s*(?P<h>[NSEWnsew东西南北])?\s*$"
)


class LoadError(ValidationError):
    """A file cannot be loaded as it is; the message says why and what to do."""

    def __init__(self, message: str, report: dict | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class RawData:
    """What was read from the source, before any checking: the frame and how it was read."""

    frame: pd.DataFrame  # a GeoDataFrame when the source has geometries
    fmt: str
    file: Path
    crs: pyproj.CRS | None = None
    crs_how: str = ""
    crs_stated: bool = False  # the file names its CRS (.prj, GeoPackage); not a format's rule
    encoding: str | None = None
    encoding_how: str = ""
    source_layer: str | None = None
    coordinate_columns: tuple[str, ...] = ()
    issues: list[dict[str, Any]] = field(default_factory=list)


# -- finding the data file -----------------------------------------------------------------------


def resolve_source(
    path: Path,
    source_layer: str | None,
    stack: contextlib.ExitStack,
    *,
    max_unzipped_bytes: int | None = None,
    max_zip_ratio: float | None = None,
) -> Path:
    """Return the file to read: *path* itself, the one data file in a folder or in a .zip.

    A .zip is inspected before anything is written: its entries GridTwin could read are checked
    against *max_unzipped_bytes* (default :data:`MAX_UNZIPPED_BYTES`) and *max_zip_ratio*
    (default :data:`MAX_ZIP_RATIO`), then only those entries are streamed into a temporary
    folder, counting what is written (see :func:`unzip_checked`).
    """
    if not path.exists():
        raise LoadError(f"{path} does not exist; check the path (a file, a folder or a .zip).")
    if path.is_file() and path.suffix.lower() == ".zip":
        tmp = unzip_checked(path, stack, max_unzipped_bytes=max_unzipped_bytes,
                            max_zip_ratio=max_zip_ratio)
        return resolve_source(tmp, source_layer, stack)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        files = [p for p in files if not any(part.startswith("__MACOSX") for part in p.parts)]
        if source_layer:
            chosen = [p for p in files if p.stem == source_layer or p.name == source_layer]
            if len(chosen) == 1 and chosen[0].suffix.lower() not in {".gpkg", ".xlsx", ".xlsm"}:
                return chosen[0]
        shps = [p for p in files if p.suffix.lower() == ".shp"]
        candidates = shps or files
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise LoadError(
                f"{path.name} holds no file GridTwin can read; send a Shapefile (.shp with "
                f".shx/.dbf/.prj), GeoPackage, GeoJSON, KML, CSV or .xlsx ({', '.join(SUFFIXES)})."
            )
        names = ", ".join(p.name for p in candidates[:10])
        raise LoadError(
            f"{path.name} holds several data files ({names}); choose one with "
            "--source-layer NAME (the file name without extension)."
        )
    if path.suffix.lower() not in SUFFIXES:
        hint = " Save it as .xlsx." if path.suffix.lower() == ".xls" else ""
        raise LoadError(
            f"{path.name}: GridTwin cannot read {path.suffix or 'files without extension'}; "
            f"use one of {', '.join(SUFFIXES)} or a .zip/folder of them.{hint}"
        )
    return path


#: The most a .zip may unpack to (the entries GridTwin reads, summed): 2 GiB. The largest
#: staff files seen are a few hundred MB; a larger archive can be unzipped and loaded as a folder.
MAX_UNZIPPED_BYTES = 2 * 1024**3
#: The most an entry may inflate (uncompressed / compressed size) once larger than
#: :data:`ZIP_RATIO_FROM_BYTES`: Apache POI's zip-bomb guard uses the same 100:1. Real GIS data
#: compress 2-20:1; a run of zeros compresses 1,000:1.
MAX_ZIP_RATIO = 100.0
ZIP_RATIO_FROM_BYTES = 16 * 1024**2  # smaller entries cannot hurt, whatever their ratio
MAX_ZIP_ENTRIES = 10_000  # of the entries GridTwin reads
#: Besides the data files, the parts of a shapefile that GDAL reads with it.
SIDECAR_SUFFIXES = {".shx", ".dbf", ".prj", ".cpg", ".qpj"}
_UNZIP_SUFFIXES = set(SUFFIXES) | SIDECAR_SUFFIXES


def unzip_checked(
    path: Path,
    stack: contextlib.ExitStack,
    *,
    max_unzipped_bytes: int | None = None,
    max_zip_ratio: float | None = None,
) -> Path:
    """Unpack the readable entries of the .zip *path* into a temporary folder and return it.

    Only entries with a suffix GridTwin reads (:data:`SUFFIXES` and the shapefile parts) are
    written; the archive's own table of entries is checked first (total size, ratio, count), and
    the bytes are counted again while streaming, so an archive whose entries say less than they
    hold is stopped at the limit too. The folder is removed when *stack* closes.

    Raises
    ------
    LoadError
        If the archive is not a .zip, or unpacks to more than the limits allow (a zip bomb).
    """
    limit = MAX_UNZIPPED_BYTES if max_unzipped_bytes is None else int(max_unzipped_bytes)
    ratio = MAX_ZIP_RATIO if max_zip_ratio is None else float(max_zip_ratio)
    try:
        zf = stack.enter_context(zipfile.ZipFile(path))
        members = [
            (m, _zip_name(m))
            for m in zf.infolist()
            if not m.is_dir() and Path(_zip_name(m)).suffix.lower() in _UNZIP_SUFFIXES
        ]
    except (zipfile.BadZipFile, OSError, ValueError):
        raise LoadError(f"{path.name} is not a readable .zip; re-create the archive.") from None
    total = sum(m.file_size for m, _ in members)
    unzip_yourself = (
        "If the archive is genuine, unzip it yourself and load the folder; otherwise ask for "
        "the data again."
    )
    if len(members) > MAX_ZIP_ENTRIES:
        raise LoadError(
            f"{path.name} holds {len(members):,} data files; GridTwin unpacks at most "
            f"{MAX_ZIP_ENTRIES:,}. {unzip_yourself}"
        )
    if total > limit:
        raise LoadError(
            f"{path.name} would unpack to {_bytes(total)} (its data files), more than the "
            f"{_bytes(limit)} GridTwin unpacks from a .zip: refused without unpacking "
            f"(a zip bomb?). {unzip_yourself}"
        )
    for m, name in members:
        inflates = m.file_size / max(m.compress_size, 1)
        if m.file_size > ZIP_RATIO_FROM_BYTES and inflates > ratio:
            raise LoadError(
                f"{path.name}: {name} inflates {inflates:,.0f}:1 ({_bytes(m.compress_size)} → "
                f"{_bytes(m.file_size)}), past the {ratio:,.0f}:1 GridTwin accepts from a .zip: "
                f"refused without unpacking (a zip bomb?). {unzip_yourself}"
            )
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="twin-load-")))
    root = tmp.resolve()
    written = 0
    try:
        for member, name in members:
            target = (tmp / name).resolve()
            if not target.is_relative_to(root) or target == root:
                continue  # never write outside the temporary folder
            target.parent.mkdir(parents=True, exist_ok=True)
            left = member.file_size  # zipfile stops at the declared size and checks the CRC
            with zf.open(member) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    left -= len(chunk)
                    if written > limit or left < 0:
                        raise LoadError(
                            f"{path.name}: {name} holds more than its entry says; refused "
                            f"while unpacking (a damaged archive or a zip bomb). {unzip_yourself}"
                        )
                    dst.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise LoadError(
            f"{path.name}: cannot unpack {name}: {_first_line(exc)}; re-create the archive."
        ) from None
    return tmp


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"


def _zip_name(member: zipfile.ZipInfo) -> str:
    # Chinese Windows zips store names in GBK without the UTF-8 flag; zipfile decodes them as cp437
    if member.flag_bits & 0x800:
        return member.filename
    raw = member.filename.encode("cp437", errors="replace")
    for enc in ("utf-8", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return member.filename


# -- encodings -----------------------------------------------------------------------------------


def detect_dbf_encoding(dbf: Path) -> str:
    """UTF-8 when every text byte of the .dbf decodes strictly as UTF-8, else GB18030.

    ASCII-only files are reported as UTF-8 (both decode them the same).
    """
    with open(dbf, "rb") as fh:
        head = fh.read(32)
        if len(head) < 32:
            return "UTF-8"
        n_records, header_len = struct.unpack("<IH", head[4:10])
        descriptors = fh.read(max(header_len - 32, 0))
        names = b"".join(
            descriptors[i : i + 11].split(b"\0", 1)[0]
            for i in range(0, len(descriptors) - 31, 32)
            if descriptors[i : i + 1] != b"\r"
        )
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            decoder.decode(names, final=True)
            decoder.reset()
            while chunk := fh.read(1 << 22):
                decoder.decode(chunk.rstrip(b"\x1a"), final=False)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "GB18030"
    return "UTF-8"


def decode_text(data: bytes, encoding: str | None, what: str) -> tuple[str, str, str]:
    """Decode a text file: the given encoding, else UTF-8 (with or without BOM), else GB18030.

    Returns the text, the encoding chosen and how it was chosen.
    """
    if encoding:
        try:
            return data.decode(encoding), encoding, "--encoding"
        except (LookupError, UnicodeDecodeError) as exc:
            raise LoadError(
                f"{what} does not decode as {encoding} ({exc}); try --encoding GB18030 or UTF-8."
            ) from None
    try:
        return data.decode("utf-8-sig"), "UTF-8", "detected (strict UTF-8 decode succeeded)"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("gb18030"), "GB18030", "detected (not UTF-8; decodes as GB18030)"
    except UnicodeDecodeError:
        raise LoadError(
            f"{what} is neither UTF-8 nor GB18030 text; re-save it as UTF-8 CSV or give --encoding."
        ) from None


# -- reading -------------------------------------------------------------------------------------


def read_source(
    file: Path,
    *,
    geometry: bool,
    encoding: str | None = None,
    source_layer: str | None = None,
    lon: str | None = None,
    lat: str | None = None,
    wkt: str | None = None,
    stack: contextlib.ExitStack,
) -> RawData:
    """Read *file* (already resolved by :func:`resolve_source`) into a :class:`RawData`."""
    fmt = SUFFIXES[file.suffix.lower()]
    if fmt == "CSV" or fmt == "Excel":
        return _read_table(file, fmt, geometry, encoding, source_layer, lon, lat, wkt)
    if lon or lat or wkt:
        raise LoadError(
            f"--lon/--lat/--wkt are for CSV and Excel tables; {file.name} is a {fmt} with its own "
            "geometries. Leave them out."
        )
    return _read_vector(file, fmt, encoding, source_layer, stack)


def _read_vector(
    file: Path, fmt: str, encoding: str | None, source_layer: str | None, stack
) -> RawData:
    issues: list[dict] = []
    enc_how = ""
    layer = None
    records = None
    if fmt == "Shapefile":
        file, enc, enc_how, shp_issues, records = _prepare_shapefile(file, encoding, stack)
        issues += shp_issues
        encoding = enc
    elif fmt in ("GeoPackage", "KML"):
        layer = _choose_layer(file, fmt, source_layer)
        enc_how = "UTF-8 (the format's own)"
    else:
        enc_how = "UTF-8 (the format's own)"
    layers = [layer] if not isinstance(layer, list) else layer
    frames = []
    for name in layers:
        try:
            frame = pyogrio.read_dataframe(
                file,
                layer=name,
                encoding=encoding if fmt == "Shapefile" else None,
                on_invalid="ignore",
                # GDAL's Arrow stream reads a GeoPackage about twice as fast; its text is UTF-8
                use_arrow=fmt == "GeoPackage",
            )
        except pyogrio.errors.DataSourceError as exc:
            raise LoadError(f"{file.name} cannot be read as {fmt}: {_first_line(exc)}.") from None
        except pyogrio.errors.DataLayerError as exc:
            raise LoadError(f"{file.name}: {_first_line(exc)}; check --source-layer.") from None
        except UnicodeDecodeError:
            raise LoadError(
                f"{file.name}: field names or text are not valid {encoding or 'UTF-8'} "
                f"({enc_how}); give the right one with --encoding (GB18030 or UTF-8)."
            ) from None
        except (pyogrio.errors.FeatureError, pyogrio.errors.FieldError,
                pyogrio.errors.GeometryError) as exc:
            raise LoadError(
                f"{file.name} is damaged and cannot be read as {fmt}: {_first_line(exc)}. "
                "Nothing was loaded; export the data again."
            ) from None
        if len(layers) > 1:
            frame["kml_folder"] = name
        frames.append(frame)
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    if records is not None:  # the .shx was restored from the .shp: count the shapes now
        shapes = pyogrio.read_info(file)["features"]
        if records != shapes:  # GDAL reads as many features as the .dbf has records
            raise LoadError(
                f"{file.stem}.dbf has {records:,} attribute records for {shapes:,} shapes in "
                f"{file.name}: the parts do not belong together (or one was cut short). Nothing "
                "was loaded; send the shapefile again with all its parts from one export."
            )
    if not isinstance(frame, gpd.GeoDataFrame):
        frame = gpd.GeoDataFrame(frame, geometry=[None] * len(frame))
    frame = frame.reset_index(drop=True)
    crs = pyproj.CRS.from_user_input(frame.crs) if frame.crs is not None else None
    crs_how = "the file's own CRS" + (" (.prj)" if fmt == "Shapefile" else "") if crs else ""
    stated = crs is not None and fmt not in ("GeoJSON", "KML")  # GDAL says 4326 for any
    if fmt in ("GeoJSON", "KML") and crs is None:
        crs, crs_how = pyproj.CRS.from_epsg(4326), f"{fmt} is WGS84 by definition"
    return RawData(
        frame=frame,
        fmt=fmt,
        file=file,
        crs=crs,
        crs_how=crs_how,
        crs_stated=stated,
        encoding=encoding or "UTF-8",
        encoding_how=enc_how,
        source_layer=", ".join(layers) if layers != [None] else None,
        issues=issues,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _choose_layer(file: Path, fmt: str, source_layer: str | None):
    try:
        listed = pyogrio.list_layers(file)
    except pyogrio.errors.DataSourceError as exc:
        raise LoadError(f"{file.name} cannot be read as {fmt}: {_first_line(exc)}.") from None
    names = [str(n) for n, _ in listed]
    if source_layer:
        if source_layer not in names:
            raise LoadError(
                f"{file.name} has no layer {source_layer!r}; its layers are {names}. "
                "Pick one with --source-layer."
            )
        return source_layer
    if fmt == "GeoPackage":
        spatial = [str(n) for n, g in listed if g is not None]
        if len(spatial) == 1 or len(names) == 1:
            return spatial[0] if spatial else names[0]
        raise LoadError(
            f"{file.name} holds {len(names)} layers {names}; choose one with --source-layer NAME."
        )
    # KML folders: read them all (the folder name is kept in attrs)
    return names if len(names) > 1 else names[0]


def _prepare_shapefile(file: Path, encoding: str | None, stack):
    """Check the parts of a shapefile; restore a missing .shx in a copy; choose the encoding.

    Returns the file to read, the encoding, how it was chosen, issues, and the .dbf's number of
    records when there was no .shx to check it against (None otherwise).
    """
    issues = []
    parts = {p.suffix.lower(): p for p in file.parent.glob(glob_escape(file.stem) + ".*")}
    if ".dbf" not in parts:
        raise LoadError(
            f"{file.name}: the .dbf (attribute table) is missing; send all parts of the shapefile "
            "(.shp, .shx, .dbf, .prj, .cpg) together, e.g. as one .zip."
        )
    records = check_dbf(parts[".dbf"], parts.get(".shx"))
    if ".shx" in parts:
        records = None  # checked against the .shx already
    if ".shx" not in parts:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="twin-shx-")))
        for p in parts.values():
            shutil.copy(p, tmp / (file.stem + p.suffix.lower()))
        file = tmp / (file.stem + ".shp")
        restore = True
        issues.append(
            {
                "kind": "shx_restored",
                "severity": "warning",
                "message": f"{file.stem}.shx was missing; rebuilt it from the .shp (geometries are "
                "complete; the original files were not changed)",
            }
        )
    else:
        restore = False
    stack.callback(pyogrio.set_gdal_config_options, {"SHAPE_RESTORE_SHX": None})
    pyogrio.set_gdal_config_options({"SHAPE_RESTORE_SHX": "YES" if restore else None})
    if encoding:
        return file, encoding, "--encoding", issues, records
    if ".cpg" in parts:
        text = parts[".cpg"].read_text(encoding="ascii", errors="replace").strip()
        codec = CPG_CODECS.get(text.lower().replace(" ", ""))
        if codec:
            return file, codec, f".cpg says {text}", issues, records
        issues.append(
            {
                "kind": "unknown_cpg",
                "severity": "warning",
                "message": f".cpg says {text!r}, which GridTwin does not know; detected instead",
            }
        )
    codec = detect_dbf_encoding(parts[".dbf"])
    how = (
        "no .cpg; text is not UTF-8, read as GB18030 (GBK)"
        if codec == "GB18030"
        else "no .cpg; text decodes as UTF-8"
    )
    return file, codec, how, issues, records


# dBASE version bytes GDAL and ArcGIS write (III, IV, V, FoxPro, Visual FoxPro; with or
# without memo)
_DBF_VERSIONS = {0x02, 0x03, 0x04, 0x05, 0x30, 0x31, 0x32, 0x43, 0x63, 0x83, 0x8B, 0x8E, 0xCB,
                 0xF5, 0xFB}


def check_dbf(dbf: Path, shx: Path | None = None) -> int:
    """Check that a shapefile's .dbf is a whole attribute table; return its number of records.

    GDAL reads a shapefile whose .dbf is empty or garbage as features without attributes, with no
    error: staff would replace a layer with features whose attributes are all lost. The header
    must be dBASE's, the file long enough for the records it declares and, with a .shx, hold one
    record per shape.

    Raises
    ------
    LoadError
        If the .dbf is empty, unreadable, cut short or does not match the .shp.
    """
    resend = (
        "send the shapefile again with all its parts (.shp, .shx, .dbf, .prj, .cpg) from one "
        "export, e.g. as one .zip, or as a GeoPackage"
    )
    size = dbf.stat().st_size
    if size == 0:
        raise LoadError(
            f"{dbf.name} (the attribute table) is empty (0 bytes): every feature would lose its "
            f"attributes. Nothing was loaded; {resend}."
        )
    with open(dbf, "rb") as fh:
        head = fh.read(32)
    if len(head) < 32 or head[0] not in _DBF_VERSIONS:
        raise LoadError(
            f"{dbf.name} (the attribute table) is not a dBASE file ({size} bytes that GDAL would "
            f"read as no attributes at all). Nothing was loaded; {resend}."
        )
    n_records, header_len, record_len = struct.unpack("<IHH", head[4:12])
    if header_len < 33 or record_len < 1:
        raise LoadError(
            f"{dbf.name} (the attribute table) has a damaged header (header {header_len} bytes, "
            f"records {record_len} bytes). Nothing was loaded; {resend}."
        )
    if header_len + n_records * record_len > size:
        whole = max(size - header_len, 0) // record_len
        raise LoadError(
            f"{dbf.name} (the attribute table) declares {n_records:,} records but its "
            f"{size:,} bytes hold only {whole:,}: it was cut short. Nothing was loaded; {resend}."
        )
    if shx is not None and shx.stat().st_size >= 100:
        shapes = (shx.stat().st_size - 100) // 8
        if shapes != n_records:
            raise LoadError(
                f"{dbf.name} has {n_records:,} attribute records for {shapes:,} shapes in the "
                f".shp/.shx: the parts do not belong together (or one was cut short). Nothing "
                f"was loaded; {resend}."
            )
    return n_records


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def _read_table(file, fmt, geometry, encoding, source_layer, lon, lat, wkt) -> RawData:
    if fmt == "CSV":
        text, enc, how = decode_text(file.read_bytes(), encoding, file.name)
        import io

        try:
            frame = pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                sep=None if file.suffix.lower() == ".txt" else ",",
                engine="python",
            )
        except (pd.errors.ParserError, ValueError) as exc:
            raise LoadError(f"{file.name} is not a readable CSV: {_first_line(exc)}.") from None
        sheet = None
    else:
        enc, how = "Unicode", "xlsx stores Unicode text"
        try:
            import openpyxl  # noqa: F401  (pandas needs it for .xlsx)
        except ImportError:  # pragma: no cover - a dependency of the project
            raise LoadError("reading .xlsx needs openpyxl; pip install openpyxl.") from None
        try:
            book = pd.read_excel(file, sheet_name=None, dtype=object, engine="openpyxl")
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
            raise LoadError(f"{file.name} is not a readable .xlsx: {_first_line(exc)}.") from None
        if source_layer:
            if source_layer not in book:
                raise LoadError(
                    f"{file.name} has no sheet {source_layer!r}; its sheets are {list(book)}."
                )
            sheet = source_layer
        else:
            sheet = next(iter(book))
        frame = book[sheet]
    frame.columns = [str(c).strip() for c in frame.columns]
    frame = frame.dropna(how="all").reset_index(drop=True)
    frame = frame.map(lambda v: v.strip() if isinstance(v, str) else v) if len(frame) else frame
    frame = frame.replace({"": None})
    raw = RawData(frame, fmt, file, encoding=enc, encoding_how=how, source_layer=sheet)
    if not geometry:
        return raw
    return _table_geometry(raw, lon, lat, wkt)


def _find_column(columns: list[str], wanted: str | None, names: tuple[str, ...], what: str):
    if wanted:
        if wanted in columns:
            return wanted
        lower = {c.lower(): c for c in columns}
        if wanted.lower() in lower:
            return lower[wanted.lower()]
        raise LoadError(
            f"the table has no column {wanted!r} for {what}; its columns are {columns}."
        )
    lower = {c.lower(): c for c in columns}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _table_geometry(raw: RawData, lon, lat, wkt) -> RawData:
    frame = raw.frame
    cols = list(frame.columns)
    wkt_col = _find_column(cols, wkt, WKT_NAMES, "--wkt")
    if wkt_col and not (lon or lat):
        text = frame[wkt_col].astype(object).where(frame[wkt_col].notna(), None)
        geoms = shapely.from_wkt(text.to_numpy(), on_invalid="ignore")
        bad = text.notna().to_numpy() & shapely.is_missing(geoms)
        for i in np.flatnonzero(bad)[:1000]:
            raw.issues.append(
                {
                    "row": int(i) + 1,
                    "kind": "bad_coordinates",
                    "severity": "rejected",
                    "message": f"{wkt_col}: {str(text.iloc[i])[:60]!r} is not WKT",
                }
            )
        raw.frame = gpd.GeoDataFrame(frame.drop(columns=[wkt_col]), geometry=geoms)
        raw.coordinate_columns = (wkt_col,)
        return raw
    lon_col = _find_column(cols, lon, LON_NAMES, "--lon")
    lat_col = _find_column(cols, lat, LAT_NAMES, "--lat")
    if not lon_col or not lat_col:
        raise LoadError(
            f"{raw.file.name} has no coordinate columns GridTwin recognises; name them with "
            f"--lon COL --lat COL or --wkt COL. Its columns are {cols}."
        )
    x = parse_degrees(frame[lon_col])
    y = parse_degrees(frame[lat_col])
    bad = (frame[lon_col].notna() & x.isna()) | (frame[lat_col].notna() & y.isna())
    for i in np.flatnonzero(bad.to_numpy())[:1000]:
        raw.issues.append(
            {
                "row": int(i) + 1,
                "kind": "bad_coordinates",
                "severity": "rejected",
                "message": f"{lon_col}/{lat_col}: {frame[lon_col].iloc[i]!r}, "
                f"{frame[lat_col].iloc[i]!r}"
                " are not numbers",
            }
        )
    ok = x.notna() & y.notna()
    geoms = np.full(len(frame), None, dtype=object)
    geoms[ok.to_numpy()] = shapely.points(x[ok].to_numpy(), y[ok].to_numpy())
    raw.frame = gpd.GeoDataFrame(frame, geometry=geoms)
    raw.coordinate_columns = (lon_col, lat_col)
    return raw


def parse_degrees(series: pd.Series) -> pd.Series:
    """Parse numbers, or degree strings like ``110°17'24.5"E`` / ``25度5分``, to float degrees."""
    num = pd.to_numeric(series, errors="coerce").astype("float64")
    todo = series.notna() & num.isna()
    if todo.any():
        parts = series[todo].astype(str).str.extract(_DMS)
        d = pd.to_numeric(parts["d"], errors="coerce")
        m = pd.to_numeric(parts["m"], errors="coerce").fillna(0)
        s = pd.to_numeric(parts["s"], errors="coerce").fillna(0)
        value = d + m / 60 + s / 3600
        value = value.where(~parts["h"].isin(list("SWsw南西")), -value)
        value = value.where((m < 60) & (s < 60))
        num[todo] = value
    return num
