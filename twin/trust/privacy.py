"""Personal data: masking, public rounding, and the scoped readers of residents and layers."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from twin import settings
from twin.errors import PermissionDeniedError
from twin.store.base import layer_or_empty
from twin.trust.permissions import PERSONAL_ACCESS, User
from twin.trust.users import resolve

LOGGER = logging.getLogger(__name__)

def _text(series: pd.Series) -> pd.Series:
    return series.astype("string")


def mask_phone(series: pd.Series) -> pd.Series:
    """``13812345678`` → ``138****5678``; short numbers keep only the last two digits."""
    s = _text(series).str.replace(r"\s", "", regex=True)
    long = s.str.len() >= 7
    out = (s.str[:3] + "****" + s.str[-4:]).where(long, "****" + s.str[-2:])
    return out.astype(object).where(series.notna() & (s.str.len() > 0), None)


def mask_id_number(series: pd.Series) -> pd.Series:
    """``450311199001011234`` → ``4503**********1234``: the middle hidden, the length kept."""
    s = _text(series).str.strip()
    n = s.str.len().fillna(0).astype(int)
    stars = pd.Series(["*" * max(k - 8, 2) for k in n.tolist()], index=s.index, dtype="string")
    out = (s.str[:4] + stars + s.str[-4:]).where(n > 8, "*" * 6)
    return out.astype(object).where(series.notna() & (n > 0), None)


def mask_name(series: pd.Series) -> pd.Series:
    """``张三`` → ``张*``, ``欧阳娜娜`` → ``欧***``: the first character kept."""
    s = _text(series).str.strip()
    n = s.str.len().fillna(0).astype(int)
    stars = pd.Series(["*" * max(k - 1, 1) for k in n.tolist()], index=s.index, dtype="string")
    out = s.str[:1] + stars
    return out.astype(object).where(series.notna() & (n > 0), None)


def mask_other(series: pd.Series) -> pd.Series:
    """Any other personal value: ``***`` when present."""
    return pd.Series(np.where(series.notna(), "***", None), index=series.index, dtype=object)


def _masker(column: str):
    low = column.lower()
    if "phone" in low or "tel" in low or "mobile" in low:
        return mask_phone
    if "id_number" in low or "idcard" in low or "id_card" in low:
        return mask_id_number
    if low == "name" or low.endswith("_name") or low.startswith("name"):
        return mask_name
    return mask_other


def mask_frame(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Return a copy of *frame* with its personal *columns* masked (phone, ID, name, others)."""
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = _masker(column)(out[column])
    return out


