"""What every page shares: the language, the store (one per URL), its layers (twin.layercache)."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from time import monotonic
from typing import Any

import geopandas as gpd
import streamlit as st

from twin import i18n, layercache
from twin.errors import TwinError
from twin.store import Store, open_store, resolve_url
from twin.trust.escaping import safe_text

LOGGER = logging.getLogger(__name__)

DEMO_COMMANDS = "make demo  ·  python scripts/make_demo.py"


def current_language() -> str:
    """The language chosen in the sidebar (zh-CN until the user switches)."""
    return i18n.normalize_language(st.session_state.get("lang") or i18n.DEFAULT_LANGUAGE)


_translate = i18n.t  # the pages call t() below with literal keys (tests/test_i18n.py checks them)


def t(key: str, lang: str | None = None, **fmt: object) -> str:
    return _translate(key, lang or current_language(), **fmt)


# -- user text in Markdown, errors without internals --------------------------------------------

#: the one escape for user text in Markdown, from the library (twin.trust.escaping)
md = safe_text


def error_text(exc: BaseException, lang: str | None = None, *, what: str = "a page step") -> str:
    """What a user may read about *exc*: a :class:`TwinError`'s message, else a reference only.

    A ``TwinError`` says what to do next and is written for users (escaped with :func:`md`).
    Anything else (a bug, a driver's message) may hold server paths or internals: it is logged
    with a short reference and the user reads only that reference, in their language.
    """
    if isinstance(exc, TwinError):
        LOGGER.warning("%s failed: %s", what, exc)
        return md(str(exc))
    ref = secrets.token_hex(4)
    LOGGER.error("%s failed (reference %s)", what, ref, exc_info=exc)
    return t("error.internal", lang, ref=ref)


def run_page(navigation: Any, lang: str | None = None) -> None:
    """Run the chosen page; an unexpected error is a friendly message, never a traceback."""
    try:
        navigation.run()
    except Exception as exc:  # the app's edge: st.stop()/reruns are BaseExceptions, not caught
        st.error(t("error.page", lang, error=error_text(exc, lang, what="the page")))


def store_url() -> str:
    """The configured store: ``TWIN_DATABASE_URL`` or the demo GeoPackage (read on every run)."""
    return resolve_url()


def _is_file_url(url: str) -> bool:
    return "://" not in url or url.split("://", 1)[0] in {"gpkg", "file"}


def _file_path(url: str) -> Path:
    return Path(url.split("://", 1)[1] if "://" in url else url)


def shown_url(url: str) -> str:
    """The store as users may see it: a file's name (no server path), a server's host and
    database (no user or password)."""
    if _is_file_url(url):
        return _file_path(url).name
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+')[0]}://{rest.rsplit('@', 1)[-1].split('?')[0]}"


@st.cache_resource(show_spinner=False)
def get_store(url: str) -> Store:
    """One open store per URL for the whole server process."""
    return open_store(url)


def present_store() -> Store | None:
    """The configured store, or None when it is a GeoPackage that does not exist (yet).

    Opening a missing GeoPackage would create an empty one; a page says what to run instead.
    """
    url = store_url()
    if _is_file_url(url) and not _file_path(url).exists():
        return None
    return get_store(url)


def open_twin(lang: str) -> tuple[Store, dict[str, gpd.GeoDataFrame]] | None:
    """The store and its layers, or None after telling the user what to do (never a traceback)."""
    url = store_url()
    shown = md(shown_url(url))  # never a password or a server path
    if _is_file_url(url) and not _file_path(url).exists():
        st.warning(t("store.missing", lang, url=shown))
        st.code(DEMO_COMMANDS, language="bash")
        return None
    try:
        store = get_store(url)
        twin_layers = layercache.layers(store)  # shared by every session, page and query
    except Exception as exc:  # the page's edge: any failure becomes a message, not a traceback
        st.error(t("store.error", lang, url=shown,
                   error=error_text(exc, lang, what=f"opening the store {shown_url(url)}")))
        st.code(DEMO_COMMANDS, language="bash")
        return None
    if not twin_layers:
        st.info(t("store.empty", lang, url=shown))
        st.code(DEMO_COMMANDS, language="bash")
        return None
    return store, twin_layers


def status_names(lang: str) -> dict[str, str]:
    """Case status → its name in *lang* (from the declared state machine)."""
    from twin.cases import STATUSES

    zh = lang.startswith("zh")
    names = {k: (v[0] if zh else v[1]) for k, v in STATUSES.items()}
    names.update({
        "open": t("state.open", lang), "warning": t("state.warning", lang),
        "overdue": t("state.overdue", lang), "closed": t("state.closed", lang),
    })
    return names


def local_time(series, fmt: str = "%Y-%m-%d %H:%M"):
    """UTC times shown in the local time zone (settings) as text."""
    import pandas as pd

    from twin.timeutil import local_zone

    return pd.to_datetime(series, utc=True).dt.tz_convert(local_zone()).dt.strftime(fmt)


def streamlit_words(lang: str) -> None:
    """Put Streamlit's own few English words in *lang*, and its notices where a phone shows them.

    By style sheet; nothing is fetched.

    Streamlit draws a file uploader's button ("Upload"), its size and type line ("200MB per
    file • JPG, PNG") and a form's "Press Ctrl+Enter to submit form" in English whatever the
    page's language. The button is labelled from the catalog; the two hints are hidden (each
    uploader's label says what to give).
    """
    label = t("upload.button", lang).replace("\\", "").replace('"', "")
    st.html(
        "<style>"
        "[data-testid='stFileUploaderDropzoneInstructions'], [data-testid='InputInstructions']"
        " {display: none !important}"
        "[data-testid='stFileUploaderDropzone'] button * {display: none !important}"
        f"[data-testid='stFileUploaderDropzone'] button::after {{content: \"{label}\"}}"
        # on a phone a notice (st.toast) stood over the top of the case card for its four
        # seconds: there it comes up from the foot of the screen, as phones' notices do
        "@media (max-width: 640px) {[data-testid='stToastContainer'] {top: auto !important;"
        " bottom: 0.75rem !important}}"
        "</style>"
    )


def widget_key(name: str, lang: str) -> str:
    """The session key of a picker whose options are shown in *lang*, carrying its choice over.

    Streamlit's frontend keeps a keyed picker's chosen options as the labels it last drew, so
    after a language switch the chips and selects would stay in the old language. A key per
    language draws them anew; the choice made in the other language is kept.
    """
    key = f"{name}@{lang}"
    if key not in st.session_state:
        for other in i18n.LANGUAGES:
            held = st.session_state.get(f"{name}@{other}")
            if other != lang and held is not None:
                st.session_state[key] = held
                break
    return key


#: How long the message of an action stays at the top of its page, over the runs that follow.
NOTICE_S = 20.0


def notify(text: str, where: str, *, toast: bool = False) -> None:
    """Keep *text* (a step taken, a report sent, a layer loaded) for page *where*'s next runs.

    Shown by :func:`show_notice` at the top of that page; with *toast*, also once as a toast.
    """
    st.session_state[f"notice.{where}"] = {"text": text, "at": monotonic(), "toast": toast,
                                           "lang": current_language()}


def show_notice(where: str) -> None:
    """Show page *where*'s notice during :data:`NOTICE_S` seconds of runs, then forget it.

    Not popped by the first run that shows it: a run can be cut short by the next one (a
    fragment's timed run, another tap) before the browser has drawn what it sent, and a
    message shown for one run only would then never be seen (a new case's number, lost). A
    notice is in the language it was written in: a switch of language drops it.
    """
    key = f"notice.{where}"
    notice = st.session_state.get(key)
    if not isinstance(notice, dict):
        return
    if monotonic() - notice["at"] > NOTICE_S or notice.get("lang") != current_language():
        st.session_state.pop(key, None)
        return
    st.success(notice["text"])
    if notice["toast"]:
        st.toast(notice["text"])  # seen where the user is on a long page, too
        notice["toast"] = False
