"""OGC SensorThings API 1.1 (read) over HTTP (``/sta/v1.1``): thin, on twin.trust.sensing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from twin.api import deps
from twin.trust import sensing

PREFIX = "/sta/v1.1"
router = APIRouter(prefix=PREFIX, tags=["sensorthings"])


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + PREFIX


@router.get("", summary="SensorThings service root")
def root(request: Request, caller: deps.CallerDep) -> JSONResponse:
    return JSONResponse(sensing.service_root(_base(request)))


@router.get("/{path:path}", summary="SensorThings entities: Things, Datastreams, Observations …")
def read(request: Request, path: str, caller: deps.CallerDep) -> JSONResponse:
    return JSONResponse(sensing.read(deps.store(request), caller.user, path,
                                     dict(request.query_params), base=_base(request),
                                     origin=caller.origin))
