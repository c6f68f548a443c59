"""Text made inert before it reaches Markdown or HTML (pure): the one escape for user text."""

from __future__ import annotations

import html
import re
import string
from typing import Any

#: Every ASCII punctuation character is backslash-escaped: CommonMark shows an escaped one as
#: itself, so no emphasis, code span, link, image, HTML, table, heading or list can start, and
#: neither can Streamlit's own ``:color[…]``, ``:material/…:``, emoji shortcodes or ``$`` math.
_MD_ESCAPES = str.maketrans({c: "\\" + c for c in string.punctuation})
_LEADING_SPACE = re.compile(r"^[ \t]+", re.MULTILINE)
#: GitHub-flavoured Markdown also turns bare ``http://…``, ``www.…`` and ``a@b.c`` in plain text
#: into links, after escapes are read; an invisible WORD JOINER breaks each of these patterns.
_AUTOLINK = re.compile(r"(?i)(?<=https:)|(?<=http:)|(?<=mailto:)|(?<=xmpp:)|(?<=www)(?=\.)"
                       r"|(?<=[-.\w+]@)(?=[-\w])")
WORD_JOINER = "\u2060"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def safe_text(value: Any) -> str:
    """Return *value* as Markdown that shows exactly its text (``ui.common.md`` in the pages).

    Use it wherever text from outside (ids, names, notices, poll choices, error messages) reaches
    Markdown: ``st.markdown``, ``st.caption``, ``st.subheader``, ``st.error``, a widget's label or
    a radio's options. Line breaks stay line breaks; leading spaces cannot start a code block; a
    bare URL or e-mail address gets an invisible :data:`WORD_JOINER` so it is not made a link;
    None and NaN show as nothing.
    """
    if _missing(value):
        return ""
    text = str(value).replace("\r\n", "\n").replace("\r", "\n")
    text = _AUTOLINK.sub(WORD_JOINER, text).translate(_MD_ESCAPES)
    text = _LEADING_SPACE.sub(lambda m: "\u00a0" * len(m.group()), text)
    return text.replace("\n", "  \n")


def html_text(value: Any) -> str:
    """Return *value* escaped for HTML (the rare ``unsafe_allow_html`` block and tooltips)."""
    return "" if _missing(value) else html.escape(str(value), quote=True)
