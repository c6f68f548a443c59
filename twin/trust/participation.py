"""Resident participation: notices, polls and questionnaires for a building, grid or community."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from twin import points
from twin.errors import DuplicateIdError, NotFoundError, PermissionDeniedError, ValidationError
from twin.schema import ANSWERS, NOTICE_KINDS, NOTICE_SCOPES, NOTICES
from twin.trust.permissions import User, require
from twin.trust.privacy import buildings_in_scope, layer_or_empty, unit_grids_of
from twin.trust.users import resolve

LOGGER = logging.getLogger(__name__)

#: Kinds of notice and the places they are for (declared with the tables in twin.schema).
KINDS = NOTICE_KINDS
SCOPES = NOTICE_SCOPES
RESULT_BY = ("building", "grid")


def _check_questions(kind: str, questions: Any) -> list[dict[str, Any]]:
    if kind == "notice":
        return []
    if not isinstance(questions, (list, tuple)) or not questions:
        raise ValidationError(f"a {kind} needs questions: [{{'question': …, 'choices': […]}}]")
    out = []
    for i, q in enumerate(questions, 1):
        text = str(q.get("question", "")).strip() if isinstance(q, dict) else ""
        choices = [str(c).strip() for c in (q.get("choices") or [])] if isinstance(q, dict) else []
        choices = [c for c in choices if c]
        if not text or len(choices) < 2 or len(set(choices)) != len(choices):
            raise ValidationError(
                f"question {i} needs a text and at least two different choices; got {q!r}"
            )
        out.append({"question": text, "choices": choices})
    if kind == "poll" and len(out) != 1:
        raise ValidationError(f"a poll has exactly one question; got {len(out)} (use a survey)")
    return out


def _check_scope(store, user: User, scope_kind: str, scope_id: str) -> None:
    """Check that a grid worker publishes only to their own grids and the buildings in them."""
    if user.role != "grid_worker":
        return
    grid_cells = layer_or_empty(store, "grid_cells")
    grids = unit_grids_of(user, grid_cells)
    if scope_kind == "grid" and scope_id in grids:
        return
    if scope_kind == "building":
        buildings = layer_or_empty(store, "buildings")
        if not buildings.empty:
            mine = buildings.loc[buildings_in_scope(user, buildings, grid_cells), "building_code"]
            if scope_id in set(mine):
                return
    raise PermissionDeniedError(
        f"grid worker {user.username!r} may publish only to their grids "
        f"({', '.join(user.grids)}) and buildings in them; not to {scope_kind} {scope_id!r}"
    )


def publish(
    store,
    user: User,
    *,
    kind: str,
    scope_kind: str,
    scope_id: str,
    title: str,
    body: str = "",
    questions: list[dict[str, Any]] | None = None,
    closes_at: Any = None,
    origin: str = "",
) -> dict[str, Any]:
    """Publish a notice, poll or survey to a building, grid or community; return it.

    Raises
    ------
    PermissionDeniedError
        If the role may not publish, or a grid worker publishes outside their grids.
    ValidationError
        For an unknown kind or scope, an empty title or malformed questions.
    """
    user = require(resolve(store, user), "participation.publish")
    if kind not in KINDS:
        raise ValidationError(f"kind must be one of {list(KINDS)}; got {kind!r}")
    if scope_kind not in SCOPES:
        raise ValidationError(f"scope must be one of {list(SCOPES)}; got {scope_kind!r}")
    if not str(title).strip() or not str(scope_id).strip():
        raise ValidationError("a notice needs a title and a scope (building, grid or community)")
    questions = _check_questions(kind, questions)
    _check_scope(store, user, scope_kind, scope_id)
    row = {
        "id": f"{kind[0].upper()}-{uuid.uuid4().hex[:10]}", "kind": kind,
        "scope_kind": scope_kind, "scope_id": str(scope_id).strip(),
        "title": str(title).strip(), "body": str(body),
        "questions": json.dumps(questions, ensure_ascii=False), "created_by": user.username,
        "created_at": pd.Timestamp.now(tz="UTC"),
        "closes_at": None if closes_at is None else pd.Timestamp(closes_at),
    }
    store.put_rows(NOTICES, pd.DataFrame([row]))
    store.append_audit(user.username, f"{kind}.publish", f"notice:{row['id']}",
                       {"scope": f"{scope_kind}:{row['scope_id']}"}, origin)
    return get_notice(store, row["id"])


def get_notice(store, notice_id: str) -> dict[str, Any]:
    """Return one notice (with its questions as a list). Raises NotFoundError if absent."""
    rows = store.read_rows(NOTICES, id=notice_id)
    if rows.empty:
        raise NotFoundError(f"no notice or poll {notice_id!r}")
    out = rows.iloc[0].to_dict()
    out["questions"] = json.loads(out["questions"]) if out.get("questions") else []
    return out


def resident_place(store, user: User) -> dict[str, str | None]:
    """Return where a resident lives: building, unit grid, responsibility grid and community."""
    building = user.building_code
    if building is None and user.resident_id:
        residents = layer_or_empty(store, "residents")
        if not residents.empty:
            mine = residents.loc[residents["resident_id"] == user.resident_id, "building_code"]
            building = None if mine.empty else str(mine.iloc[0])
    place: dict[str, str | None] = {"building_code": building, "grid_code": None,
                                    "resp_grid_id": None, "community_code": None}
    buildings = layer_or_empty(store, "buildings")
    if building is not None and not buildings.empty:
        row = buildings.loc[buildings["building_code"] == building]
        if not row.empty:
            for key in ("grid_code", "resp_grid_id", "community_code"):
                value = row.iloc[0].get(key)
                place[key] = None if value is None or pd.isna(value) else str(value)
    return place


def _in_scope(notices: pd.DataFrame, place: dict[str, str | None]) -> pd.Series:
    grid_ids = {place["grid_code"], place["resp_grid_id"]} - {None}
    return (
        ((notices["scope_kind"] == "building") & (notices["scope_id"] == place["building_code"]))
        | ((notices["scope_kind"] == "grid") & notices["scope_id"].isin(grid_ids))
        | ((notices["scope_kind"] == "community")
           & notices["scope_id"].isin(_community_ids(place["community_code"])))
    )


def _community_ids(code: str | None) -> set[str]:
    return set() if code is None else {code}


def notices_for(store, user: User | None) -> pd.DataFrame:
    """Return the notices *user* sees, newest first: a resident those for their place; staff all.

    Raises
    ------
    PermissionDeniedError
        If *user* is not logged in.
    """
    user = require(resolve(store, user), "page.participation")
    notices = store.read_rows(NOTICES)
    if user.role == "resident":  # type: ignore[union-attr]
        notices = notices.loc[_in_scope(notices, resident_place(store, user))]
    return notices.sort_values("created_at", ascending=False).reset_index(drop=True)


def resident_key(poll_id: str, user: User) -> str:
    """Return the pseudonym under which *user* answers poll *poll_id* (one answer per resident)."""
    who = user.resident_id or user.username
    return hashlib.sha256(f"{poll_id}\n{who}".encode()).hexdigest()[:24]


def answer(
    store, user: User, poll_id: str, choices: list[str], *, origin: str = "", now: Any = None
) -> dict[str, Any]:
    """Record a resident's answer (one chosen option per question); once per resident.

    Raises
    ------
    PermissionDeniedError
        If *user* is not a resident or the poll is not for their building, grid or community.
    DuplicateIdError
        If they already answered (the store's unique key enforces it).
    ValidationError
        If the poll is closed, a notice, or a choice is not one of the options.
    """
    user = require(resolve(store, user), "participation.answer")
    poll = get_notice(store, poll_id)
    if poll["kind"] == "notice":
        raise ValidationError(f"{poll_id} is a notice, not a poll; nothing to answer")
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now)
    closes = poll.get("closes_at")
    if closes is not None and not pd.isna(closes) and now > pd.Timestamp(closes):
        raise ValidationError(f"poll {poll_id} closed at {pd.Timestamp(closes).isoformat()}")
    place = resident_place(store, user)
    if not _in_scope(pd.DataFrame([poll]), place).iloc[0]:
        raise PermissionDeniedError(
            f"poll {poll_id} is for {poll['scope_kind']} {poll['scope_id']}; "
            "only residents there may answer"
        )
    questions = poll["questions"]
    if len(choices) != len(questions):
        raise ValidationError(f"answer all {len(questions)} questions; got {len(choices)}")
    for q, c in zip(questions, choices, strict=True):
        if c not in q["choices"]:
            raise ValidationError(f"{c!r} is not an option of {q['question']!r}: {q['choices']}")
    row = {"poll_id": poll_id, "resident_key": resident_key(poll_id, user),
           "resident_id": user.resident_id or user.username, **place,
           "answer": json.dumps(list(choices), ensure_ascii=False), "answered_at": now}
    if store.put_rows(ANSWERS, pd.DataFrame([row]), on_conflict="ignore") == 0:
        raise DuplicateIdError(f"you already answered poll {poll_id}; one answer per resident")
    store.append_audit(user.username, "poll.answer", f"notice:{poll_id}",
                       {"building": place["building_code"]}, origin)
    points.award(store, {"account": user.username, "delta": points.RULES["poll_answer"],
                         "reason": "poll_answer", "ref": f"poll:{poll_id}:{user.username}"},
                 actor="participation", at=now)
    return row


def has_answered(store, user: User, poll_id: str) -> bool:
    """Return True if *user* has answered poll *poll_id*."""
    return not store.read_rows(ANSWERS, poll_id=poll_id,
                               resident_key=resident_key(poll_id, user)).empty


def answers_of(store, user: User) -> pd.DataFrame:
    """Return a resident's own answers (poll, answer, when)."""
    who = user.resident_id or user.username
    rows = store.read_rows(ANSWERS, resident_id=who)
    return rows[["poll_id", "answer", "answered_at"]].reset_index(drop=True)


def results(store, poll_id: str, *, by: str | None = None, question: int = 0) -> pd.DataFrame:
    """Return the counts of each option of one question, overall or per building or grid.

    Returns
    -------
    pandas.DataFrame
        Columns ``<by>_code`` (when *by*), ``choice``, ``answers``, ``share`` (0–1 within the
        group); every option appears, with 0 when nobody chose it.
    """
    if by is not None and by not in RESULT_BY:
        raise ValidationError(f"by must be one of {list(RESULT_BY)} or None; got {by!r}")
    poll = get_notice(store, poll_id)
    if not poll["questions"]:
        raise ValidationError(f"{poll_id} is a notice; it has no results")
    if not 0 <= question < len(poll["questions"]):
        raise ValidationError(f"question {question} does not exist in {poll_id}")
    options = poll["questions"][question]["choices"]
    rows = store.read_rows(ANSWERS, poll_id=poll_id)
    chosen = rows["answer"].map(lambda a: json.loads(a)[question] if a else None)
    group = {"building": "building_code", "grid": "grid_code"}.get(by or "", None)
    frame = pd.DataFrame({"choice": chosen})
    if group:
        frame[group] = rows[group].to_numpy()
        groups = sorted(frame[group].dropna().unique())
        index = pd.MultiIndex.from_product([groups, options], names=[group, "choice"])
        counts = frame.groupby([group, "choice"]).size().reindex(index, fill_value=0)
        out = counts.rename("answers").reset_index()
        totals = out.groupby(group)["answers"].transform("sum")
    else:
        counts = frame.groupby("choice").size().reindex(options, fill_value=0)
        out = counts.rename("answers").rename_axis("choice").reset_index()
        totals = pd.Series(out["answers"].sum(), index=out.index)
    out["share"] = np.where(totals > 0, out["answers"] / totals.where(totals > 0, 1), 0.0)
    return out


def results_layer(
    store, poll_id: str, *, by: str = "building", question: int = 0,
    layers: dict[str, gpd.GeoDataFrame] | None = None,
) -> gpd.GeoDataFrame:
    """Return the results of a poll on the map: one polygon per building or unit grid.

    Columns: ``code``, ``answers`` (total), ``leading`` (the most chosen option), ``share`` of
    it, one ``n_<i>`` count per option, and ``tooltip`` (plain text lines) — ready for a
    pydeck PolygonLayer. Only buildings or grids with answers are returned.
    """
    table = results(store, poll_id, by=by, question=question)
    key = "building_code" if by == "building" else "grid_code"
    layer_name = "buildings" if by == "building" else "grid_cells"
    shapes = (layers or {}).get(layer_name)
    if shapes is None:
        shapes = layer_or_empty(store, layer_name)
    if table.empty or shapes is None or len(shapes) == 0:
        return gpd.GeoDataFrame(
            {"code": [], "answers": [], "leading": [], "share": [], "tooltip": []},
            geometry=[], crs=4326)
    wide = table.pivot(index=key, columns="choice", values="answers")
    options = list(dict.fromkeys(table["choice"]))
    wide = wide[options]
    total = wide.sum(axis=1)
    leading = wide.idxmax(axis=1)
    share = wide.max(axis=1) / total.where(total > 0, 1)
    out = pd.DataFrame({"code": wide.index, "answers": total.to_numpy(),
                        "leading": leading.to_numpy(), "share": share.to_numpy()})
    for i, option in enumerate(options):
        out[f"n_{i}"] = wide[option].to_numpy()
    geo = shapes[[key, "geometry"]].rename(columns={key: "code"})
    merged = geo.merge(out, on="code", how="inner")
    merged = merged.loc[merged["answers"] > 0].reset_index(drop=True)
    # plain text, shown with the tooltip's ``text`` mode (innerText): never parsed as HTML
    lines = merged["code"].astype(str)
    for i, option in enumerate(options):
        lines = lines + "\n" + str(option) + ": " + merged[f"n_{i}"].astype(str)
    merged["tooltip"] = lines
    return gpd.GeoDataFrame(merged, geometry="geometry", crs=shapes.crs)


def anonymise_answers(store, cutoff: Any, *, dry_run: bool = False) -> int:
    """Empty the resident of answers given before *cutoff*; keep the answer and the place.

    Returns the number of answers anonymised (or that would be, with *dry_run*).
    """
    rows = store.read_rows(ANSWERS)
    old = rows.loc[rows["resident_id"].notna()
                   & (pd.to_datetime(rows["answered_at"], utc=True) < pd.Timestamp(cutoff))]
    if not dry_run and not old.empty:
        old = old.assign(resident_id=None)
        store.put_rows(ANSWERS, old, on_conflict="update")
    return len(old)
