"""Benchmarks at four scales, side by side with the tools users would otherwise pick."""

from __future__ import annotations

import importlib

#: name → module; each module has NAME, TITLE, run(scale, quick) -> list[Figure], and may set
#: SCALES (the scales it runs at) and QUICK_SCALES (those of a quick pass).
MEASUREMENTS = {
    "enrich": "benchmarks.enrich",
    "load": "benchmarks.load",
    "ingest": "benchmarks.ingest",
    "queries": "benchmarks.queries",
    "cockpit": "benchmarks.cockpit",
    "kpi": "benchmarks.kpi",
    "browser": "benchmarks.browser",
    "serve": "benchmarks.serve",
    "open311": "benchmarks.open311",
    "batch": "benchmarks.batch",
    "once_workers": "benchmarks.once_workers",
}
DEFAULT_QUICK_SCALES = ("community", "street")


def module(name: str):
    """The module of measurement *name*."""
    return importlib.import_module(MEASUREMENTS[name])
