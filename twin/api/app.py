"""The ASGI application of ``gridtwin serve``: one app, routers on the library's access rules.

:func:`create_app` opens the store once and builds a FastAPI app with problem details
(:mod:`twin.api.problems`), structured access logs, CORS from the settings, health and
readiness, and the routers of :data:`ROUTERS`.

The router contract (for every router added here, OGC API Features, Open311, SensorThings …):

- A router is an ``fastapi.APIRouter`` in a module of ``twin.api`` with its own prefix
  (``/ogc``, ``/open311``, ``/sta``); add the module's name to :data:`ROUTERS` (or call
  ``app.include_router`` on the app :func:`create_app` returns).
- A route takes ``caller: twin.api.deps.CallerDep`` (``Depends(deps.caller)``: who asks, already
  authenticated and rate-limited) and the store as ``twin.api.deps.store(request)``, and hands
  ``caller.user`` and ``caller.origin`` to :mod:`twin.trust` functions, which decide what the
  user may see or do, mask and audit. A route never checks a role itself.
- Sync ``def`` routes (the store is blocking; FastAPI runs them in its thread pool).
- Errors: raise :class:`twin.api.problems.Problem` (a kind of ``problems.KINDS``, texts in
  ``data/i18n/<lang>/api.json``) or let the library's ``TwinError`` rise; both become
  RFC 7807 problem details in the caller's language.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse

from twin import __version__
from twin import settings as twin_settings
from twin.api import problems
from twin.trust.apikeys import RateLimiter

ACCESS_LOGGER = logging.getLogger("twin.api.access")

#: Modules of twin.api whose ``router`` the app includes, in order.
ROUTERS: tuple[str, ...] = ("twin.api.auth", "twin.api.ogc", "twin.api.open311",
                             "twin.api.sensorthings")


@dataclass(frozen=True)
class ApiSettings:
    """What the app is configured with; :meth:`from_settings` reads twin.settings now."""

    cors_origins: tuple[str, ...] = ()
    rate_per_min: int = 600
    anonymous_rate_per_min: int = 600
    max_limit: int = 1000
    routers: tuple[str, ...] = field(default=ROUTERS)

    @classmethod
    def from_settings(cls) -> ApiSettings:
        origins = twin_settings.get("api_cors_origins")
        return cls(
            cors_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            rate_per_min=twin_settings.get("api_rate_per_min"),
            anonymous_rate_per_min=twin_settings.get("api_anonymous_rate_per_min"),
            max_limit=twin_settings.get("api_max_limit"),
        )


class AccessLog:
    """ASGI middleware: one JSON line per request (method, path, status, ms, key owner).

    The owner is the caller's user name (``public`` without credentials, ``-`` when none was
    resolved); the key itself, tokens and the query string are never written.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ACCESS_LOGGER.info(json.dumps({
                "method": scope.get("method"), "path": scope.get("path"),
                "status": status["code"],
                "ms": round((time.perf_counter() - start) * 1000, 2),
                "owner": scope.get("twin.owner", "-"),
                "client": (scope.get("client") or ("-",))[0],
            }, ensure_ascii=False))


def create_app(store_or_url: Any = None, *, settings: ApiSettings | None = None) -> FastAPI:
    """Build the HTTP service over a store.

    Parameters
    ----------
    store_or_url
        An open :class:`twin.store.base.Store`, or a URL or GeoPackage path to open (None:
        ``TWIN_DATABASE_URL``, then the demo GeoPackage).
    settings
        The app's configuration (default: read from twin.settings now).

    Returns
    -------
    FastAPI
        The app; ``app.state.store`` is its store (closed at shutdown when opened here).
    """
    from twin.store import open_store
    from twin.store.base import Store

    settings = settings or ApiSettings.from_settings()
    owned = not isinstance(store_or_url, Store)
    store = open_store(store_or_url) if owned else store_or_url
    app = FastAPI(
        title="GridTwin API",
        version=__version__,
        description="GridTwin (智慧社区数字孪生) over HTTP: OGC API – Features and more, "
        "each answer what the caller's role may see (docs/api.md).",
        openapi_url="/ogc/api",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.settings = settings
    app.state.limiter = RateLimiter()
    problems.install(app)

    @app.get("/healthz", tags=["health"], summary="The process is up")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The store answers")
    def readyz() -> JSONResponse:
        from twin import layers as declared

        try:  # one SELECT of the layers' current versions: the store answers queries
            store.current_versions(declared.names())
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            raise problems.Problem("unavailable", reason=type(exc).__name__) from None
        return JSONResponse({"status": "ready", "store": store.__class__.__name__})

    for name in settings.routers:
        app.include_router(importlib.import_module(name).router)
    _document_security(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["X-API-Key", "Authorization", "Accept-Language", "Content-Type"],
            expose_headers=["Content-Crs", "Retry-After", "Link"],
        )
    app.add_middleware(AccessLog)
    if owned:
        app.router.on_shutdown.append(store.close)
    return app


def _document_security(app: FastAPI) -> None:
    """Add the credentials (key header or query, bearer token; all optional) to the OpenAPI."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            doc.setdefault("components", {})["securitySchemes"] = {
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key"},
                "bearerToken": {"type": "http", "scheme": "bearer",
                                "description": "from POST /auth/token"},
            }
            # no credentials is allowed too: the caller then reads as the public
            doc["security"] = [{}, {"apiKeyHeader": []}, {"apiKeyQuery": []},
                               {"bearerToken": []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """Return the app over ``TWIN_DATABASE_URL`` (for ``uvicorn --factory twin.api.app:...``)."""
    url = twin_settings.get("database_url") or str(Path(twin_settings.default_store_path()))
    return create_app(url)
