"""Stores: ``open_store(url)`` picks the embedded GeoPackage or PostGIS implementation by URL."""

from __future__ import annotations

import importlib
from pathlib import Path

from twin import settings
from twin.errors import ConfigError
from twin.store.base import LayerVersion, Store

__all__ = ["LayerVersion", "Store", "open_store", "resolve_url"]

# scheme → implementation; the implementation module is imported only when used
STORES = {
    "gpkg": "twin.store.embedded.EmbeddedStore",
    "file": "twin.store.embedded.EmbeddedStore",
    "postgresql": "twin.store.postgis.PostGISStore",
    "postgresql+psycopg": "twin.store.postgis.PostGISStore",
}


def resolve_url(url: str | Path | None = None) -> str:
    """Argument, then ``TWIN_DATABASE_URL``, then the demo community's GeoPackage."""
    if url:
        return str(url)
    return settings.get("database_url") or str(settings.default_store_path())


def open_store(url: str | Path | None = None, **options) -> Store:
    """Open the store at *url* (see :func:`resolve_url`).

    A plain path or ``gpkg:`` / ``file:`` URL opens an embedded GeoPackage store;
    ``postgresql+psycopg://user:password@host:port/db[?schema=NAME]`` opens PostGIS.

    Raises
    ------
    ConfigError
        If the URL's scheme is not one of the known ones.
    """
    text = resolve_url(url)
    scheme = text.split("://", 1)[0] if "://" in text else "file"
    if scheme not in STORES:
        raise ConfigError(
            f"unknown store URL scheme {scheme!r} in {text.split('@')[-1]!r}; "
            f"use a .gpkg path or one of: {', '.join(s + '://' for s in STORES)}"
        )
    if scheme.startswith("postgresql") and "?" in text:
        # ?schema=NAME selects a schema (one twin per schema; tests and scripts use it)
        base, _, query = text.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if "schema" in params:
            options.setdefault("schema", params.pop("schema"))
        text = base + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
    module_name, class_name = STORES[scheme].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(text, **options)
