"""图层 Layers: each layer's current version, its history and its last load report (read-only)."""

from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from twin import layers as declared
from ui.common import current_language, get_store, local_time, store_url, t

LANG = current_language()
st.title(t("layers.title", LANG))
store = get_store(store_url())
rows = []
histories = {}
for name, spec in declared.registry().items():
    versions = store.layer_versions(name)
    histories[name] = versions
    current = next((v for v in reversed(versions) if v.current), None)
    rows.append({
        t("layers.col.layer", LANG): f"{spec.title(LANG)} ({name})",
        t("layers.col.version", LANG): current.version if current else None,
        t("layers.col.rows", LANG): current.rows if current else None,
        t("layers.col.when", LANG): local_time(pd.Series([current.created_at])).iloc[0]
        if current else None,
        t("layers.col.actor", LANG): current.actor if current else None,
        t("layers.col.source", LANG): current.source if current else None,
    })
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

name = st.selectbox(t("layers.pick", LANG), list(histories),
                    format_func=lambda n: declared.get_layer(n).title(LANG), key="layers_pick")
versions = histories[name]
if not versions:
    st.info(t("layers.empty", LANG))
    st.stop()
st.subheader(t("layers.history", LANG))
st.dataframe(pd.DataFrame({
    t("layers.col.version", LANG): [v.version for v in versions],
    t("layers.col.current", LANG): [v.current for v in versions],
    t("layers.col.when", LANG): local_time(pd.Series([v.created_at for v in versions])),
    t("layers.col.actor", LANG): [v.actor for v in versions],
    t("layers.col.source", LANG): [v.source for v in versions],
    t("layers.col.rows", LANG): [v.rows for v in versions],
    t("layers.col.note", LANG): [v.note for v in versions],
}), hide_index=True, width="stretch")
last = versions[-1]
st.subheader(t("layers.report", LANG, version=last.version))
if last.report:
    st.code(json.dumps(last.report, ensure_ascii=False, indent=2, default=str), language="json")
else:
    st.caption(t("layers.no_report", LANG))
