"""Exchange of categories and cases as Open311 GeoReport v2: XML (the spec's default) and JSON."""

from __future__ import annotations

import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import cases as cases_mod
from twin.errors import DuplicateIdError, ValidationError
from twin.timeutil import to_local, to_utc

LOGGER = logging.getLogger(__name__)

# The GeoReport v2 field lists, in the order the spec lists them (and XML writes them).
REQUEST_FIELDS = (
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat", "long",
    "media_url",
)
SERVICE_FIELDS = (
    "service_code", "service_name", "description", "metadata", "type", "keywords", "group",
)
# "free form text limited to 4,000 characters" (POST Service Request, description)
DESCRIPTION_MAX = 4000
FORMATS = ("xml", "json")
# kind → (root element, item element, fields); the spec wraps one request like many
_KINDS = {
    "services": ("services", "service", SERVICE_FIELDS),
    "requests": ("service_requests", "request", REQUEST_FIELDS),
}


def _name(row: pd.Series, lang: str) -> str:
    return row["name_zh"] if lang.startswith("zh") else row["name_en"]


def services(categories: pd.DataFrame | None = None, *, lang: str = "zh-CN") -> Records:
    """Return the category list as GeoReport v2 services, fields in the spec's order.

    Write them with :func:`services_xml` / :func:`services_json` (or :func:`write_file`).
    """
    cats = cases_mod.load_categories() if categories is None else categories
    group = "major_zh" if lang.startswith("zh") else "major_en"
    return _records([
        {"service_code": row["service_code"], "service_name": _name(row, lang),
         "description": row["filing_condition"], "metadata": False, "type": "realtime",
         "keywords": ",".join([row["name_zh"], row["name_en"], row["family"]]),
         "group": row[group]}
        for _, row in cats.iterrows()
    ], "services")


def _agency(code: str | None, departments: pd.DataFrame, lang: str) -> str | None:
    if not code:
        return None
    if code in departments.index:
        row = departments.loc[code]
        return row["name_zh"] if lang.startswith("zh") else row["name_en"]
    if code.startswith("territory:"):
        community = code.split(":", 1)[1]
        return f"社区 {community}" if lang.startswith("zh") else f"Community {community}"
    return code


def requests(
    cases: pd.DataFrame,
    *,
    categories: pd.DataFrame | None = None,
    departments: pd.DataFrame | None = None,
    lang: str = "zh-CN",
) -> Records:
    """Cases as GeoReport v2 service requests (status open|closed, times with offset).

    Fields come in the spec's order; descriptions are plain text of at most
    :data:`DESCRIPTION_MAX` characters with phone and ID numbers masked. Personal data (the
    reporter) are never exported; photos become ``media_url`` (the first one). Write them with
    :func:`requests_xml` / :func:`requests_json` (or :func:`write_file`); one request is a list
    of one, as the spec's ``GET service_requests/{id}`` returns it.
    """
    cats = cases_mod.load_categories() if categories is None else categories
    deps = cases_mod.load_departments() if departments is None else departments
    zh = lang.startswith("zh")
    frame = pd.DataFrame(cases).reset_index(drop=True)

    def column(name: str) -> pd.Series:
        return frame[name] if name in frame else pd.Series(None, index=frame.index, dtype=object)

    data = [cases_mod._data({"data": value}) for value in column("data")]
    photos = [d.get("photos_after") or d.get("photos") or [None] for d in data]
    status = column("status")
    labels = {code: pair[0 if zh else 1] for code, pair in cases_mod.STATUSES.items()}
    department = column("department")
    agencies = {code: _agency(code, deps, lang) for code in department.dropna().unique()}
    out = pd.DataFrame({
        "service_request_id": column("id"),
        "status": status.isin(cases_mod.TERMINAL).map({True: "closed", False: "open"}),
        "status_notes": status.map(labels).fillna(status),
        "service_name": column("service_code").map(cats["name_zh" if zh else "name_en"]),
        "service_code": column("service_code"),
        "description": column("description"),
        "agency_responsible": department.map(agencies),
        "service_notice": "",
        "requested_datetime": column("requested_at"),
        "updated_datetime": column("updated_at"),
        "expected_datetime": column("deadline_at"),
        "address": [d.get("address") for d in data],
        "address_id": None,
        "zipcode": None,
        "lat": pd.to_numeric(column("lat")),
        "long": pd.to_numeric(column("lon")),
        "media_url": [p[0] for p in photos],
    })
    return _records(out, "requests")


