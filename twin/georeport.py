"""Open311 GeoReport v2 server semantics: discovery, definitions, posted requests, filters, errors.

Pure functions over what a client sent and what :mod:`twin.open311` writes; who may post or read
what is decided in :mod:`twin.trust.georeport`, and the HTTP face (``twin.api.open311``) only
calls both. Everything follows http://wiki.open311.org/GeoReport_v2 (XML the default, JSON the
same records).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pandas as pd

from twin.errors import NotFoundError, PermissionDeniedError, TwinError, ValidationError
from twin.open311 import _NOT_XML, DESCRIPTION_MAX, FORMATS, _xml_text

SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
#: The day this server's GeoReport semantics last changed (discovery's ``changeset``).
CHANGESET = "2026-12-07T00:00:00Z"
MEDIA_TYPES = {"xml": "text/xml; charset=utf-8", "json": "application/json; charset=utf-8"}
#: The spec's cap on one answer of ``GET requests``, and its default window without dates.
MAX_REQUESTS = 1000
DEFAULT_DAYS = 90
STATUSES = ("open", "closed")
#: Fields of a POST the spec names (``attribute[code]`` come besides them).
POST_FIELDS = (
    "jurisdiction_id", "api_key", "service_code", "lat", "long", "address_string",
    "address_id", "email", "device_id", "account_id", "first_name", "last_name", "phone",
    "description", "media_url",
)
#: A POST body larger than this is refused before it is parsed (a photo goes as multipart).
MAX_BODY_BYTES = 64 * 2**10
#: A multipart POST (fields and a photo in ``media``) may be this large (the photo limit + fields).
MAX_UPLOAD_BYTES = 6 * 2**20
_ATTRIBUTE = re.compile(r"^attribute\[([^\]]{1,100})\]$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


# -- errors ------------------------------------------------------------------------------------


def status_of(exc: BaseException) -> int:
    """Return the HTTP status GeoReport v2 gives a library error (400, 403, 404; else 500)."""
    if isinstance(exc, PermissionDeniedError):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, (ValidationError, TwinError)):
        return 400
    return 500


def errors_body(errors: Sequence[tuple[int, str]], fmt: str) -> bytes:
    """GeoReport v2 errors (``<errors><error><code>…<description>…``) in *fmt*.

    *errors* are ``(code, description)`` pairs; the code is the HTTP status, as the spec's
    examples use it.
    """
    _check_format(fmt)
    if fmt == "json":
        return json.dumps([{"code": int(c), "description": str(d)} for c, d in errors],
                          ensure_ascii=False).encode() + b"\n"
    root = ET.Element("errors")
    for code, description in errors:
        item = ET.SubElement(root, "error")
        ET.SubElement(item, "code").text = str(int(code))
        ET.SubElement(item, "description").text = _xml_text(description)
    return _xml(root)


# -- discovery and service definitions ---------------------------------------------------------


def discovery(url: str, *, contact: str = "", key_service: str = "") -> dict[str, Any]:
    """Return the discovery document of a server whose GeoReport v2 base is *url*."""
    return {
        "changeset": CHANGESET, "contact": contact, "key_service": key_service,
        "endpoints": [{"specification": SPECIFICATION, "url": url, "changeset": CHANGESET,
                       "type": "production", "formats": ["text/xml", "application/json"]}],
    }


def discovery_body(doc: Mapping[str, Any], fmt: str) -> bytes:
    """Write a :func:`discovery` document in *fmt*."""
    _check_format(fmt)
    if fmt == "json":
        return json.dumps(doc, ensure_ascii=False).encode() + b"\n"
    root = ET.Element("discovery")
    for key in ("changeset", "contact", "key_service"):
        ET.SubElement(root, key).text = _xml_text(doc.get(key))
    endpoints = ET.SubElement(root, "endpoints")
    for ep in doc["endpoints"]:
        item = ET.SubElement(endpoints, "endpoint")
        for key in ("specification", "url", "changeset", "type"):
            ET.SubElement(item, key).text = _xml_text(ep.get(key))
        formats = ET.SubElement(item, "formats")
        for f in ep.get("formats", ()):
            ET.SubElement(formats, "format").text = f
    return _xml(root)


def service_definition(code: str, services: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Return the definition of service *code*: its code and attributes (none: no extra questions).

    Raises
    ------
    NotFoundError
        If *code* is not one of *services* (the message lists a few known codes).
    """
    known = [str(s["service_code"]) for s in services]
    if code not in known:
        raise NotFoundError(f"no service {code!r}; GET services.xml for the codes "
                            f"(e.g. {', '.join(known[:5])})")
    return {"service_code": code, "attributes": []}


