"""Open311 GeoReport v2 over HTTP (``/open311/v2``): discovery, services, requests; XML and JSON.

Thin: the words are :mod:`twin.georeport`, who may post or read what is
:mod:`twin.trust.georeport`. Errors on these paths come in the spec's format
(``<errors><error><code>…``), not as problem details, since GeoReport clients read that.
Posts that arrive together are filed together (:class:`Intake`: one located, routed, timed
and audited batch per turn of the store), so a busy partner app does not queue behind
one transaction per report.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from twin import georeport, layercache, open311
from twin.api import deps
from twin.api.problems import Problem, body, language
from twin.errors import LayerNotFoundError, TwinError
from twin.trust import georeport as access
from twin.trust.apikeys import key_user

LOGGER = logging.getLogger(__name__)
PREFIX = "/open311/v2"
router = APIRouter(prefix=PREFIX, tags=["open311"])
#: Most posts filed in one batch.
MAX_BATCH = 256
#: A batch is gathered while posts keep arriving: it is filed once this many seconds pass
#: without a new one, or :data:`GATHER_MAX_S` after it began.
GATHER_S = 0.002
GATHER_MAX_S = 0.025


def _lang(request: Request) -> str:
    locale = request.query_params.get("locale")
    return language(locale or request.headers.get("accept-language"))


def _reply(data: bytes, fmt: str, status: int = 200) -> Response:
    return Response(data, status_code=status, media_type=georeport.MEDIA_TYPES[fmt])


def _error(exc: BaseException, fmt: str, lang: str) -> Response:
    """Return the spec's error answer for a library error, a problem (key, rate) or a bug."""
    if isinstance(exc, Problem):  # a refused key is the spec's 403, not 401
        status, text = (403 if exc.status == 401 else exc.status), body(exc, lang)["detail"]
        headers = exc.headers
    else:
        status = georeport.status_of(exc)
        if status == 401:
            status = 403
        text = str(exc) if isinstance(exc, TwinError) else "internal error; see the server log"
        headers = {}
        if status >= 500:
            LOGGER.error("open311: %s", exc, exc_info=exc)
    fmt = fmt if fmt in georeport.MEDIA_TYPES else "xml"
    response = _reply(georeport.errors_body([(status, text)], fmt), fmt, status)
    response.headers.update(headers)
    return response


def _format(name: str) -> str:
    return georeport.split_format(name)[1]


def _caller(request: Request) -> deps.Caller:
    try:
        return deps.caller(request)
    except TwinError as exc:  # a key the library refuses
        from twin.api.problems import from_twin_error

        raise from_twin_error(exc) from None


def _grid_cells(store) -> Any:
    try:
        return layercache.layer(store, "grid_cells")
    except LayerNotFoundError:
        return None


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


@router.get("/discovery.{fmt}", summary="GeoReport v2 discovery")
def discovery(request: Request, fmt: str) -> Response:
    lang = _lang(request)
    try:
        doc = georeport.discovery(_base(request), contact="GridTwin",
                                  key_service="gridtwin users create-key (ask an administrator)")
        return _reply(georeport.discovery_body(doc, fmt), fmt)
    except TwinError as exc:
        return _error(exc, fmt, lang)


@router.get("/services.{fmt}", summary="The service list (categories)")
def services(request: Request, fmt: str) -> Response:
    lang = _lang(request)
    try:
        georeport.split_format(f"services.{fmt}")
        _caller(request)
        access.check_jurisdiction(request.query_params.get("jurisdiction_id"),
                                  _grid_cells(deps.store(request)))
        writer = open311.services_xml if fmt == "xml" else open311.services_json
        return _reply(writer(open311.services(lang=lang)), fmt)
    except (TwinError, Problem) as exc:
        return _error(exc, fmt, lang)


@router.get("/services/{name}", summary="One service's definition")
def service_definition(request: Request, name: str) -> Response:
    lang, fmt = _lang(request), "xml"
    try:
        code, fmt = georeport.split_format(name)
        _caller(request)
        definition = georeport.service_definition(code, open311.services(lang=lang))
        return _reply(georeport.service_definition_body(definition, fmt), fmt)
    except (TwinError, Problem) as exc:
        return _error(exc, fmt, lang)


@router.get("/requests.{fmt}", summary="Service requests, with the spec's filters")
def list_requests(request: Request, fmt: str) -> Response:
    lang = _lang(request)
    try:
        georeport.split_format(f"requests.{fmt}")
        who = _caller(request)
        store = deps.store(request)
        query = dict(request.query_params)
        records = access.read_requests(
            store, who.user, query, grid_cells=_grid_cells(store),
            jurisdiction_id=query.get("jurisdiction_id"), lang=lang, origin=who.origin)
        writer = open311.requests_xml if fmt == "xml" else open311.requests_json
        return _reply(writer(records), fmt)
    except (TwinError, Problem) as exc:
        return _error(exc, fmt, lang)


@router.get("/requests/{name}", summary="One service request")
def one_request(request: Request, name: str) -> Response:
    lang, fmt = _lang(request), "xml"
    try:
        case_id, fmt = georeport.split_format(name)
        who = _caller(request)
        store = deps.store(request)
        records = access.read_request(
            store, who.user, case_id, grid_cells=_grid_cells(store),
            jurisdiction_id=request.query_params.get("jurisdiction_id"), lang=lang,
            origin=who.origin)
        writer = open311.requests_xml if fmt == "xml" else open311.requests_json
        return _reply(writer(records), fmt)
    except (TwinError, Problem) as exc:
        return _error(exc, fmt, lang)


