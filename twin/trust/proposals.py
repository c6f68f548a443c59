"""Residents deliberate (议事协商): proposals at a place, supports, adoption or decline.

A resident proposes a small wish (微心愿) or a small public project (民生微实事) at a place in
the community; other residents support it, once each (the store's key refuses a second); the
community (official, admin) adopts it — it becomes a volunteer task
(:func:`twin.trust.volunteers.post_task`) or a case (:func:`twin.trust.casework.report_case`)
— or declines it, always with a reason residents can read. Adopted proposals are a map layer
(:func:`proposals_layer`) on the residents' page and, with rounded places, the public page.

Who proposed is personal: the proposer sees "you", staff who decide see the username, other
residents and the public see nobody's name. Every step is audited.
"""

from __future__ import annotations

import secrets
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import cases, notify, points
from twin.errors import DuplicateIdError, NotFoundError, ValidationError
from twin.schema import PROPOSAL_KINDS, PROPOSAL_OUTCOMES, PROPOSAL_SUPPORTS, PROPOSALS
from twin.timeutil import to_utc
from twin.trust.casework import _refuse_outside_grids, report_case
from twin.trust.permissions import User, can, require
from twin.trust.privacy import round_location
from twin.trust.users import resolve
from twin.trust.volunteers import post_task

#: What a viewer who may not know the proposer sees in their place.
MASKED = "***"
#: Columns a proposal is shown with (``proposer`` masked per viewer).
SHOWN = ["id", "kind", "title", "body", "lon", "lat", "grid_code", "resp_grid_id", "proposer",
         "created_at", "status", "decided_at", "reason", "outcome_kind", "outcome_id"]
TITLE_MAX, BODY_MAX = 80, 2000


def _now(now: Any) -> pd.Timestamp:
    return to_utc(pd.Timestamp.now(tz="UTC") if now is None else now).floor("s")


def propose(store, user: User, *, kind: str, title: str, body: str = "", lon: float,
            lat: float, grid_cells: pd.DataFrame | None = None, origin: str = "",
            now: Any = None, proposal_id: str | None = None) -> dict[str, Any]:
    """Propose, as a resident, a wish or a small project at a place inside the grids.

    Raises
    ------
    PermissionDeniedError
        If the user is not a resident.
    ValidationError
        For an unknown kind, an empty or over-long title or text, or a place outside every
        grid (the message names the nearest grid).
    """
    user = require(resolve(store, user), "proposals.propose")
    if kind not in PROPOSAL_KINDS:
        raise ValidationError(f"unknown proposal kind {kind!r}; kinds are "
                              f"{', '.join(PROPOSAL_KINDS)}")
    title, body = str(title or "").strip(), str(body or "").strip()
    if not title or len(title) > TITLE_MAX or len(body) > BODY_MAX:
        raise ValidationError(f"a proposal needs a title of 1–{TITLE_MAX} characters and at "
                              f"most {BODY_MAX} characters of text")
    try:
        lon, lat = float(lon), float(lat)
    except (TypeError, ValueError):
        raise ValidationError("a proposal needs a place: tap the map") from None
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise ValidationError(f"({lon}, {lat}) is not a WGS84 longitude/latitude")
    _refuse_outside_grids(lon, lat, grid_cells)
    place = cases.locate(lon, lat, grid_cells)
    at = _now(now)
    row = {"id": proposal_id or f"PR{at:%Y%m%d}-{secrets.token_hex(3)}", "kind": kind,
           "title": title, "body": body, "lon": lon, "lat": lat,
           **{k: place[k] for k in ("grid_code", "resp_grid_id", "community_code",
                                    "street_code")},
           "proposer": user.username, "created_at": at, "status": "open"}
    if store.put_rows(PROPOSALS, pd.DataFrame([row])) == 0:
        raise DuplicateIdError(f"a proposal {row['id']} exists already")
    store.append_audit(user.username, "proposal.propose", f"proposal:{row['id']}",
                       {"kind": kind, "grid": place["grid_code"]}, origin)
    return row


def get_proposal(store, proposal_id: str) -> dict[str, Any]:
    """Return one stored proposal. Raises NotFoundError if there is none."""
    rows = store.read_rows(PROPOSALS, id=str(proposal_id))
    if rows.empty:
        raise NotFoundError(f"no proposal {proposal_id!r}; choose one from the list")
    return rows.iloc[0].to_dict()


