"""A resident's problem reports: report with a photo at a place, follow their own reports.

A resident reports through the same :func:`twin.trust.casework.report_case` grid workers use;
they see only the cases they reported, in plain words, with nobody else's name: the steps say
which kind of staff took them (``grid worker``), never who.
"""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import pandas as pd

from twin import cases
from twin.errors import NotFoundError, PermissionDeniedError, ValidationError
from twin.trust.casework import report_case
from twin.trust.permissions import User, require
from twin.trust.uploads import store_photo
from twin.trust.users import resolve

#: Statuses a resident reads as "finished".
FINISHED = cases.TERMINAL


def _zh(lang: str) -> bool:
    return str(lang).lower().startswith("zh")


def categories_for_report(lang: str = "zh-CN") -> pd.DataFrame:
    """Return the categories a resident may choose (code, name in *lang*), events first."""
    cats = cases.load_categories()
    name = cats["name_zh"] if _zh(lang) else cats["name_en"]
    out = pd.DataFrame({"code": cats["service_code"].to_numpy(), "name": name.to_numpy(),
                        "family": cats["family"].to_numpy()})
    return out.sort_values(["family", "code"], ascending=[False, True]).reset_index(drop=True)


def places(user: User | None, buildings: gpd.GeoDataFrame | None) -> pd.DataFrame:
    """Return the buildings a report can be placed at: code, name, lon, lat; theirs first.

    The point of each building is a point inside its footprint (``representative_point``), so a
    report placed there falls in the building's unit grid.
    """
    cols = ["building_code", "name", "lon", "lat"]
    if buildings is None or buildings.empty:
        return pd.DataFrame(columns=cols)
    points = buildings.geometry.representative_point()
    name = buildings["name"] if "name" in buildings else buildings["building_code"]
    out = pd.DataFrame({"building_code": buildings["building_code"].astype(str).to_numpy(),
                        "name": name.fillna(buildings["building_code"]).astype(str).to_numpy(),
                        "lon": points.x.to_numpy(), "lat": points.y.to_numpy()})
    own = getattr(user, "building_code", None)
    out["own"] = out["building_code"] == (own or "")
    out = out.sort_values(["own", "building_code"], ascending=[False, True])
    return out[cols].reset_index(drop=True)


def report_problem(
    store,
    user: User | None,
    *,
    category: str,
    description: str,
    lon: float,
    lat: float,
    photo: bytes | None = None,
    address: str | None = None,
    grid_cells: gpd.GeoDataFrame | None = None,
    origin: str = "",
) -> dict[str, Any]:
    """Report a problem as resident *user*, with an optional photo; audited as ``case.collect``.

    The photo is checked (size, JPEG/PNG/WebP by content) and stored before the case is
    written, so a refused photo leaves no case behind.

    Raises
    ------
    PermissionDeniedError
        If *user* may not report (``cases.report``).
    UploadRejectedError
        For a photo that is too big or not an image.
    ValidationError
        For an unknown category, an empty description, or a place outside the community.
    """
    user = require(resolve(store, user), "cases.report")
    if not str(description or "").strip():
        raise ValidationError("say in a few words what is wrong (the description is empty)")
    if grid_cells is not None and len(grid_cells):
        from shapely.geometry import Point

        if not grid_cells.geometry.intersects(Point(float(lon), float(lat))).any():
            raise ValidationError(
                "this place is outside the community's grids; pick a building or a spot inside")
    photos = [store_photo(photo)] if photo else []
    return report_case(store, user, category=category, description=str(description).strip(),
                       lon=float(lon), lat=float(lat), source="resident", photos=photos,
                       address=address, grid_cells=grid_cells, origin=origin)


def _data(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value) if isinstance(value, str) and value else {}
    except ValueError:
        return {}