# -- plain text and the two formats ---------------------------------------------------------------

# characters XML 1.0 cannot hold (C0 controls but tab and newlines, surrogates, U+FFFE/U+FFFF)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre"}
_HIDDEN = {"script", "style", "head", "title", "template"}
# mainland mobile numbers and 18-digit ID numbers typed into a description by a resident
_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)([ -]?)\d{4}([ -]?)(\d{4})(?!\d)")
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{10}(\d{3}[\dXx])(?![0-9A-Za-z])")


class _TextOnly(HTMLParser):
    """Collect the text of an HTML fragment: tags dropped, entities decoded, scripts left out."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _HIDDEN:
            self._hidden += 1
        elif tag in _BREAKS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag in _BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _strip_html(text: str) -> str:
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def _plain(series: pd.Series, limit: int | None = None) -> pd.Series:
    """Text of *series* as :func:`plain_text` makes it (missing values stay missing)."""
    missing = series.isna()
    if missing.all():
        return pd.Series(None, index=series.index, dtype=object)
    text = series.where(missing, series.astype(str)).astype("string")
    markup = text.str.contains("[<&]", regex=True).fillna(False).astype(bool)
    if markup.any():  # the HTML parser only where there can be markup
        text[markup] = [_strip_html(t) for t in text[markup]]
    text = (
        text.str.replace(_NOT_XML, "", regex=True)
        .str.replace(r"\r\n?", "\n", regex=True)
        .str.replace(r"[^\S\n]+", " ", regex=True)
        .str.replace(r" ?\n ?", "\n", regex=True)
        .str.replace(r"\n{3,}", "\n\n", regex=True)
        .str.strip()
    )
    return _cut(text.astype(object).where(~missing, None), limit)


def _cut(series: pd.Series, limit: int | None) -> pd.Series:
    """Cut text longer than *limit* characters to *limit*, the last one ``…``."""
    if limit is None:
        return series
    text = series.astype("string")
    long = (text.str.len() > limit).fillna(False).astype(bool)
    if not long.any():
        return series
    out = series.copy()
    out[long] = (text[long].str.slice(0, limit - 1).str.rstrip() + "…").astype(object)
    return out


def plain_text(value: Any, limit: int | None = None) -> str | None:
    """Return *value* as plain text: HTML tags dropped, entities decoded, whitespace tidied.

    Line breaks (``<br>``, paragraphs) stay as newlines; characters XML cannot carry are dropped;
    text longer than *limit* characters is cut to *limit*, ending in ``…``.
    """
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return _plain(pd.Series([value], dtype=object), limit).iloc[0]


def _scrub(series: pd.Series) -> pd.Series:
    """Mask phone and ID numbers in free text as :mod:`twin.trust.privacy` masks the columns."""
    text = series.astype("string")
    text = text.str.replace(_ID_NUMBER, lambda m: m[1] + "*" * 10 + m[2], regex=True)
    text = text.str.replace(_PHONE, lambda m: m[1] + m[2] + "****" + m[3] + m[4], regex=True)
    return text.astype(object).where(series.notna(), None)


_W3C = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})$"


def _w3c_column(series: pd.Series) -> pd.Series:
    """Format times (or ISO 8601 text) as W3C text: local zone, whole seconds, ``+08:00``."""
    done = series.astype("string").str.match(_W3C).fillna(False).astype(bool)
    todo = series.notna() & ~done
    out = series.astype(object).where(done, None)
    if todo.any():
        utc = to_utc(series[todo])
        local = to_local(utc)
        wall = local.dt.tz_localize(None)
        # numpy formats in C; the offsets are few (one per zone and DST state): format those once
        stamps = np.datetime_as_string(wall.to_numpy("datetime64[s]"), unit="s")
        minutes = ((wall - utc.dt.tz_localize(None)).dt.total_seconds() // 60).astype(int)
        offsets = {m: f"{'+' if m >= 0 else '-'}{abs(m) // 60:02d}:{abs(m) % 60:02d}"
                   for m in minutes.unique()}
        out[todo] = stamps.astype(object) + minutes.map(offsets).to_numpy(dtype=object)
    return out


_TEXT_FIELDS = ("status_notes", "service_name", "agency_responsible", "service_notice", "address",
                "keywords", "group")


class Records(list):
    """GeoReport v2 records made by this module: the spec's fields in order, text already plain.

    A list of dicts like any other; the serialisers write it as it is, so text that was made
    plain once (``&lt;b&gt;`` → ``<b>``) is not taken for markup a second time.
    """

    def __init__(self, items: Iterable[dict], kind: str) -> None:
        super().__init__(items)
        self.kind = kind


def _records(records: Iterable[Mapping[str, Any]] | pd.DataFrame, kind: str) -> Records:
    """Exactly the spec's fields of *kind*, in order, text plain and descriptions within limits."""
    if kind not in _KINDS:
        raise ValidationError(f"unknown Open311 list {kind!r}; use one of: {', '.join(_KINDS)}")
    if isinstance(records, Records) and records.kind == kind:
        return records
    fields = _KINDS[kind][2]
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(
        list(records), columns=None)
    frame = frame.reindex(columns=list(fields)).astype(object)
    for f in fields:
        if f.endswith("_datetime"):
            frame[f] = _w3c_column(frame[f])
        elif f in _TEXT_FIELDS:
            frame[f] = _plain(frame[f])
    if kind == "requests":
        # masked before the cut, so that no half of a number is left unmasked at the end
        frame["description"] = _cut(_scrub(_plain(frame["description"])), DESCRIPTION_MAX)
        for f in ("lat", "long"):  # WGS84 degrees; 7 decimals are 1 cm, as in GeoJSON exports
            try:
                frame[f] = pd.to_numeric(frame[f]).round(7).astype(object)
            except (TypeError, ValueError):
                raise ValidationError(f"Open311 {f} must be a number of degrees") from None
    else:
        frame["description"] = _plain(frame["description"])
    # None, not NaN: JSON has no NaN and XML writes an empty element
    return Records(frame.astype(object).where(frame.notna(), None).to_dict("records"), kind)