@router.post("/requests.{fmt}", summary="Post a service request (form-encoded, JSON or XML)")
async def post_request(request: Request, fmt: str) -> Response:
    lang = _lang(request)
    try:
        georeport.split_format(f"requests.{fmt}")
        raw = await request.body()
        fields = georeport.parse_body(raw, request.headers.get("content-type"))
        key = (request.headers.get(deps.KEY_HEADER) or request.query_params.get(deps.KEY_QUERY)
               or str(fields.get("api_key") or ""))
        if key:  # resolved with the batch: one read per key and batch, not per post
            who: Any = key
            origin = f"api:{request.client.host if request.client else 'unknown'}"
        else:  # a token, or nobody (refused by the library: posting needs a key)
            caller = await run_in_threadpool(_caller, request)
            who, origin = caller.user, caller.origin
        photo = fields.pop("media", None)
        posted = georeport.parse_post(fields)
        answer = await intake(request).submit((who, posted, photo, origin, lang))
        if isinstance(answer, BaseException):
            raise answer
        request.scope["twin.owner"] = answer.pop("owner", "-")
        return _reply(georeport.posted_body([answer], fmt), fmt)
    except (TwinError, Problem) as exc:
        return _error(exc, fmt, lang)


@router.api_route("/{rest:path}", methods=["GET", "POST"], include_in_schema=False)
def unknown(request: Request, rest: str) -> Response:
    """Any other path below the base: the spec's 404, in the format its ending asks for."""
    fmt = rest.rpartition(".")[2] if rest.endswith((".xml", ".json")) else "xml"
    return _error(georeport.NotFoundError(
        f"{rest!r} is not a GeoReport v2 path here; GET discovery.xml lists the endpoints"),
        fmt, _lang(request))


class Intake:
    """Posts gathered while the store files the previous batch, then filed as one batch.

    A batch costs the store about as much for one post as for thirty (the work is per batch:
    one lookup, one read of recent cases, one transaction), so before each batch the intake
    gathers posts while they keep coming (:data:`GATHER_S` without a new one ends it, at most
    :data:`GATHER_MAX_S`): clients whose answers went out together post again together.
    Filing at once what arrived during the last batch split 32 clients into batches of 11 and
    21, each paying the batch's cost. Batches grow with the load; under a light one a post
    waits 2 ms.
    """

    def __init__(self, store, limiter: Any) -> None:
        self.store = store
        self.limiter = limiter
        self.pending: list[tuple[tuple, asyncio.Future]] = []
        self.running = False

    async def submit(self, item: tuple) -> Any:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _gather(self) -> None:
        """Wait while posts keep arriving (see the class); return at once with a full batch."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_MAX_S
        seen = -1
        while seen != (waiting := len(self.pending)) and waiting < MAX_BATCH \
                and loop.time() < deadline:
            seen = waiting
            await asyncio.sleep(GATHER_S)

    async def _drain(self) -> None:
        try:
            while True:
                await self._gather()
                if not self.pending:
                    break
                batch, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
                try:
                    results = await run_in_threadpool(self._file, [i for i, _ in batch])
                except Exception as exc:  # noqa: BLE001 - the store failed: every post hears it
                    results = [exc] * len(batch)
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.running = False

    def _file(self, items: list[tuple]) -> list[Any]:
        grids = _grid_cells(self.store)
        out: list[Any] = [None] * len(items)
        users = self._users(items, out)
        for lang in {i[4] for i in items}:
            chosen = [n for n, i in enumerate(items) if i[4] == lang and out[n] is None]
            done = access.post_requests(
                self.store, [(users.get(n, items[n][0]), *items[n][1:4]) for n in chosen],
                grid_cells=grids, lang=lang)
            for n, result in zip(chosen, done, strict=True):
                if isinstance(result, dict):
                    result["owner"] = result["case"]["data"]["reporter"]["username"]
                out[n] = result
        return out

    def _users(self, items: list[tuple], out: list[Any]) -> dict[int, Any]:
        """Resolve the keys of a batch, each once, and take each post from its key's allowance.

        As :func:`twin.api.deps.caller` does for other routes (same buckets): a refused key
        or a post past the rate gets its error in *out*.
        """
        resolved: dict[str, Any] = {}
        users: dict[int, Any] = {}
        for n, item in enumerate(items):
            if not isinstance(item[0], str):
                continue
            if item[0] not in resolved:
                try:
                    resolved[item[0]] = key_user(self.store, item[0])
                except TwinError as exc:
                    resolved[item[0]] = exc
            found = resolved[item[0]]
            if isinstance(found, TwinError):
                out[n] = found
                continue
            user, key = found
            wait = self.limiter.take(f"key:{key.key_id}", key.rate_per_min)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                out[n] = Problem("rate-limited", headers={"Retry-After": str(retry)},
                                 rate=key.rate_per_min, retry_after=retry)
                continue
            users[n] = user
        return users


def intake(request: Request) -> Intake:
    """Return the app's :class:`Intake` (made on first use)."""
    state = request.app.state
    if getattr(state, "open311_intake", None) is None:
        state.open311_intake = Intake(deps.store(request), state.limiter)
    return state.open311_intake