def round_location(lon: Any, lat: Any, step: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Snap coordinates to the centres of a *step*-degree grid (default ~100 m) for public views."""
    step = float(step or settings.get("public_round_deg"))
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    return (np.floor(lon / step) * step + step / 2).round(7), (
        np.floor(lat / step) * step + step / 2
    ).round(7)



def _scope_grids(user: User, grid_cells: pd.DataFrame | None) -> set[str]:
    """Return the unit grids of a grid worker: responsibility grids expanded, codes as given."""
    grids = set(user.grids)
    if grid_cells is None or grid_cells.empty:
        return grids
    inside = grid_cells["resp_grid_id"].isin(grids) | grid_cells["grid_code"].isin(grids)
    return set(grid_cells.loc[inside, "grid_code"]) | grids


def buildings_in_scope(user: User, buildings: pd.DataFrame,
                       grid_cells: pd.DataFrame | None = None) -> pd.Series:
    """Boolean mask of the *buildings* in a grid worker's grids (unit or responsibility)."""
    grids = _scope_grids(user, grid_cells)
    mask = pd.Series(False, index=buildings.index)
    for column in ("grid_code", "resp_grid_id"):
        if column in buildings:
            mask |= buildings[column].isin(grids)
    return mask


def read_residents(
    store,
    user: User | None,
    *,
    building_code: str | None = None,
    origin: str = "",
    buildings: pd.DataFrame | None = None,
    grid_cells: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Return the residents *user* may see, as their role allows (see :data:`PERSONAL_ACCESS`).

    Grid workers get full values of residents of buildings in their grids only; residents their
    own record; admin and data staff every row with identifiers masked; officials, dispatchers and
    planners counts per building (``building_code``, ``households``, ``residents``); the public
    nothing. Every call that returns personal values is written to the audit log.

    Parameters
    ----------
    store
        The store.
    user
        Who reads (None: not logged in).
    building_code
        Only this building.
    origin
        Where the request came from (host, script) for the audit log.
    buildings, grid_cells
        The layers (read from the store when not given).

    Raises
    ------
    PermissionDeniedError
        For the public, a user who is not stored and enabled (see
        :func:`twin.trust.users.resolve`), and for a grid worker asking for a building outside
        their grids.
    """
    from twin.layers import get_layer

    user = resolve(store, user)
    mode = PERSONAL_ACCESS.get(user.role, "none")
    if user.disabled or mode == "none":
        raise PermissionDeniedError(
            f"role {user.role!r} may not read residents; log in as staff or as a resident"
        )
    spec = get_layer("residents")
    residents = layer_or_empty(store, "residents")
    if residents.empty:
        residents = pd.DataFrame(columns=spec.column_names)
    if building_code is not None:
        residents = residents.loc[residents["building_code"] == building_code]
    if mode == "counts":
        counts = residents.groupby("building_code").agg(
            households=("resident_id", "size"), residents=("household_size", "sum")
        ).reset_index()
        counts["residents"] = counts["residents"].astype("int64")
        return counts
    if mode == "grids":
        if buildings is None:
            buildings = layer_or_empty(store, "buildings")
        if grid_cells is None:
            grid_cells = layer_or_empty(store, "grid_cells")
        mine = set(buildings.loc[buildings_in_scope(user, buildings, grid_cells),
                                 "building_code"]) if not buildings.empty else set()
        if building_code is not None and building_code not in mine:
            store.append_audit(user.username, "residents.denied", f"building:{building_code}",
                               {"role": user.role, "grids": list(user.grids)}, origin)
            raise PermissionDeniedError(
                f"building {building_code!r} is not in the grids of {user.username!r} "
                f"({', '.join(user.grids) or 'none'}); ask its grid worker"
            )
        out = residents.loc[residents["building_code"].isin(mine)]
    elif mode == "org":  # an organisation's staff: its service areas' buildings, masked
        from twin.organisations import buildings_served

        if buildings is None:
            buildings = layer_or_empty(store, "buildings")
        mine = buildings_served(store, user.org_id, buildings)
        if building_code is not None and building_code not in mine:
            store.append_audit(user.username, "residents.denied", f"building:{building_code}",
                               {"role": user.role, "org_id": user.org_id}, origin)
            raise PermissionDeniedError(
                f"building {building_code!r} is outside the service area of organisation "
                f"{user.org_id!r}; ask the community")
        out = mask_frame(residents.loc[residents["building_code"].isin(mine)],
                         sensitive_columns("residents"))
    elif mode == "self":
        out = residents.loc[residents["resident_id"] == (user.resident_id or "\0")]
    else:  # masked, free attributes too
        out = mask_frame(residents, sensitive_columns("residents"))
    out = pd.DataFrame(out).reset_index(drop=True)
    store.append_audit(
        user.username, "residents.read",
        f"building:{building_code}" if building_code else "residents",
        {"role": user.role, "mode": mode, "rows": len(out),
         "resident_ids": out["resident_id"].astype(str).tolist()[:200]
         if mode not in ("masked", "org") else []},
        origin,
    )
    return out


#: Roles that see the contact data in layers about staff (grid workers' phones) in full,
#: audited; other staff see them masked and the public not at all.
FULL_LAYER_ACCESS = ("admin", "data_staff")


def sensitive_columns(name: str) -> tuple[str, ...]:
    """Return the columns of layer *name* that are about people.

    Its columns declared ``personal=True`` and, in a layer that has any, its free ``attrs``:
    the extra fields of a file (an emergency phone, a health note) are personal unless declared.
    """
    from twin.layers import get_layer

    personal = get_layer(name).personal_columns
    return (*personal, "attrs") if personal else ()


def protect(store, user: User | None, frame: pd.DataFrame, layers: Iterable[str], *,
            what: str, origin: str = "") -> pd.DataFrame:
    """Return *frame* as *user* may see it, for any path: reads, query answers, exports.

    The sensitive columns (:func:`sensitive_columns`) of *layers* found in *frame* are shown in
    full to :data:`FULL_LAYER_ACCESS` (and the showing audited as ``personal.read``, with *what*,
    the columns and the row count, never the values), masked for other staff and dropped for
    the public. Residents' columns are never shown in full here: only :func:`read_residents`,
    scoped to a grid worker's grids or a resident's own record, does that.
    """
    from twin.layers import get_layer

    user = resolve(store, user)
    columns: dict[str, str] = {}
    for name in layers:
        try:
            get_layer(name)
        except KeyError:  # not a declared layer (a what-if or derived table)
            continue
        for column in sensitive_columns(name):
            if column in frame.columns:
                columns.setdefault(column, name)
    if not columns:
        return frame
    if user.is_anonymous or user.disabled:
        return frame.drop(columns=list(columns))
    full = [c for c, layer in columns.items()
            if layer != "residents" and user.role in FULL_LAYER_ACCESS]
    masked = [c for c in columns if c not in full]
    out = mask_frame(frame, masked) if masked else frame
    if full:
        store.append_audit(user.username, "personal.read", what,
                           {"role": user.role, "columns": full, "rows": len(out)}, origin)
    return out


def read_layer(store, user: User | None, name: str, *, origin: str = "") -> pd.DataFrame:
    """Layer *name* as *user* may see it (see :func:`protect`).

    The residents layer goes through :func:`read_residents`. Other layers with personal columns
    (the grid workers' phones of ``grid_cells``) show full values to admin and data staff only.
    """
    if name == "residents":
        return read_residents(store, user, origin=origin)
    return protect(store, user, store.read_layer(name), [name], what=f"layer:{name}",
                   origin=origin)


def unit_grids_of(user: User, grid_cells: pd.DataFrame | None) -> set[str]:
    """Return the unit grid codes a grid worker is responsible for (their grids expanded)."""
    return _scope_grids(user, grid_cells)


