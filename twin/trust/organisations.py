"""Organisations as a user may see and change them: the admin's editor, indicators by scope."""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import pandas as pd

from twin import organisations as orgs
from twin import orgkpi
from twin.cases import load_categories
from twin.errors import ValidationError
from twin.schema import ORG_ROLES
from twin.trust.permissions import User, require
from twin.trust.users import resolve

#: The columns of the organisations layer an administrator edits in the browser (the service
#: areas' shapes come from files: ``gridtwin load organisations FILE``).
EDITABLE = ("org_id", "name", "org_type", "services", "working_hours", "working_days",
            "office_phone", "contact_name", "contact_phone", "valid_from", "valid_to")


def organisation_names(store) -> dict[str, str]:
    """Return organisation id → name (not personal: anyone handling cases may see them)."""
    return orgs.names(orgs.current(store))


def organisations_for_edit(store, user: User | None, *, origin: str = "") -> pd.DataFrame:
    """Return the service areas' attributes for the administrator's editor (no geometry).

    The contacts are personal data: the read is audited (``personal.read``).

    Raises
    ------
    PermissionDeniedError
        If *user* may not edit organisations.
    """
    user = require(resolve(store, user), "organisations.edit")
    areas = orgs.current(store)
    out = pd.DataFrame(areas[["area_id", *EDITABLE]]).reset_index(drop=True)
    if len(out):
        store.append_audit(user.username, "personal.read", "layer:organisations",
                           {"columns": ["contact_name", "contact_phone"], "rows": len(out),
                            "role": user.role}, origin)
    return out


def save_organisations(store, user: User | None, edited: pd.DataFrame, *, origin: str = "",
                       note: str = "") -> Any:
    """Write the administrator's edits as the next version of the organisations layer.

    Rows are matched to the current service areas by ``area_id`` (their shapes are kept); a
    row naming no current area is refused (load new areas from a file), a row left out is
    removed. Services and working hours are checked (:func:`twin.organisations.check`)
    before anything is written; the version records *user* as its author (audited by the
    store, ``layer.write``).

    Returns
    -------
    twin.store.LayerVersion
        The version written.

    Raises
    ------
    PermissionDeniedError
        If *user* may not edit organisations.
    ValidationError
        For an unknown area, unreadable services or hours (nothing is written).
    """
    user = require(resolve(store, user), "organisations.edit")
    areas = orgs.current(store)
    edited = pd.DataFrame(edited).copy()
    unknown = sorted(set(edited["area_id"].astype(str)) - set(areas["area_id"].astype(str)))
    if unknown:
        raise ValidationError(
            f"service areas {', '.join(unknown)} have no shape; load new areas from a file "
            "(gridtwin load organisations FILE) and edit them here afterwards")
    if edited["area_id"].duplicated().any():
        raise ValidationError("an area is listed twice; each service area once")
    for column in ("org_id", "name", "org_type"):
        if edited[column].isna().any() or (edited[column].astype(str).str.strip() == "").any():
            raise ValidationError(f"{column} is required for every service area")
    edited = edited.replace({"": None})
    orgs.check(edited, set(load_categories().index))
    shapes = areas.set_index("area_id").geometry
    frame = edited.merge(pd.DataFrame({"area_id": shapes.index, "geometry": shapes.values}),
                         on="area_id")
    frame = gpd.GeoDataFrame(frame, geometry="geometry", crs=areas.crs or 4326)
    return store.write_layer(orgs.LAYER, frame, actor=user.username,
                             source=f"browser:{origin or 'organisations editor'}",
                             note=note or "edited in the browser")


def organisation_indicators(store, user: User | None, **period: Any) -> pd.DataFrame:
    """Return the indicators (:func:`twin.orgkpi.indicators`) *user* may see.

    The community's staff see every organisation; an organisation's staff their own.

    Raises
    ------
    PermissionDeniedError
        If *user* may not read organisations' indicators.
    """
    user = require(resolve(store, user), "organisations.indicators")
    table = orgkpi.indicators(store.read_cases(), orgs.current(store), **period)
    if user.role in ORG_ROLES:
        table = table.loc[table["org_id"] == (user.org_id or "\0")]
    return table.reset_index(drop=True)


def public_organisations(store, **period: Any) -> pd.DataFrame:
    """Return what anyone may see of the organisations' work: names, types, rates.

    Small counts are suppressed (:func:`twin.orgkpi.public_indicators`); no person.
    """
    return orgkpi.public_indicators(store.read_cases(), orgs.current(store), **period)
