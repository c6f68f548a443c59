"""Errors of the HTTP service as RFC 7807 problem details, in the caller's language.

Routes raise :class:`Problem` (or let a :class:`twin.errors.TwinError` of the library rise);
:func:`install` turns both, FastAPI's own validation errors and unknown paths into
``application/problem+json`` answers whose ``title`` and ``detail`` come from the catalogs
(``data/i18n/<lang>/api.json``) in the language the request's ``Accept-Language`` prefers
(zh-CN when it names neither Chinese nor English).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from twin import errors
from twin.i18n import DEFAULT_LANGUAGE, t

LOGGER = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "urn:gridtwin:problem:"

#: problem kind → HTTP status. Each kind has ``api.problem.<kind>.title`` and ``.detail`` in
#: the catalogs; the detail is a template of the keyword arguments given to :class:`Problem`.
KINDS: dict[str, int] = {
    "bad-bbox": 400,
    "bad-datetime": 400,
    "bad-crs": 400,
    "bad-parameter": 400,
    "oversized-page": 400,
    "malformed-body": 400,
    "invalid": 400,
    "key-refused": 401,
    "forbidden": 403,
    "not-found": 404,
    "unknown-collection": 404,
    "unknown-feature": 404,
    "method-not-allowed": 405,
    "rate-limited": 429,
    "unavailable": 503,
    "internal": 500,
}


class Problem(Exception):
    """An answer of problem details: a *kind* of :data:`KINDS` and the values its detail names.

    Parameters
    ----------
    kind
        A key of :data:`KINDS` (its status and catalog texts).
    headers
        Extra response headers (``Retry-After`` of a 429).
    **values
        The values the catalog's detail template names, also returned as members of the problem.
    """

    def __init__(self, kind: str, *, headers: dict[str, str] | None = None, **values: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown problem kind {kind!r}; known: {', '.join(KINDS)}")
        super().__init__(kind)
        self.kind = kind
        self.status = KINDS[kind]
        self.headers = headers or {}
        self.values = values


def language(accept_language: str | None) -> str:
    """Return zh-CN or en, whichever *accept_language* prefers first (q-values honoured)."""
    best: tuple[float, int, str] | None = None
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        lang = "zh-CN" if tag.startswith("zh") else "en" if tag.startswith("en") else None
        if lang and q > 0 and (best is None or (-q, i) < (-best[0], best[1])):
            best = (q, i, lang)
    return best[2] if best else DEFAULT_LANGUAGE


def body(problem: Problem, lang: str, instance: str = "") -> dict[str, Any]:
    """Return the problem details of *problem* in *lang* (RFC 7807 members and its values)."""
    key = f"api.problem.{problem.kind}"
    out: dict[str, Any] = {
        "type": TYPE_BASE + problem.kind,
        "title": t(f"{key}.title", lang),
        "status": problem.status,
        "detail": t(f"{key}.detail", lang, **problem.values),
    }
    if instance:
        out["instance"] = instance
    out.update({k: v for k, v in problem.values.items() if k not in out})
    return out


def response(request: Request, problem: Problem) -> JSONResponse:
    """Return *problem* as the answer to *request*, in the request's language."""
    lang = language(request.headers.get("accept-language"))
    return JSONResponse(body(problem, lang, request.url.path), status_code=problem.status,
                        media_type=MEDIA_TYPE,
                        headers={**problem.headers, "Content-Language": lang})


def from_twin_error(exc: errors.TwinError) -> Problem:
    """Map an error of the library to a problem: what it says goes in ``reason``."""
    from twin.trust.apikeys import KeyRefusedError

    reason = str(exc)
    if isinstance(exc, KeyRefusedError):
        return Problem("key-refused")
    if isinstance(exc, errors.PermissionDeniedError):
        return Problem("forbidden", reason=reason)
    if isinstance(exc, errors.LayerNotFoundError | errors.NotFoundError):
        return Problem("not-found", reason=reason)
    if isinstance(exc, errors.StoreUnavailableError):
        return Problem("unavailable", reason=reason)
    if isinstance(exc, errors.ValidationError | errors.ConfigError):
        return Problem("invalid", reason=reason)
    return Problem("internal", reason=reason)


def install(app: FastAPI) -> None:
    """Make *app* answer every error as problem details."""

    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return response(request, exc)

    async def on_twin_error(request: Request, exc: errors.TwinError) -> JSONResponse:
        problem = from_twin_error(exc)
        if problem.status >= 500:
            LOGGER.error("%s %s: %s", request.method, request.url.path, exc)
        return response(request, problem)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        where = ".".join(str(p) for p in errs[0].get("loc", ())) if errs else ""
        kind = "malformed-body" if where.startswith("body") else "bad-parameter"
        return response(request, Problem(kind, where=where,
                                         reason=errs[0].get("msg", "") if errs else ""))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return response(request, Problem("not-found", reason=str(exc.detail)))
        if exc.status_code == 405:
            return response(request, Problem("method-not-allowed", method=request.method))
        return JSONResponse({"type": "about:blank", "title": str(exc.detail),
                             "status": exc.status_code}, status_code=exc.status_code,
                            media_type=MEDIA_TYPE)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(errors.TwinError, on_twin_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
