"""Cockpit page rerun (twin.cockpit) vs a naive st.pydeck_chart of the whole GeoDataFrames."""

from __future__ import annotations

from benchmarks.common import Figure

NAME = "cockpit"
TITLE = "Cockpit page rerun (server time and bytes sent)"
QUICK_SCALES = ("community", "street", "district")


def run(scale: str, quick: bool) -> list[Figure]:
    return []
