"""OGC API – Features (Part 1 Core, GeoJSON, OpenAPI 3; Part 2 CRS) at ``/ogc``.

Thin: each route parses its parameters with :func:`twin.features.make_query`, reads with
:func:`twin.features.read` as the caller (which asks :mod:`twin.trust` what they may see, and
audits), and writes GeoJSON with links.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import pandas as pd
from fastapi import APIRouter, Query, Request
from starlette.responses import JSONResponse, Response

from twin import features
from twin.api import deps
from twin.api.problems import Problem
from twin.errors import LayerNotFoundError, NotFoundError, ValidationError

router = APIRouter(prefix="/ogc", tags=["OGC API - Features"])

GEOJSON = "application/geo+json"
JSON = "application/json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
]
#: Query parameters the items route reads itself; any other names a property filter.
ITEMS_PARAMETERS = {"bbox", "bbox-crs", "datetime", "limit", "offset", "crs", "version", "at",
                    "f", deps.KEY_QUERY}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def _link(href: str, rel: str, type_: str = JSON, title: str | None = None) -> dict[str, str]:
    link = {"href": href, "rel": rel, "type": type_}
    if title:
        link["title"] = title
    return link


def _carry_key(body: Any, key: str | None) -> Any:
    """Add ``api_key`` to every link of *body* when the request carried it in its query.

    A client that can only put the key in the URL (a GDAL connection string) follows the links
    it is given: without the key they would be read as the public.
    """
    if not key:
        return body
    if isinstance(body, dict):
        for name, value in body.items():
            if name == "links" and isinstance(value, list):
                for link in value:
                    href = link["href"]
                    if f"{deps.KEY_QUERY}=" not in href:
                        link["href"] = href + ("&" if "?" in href else "?") + urlencode(
                            {deps.KEY_QUERY: key})
            else:
                _carry_key(value, key)
    elif isinstance(body, list):
        for item in body:
            _carry_key(item, key)
    return body


def _json(request: Request, body: Any, media_type: str = JSON,
          headers: dict[str, str] | None = None):
    body = _carry_key(body, request.query_params.get(deps.KEY_QUERY))
    return JSONResponse(body, media_type=media_type, headers=headers)


def _features_problem(exc: ValidationError, **values: Any) -> Problem:
    """Map a query error of twin.features to its problem kind."""
    if isinstance(exc, features.BadBBoxError):
        return Problem("bad-bbox", value=values.get("bbox"), reason=str(exc))
    if isinstance(exc, features.BadDatetimeError):
        return Problem("bad-datetime", value=values.get("datetime") or values.get("at"),
                       reason=str(exc))
    if isinstance(exc, features.BadCrsError):
        parameter = "bbox-crs" if "bbox-crs" in str(exc) else "crs"
        return Problem("bad-crs", parameter=parameter, value=values.get(parameter),
                       allowed=", ".join(features.CRS_OFFERED))
    if isinstance(exc, features.PageTooLargeError):
        return Problem("oversized-page", value=values.get("limit"), maximum=values["maximum"])
    return Problem("bad-parameter", where="query", reason=str(exc))


def _collection(caller: deps.Caller, request: Request, cid: str) -> features.Collection:
    """Return collection *cid* if the caller may read it (their user is as stored now)."""
    try:
        coll = features.collection(cid)
    except LayerNotFoundError:
        coll = None
    if coll is not None and features.may_read(caller.user, cid):
        return coll
    visible = features.collections_for(deps.store(request), caller.user)
    raise Problem("unknown-collection", collection=cid, known=", ".join(c.id for c in visible))


def _collection_doc(coll: features.Collection, base: str, lang: str) -> dict[str, Any]:
    url = f"{base}/collections/{coll.id}"
    doc: dict[str, Any] = {
        "id": coll.id,
        "title": coll.title(lang),
        "description": f"{coll.title_zh} / {coll.title_en}",
        "itemType": "feature",
        "links": [
            _link(url, "self", JSON, coll.title(lang)),
            _link(f"{url}/items", "items", GEOJSON, coll.title(lang)),
        ],
        "crs": list(features.CRS_OFFERED),
        "storageCrs": features.CRS84,
    }
    if coll.time_field:
        doc["extent"] = {"temporal": {"interval": [[None, None]], "trs":
                                      "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}}
    return doc


@router.get("", summary="Landing page")
def landing(request: Request, caller: deps.CallerDep):
    base = _base(request)
    return _json(request, {
        "title": "GridTwin 智慧社区数字孪生",
        "description": "OGC API – Features of the community twin: every declared layer, and "
                       "the cases, alarms and events your role may read.",
        "links": [
            _link(base, "self", JSON, "this document"),
            _link(f"{base}/api", "service-desc", OPENAPI, "the API definition"),
            _link(f"{base}/conformance", "conformance", JSON, "conformance classes"),
            _link(f"{base}/collections", "data", JSON, "the collections"),
        ],
    })


@router.get("/conformance", summary="Conformance classes")
def conformance(request: Request, caller: deps.CallerDep):
    return _json(request, {"conformsTo": CONFORMANCE})


@router.get("/collections", summary="The collections the caller may read")
def collections(request: Request, caller: deps.CallerDep):
    base = _base(request)
    visible = features.collections_for(deps.store(request), caller.user)
    return _json(request, {
        "links": [_link(f"{base}/collections", "self")],
        "collections": [_collection_doc(c, base, caller.lang) for c in visible],
        "crs": list(features.CRS_OFFERED),
    })


@router.get("/collections/{cid}", summary="One collection")
def collection(cid: str, request: Request, caller: deps.CallerDep):
    return _json(request, _collection_doc(_collection(caller, request, cid), _base(request),
                                          caller.lang))


def _items_url(base: str, cid: str, params: dict[str, Any], offset: int) -> str:
    kept = dict(params)  # api_key too, when the caller put it in the URL (see _carry_key)
    kept["offset"] = offset
    return f"{base}/collections/{cid}/items?{urlencode(kept)}"


@router.get("/collections/{cid}/items", summary="Features of a collection")
def items(
    cid: str, request: Request, caller: deps.CallerDep,
    bbox: str | None = Query(None, description="minx,miny,maxx,maxy (in bbox-crs axis order)"),
    bbox_crs: str | None = Query(None, alias="bbox-crs", description="CRS of bbox (CRS84)"),
    datetime: str | None = Query(None, description="RFC 3339 instant or interval, '..' open"),
    limit: int | None = Query(None, ge=1, description="features per page (default 10)"),
    offset: int = Query(0, ge=0, description="features to skip"),
    crs: str | None = Query(None, description="CRS of the answer (CRS84, EPSG:4326, 4490)"),
    version: int | None = Query(None, ge=1, description="a layer version (the store's history)"),
    at: str | None = Query(None, description="the layer as it was at this instant"),
):
    coll = _collection(caller, request, cid)
    settings = request.app.state.settings
    properties = {k: v for k, v in request.query_params.items() if k not in ITEMS_PARAMETERS}
    raw = {"bbox": bbox, "bbox-crs": bbox_crs, "datetime": datetime, "limit": limit,
           "crs": crs, "at": at, "maximum": settings.max_limit}
    try:
        query = features.make_query(
            coll, bbox=bbox, bbox_crs=bbox_crs, datetime=datetime, limit=limit, offset=offset,
            crs=crs, version=version, at=at, properties=properties,
            max_limit=settings.max_limit)
    except ValidationError as exc:
        raise _features_problem(exc, **raw) from None
    page = features.read(deps.store(request), caller.user, cid, query, origin=caller.origin)
    base = _base(request)
    params = {k: v for k, v in request.query_params.items()}
    params["limit"] = query.limit
    links = [_link(_items_url(base, cid, params, query.offset), "self", GEOJSON),
             _link(f"{base}/collections/{cid}", "collection", JSON)]
    if page.has_next:
        links.append(_link(_items_url(base, cid, params, query.offset + query.limit), "next",
                           GEOJSON))
    if query.offset > 0:
        links.append(_link(_items_url(base, cid, params, max(0, query.offset - query.limit)),
                           "prev", GEOJSON))
    body: dict[str, Any] = {
        "numberMatched": page.matched,
        "numberReturned": page.returned,
        "timeStamp": pd.Timestamp.now(tz="UTC").isoformat(),
        "links": links,
    }
    headers = {"Content-Crs": f"<{query.crs}>"}
    if page.version is not None:
        body["layerVersion"] = page.version
        headers["X-Twin-Layer-Version"] = str(page.version)
    _carry_key(body, request.query_params.get(deps.KEY_QUERY))
    # the features are written as text at once (twin.features.features_json), the rest around
    rest = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    text = ('{"type":"FeatureCollection","features":['
            + ",".join(features.features_json(page)) + "]," + rest[1:])
    return Response(text.encode("utf-8"), media_type=GEOJSON, headers=headers)


@router.get("/collections/{cid}/items/{fid}", summary="One feature")
def item(
    cid: str, fid: str, request: Request, caller: deps.CallerDep,
    crs: str | None = Query(None, description="CRS of the answer (CRS84, EPSG:4326, 4490)"),
    version: int | None = Query(None, ge=1, description="a layer version"),
    at: str | None = Query(None, description="the layer as it was at this instant"),
):
    coll = _collection(caller, request, cid)
    try:
        _, feature, layer_version = features.read_one(
            deps.store(request), caller.user, cid, fid, crs=crs, version=version, at=at,
            origin=caller.origin)
    except (LayerNotFoundError, NotFoundError) as exc:
        if isinstance(exc, NotFoundError) and "no feature" in str(exc):
            raise Problem("unknown-feature", collection=cid, feature=fid) from None
        raise
    except ValidationError as exc:
        raise _features_problem(exc, crs=crs, at=at, maximum=1) from None
    base = _base(request)
    feature["links"] = [
        _link(f"{base}/collections/{coll.id}/items/{fid}", "self", GEOJSON),
        _link(f"{base}/collections/{coll.id}", "collection", JSON),
    ]
    headers = {"Content-Crs": f"<{features.parse_crs(crs)}>"}
    if layer_version is not None:
        headers["X-Twin-Layer-Version"] = str(layer_version)
    return _json(request, feature, GEOJSON, headers)
