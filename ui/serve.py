"""Start the cockpit's Streamlit server: offline, with the session cookie routes (`make demo`).

``python -m ui.serve run app.py --server.port 8501 …`` is ``streamlit run …`` with two changes:

1. Streamlit's look-up of the machine's external IP address is switched off. Streamlit (1.67)
   asks ``checkip.amazonaws.com`` for it when it prints its URLs while listening on every
   interface, and again, blocking for up to two seconds, each time a browser opens a WebSocket
   from another origin (the address would only be one more origin to allow). An offline or
   private deployment must make neither request; listening on 127.0.0.1
   (``.streamlit/config.toml``) avoids only the first.
2. Two routes are added in front of Streamlit's own (its Starlette app is built by
   ``starlette_app.create_streamlit_routes``; we wrap that function, nothing else changes):
   ``POST /_twin/session`` exchanges the one-time code a login issued
   (:func:`twin.trust.issue_code`) for the ``Set-Cookie`` of the session, HttpOnly and
   SameSite=Strict, and ``POST /_twin/logout`` clears that cookie. A script run cannot set a
   cookie (it answers over the WebSocket), so the page posts the code by a same-origin fetch.
   Revocation itself happens in the store (the logout button ends the session), so a cookie
   that a failed request left behind is refused anyway.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from twin import settings
from twin.trust.sessions import COOKIE_NAME, redeem_code

SESSION_ROUTE = "/_twin/session"
LOGOUT_ROUTE = "/_twin/logout"
LANGUAGE_ROUTE = "/_twin/language"
#: the cookie that keeps the chosen UI language across reloads (not a secret)
LANGUAGE_COOKIE = "twin_lang"


def _no_external_ip() -> None:
    """The external address is never looked up: None, as when the look-up fails."""
    return None


def offline() -> None:
    """Switch off Streamlit's external-IP look-up in this process (before the server starts)."""
    from streamlit import net_util

    net_util.get_external_ip = _no_external_ip


def _same_origin(request: Any) -> bool:
    """True unless the browser says the request comes from another site (CSRF defence)."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def _cookie(response: Any, request: Any, value: str, max_age: int,
            name: str = COOKIE_NAME) -> None:
    from streamlit import config

    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    response.set_cookie(
        name, value, max_age=max_age, path=f"/{base}" if base else "/",
        httponly=True, samesite="strict",
        secure=request.url.scheme == "https" or bool(config.get_option("server.sslCertFile")),
    )
    response.headers["Cache-Control"] = "no-store"


async def _session_endpoint(request: Any) -> Any:
    """``POST {"code": …}``: the session cookie for a fresh one-time code, else 403."""
    from starlette.responses import Response

    if not _same_origin(request):
        return Response("cross-site request refused", status_code=403)
    try:
        body = json.loads((await request.body())[:1024] or b"{}")
    except ValueError:
        body = {}
    token = redeem_code(body.get("code") if isinstance(body, dict) else None)
    if token is None:
        return Response("unknown or expired code; log in again", status_code=403)
    response = Response(status_code=204)
    _cookie(response, request, token, int(settings.get("session_max_hours") * 3600))
    return response


async def _logout_endpoint(request: Any) -> Any:
    """``POST``: the session cookie cleared (the session itself is revoked by the app)."""
    from starlette.responses import Response

    if not _same_origin(request):
        return Response("cross-site request refused", status_code=403)
    response = Response(status_code=204)
    _cookie(response, request, "", 0)
    return response


async def _language_endpoint(request: Any) -> Any:
    """``POST {"lang": "en"}``: the language cookie, so that a reload keeps the language."""
    from starlette.responses import Response

    from twin.i18n import LANGUAGES

    if not _same_origin(request):
        return Response("cross-site request refused", status_code=403)
    try:
        body = json.loads((await request.body())[:256] or b"{}")
    except ValueError:
        body = {}
    lang = body.get("lang") if isinstance(body, dict) else None
    if lang not in LANGUAGES:
        return Response(f"unknown language; one of {', '.join(LANGUAGES)}", status_code=400)
    response = Response(status_code=204)
    _cookie(response, request, lang, 365 * 24 * 3600, name=LANGUAGE_COOKIE)
    return response


def session_routes(base_url: str | None) -> list[Any]:
    """The cookie routes under Streamlit's ``server.baseUrlPath``."""
    from starlette.routing import Route

    prefix = "/" + base_url.strip("/") if base_url and base_url.strip("/") else ""
    return [
        Route(prefix + SESSION_ROUTE, _session_endpoint, methods=["POST"]),
        Route(prefix + LOGOUT_ROUTE, _logout_endpoint, methods=["POST"]),
        Route(prefix + LANGUAGE_ROUTE, _language_endpoint, methods=["POST"]),
    ]


def with_session_routes() -> None:
    """Put :func:`session_routes` in front of Streamlit's routes (before its SPA fallback)."""
    from streamlit import config
    from streamlit.web.server.starlette import starlette_app

    streamlit_routes = starlette_app.create_streamlit_routes
    if getattr(streamlit_routes, "_twin_sessions", False):
        return

    def routes(runtime: Any) -> list[Any]:
        return [*session_routes(config.get_option("server.baseUrlPath")),
                *streamlit_routes(runtime)]

    routes._twin_sessions = True  # type: ignore[attr-defined]
    starlette_app.create_streamlit_routes = routes


def main(argv: list[str] | None = None) -> int:
    """Run the Streamlit command line (``run app.py …``) with :func:`offline` applied."""
    offline()
    with_session_routes()
    from streamlit.web import cli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return cli.main() or 0


if __name__ == "__main__":
    sys.exit(main())
