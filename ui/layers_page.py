"""图层 Layers: versions of each layer; data staff upload a file, dry-run it, load, roll back.

Loading goes through twin.trust.admin, which calls the same twin.load.load_layer and
Store.set_current_version as ``gridtwin load``: no loading rule is written here.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from twin import layers as declared
from twin import trust
from twin.errors import TwinError
from twin.load import parse_defaults, parse_values
from twin.trust import admin
from ui.auth import require_page
from ui.common import (
    current_language,
    error_text,
    get_store,
    local_time,
    md,
    notify,
    show_notice,
    store_url,
    t,
)

LANG = current_language()
user = require_page("page.layers", LANG)
st.title(t("layers.title", LANG))
store = get_store(store_url())

DRY = "layers.dry_run"  # (fingerprint of file and options, report) of the last dry run

show_notice("layers")

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
overview = pd.DataFrame(rows)
st.dataframe(overview.astype(object).where(overview.notna(), "—"), hide_index=True,
             width="stretch")


def title_of(name: str) -> str:
    return f"{declared.get_layer(name).title(LANG)} ({name})"


def show_report(report: dict, key: str) -> None:
    """The counts of a load report and its issues, the rejected rows first."""
    counts = report.get("counts", {})
    cols = st.columns(5)
    loaded = t("roles.load.would_load", LANG) if report.get("dry_run") else \
        t("roles.load.loaded_count", LANG)
    for col, (key, label) in zip(cols, (
            ("read", t("roles.load.read", LANG)), ("loaded", loaded),
            ("rejected", t("roles.load.rejected", LANG)),
            ("repaired", t("roles.load.repaired", LANG)),
            ("warnings", t("roles.load.warnings", LANG))), strict=True):
        col.metric(label, counts.get(key, 0))
    issues = admin.load_report_rows(report)
    if issues.empty:
        st.caption(t("roles.load.no_issues", LANG))
        return
    rejected = issues.loc[issues["severity"] == "rejected"].head(20)
    if len(rejected):  # the rows that will not load, spelled out before any table
        st.markdown("\n".join(
            f"- {t('roles.load.rejected_row', LANG, row=md(r), reason=md(m))}"
            for r, m in zip(rejected["row"].map(lambda r: "—" if pd.isna(r) else int(r)),
                            rejected["message"], strict=True)))
    severities = {"rejected": t("roles.load.sev.rejected", LANG),
                  "repaired": t("roles.load.sev.repaired", LANG),
                  "warning": t("roles.load.sev.warning", LANG),
                  "info": t("roles.load.sev.info", LANG)}
    st.dataframe(pd.DataFrame({
        t("roles.load.col.severity", LANG): issues["severity"].map(severities)
        .fillna(issues["severity"]),
        t("roles.load.col.row", LANG): issues["row"].map(
            lambda r: "" if pd.isna(r) else str(int(r))),
        t("roles.load.col.id", LANG): issues["id"].fillna(""),
        t("roles.load.col.message", LANG): issues["message"],
    }), hide_index=True, width="stretch", key=key)


# -- upload, dry run, load ------------------------------------------------------------------------
if trust.can(user, "layers.load"):
    st.subheader(t("roles.load.title", LANG))
    upload = st.file_uploader(t("roles.load.file", LANG), key="load_file",
                              type=["geojson", "json", "gpkg", "zip", "csv", "kml", "xlsx"])
    c1, c2 = st.columns(2)
    target = c1.selectbox(t("roles.load.layer", LANG), list(histories), format_func=title_of,
                          key="load_layer")
    crs_choices = ["", "wgs84", "cgcs2000", "gcj02", "bd09"]
    crs = c2.selectbox(t("roles.load.crs", LANG), crs_choices, key="load_crs",
                       format_func=lambda c: c or t("roles.load.crs_auto", LANG))
    with st.expander(t("roles.load.options", LANG)):
        values_text = st.text_area(t("roles.load.values", LANG), key="load_values",
                                   placeholder="use:apartments=residential")
        defaults_text = st.text_area(t("roles.load.defaults", LANG), key="load_defaults",
                                     placeholder="floors=1")
        o1, o2 = st.columns(2)
        lon = o1.text_input(t("roles.load.lon", LANG), key="load_lon")
        lat = o2.text_input(t("roles.load.lat", LANG), key="load_lat")
        strict = st.checkbox(t("roles.load.strict", LANG), key="load_strict")
    note = st.text_input(t("roles.load.note", LANG), key="load_note")

    def options() -> dict:
        """The loader's options as typed (parsed by the library's own --values/--set parsers)."""
        return {
            "crs": crs or None,
            "values": parse_values([v for v in values_text.splitlines() if v.strip()]),
            "defaults": parse_defaults([d for d in defaults_text.splitlines() if d.strip()]),
            "lon": lon.strip() or None, "lat": lat.strip() or None, "strict": strict,
        }

    if upload is None:
        st.caption(t("roles.load.pick_file", LANG))
    else:
        data = upload.getvalue()
        key = hashlib.sha256(data + repr((target, crs, values_text, defaults_text, lon, lat,
                                          strict)).encode()).hexdigest()
        b1, b2 = st.columns(2)
        if b1.button(t("roles.load.dry_run", LANG), key="load_check", type="primary"):
            try:
                result = admin.load_upload(store, user, target, upload.name, data, dry_run=True,
                                           **options())
            except TwinError as exc:
                st.error(error_text(exc, LANG, what="checking a file"))
                report = getattr(exc, "report", None)
                st.session_state[DRY] = (key, report, False)
            else:
                st.session_state[DRY] = (key, result.report, True)
        checked = st.session_state.get(DRY)
        fresh = checked is not None and checked[0] == key
        if fresh and checked[1]:
            st.markdown(f"**{t('roles.load.dry_report', LANG, name=md(upload.name))}**")
            show_report(checked[1], "dry_issues")
        ready = fresh and checked[2] and checked[1]["counts"].get("loaded", 0) > 0
        if not fresh:
            st.info(t("roles.load.check_first", LANG))
        if b2.button(t("roles.load.load", LANG), key="load_go", disabled=not ready):
            try:
                result = admin.load_upload(store, user, target, upload.name, data, dry_run=False,
                                           note=note, **options())
            except TwinError as exc:
                st.error(error_text(exc, LANG, what="loading a file"))
            else:
                st.session_state.pop(DRY, None)
                notify(t("roles.load.loaded", LANG, layer=title_of(target),
                         version=result.version.version, rows=result.version.rows),
                       "layers")
                st.rerun()

# -- one layer's history, rollback, last report ----------------------------------------------------
name = st.selectbox(t("layers.pick", LANG), list(histories), format_func=title_of,
                    key="layers_pick")
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
}), hide_index=True, width="stretch", key="layers_history")

earlier = [v.version for v in versions if not v.current]
if trust.can(user, "layers.rollback") and earlier:
    r1, r2 = st.columns([2, 1])
    back = r1.selectbox(t("roles.rollback.pick", LANG), earlier[::-1], key=f"rollback_{name}")
    r2.write("")
    if r2.button(t("roles.rollback.button", LANG, version=back), key="rollback_go"):
        try:
            made = admin.rollback_layer(store, user, name, back)
        except TwinError as exc:
            st.error(error_text(exc, LANG, what="rolling back a layer"))
        else:
            notify(t("roles.rollback.done", LANG, layer=title_of(name), version=made.version,
                     rows=made.rows), "layers")
            st.rerun()

last = versions[-1]
st.subheader(t("layers.report", LANG, version=last.version))
if last.report:
    show_report(last.report, "last_issues")
else:
    st.caption(t("layers.no_report", LANG))
