"""Exchange of categories and cases as Open311 GeoReport v2 JSON (services and requests)."""

from __future__ import annotations

import logging
from typing import Any

import geopandas as gpd
import pandas as pd

from twin import cases as cases_mod
from twin.errors import DuplicateIdError, ValidationError
from twin.timeutil import to_local

LOGGER = logging.getLogger(__name__)

REQUEST_FIELDS = (
    "service_request_id", "status", "status_notes", "service_name", "service_code",
    "description", "agency_responsible", "service_notice", "requested_datetime",
    "updated_datetime", "expected_datetime", "address", "address_id", "zipcode", "lat", "long",
    "media_url",
)


def _name(row: pd.Series, lang: str) -> str:
    return row["name_zh"] if lang.startswith("zh") else row["name_en"]


def services(categories: pd.DataFrame | None = None, *, lang: str = "zh-CN") -> list[dict]:
    """Return the category list as GeoReport v2 ``services.json`` entries."""
    cats = cases_mod.load_categories() if categories is None else categories
    group = "major_zh" if lang.startswith("zh") else "major_en"
    return [
        {"service_code": row["service_code"], "service_name": _name(row, lang),
         "description": row["filing_condition"], "metadata": False, "type": "realtime",
         "keywords": ",".join([row["name_zh"], row["name_en"], row["family"]]),
         "group": row[group]}
        for _, row in cats.iterrows()
    ]


def _w3c(value: Any) -> str | None:
    if value is None or pd.isna(value):
        return None
    return to_local(value).isoformat()


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
) -> list[dict]:
    """Cases as GeoReport v2 ``requests.json`` entries (status open|closed, times with offset).

    Personal data (reporter) are never exported; photos become ``media_url`` (the first one).
    """
    cats = cases_mod.load_categories() if categories is None else categories
    deps = cases_mod.load_departments() if departments is None else departments
    out = []
    for row in pd.DataFrame(cases).to_dict("records"):
        data = cases_mod._data(row)
        code = row["service_code"]
        cat = cats.loc[code] if code in cats.index else None
        label = cases_mod.STATUSES.get(row["status"], (row["status"], row["status"]))
        photos = data.get("photos_after") or data.get("photos") or []
        out.append({
            "service_request_id": row["id"],
            "status": "closed" if row["status"] in cases_mod.TERMINAL else "open",
            "status_notes": label[0] if lang.startswith("zh") else label[1],
            "service_name": _name(cat, lang) if cat is not None else None,
            "service_code": code,
            "description": row.get("description"),
            "agency_responsible": _agency(row.get("department"), deps, lang),
            "service_notice": "",
            "requested_datetime": _w3c(row.get("requested_at")),
            "updated_datetime": _w3c(row.get("updated_at")),
            "expected_datetime": _w3c(row.get("deadline_at")),
            "address": data.get("address"),
            "address_id": None,
            "zipcode": None,
            "lat": None if pd.isna(row.get("lat")) else float(row["lat"]),
            "long": None if pd.isna(row.get("lon")) else float(row["lon"]),
            "media_url": photos[0] if photos else None,
        })
    return out


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
