"""Cockpit page rerun (twin.cockpit + twin.deck) vs a naive st.pydeck_chart of the whole frames."""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks import scenarios
from benchmarks.common import Figure, Timing, figure, peak_rss_mb, repeats_for, reset_peak

NAME = "cockpit"
TITLE = "Cockpit page rerun (server time and bytes sent)"
DESCRIPTION = """
Both pages run under Streamlit's `AppTest` on the same embedded store (scenario layers plus
open cases from `make_cases`), layers cached across reruns as the real page caches them. Ours is
the cockpit's data step and map — `twin.cockpit.cockpit_data` then `twin.deck.thematic_deck` —
drawn with `st.pydeck_chart`; the anchor is the naive page: every layer's whole GeoDataFrame as
a GeoJSON layer in one `st.pydeck_chart`. Time is a warm rerun (`at.run()`); bytes are the deck
JSON the page sends to the browser.
"""
QUICK_SCALES = ("community", "street")
SCALES = ("community", "street", "district")
OPEN_CASES = {"community": 500, "street": 2_000, "district": 10_000}
VISIBLE = ("grid_cells", "buildings", "parking", "cameras", "sensors", "cases", "alarms")

OURS = textwrap.dedent("""
    import collections, os
    import streamlit as st
    from twin import cockpit, deck
    from twin.store import open_store

    @st.cache_resource
    def opened(url):
        store = open_store(url)
        return store, {n: store.read_layer(n) for n in store.layers()}

    store, layers = opened(os.environ["BENCH_STORE"])
    data = cockpit.cockpit_data(store, layers=layers)
    st.pydeck_chart(deck.thematic_deck(data, %r, collections.defaultdict(str)), key="map")
""") % (VISIBLE,)

NAIVE = textwrap.dedent("""
    import json, os
    import pydeck as pdk
    import streamlit as st
    from twin.store import open_store

    @st.cache_resource
    def opened(url):
        store = open_store(url)
        return store, {n: store.read_layer(n) for n in store.layers()}

    store, layers = opened(os.environ["BENCH_STORE"])
    cases = store.read_cases()
    frames = dict(layers, cases=cases)
    deck_layers = [pdk.Layer("GeoJsonLayer", id=name, data=json.loads(frame.to_json(default=str)),
                             pickable=True) for name, frame in frames.items()
                   if hasattr(frame, "geometry") and name != "residents"]
    st.pydeck_chart(pdk.Deck(layers=deck_layers, map_provider=None), key="map")
""")


def _time(script: Path, reps: int) -> tuple[Timing, int]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(script), default_timeout=600)
    reset_peak()
    at.run()
    if at.exception:
        raise RuntimeError(f"{script.name}: {at.exception[0].message}")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - t0)
    charts = at.get("deck_gl_json_chart")
    sent = sum(len(c.proto.json.encode()) for c in charts)
    return Timing(times, None, peak_rss_mb()), sent


def run(scale: str, quick: bool) -> list[Figure]:
    from twin import schema
    from twin.scenario import make_cases
    from twin.store import open_store

    scen = scenarios.scenario(scale)
    reps = repeats_for(scale, quick)
    with tempfile.TemporaryDirectory(prefix="bench-cockpit-") as tmp:
        url = str(Path(tmp) / "twin.gpkg")
        store = open_store(url)
        for name in ("community", "roads", "grid_cells", "buildings", "parking", "cameras",
                     "sensors", "facilities"):
            store.write_layer(name, scen[name], actor="bench", source="scenario")
        cases = make_cases(scen, OPEN_CASES[scale] * 2)
        store.put_rows(schema.CASES, cases)
        n_open = int((~cases["status"].isin(["closed", "cancelled"])).sum())
        store.close()
        os.environ["BENCH_STORE"] = url
        (Path(tmp) / "ours.py").write_text(OURS)
        (Path(tmp) / "naive.py").write_text(NAIVE)
        t_o, b_o = _time(Path(tmp) / "ours.py", reps)
        t_a, b_a = _time(Path(tmp) / "naive.py", reps)
    size = {"buildings": len(scen["buildings"]), "sensors": len(scen["sensors"]),
            "cases": len(cases), "open_cases": n_open}
    return [figure(NAME, "page rerun", scale, size,
                   "twin.cockpit.cockpit_data + twin.deck.thematic_deck (AppTest rerun)",
                   "naive st.pydeck_chart of whole GeoDataFrames (AppTest rerun)", t_o, t_a,
                   None, extra={"ours_bytes": b_o, "anchor_bytes": b_a},
                   notes="same answer is not compared: the cockpit aggregates and limits "
                         "features by design; bytes are compared instead")]