def _xml_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _NOT_XML.sub("", str(value))  # ids and URLs too: one control byte breaks the file


def _to_xml(records: list[dict], kind: str) -> bytes:
    root_tag, item_tag, fields = _KINDS[kind]
    root = ET.Element(root_tag)
    for rec in records:
        item = ET.SubElement(root, item_tag)
        for f in fields:
            ET.SubElement(item, f).text = _xml_text(rec[f])
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def _to_json(records: list[dict]) -> bytes:
    # one request a line: readable, and each line goes through json's C encoder (indent does not)
    lines = ",\n".join(json.dumps(r, ensure_ascii=False, allow_nan=False) for r in records)
    return f"[\n{lines}\n]\n".encode() if records else b"[]\n"


def services_xml(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> bytes:
    """GeoReport v2 ``services.xml`` (UTF-8, with its declaration) of service records.

    *records* are :func:`services` entries, or any records or frame with those fields; missing
    fields are written empty, other fields left out.
    """
    return _to_xml(_records(records, "services"), "services")


def services_json(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> bytes:
    """GeoReport v2 ``services.json`` (UTF-8) of service records (as :func:`services_xml`)."""
    return _to_json(_records(records, "services"))


def requests_xml(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> bytes:
    """GeoReport v2 ``requests.xml`` (UTF-8, with its declaration) of request records.

    *records* are :func:`requests` entries, or any records or frame with those fields (times
    may be timestamps). One request is a list of one: the spec's ``service_requests/{id}.xml``
    wraps it in ``<service_requests>`` too.
    """
    return _to_xml(_records(records, "requests"), "requests")


def requests_json(records: Iterable[Mapping[str, Any]] | pd.DataFrame) -> bytes:
    """GeoReport v2 ``requests.json`` (UTF-8) of request records (as :func:`requests_xml`)."""
    return _to_json(_records(records, "requests"))


_WRITERS = {
    ("services", "xml"): services_xml,
    ("services", "json"): services_json,
    ("requests", "xml"): requests_xml,
    ("requests", "json"): requests_json,
}


def write_file(
    path: str | Path,
    kind: str,
    records: Iterable[Mapping[str, Any]] | pd.DataFrame,
    *,
    format: str | None = None,  # noqa: A002 - the spec's word
) -> Path:
    """Write *records* as GeoReport v2 ``services`` or ``requests`` to *path*; return the path.

    Parameters
    ----------
    path
        The file; written whole or not at all.
    kind
        ``"services"`` or ``"requests"``.
    records
        :func:`services` or :func:`requests` entries (or records with their fields).
    format
        ``"xml"`` (the spec's default) or ``"json"``; by default taken from the file's extension.

    Raises
    ------
    ValidationError
        For another kind or format, or an extension that is neither ``.xml`` nor ``.json``.
    """
    from twin.geojson import write_whole

    path = Path(path)
    if format is None:
        format = path.suffix.lower().lstrip(".")  # noqa: A001
        if format not in FORMATS:
            raise ValidationError(
                f"cannot tell the Open311 format of {path.name!r}: name it .xml or .json "
                "(or pass format='xml'|'json')"
            )
    if format not in FORMATS:
        raise ValidationError(f"Open311 format must be one of {FORMATS}, got {format!r}")
    if kind not in _KINDS:
        raise ValidationError(f"unknown Open311 list {kind!r}; use one of: {', '.join(_KINDS)}")
    return write_whole(path, _WRITERS[kind, format](records))


def read_records(data: bytes | str, kind: str) -> list[dict]:
    """Parse GeoReport v2 ``services`` or ``requests`` from XML or JSON (what the other side sent).

    XML is told from JSON by its first character; values come back as text (``None`` for an
    empty element), JSON values as they are. The result feeds :func:`import_requests` and
    :func:`import_services`.

    Raises
    ------
    ValidationError
        If *data* is neither, holds a DOCTYPE or entity declaration (never needed by GeoReport and
        the way to XML entity attacks), or is not a list of *kind*.
    """
    if kind not in _KINDS:
        raise ValidationError(f"unknown Open311 list {kind!r}; use one of: {', '.join(_KINDS)}")
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    root_tag, item_tag, _fields = _KINDS[kind]
    if text.lstrip().startswith("<"):
        if "<!DOCTYPE" in text or "<!ENTITY" in text:
            raise ValidationError("Open311 XML with a DOCTYPE or entities is refused; send plain "
                                  "GeoReport v2 XML")
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise ValidationError(f"not well-formed Open311 XML: {exc}") from None
        if root.tag != root_tag:
            raise ValidationError(f"expected <{root_tag}> for {kind}, got <{root.tag}>")
        return [{child.tag: child.text or None for child in item} for item in root.iter(item_tag)]
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ValidationError(f"Open311 {kind} must be XML or JSON: {exc}") from None
    if not isinstance(payload, list) or not all(isinstance(r, dict) for r in payload):
        raise ValidationError(f"Open311 {kind} JSON must be a list of objects")
    return payload


def import_requests(
    store,
    payload: list[dict],
    *,
    actor: str,
    role: str = "admin",
    source: str = "instruction",
    grid_cells: gpd.GeoDataFrame | None = None,
    categories: pd.DataFrame | None = None,
) -> list[str]:
    """Create cases from GeoReport v2 requests; return the ids created.

    Each request becomes a case through :func:`twin.cases.report` (so it is located, routed and
    timed like any other); a ``closed`` request is then filed and force-closed at its
    ``updated_datetime``, with a note saying it was imported. Requests whose id already exists
    are skipped (import is idempotent).

    Raises
    ------
    ValidationError
        If a request lacks a required field; nothing of that request is stored.
    """
    created = []
    for req in payload:
        missing = [k for k in ("service_request_id", "service_code", "lat", "long",
                               "requested_datetime") if req.get(k) in (None, "")]
        if missing:
            raise ValidationError(
                f"Open311 request {req.get('service_request_id')!r} lacks {missing}"
            )
        try:
            case = cases_mod.report(
                store, category=req["service_code"], lon=float(req["long"]),
                lat=float(req["lat"]), description=req.get("description") or req["service_code"],
                source=source, actor=actor, role=role, grid_cells=grid_cells,
                at=req["requested_datetime"], address=req.get("address"),
                photos=[req["media_url"]] if req.get("media_url") else [],
                case_id=str(req["service_request_id"]), categories=categories)
        except DuplicateIdError:
            LOGGER.info("Open311 request %s exists; skipped", req["service_request_id"])
            continue
        if req.get("status") == "closed":
            at = req.get("updated_datetime") or req["requested_datetime"]
            cases_mod.transition(store, case["id"], "file", actor=actor, role="admin", at=at,
                                 categories=categories)
            cases_mod.transition(store, case["id"], "force_close", actor=actor, role="admin",
                                 at=at, note="imported closed (Open311)", categories=categories)
        created.append(case["id"])
    return created


def import_services(payload: list[dict], base: pd.DataFrame | None = None) -> pd.DataFrame:
    """Merge GeoReport v2 services into the category table and return it (validated).

    Known codes get the imported Chinese name; new codes (which must follow the P/E + major +
    minor pattern) take their time limits and department from the first category of the same
    family and major class — review them before saving.

    Raises
    ------
    ValidationError
        If a new code has no category of its family and major class to start from.
    """
    table = (cases_mod.load_categories() if base is None else base).copy()
    table["city_extension"] = table["city_extension"].map(lambda v: str(v).lower())
    rows = []
    for svc in payload:
        code = str(svc.get("service_code", ""))
        if code in table.index:
            table.loc[code, "name_zh"] = svc.get("service_name") or table.loc[code, "name_zh"]
            continue
        family = {"P": "component", "E": "event"}.get(code[:1])
        like = table[(table["family"] == family) & (table["major_code"] == code[1:3])]
        if family is None or like.empty or len(code) != 5:
            raise ValidationError(
                f"service {code!r}: new codes need the form P/E + 2-digit major + 2-digit minor "
                "of a major class already in categories.csv"
            )
        row = like.iloc[0].copy()
        row.update({"service_code": code, "minor_code": code[3:5],
                    "name_zh": svc.get("service_name") or code,
                    "name_en": svc.get("service_name") or code,
                    "filing_condition": svc.get("description") or "",
                    "city_extension": str(int(code[3:5]) >= 50).lower()})
        rows.append(row)
    if rows:
        table = pd.concat([table, pd.DataFrame(rows)], ignore_index=True)
    table = table.reset_index(drop=True)[list(cases_mod.CATEGORY_COLUMNS)].astype(str)
    return cases_mod.validate_categories(table, cases_mod.load_departments())