def _own_rows(store, user: User) -> pd.DataFrame:
    """Return the cases reported by *user* (only resident reports are parsed, matched by name)."""
    table = store.read_cases()
    if table.empty:
        return table
    table = table.loc[table["source"] == "resident"]
    reporters = table["data"].map(lambda d: (_data(d).get("reporter") or {}).get("username"))
    return table.loc[reporters == user.username]


def my_reports(store, user: User | None, lang: str = "zh-CN") -> pd.DataFrame:
    """Return the reports of resident *user*, newest first, in plain words in *lang*.

    Columns: ``id``, ``category`` (its name), ``description``, ``status`` (code), ``status_text``,
    ``finished``, ``requested_at``, ``updated_at``, ``photos`` (count). No assignee, department
    or other person.

    Raises
    ------
    PermissionDeniedError
        If *user* may not follow reports (``reports.follow``: residents).
    """
    user = require(resolve(store, user), "reports.follow")
    rows = _own_rows(store, user)
    cols = ["id", "category", "description", "status", "status_text", "finished",
            "requested_at", "updated_at", "photos"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    cats = categories_for_report(lang).set_index("code")["name"]
    idx = 0 if _zh(lang) else 1
    data = rows["data"].map(_data)
    out = pd.DataFrame({
        "id": rows["id"].to_numpy(),
        "category": rows["service_code"].map(cats).fillna(rows["service_code"]).to_numpy(),
        "description": rows["description"].to_numpy(),
        "status": rows["status"].to_numpy(),
        "status_text": rows["status"].map(lambda s: cases.STATUSES.get(s, (s, s))[idx]).to_numpy(),
        "finished": rows["status"].isin(FINISHED).to_numpy(),
        "requested_at": rows["requested_at"].to_numpy(),
        "updated_at": rows["updated_at"].to_numpy(),
        "photos": data.map(lambda d: len(d.get("photos") or [])).to_numpy(),
    })
    return out.sort_values("requested_at", ascending=False).reset_index(drop=True)


#: Who took a step, as a resident reads it: the kind of staff, never the person.
_ROLE_WORDS = {
    "grid_worker": ("网格员", "grid worker"), "dispatcher": ("指挥中心", "command centre"),
    "official": ("社区负责人", "community official"), "admin": ("管理员", "administrator"),
    "resident": ("您", "you"), "system": ("系统", "the system"),
}


def report_steps(store, user: User | None, case_id: str, lang: str = "zh-CN") -> pd.DataFrame:
    """Return the steps of one of *user*'s own reports: when, what (plain words), by whom (kind).

    Raises
    ------
    PermissionDeniedError
        If the case was not reported by *user* (the refusal is audited as ``case.denied``).
    NotFoundError
        If *user* has reported nothing under that id.
    """
    user = require(resolve(store, user), "reports.follow")
    own = _own_rows(store, user)
    if own.empty or case_id not in set(own["id"]):
        try:
            store.get_case(case_id)
        except NotFoundError:
            raise NotFoundError(f"you have no report {case_id!r}; pick one of your reports"
                                ) from None
        store.append_audit(user.username, "case.denied", f"case:{case_id}",
                           {"role": user.role, "reason": "not the reporter"}, "")
        raise PermissionDeniedError(f"case {case_id!r} is not one of your reports")
    steps = store.case_history(case_id)
    idx = 0 if _zh(lang) else 1
    labels = {t.action: (t.label_zh, t.label_en)[idx] for t in cases.TRANSITIONS}
    who = steps["role"].map(lambda r: _ROLE_WORDS.get(r, _ROLE_WORDS["system"])[idx])
    status = steps["to_status"].map(
        lambda s: cases.STATUSES.get(s, (s or "", s or ""))[idx] if isinstance(s, str) else "")
    return pd.DataFrame({"at": steps["at"].to_numpy(),
                         "step": steps["action"].map(labels).fillna(steps["action"]).to_numpy(),
                         "status_text": status.to_numpy(), "by": who.to_numpy()})