def support(store, user: User, proposal_id: str, *, origin: str = "", now: Any = None) -> int:
    """Support another resident's open proposal, once; return its supports now.

    Raises
    ------
    DuplicateIdError
        If the resident supported it already (the store's key refuses a second support).
    ValidationError
        If it is their own proposal, or it is no longer open.
    """
    user = require(resolve(store, user), "proposals.support")
    proposal = get_proposal(store, proposal_id)
    if proposal["proposer"] == user.username:
        raise ValidationError("you made this proposal; other residents support it")
    if proposal["status"] != "open":
        raise ValidationError(f"proposal {proposal_id} was {proposal['status']} already")
    row = {"proposal_id": proposal["id"], "supporter": user.username, "at": _now(now)}
    if store.put_rows(PROPOSAL_SUPPORTS, pd.DataFrame([row]), on_conflict="ignore") == 0:
        raise DuplicateIdError(f"you support proposal {proposal_id} already; once each")
    store.append_audit(user.username, "proposal.support", f"proposal:{proposal_id}", {}, origin)
    return len(store.read_rows(PROPOSAL_SUPPORTS, proposal_id=proposal["id"]))


def _mask(rows: pd.DataFrame, user: User) -> pd.DataFrame:
    """Show the proposer as *user* may see them: to deciding staff, and to the proposer."""
    out = rows.copy()
    mine = out["proposer"] == user.username
    out["mine"] = mine
    if not can(user, "proposals.decide"):
        out["proposer"] = np.where(mine, user.username, MASKED)
    return out


def list_proposals(store, user: User | None, *, status: str | tuple[str, ...] | None = None
                   ) -> pd.DataFrame:
    """Proposals with their supports, newest first, as *user* may see them.

    Residents and staff see every proposal (the proposer masked unless it is them, or they
    decide proposals) with ``supports``, ``mine`` and ``supported`` (by them); the public sees
    adopted proposals only, with places rounded (about 100 m) and no proposer.
    """
    user = require(resolve(store, user), "proposals.read")
    rows = store.read_rows(PROPOSALS) if status is None else \
        store.read_rows(PROPOSALS, status=status)
    if user.is_anonymous:
        rows = rows.loc[rows["status"] == "adopted"].reset_index(drop=True)
    supports = store.read_rows(PROPOSAL_SUPPORTS, proposal_id=rows["id"].tolist()) \
        if len(rows) else pd.DataFrame(columns=["proposal_id", "supporter"])
    counts = supports.groupby("proposal_id").size() if len(supports) else pd.Series(dtype=int)
    rows = rows[SHOWN].assign(supports=rows["id"].map(counts).fillna(0).astype(int))
    rows["supported"] = rows["id"].isin(
        set(supports.loc[supports["supporter"] == user.username, "proposal_id"]))
    if user.is_anonymous:
        rows["lon"], rows["lat"] = round_location(rows["lon"], rows["lat"])
        rows = rows.drop(columns=["proposer", "supported"]).assign(mine=False)
    else:
        rows = _mask(rows, user)
    return rows.sort_values("created_at", ascending=False, ignore_index=True)


