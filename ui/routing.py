"""The cockpit's URLs: which page the browser asked for, the root page, "not found / not allowed".

Streamlit (1.67) answers a path that names none of the pages given to ``st.navigation`` with
its own English "Page not found" dialog over the first page. The app instead gives such a path
a hidden page of its own, in the user's language, with a link home; and ``/`` is a hidden
page that opens the user's home, so that every real page keeps its own URL (Streamlit serves
the default page at ``/`` only).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import streamlit as st

from ui.common import md, t

#: a path segment a page may be named by (st.Page refuses "/" in a url_path)
_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]{1,80}")


def asked_path(known: Iterable[str]) -> str | None:
    """The page path this run was asked for (``cases`` for ``/cases``), or None for ``/``.

    A typed or reloaded URL arrives as a name; a click inside the app as the page's script
    hash, which Streamlit derives from its url path: it is matched against *known* paths.
    """
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.util import calc_hash

    ctx = get_script_run_ctx()
    manager = getattr(ctx, "pages_manager", None)
    if manager is None:
        return None
    name = (manager.intended_page_name or "").strip("/")
    wanted_hash = manager.intended_page_script_hash
    if wanted_hash:
        for url in (*known, name):
            if url and calc_hash(url) == wanted_hash:
                return url
        return None
    return name or None


def _named(function: Callable[[], None], name: str) -> Callable[[], None]:
    function.__name__ = name  # st.Page names a callable page after its function
    return function


def root_page(home: st.Page, lang: str) -> st.Page:
    """The hidden default page at ``/``: it opens *home* (which keeps its own URL)."""
    return st.Page(_named(lambda: st.switch_page(home), "home"), title=t("routing.home", lang),
                   default=True, visibility="hidden")


def not_found_page(path: str, home: st.Page, lang: str, *, title: str | None,
                   logged_in: bool) -> list[st.Page]:
    """A hidden page at *path* saying it cannot be opened here, with a link to *home*.

    *title* is the page's name when *path* is a page of the app the user may not open (or
    must log in for), None when no page has that path. Empty for a path no page could have.
    """
    if not _SEGMENT.fullmatch(path):
        return []

    def show() -> None:
        if title is None:
            st.subheader(t("routing.not_found.title", lang))
            st.write(t("routing.not_found.body", lang, path=md(f"/{path}")))
        elif logged_in:
            st.subheader(t("routing.not_allowed.title", lang))
            st.write(t("routing.not_allowed.body", lang, page=title))
        else:
            st.info(t("routing.login_first", lang, page=title))
            return  # the login form is above
        st.page_link(home, label=t("routing.back_home", lang, page=home.title),
                     icon=":material/home:")

    return [st.Page(_named(show, "not_found"), title=title or t("routing.not_found.title", lang),
                    url_path=path, visibility="hidden")]
