"""Open311 GeoReport v2 as a user may use it: post a request (key owner = reporter), read requests.

A partner app (FixMyStreet, a property company's system, a phone app) posts with an API key; the
key's owner is the reporter of record, and the request becomes a case through
:func:`twin.trust.casework.report_case` exactly as a report filed in the app: located, routed,
timed, stored and audited. Reading requests follows the case rules: case handlers see the cases
their role may see (:func:`twin.trust.casework.visible_cases`), everyone else the public view
(no description, photo or address; locations rounded as on the public page), and their own
reports in full.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from twin import cases as cases_mod
from twin import georeport, open311
from twin.errors import NotFoundError, PermissionDeniedError, TwinError, ValidationError
from twin.timeutil import to_local
from twin.trust.casework import _reported_by, report_cases, visible_cases
from twin.trust.permissions import User, can
from twin.trust.privacy import round_location
from twin.trust.uploads import store_photo
from twin.trust.users import resolve

#: Where a request posted over Open311 comes from (twin.cases.SOURCES): the public, through an app.
SOURCE = "resident"


def jurisdictions(grid_cells: pd.DataFrame | None) -> tuple[str, ...]:
    """Return the ``jurisdiction_id`` values served: county, street and community codes.

    A community is its 12-digit code (county 6 + street 3 + community 3), a street its 9 digits,
    a county its 6, all read off the unit grids.
    """
    if grid_cells is None or len(grid_cells) == 0:
        return ()
    codes = grid_cells["grid_code"].astype(str)
    return tuple(sorted(set(codes.str[:12]) | set(codes.str[:9]) | set(codes.str[:6])))


def check_jurisdiction(jurisdiction_id: str | None, grid_cells: pd.DataFrame | None) -> str:
    """Return *jurisdiction_id* if this twin serves it (empty: the whole twin).

    Raises
    ------
    NotFoundError
        If it is none of :func:`jurisdictions`, naming those served.
    """
    wanted = str(jurisdiction_id or "").strip()
    if not wanted:
        return ""
    served = jurisdictions(grid_cells)
    if wanted not in served:
        shown = [c for c in served if len(c) == 12][:5] or list(served[:5])
        raise NotFoundError(f"jurisdiction_id {wanted!r} is not served here; use one of the "
                            f"community codes {', '.join(shown)} (or leave it out)")
    return wanted


def post_request(
    store,
    user: User | None,
    fields: Mapping[str, Any] | georeport.PostedRequest,
    *,
    grid_cells: pd.DataFrame | None,
    photo: bytes | None = None,
    origin: str = "",
    lang: str = "zh-CN",
) -> dict[str, Any]:
    """File a GeoReport v2 ``POST requests`` as *user* (the API key's owner); return the answer.

    Parameters
    ----------
    store, user
        The store, and who posts (resolved against the store; the public may not post).
    fields
        The posted fields (see :func:`twin.georeport.parse_post`), or what it made of them.
    grid_cells
        The unit grids (locate, route; the jurisdiction's communities).
    photo
        An uploaded photo (checked and stored as :func:`twin.trust.store_photo` does); else the
        request's ``media_url`` is kept as its photo.
    origin, lang
        Where it came from (for the audit log), and the language of ``service_notice``.

    Returns
    -------
    dict
        ``service_request_id``, ``service_notice`` (who has it and the filing deadline),
        ``account_id`` — and ``case``, the stored case (not part of the spec's answer).

    Raises
    ------
    PermissionDeniedError
        Without a key (the public), or for a key whose owner may not report cases.
    NotFoundError
        For a jurisdiction this twin does not serve.
    OutsideGridsError
        For a place outside every unit grid (naming the nearest grid).
    ValidationError, UploadRejectedError
        For a missing or wrong field, an unknown service code, or a photo that is not one.
    """
    answer = post_requests(store, [(user, fields, photo, origin)], grid_cells=grid_cells,
                           lang=lang)[0]
    if isinstance(answer, Exception):
        raise answer
    return answer


def post_requests(
    store,
    items: Sequence[tuple[User | None, Mapping[str, Any] | georeport.PostedRequest,
                          bytes | None, str]],
    *,
    grid_cells: pd.DataFrame | None,
    lang: str = "zh-CN",
) -> list[dict[str, Any] | TwinError]:
    """File many ``POST requests`` at once (posts gathered by the HTTP face).

    See :func:`post_request`. Returns per item its answer or the error that refused it; the
    accepted ones are stored in one transaction (:func:`twin.trust.casework.report_cases`).
    """
    results: list[dict[str, Any] | TwinError | None] = [None] * len(items)
    batch: list[tuple[int, User, dict[str, Any], georeport.PostedRequest, pd.Series]] = []
    known: dict[str, pd.Series] = {}
    for i, (user, fields, photo, origin) in enumerate(items):
        try:
            if user is None or user.is_anonymous:
                raise PermissionDeniedError("posting a request needs an api_key; ask the "
                                            "twin's administrator for one for your app")
            posted = (fields if isinstance(fields, georeport.PostedRequest)
                      else georeport.parse_post(fields))
            jurisdiction = check_jurisdiction(posted.jurisdiction_id, grid_cells)
            if posted.service_code not in known:  # an unknown code: refused before a photo
                known[posted.service_code] = cases_mod.lookup_category(posted.service_code)
            cat = known[posted.service_code]
            if jurisdiction:
                community = cases_mod.locate(posted.lon, posted.lat, grid_cells)["community_code"]
                if community and not community.startswith(jurisdiction):
                    raise ValidationError(
                        f"({posted.lon}, {posted.lat}) lies in community {community}, not in "
                        f"jurisdiction {jurisdiction}; post it there")
            photos = ([store_photo(photo)] if photo else
                      [posted.media_url] if posted.media_url else [])
        except TwinError as exc:
            results[i] = exc
            continue
        reporter = {"via": "open311", **posted.contact}
        reporter.update({k: v for k, v in (("device_id", posted.device_id),
                                           ("account_id", posted.account_id)) if v})
        report = {
            "category": posted.service_code, "lon": posted.lon, "lat": posted.lat,
            "description": posted.description,
            "source": SOURCE, "photos": photos, "address": posted.address,
            "reporter": reporter, "attributes": posted.attributes,
            "origin": origin or "open311"}
        batch.append((i, user, report, posted, cat))
    if batch:  # descriptions made plain text in one pass (markup dropped, XML-safe)
        plain = open311._plain(pd.Series([r["description"] for _, _, r, _, _ in batch],
                                         dtype=object), open311.DESCRIPTION_MAX)
        for (_, _, report, posted, _), text in zip(batch, plain, strict=True):
            report["description"] = text or posted.service_code
    done = report_cases(store, [(u, r) for _, u, r, _, _ in batch], grid_cells=grid_cells)
    for (i, _, _, posted, cat), case in zip(batch, done, strict=True):
        results[i] = case if isinstance(case, TwinError) else {
            "service_request_id": case["id"], "service_notice": _notice(case, cat, lang),
            "account_id": posted.account_id, "case": case}
    return results  # type: ignore[return-value]


@functools.lru_cache(maxsize=256)
def _local_text(stamp: str) -> str:
    """Return a stored UTC time as local W3C text (a batch shares a few deadlines)."""
    return to_local(pd.Timestamp(stamp)).isoformat(timespec="seconds")


def _notice(case: Mapping[str, Any], cat: pd.Series, lang: str) -> str:
    """Return what the reporter is told: the category, who has it and by when it is filed."""
    zh = str(lang).startswith("zh")
    data = case["data"] if isinstance(case.get("data"), dict) else cases_mod._data(dict(case))
    due = (data.get("deadlines") or {}).get("file")
    due_text = _local_text(due) if due else ""
    name = cat["name_zh"] if zh else cat["name_en"]
    grid = case.get("grid_code") or ""
    if zh:
        return f"已受理：{name}，网格 {grid}，立案时限 {due_text}"
    return f"Received: {name}, grid {grid}; to be filed by {due_text}"


def _public(records: open311.Records) -> open311.Records:
    """Return the public view of requests: no description, photo or address; places rounded."""
    if not records:
        return records
    frame = pd.DataFrame(records)
    lon, lat = round_location(pd.to_numeric(frame["long"]), pd.to_numeric(frame["lat"]))
    frame["long"], frame["lat"] = lon, lat
    frame[["description", "media_url", "address", "address_id"]] = None
    return open311.Records(frame.astype(object).where(frame.notna(), None).to_dict("records"),
                           "requests")


def read_requests(
    store,
    user: User | None,
    flt: georeport.RequestFilter | Mapping[str, Any] | None = None,
    *,
    grid_cells: pd.DataFrame | None = None,
    jurisdiction_id: str | None = None,
    lang: str = "zh-CN",
    origin: str = "",
    now: Any = None,
) -> open311.Records:
    """Return the GeoReport v2 requests *user* may see that *flt* selects (newest first).

    Case handlers (``page.cases``) get the cases their role sees, in full (descriptions with
    phone and ID numbers masked, reporters never); every other caller the public view, plus
    their own reports in full. A read by a named user is audited as ``open311.read``.

    Raises
    ------
    ValidationError, NotFoundError
        For a bad filter (see :func:`twin.georeport.parse_filter`) or an unknown jurisdiction.
    """
    user = resolve(store, user)
    if not isinstance(flt, georeport.RequestFilter):
        flt = georeport.parse_filter(flt or {})
    jurisdiction = check_jurisdiction(jurisdiction_id, grid_cells)
    stored = store.read_cases()
    if jurisdiction and len(stored):
        stored = stored.loc[stored["community_code"].fillna("").astype(str).str.startswith(
            jurisdiction)]
    chosen = georeport.apply_filter(stored, flt, now=now)
    if can(user, "page.cases"):
        seen = set(visible_cases(store, user, grid_cells)["id"])
        full = chosen.loc[chosen["id"].isin(seen)]
        out = open311.requests(full, lang=lang)
    else:
        own = (_reported_by(chosen, user.username, exclude=pd.Series([], dtype=object))
               if not user.is_anonymous else set())
        mine = chosen["id"].isin(own)
        ordered = open311.requests(chosen, lang=lang)
        public = _public(open311.Records([r for r, m in zip(ordered, mine, strict=True)
                                          if not m], "requests"))
        by_id = {r["service_request_id"]: r for r in public}
        by_id.update({r["service_request_id"]: r for r, m in zip(ordered, mine, strict=True)
                      if m})
        out = open311.Records([by_id[i] for i in chosen["id"]], "requests")
    if not user.is_anonymous:
        store.append_audit(user.username, "open311.read", "cases",
                           {"role": user.role, "rows": len(out), "full": can(user, "page.cases")},
                           origin or "open311")
    return out


def read_request(store, user: User | None, case_id: str, **options: Any) -> open311.Records:
    """Return one request as *user* may see it (a list of one, as the spec wraps it).

    Raises
    ------
    NotFoundError
        If there is no such request, or the caller's role may not see it.
    """
    if not str(case_id).strip():
        raise ValidationError("a service_request_id is needed")
    found = read_requests(store, user, georeport.RequestFilter(ids=(str(case_id),)), **options)
    if not found:
        raise NotFoundError(f"no service request {case_id!r}; GET requests.xml lists them")
    return found