def decide(store, user: User, proposal_id: str, *, adopt: bool, reason: str,
           outcome: str = "task", task: dict[str, Any] | None = None,
           case: dict[str, Any] | None = None, grid_cells: pd.DataFrame | None = None,
           origin: str = "", now: Any = None) -> dict[str, Any]:
    """Adopt (as a volunteer task or a case) or decline an open proposal, with a reason.

    Parameters
    ----------
    store, user, proposal_id
        The store, who decides, and which proposal.
    adopt
        True to adopt, False to decline.
    reason
        Why, in words residents read (required both ways).
    outcome
        ``task`` (fields of :func:`twin.trust.volunteers.post_task` in *task*: kind, starts_at,
        ends_at, capacity …; place and title default to the proposal's) or ``case`` (fields of
        :func:`twin.cases.report` in *case*: category …; reported as an instruction 上级交办).
    task, case
        The fields of the task or case the proposal becomes.
    grid_cells, origin, now
        The unit grids (places are located in them), where the request came from, and when.

    Raises
    ------
    PermissionDeniedError
        If the user may not decide proposals.
    ValidationError
        Without a reason, for a proposal no longer open, or an unknown outcome; what the
        task or case intake refuses (nothing is stored then).
    """
    user = require(resolve(store, user), "proposals.decide")
    proposal = get_proposal(store, proposal_id)
    if proposal["status"] != "open":
        raise ValidationError(f"proposal {proposal_id} was {proposal['status']} already")
    reason = str(reason or "").strip()
    if not reason:
        raise ValidationError("say why: residents read the reason of every decision")
    at = _now(now)
    decided = {**proposal, "decided_by": user.username, "decided_at": at, "reason": reason,
               "status": "adopted" if adopt else "declined"}
    if adopt:
        if outcome not in PROPOSAL_OUTCOMES:
            raise ValidationError(f"an adopted proposal becomes one of {PROPOSAL_OUTCOMES}; "
                                  f"got {outcome!r}")
        if outcome == "task":
            spec = {"kind": "other", "title": proposal["title"],
                    "description": proposal["body"] or "", "lon": proposal["lon"],
                    "lat": proposal["lat"], **(task or {})}
            made = post_task(store, user, grid_cells=grid_cells, proposal_id=proposal["id"],
                             origin=origin, now=at, **spec)
        else:
            spec = {"description": f"{proposal['title']}\n{proposal['body'] or ''}".strip(),
                    "lon": proposal["lon"], "lat": proposal["lat"], "source": "instruction",
                    **(case or {})}
            if "category" not in spec:
                raise ValidationError("a proposal adopted as a case needs its category")
            made = report_case(store, user, origin=origin, grid_cells=grid_cells, **spec)
        decided.update(outcome_kind=outcome, outcome_id=made["id"])
    store.put_rows(PROPOSALS, pd.DataFrame([decided]), on_conflict="update")
    store.append_audit(user.username, f"proposal.{decided['status'][:-1]}",
                       f"proposal:{proposal_id}",
                       {"outcome": decided.get("outcome_kind"),
                        "outcome_id": decided.get("outcome_id")}, origin)
    # the proposer hears of the decision and its reason (a channel addressed to them)
    notify.enqueue(store, "proposal.decided", f"proposal:{proposal_id}",
                   {"proposal_id": proposal_id, "title": proposal["title"], "reason": reason,
                    "decision": {"zh": "采纳" if adopt else "不予采纳",
                                 "en": "adopted" if adopt else "declined"}},
                   recipients=(proposal["proposer"],), at=at)
    if adopt:
        points.award(store, {"account": proposal["proposer"],
                             "delta": points.RULES["proposal_adopted"],
                             "reason": "proposal_adopted", "ref": f"proposal:{proposal_id}"},
                     actor=user.username, at=at)
    return decided


def proposals_layer(store, user: User | None, *, status: tuple[str, ...] = ("adopted",)
                    ) -> gpd.GeoDataFrame:
    """Return the proposals *user* may see with *status* as map points with a tooltip.

    The public gets adopted proposals only, places rounded; nobody's name is in the layer.
    """
    rows = list_proposals(store, user)
    rows = rows.loc[rows["status"].isin(status)].reset_index(drop=True)
    tooltip = rows["title"].astype(str) + " · " + rows["supports"].astype(str) + " ♥"
    return gpd.GeoDataFrame(
        {"id": rows["id"], "title": rows["title"], "status": rows["status"],
         "supports": rows["supports"], "outcome_kind": rows["outcome_kind"],
         "tooltip": tooltip},
        geometry=gpd.points_from_xy(rows["lon"], rows["lat"]), crs=4326)


def proposal_summary(store, user: User | None = None) -> pd.DataFrame:
    """Count proposals per unit grid: proposed, adopted, declined, supports.

    Counts only (``grid_code``, ``proposed``, ``adopted``, ``declined``, ``supports``), for the
    cockpit and the public page.
    """
    if user is not None and not user.is_anonymous:
        user = resolve(store, user)
    require(user, "service.indicators")
    rows = store.read_rows(PROPOSALS)
    columns = ["grid_code", "proposed", "adopted", "declined", "supports"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    supports = store.read_rows(PROPOSAL_SUPPORTS)
    counts = supports.groupby("proposal_id").size() if len(supports) else pd.Series(dtype=int)
    rows = rows.assign(grid_code=rows["grid_code"].fillna("—"),
                       supports=rows["id"].map(counts).fillna(0).astype(int))
    out = rows.groupby("grid_code").agg(
        proposed=("id", "size"), adopted=("status", lambda s: int((s == "adopted").sum())),
        declined=("status", lambda s: int((s == "declined").sum())),
        supports=("supports", "sum"))
    return out.reset_index()[columns].sort_values("grid_code", ignore_index=True)
