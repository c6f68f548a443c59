"""ui.serve's cookie routes: a one-time code for an HttpOnly cookie, cross-site refused."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request

from twin import trust
from ui import serve

HOST = "127.0.0.1:8501"


def call(endpoint, body: object = None, **headers: str):
    """Run *endpoint* on a POST with a JSON *body* and *headers*; return the response."""
    raw = json.dumps(body).encode() if body is not None else b""
    scope = {
        "type": "http", "method": "POST", "path": "/", "scheme": "http", "query_string": b"",
        "server": ("127.0.0.1", 8501),
        "headers": [(b"host", HOST.encode())]
        + [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def receive():
        return {"type": "http.request", "body": raw, "more_body": False}

    return asyncio.run(endpoint(Request(scope, receive)))


def set_cookie(response) -> str:
    return response.headers.get("set-cookie", "")


def test_a_fresh_code_gives_the_session_cookie_once():
    code = trust.issue_code("the-id.the-signature")
    response = call(serve._session_endpoint, {"code": code}, origin=f"http://{HOST}",
                    sec_fetch_site="same-origin")
    assert response.status_code == 204
    cookie = set_cookie(response)
    assert cookie.startswith("twin_session=the-id.the-signature;")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Max-Age=43200" in cookie  # TWIN_SESSION_MAX_HOURS (12)
    again = call(serve._session_endpoint, {"code": code}, sec_fetch_site="same-origin")
    assert again.status_code == 403 and not set_cookie(again)


@pytest.mark.parametrize("body, headers", [
    ({"code": "never-issued"}, {}),
    ({"code": None}, {}),
    ("not an object", {}),
    (None, {}),
    ({"code": "x"}, {"sec_fetch_site": "cross-site"}),
    ({"code": "x"}, {"origin": "http://evil.example"}),
])
def test_anything_else_gets_no_cookie(body, headers):
    if body == {"code": "x"}:  # a real code, sent from another site
        body = {"code": trust.issue_code("tok.en")}
    response = call(serve._session_endpoint, body, **headers)
    assert response.status_code == 403 and not set_cookie(response)


def test_logout_clears_the_cookie_and_refuses_other_sites():
    response = call(serve._logout_endpoint, sec_fetch_site="same-origin")
    assert response.status_code == 204
    assert 'twin_session="";' in set_cookie(response) and "Max-Age=0" in set_cookie(response)
    assert call(serve._logout_endpoint, sec_fetch_site="cross-site").status_code == 403


@pytest.mark.parametrize("lang, status", [("en", 204), ("zh-CN", 204), ("fr", 400),
                                          (None, 400)])
def test_the_language_cookie_takes_only_known_languages(lang, status):
    response = call(serve._language_endpoint, {"lang": lang}, sec_fetch_site="same-origin")
    assert response.status_code == status
    assert (f"twin_lang={lang};" in set_cookie(response)) == (status == 204)


def test_the_routes_sit_in_front_of_streamlits_own(monkeypatch):
    from streamlit.web.server.starlette import starlette_app

    monkeypatch.setattr(starlette_app, "create_streamlit_routes", lambda runtime: ["theirs"])
    serve.with_session_routes()
    serve.with_session_routes()  # twice: wrapped once
    routes = starlette_app.create_streamlit_routes(None)
    assert [getattr(r, "path", r) for r in routes] == [
        "/_twin/session", "/_twin/logout", "/_twin/language", "theirs"]
