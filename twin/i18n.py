"""The user interface's words in zh-CN (the default) and English, from data/i18n/<lang>.json."""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path

from twin.errors import ConfigError
from twin.settings import PROJECT_DIR

LOGGER = logging.getLogger(__name__)

CATALOG_DIR = PROJECT_DIR / "data" / "i18n"
LANGUAGES = ("zh-CN", "en")
DEFAULT_LANGUAGE = "zh-CN"
#: How each language names itself in the language switch.
LANGUAGE_NAMES = {"zh-CN": "中文", "en": "English"}


def normalize_language(lang: str | None) -> str:
    """``zh``, ``zh-CN``, ``zh_Hans`` … → ``zh-CN``; ``en``, ``en-US`` … → ``en``; None → default.

    Raises
    ------
    ConfigError
        If *lang* is neither Chinese nor English.
    """
    if not lang:
        return DEFAULT_LANGUAGE
    low = lang.strip().lower().replace("_", "-")
    if low.startswith("zh"):
        return "zh-CN"
    if low.startswith("en"):
        return "en"
    raise ConfigError(f"unknown language {lang!r}; GridTwin speaks {', '.join(LANGUAGES)}")


@cache
def catalog(lang: str = DEFAULT_LANGUAGE, directory: Path = CATALOG_DIR) -> dict[str, str]:
    """Return the catalog of *lang*: message key → text (a ``str.format`` template).

    The catalog is ``<lang>.json`` and, merged into it, every ``<lang>/*.json`` (one file per page
    or feature, so that work on one page does not touch the words of another). A key may stand in
    one file only.

    Raises
    ------
    ConfigError
        If the catalog file is missing, is not a JSON object of strings, or a key stands twice.
    """
    lang = normalize_language(lang)
    base = Path(directory) / f"{lang}.json"
    merged: dict[str, str] = {}
    where: dict[str, Path] = {}
    for path in (base, *sorted((Path(directory) / lang).glob("*.json"))):
        for key, text in _read_catalog_file(path, lang).items():
            if key in merged:
                raise ConfigError(
                    f"message {key!r} stands in both {where[key]} and {path}; keep one"
                )
            merged[key] = text
            where[key] = path
    return merged


def _read_catalog_file(path: Path, lang: str) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the {lang} catalog {path}: {exc}; restore it from git"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(f"{path} must be a JSON object of key → text strings")
    return data


def t(key: str, lang: str = DEFAULT_LANGUAGE, **fmt: object) -> str:
    """Return the text of message *key* in *lang*, formatted with *fmt*.

    A key missing from *lang* falls back to zh-CN and then to the key itself (logged; the tests
    keep both catalogs complete).
    """
    lang = normalize_language(lang)
    text = catalog(lang).get(key)
    if text is None:
        LOGGER.warning("message %r missing from the %s catalog", key, lang)
        text = catalog(DEFAULT_LANGUAGE).get(key, key)
    if not fmt:
        return text
    try:
        return text.format(**fmt)
    except (KeyError, IndexError, ValueError):
        LOGGER.warning("message %r in %s does not take %s", key, lang, sorted(fmt))
        return text
