"""Text made inert before it reaches Markdown or HTML (pure)."""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&\"'=/^%@])")


def safe_text(value: Any) -> str:
    """*value* as Streamlit markdown that shows literally: no HTML, links, images or directives.

    Every ASCII punctuation character markdown gives a meaning is backslash-escaped (CommonMark
    shows an escaped character as itself), so ``<img onerror=…>`` stays text.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(value)).replace("\n", "  \n")


def html_text(value: Any) -> str:
    """*value* escaped for HTML (for the rare ``unsafe_allow_html`` block and tooltips)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return html.escape(str(value), quote=True)