def service_definition_body(definition: Mapping[str, Any], fmt: str) -> bytes:
    """Write a :func:`service_definition` in *fmt*."""
    _check_format(fmt)
    if fmt == "json":
        return json.dumps(definition, ensure_ascii=False).encode() + b"\n"
    root = ET.Element("service_definition")
    ET.SubElement(root, "service_code").text = _xml_text(definition["service_code"])
    attributes = ET.SubElement(root, "attributes")
    for attr in definition["attributes"]:
        item = ET.SubElement(attributes, "attribute")
        for key, value in attr.items():
            ET.SubElement(item, key).text = _xml_text(value)
    return _xml(root)


# -- a posted request --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostedRequest:
    """One ``POST requests`` as the client sent it, checked (not yet located or stored)."""

    service_code: str
    lon: float
    lat: float
    description: str
    jurisdiction_id: str = ""
    api_key: str = ""
    address: str | None = None
    media_url: str | None = None
    #: who the client says reported it (personal data: kept with the case, never exported)
    contact: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    device_id: str | None = None
    account_id: str | None = None


def parse_body(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Return the fields of a POST body: form-encoded (the spec's way), JSON or XML.

    Repeated form fields keep their last value. A JSON body is one object; an XML body is one
    element (``<request>`` say) whose children are the fields.

    Raises
    ------
    ValidationError
        For a body that is too large, not UTF-8, or malformed for its type, saying what to send.
    """
    multipart = (content_type or "").lower().startswith("multipart/form-data")
    limit = MAX_UPLOAD_BYTES if multipart else MAX_BODY_BYTES
    if len(body) > limit:
        raise ValidationError(f"the request body has {len(body)} bytes; at most {limit} are "
                              "accepted (a photo as a multipart field 'media', or media_url)")
    if multipart:
        return _multipart(body, content_type or "")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError("the request body is not UTF-8 text") from None
    kind = (content_type or "").split(";")[0].strip().lower()
    stripped = text.lstrip()
    if kind.endswith("json") or (not kind and stripped.startswith("{")):
        try:
            fields = json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"malformed JSON: {exc}; send one object of GeoReport v2 "
                                  "fields") from None
        if not isinstance(fields, dict):
            raise ValidationError("the JSON body must be one object of GeoReport v2 fields")
        return {str(k): v for k, v in fields.items()}
    if kind.endswith("xml") or (not kind and stripped.startswith("<")):
        if "<!DOCTYPE" in text or "<!ENTITY" in text:
            raise ValidationError("XML with a DOCTYPE or entities is refused; send plain fields")
        try:
            root = ET.fromstring(text)
        except ET.ParseError as exc:
            raise ValidationError(f"malformed XML: {exc}; send one element whose children "
                                  "are GeoReport v2 fields") from None
        return {child.tag: child.text or "" for child in root}
    return dict(parse_qsl(text, keep_blank_values=True))


def _multipart(body: bytes, content_type: str) -> dict[str, Any]:
    """Fields of a ``multipart/form-data`` body; a file field ``media`` comes back as bytes."""
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValidationError("malformed multipart body: no parts (is the boundary right?)")
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        payload = part.get_payload(decode=True) or b""
        if name == "media" or part.get_filename():
            fields["media"] = payload
        else:
            fields[str(name)] = payload.decode("utf-8", errors="replace")
    return fields


def _text(fields: Mapping[str, Any], key: str, limit: int = 200) -> str | None:
    value = fields.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (dict, list)):
        raise ValidationError(f"{key} must be text, not {type(value).__name__}")
    text = _NOT_XML.sub("", str(value)).strip()
    if len(text) > limit:
        raise ValidationError(f"{key} has {len(text)} characters; at most {limit} are accepted")
    return text


def _degrees(fields: Mapping[str, Any], key: str, bound: float) -> float:
    value = fields.get(key)
    if value is None or str(value).strip() == "":
        raise ValidationError(
            f"{key} is required: this server locates a request by lat and long (WGS84 degrees); "
            "it does not geocode address_string")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{key} must be a number of degrees, got {value!r}") from None
    if not -bound <= number <= bound or number != number:
        raise ValidationError(f"{key} {number} is outside -{bound}..{bound} degrees")
    return number


def parse_post(fields: Mapping[str, Any]) -> PostedRequest:
    """Check the fields of a ``POST requests`` and return them as a :class:`PostedRequest`.

    ``service_code``, ``lat`` and ``long`` are required (no geocoder: ``address_string`` is kept
    as the address); a missing ``description`` becomes the service code; ``attribute[code]``
    fields (or a JSON object ``attribute``) are kept as the case's attributes.

    Raises
    ------
    ValidationError
        Naming the field that is missing or wrong (the spec's 400).
    """
    code = _text(fields, "service_code", 20)
    if not code:
        raise ValidationError("service_code is required; GET services.xml for the codes")
    lat = _degrees(fields, "lat", 90)
    lon = _degrees(fields, "long", 180)
    description = _text(fields, "description", DESCRIPTION_MAX) or code
    media_url = _text(fields, "media_url", 2000)
    if media_url and not re.match(r"^https?://[^\s]+$", media_url):
        raise ValidationError("media_url must be an http(s) URL; upload a photo as media "
                              "(multipart) instead")
    email = _text(fields, "email", 320)
    if email and not _EMAIL.match(email):
        raise ValidationError(f"email {email!r} is not an e-mail address")
    contact = {k: v for k in ("email", "first_name", "last_name", "phone")
               if (v := _text(fields, k, 320 if k == "email" else 100))}
    attributes: dict[str, str] = {}
    nested = fields.get("attribute")
    if isinstance(nested, dict):
        attributes.update({str(k): str(v) for k, v in nested.items()})
    for key, value in fields.items():
        found = _ATTRIBUTE.match(str(key))
        if found and value is not None:
            attributes[found[1]] = _NOT_XML.sub("", str(value))[:1000]
    if len(attributes) > 50:
        raise ValidationError(f"{len(attributes)} attributes; at most 50 are accepted")
    return PostedRequest(
        service_code=code, lon=lon, lat=lat, description=description,
        jurisdiction_id=_text(fields, "jurisdiction_id") or "",
        api_key=_text(fields, "api_key", 500) or "",
        address=_text(fields, "address_string", 500), media_url=media_url, contact=contact,
        attributes=attributes, device_id=_text(fields, "device_id"),
        account_id=_text(fields, "account_id"))


def posted_body(answers: Sequence[Mapping[str, Any]], fmt: str) -> bytes:
    """Write the answer to a POST: ``service_request_id``, ``service_notice``, ``account_id``."""
    _check_format(fmt)
    keys = ("service_request_id", "service_notice", "account_id")
    if fmt == "json":
        return json.dumps([{k: a.get(k) for k in keys} for a in answers],
                          ensure_ascii=False).encode() + b"\n"
    root = ET.Element("service_requests")
    for answer in answers:
        item = ET.SubElement(root, "request")
        for key in keys:
            ET.SubElement(item, key).text = _xml_text(answer.get(key))
    return _xml(root)


# -- GET requests: the spec's filters ----------------------------------------------------------


@dataclass(frozen=True)
class RequestFilter:
    """The filters of ``GET requests``: ids (then nothing else applies), codes, window, status."""

    ids: tuple[str, ...] = ()
    service_codes: tuple[str, ...] = ()
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    statuses: tuple[str, ...] = ()


def _list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(dict.fromkeys(v.strip() for v in str(value).split(",") if v.strip()))


def _w3c(value: Any, key: str) -> pd.Timestamp | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise ValidationError(f"{key} {text!r} is not a W3C date-time "
                              "(e.g. 2026-03-01T00:00:00+08:00)") from None
    if stamp.tzinfo is None:
        raise ValidationError(f"{key} {text!r} needs its offset (Z or +08:00)")
    return stamp.tz_convert("UTC")


def parse_filter(query: Mapping[str, Any]) -> RequestFilter:
    """Check the query of ``GET requests`` and return its :class:`RequestFilter`.

    Raises
    ------
    ValidationError
        For a date that is not W3C date-time with an offset, an end before the start, or a
        status other than ``open`` and ``closed``.
    """
    start, end = _w3c(query.get("start_date"), "start_date"), _w3c(query.get("end_date"),
                                                                    "end_date")
    if start is not None and end is not None and end < start:
        raise ValidationError(f"end_date {end} is before start_date {start}")
    statuses = _list(query.get("status"))
    wrong = [s for s in statuses if s not in STATUSES]
    if wrong:
        raise ValidationError(f"status {', '.join(wrong)} is not open or closed")
    ids = _list(query.get("service_request_id"))
    if len(ids) > MAX_REQUESTS:
        raise ValidationError(f"{len(ids)} ids; ask for at most {MAX_REQUESTS} at a time")
    return RequestFilter(ids=ids, service_codes=_list(query.get("service_code")), start=start,
                         end=end, statuses=statuses)


def apply_filter(cases: pd.DataFrame, flt: RequestFilter, now: Any = None) -> pd.DataFrame:
    """Return the cases *flt* selects, newest first, at most :data:`MAX_REQUESTS`.

    With ids, only those (the spec: other parameters are then ignored). Otherwise by service
    codes, status (``open``/``closed`` as :func:`twin.open311.requests` tells them) and the
    requested time in ``[start_date, end_date]``; without dates the last :data:`DEFAULT_DAYS`
    days before *end_date* (or now).
    """
    from twin.cases import TERMINAL

    if cases.empty:
        return cases
    if flt.ids:
        keep = cases["id"].astype(str).isin(flt.ids)
    else:
        requested = pd.to_datetime(cases["requested_at"], utc=True)
        end = flt.end if flt.end is not None else None
        start = flt.start
        if start is None:
            anchor = end if end is not None else pd.Timestamp(now or pd.Timestamp.now("UTC"))
            start = anchor.tz_convert("UTC") - pd.Timedelta(days=DEFAULT_DAYS)
        keep = requested >= start
        if end is not None:
            keep &= requested <= end
        if flt.service_codes:
            keep &= cases["service_code"].isin(flt.service_codes)
        if flt.statuses:
            closed = cases["status"].isin(TERMINAL)
            keep &= closed if flt.statuses == ("closed",) else (
                ~closed if flt.statuses == ("open",) else True)
    out = cases.loc[keep]
    order = pd.to_datetime(out["requested_at"], utc=True).sort_values(ascending=False,
                                                                      kind="stable")
    return out.loc[order.index[:MAX_REQUESTS]]


# -- helpers -----------------------------------------------------------------------------------


def split_format(name: str) -> tuple[str, str]:
    """``"requests.xml"`` → ``("requests", "xml")``.

    Raises
    ------
    NotFoundError
        If the name has no ``.xml``/``.json`` ending (the spec's paths all have one).
    """
    stem, dot, fmt = str(name).rpartition(".")
    if not dot or fmt not in FORMATS or not stem:
        raise NotFoundError(f"{name!r}: GeoReport v2 paths end in .xml or .json")
    return stem, fmt


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValidationError(f"Open311 format must be one of {FORMATS}, got {fmt!r}")


def _xml(root: ET.Element) -> bytes:
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"
