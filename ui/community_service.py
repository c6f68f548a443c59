"""Widgets of volunteer service and deliberation shared by pages: places, indicators, points."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from twin import trust
from twin.deck import TEXT_TOOLTIP, data_layer, fit_view, offline_deck, polygon_rings
from twin.trust import proposals, volunteers
from ui import picker
from ui.common import local_time, t

HERE = "svc_here"  # session key: the place the user chose (lon, lat), by the device or a tap


def kind_names(lang: str) -> dict[str, str]:
    """Task kinds in the UI language (spelled out for the catalog test)."""
    return {"patrol": t("vol.kind.patrol", lang), "elderly_visit": t("vol.kind.elderly", lang),
            "event_help": t("vol.kind.event", lang), "other": t("vol.kind.other", lang)}


def proposal_kinds(lang: str) -> dict[str, str]:
    """Proposal kinds in the UI language."""
    return {"wish": t("prop.kind.wish", lang), "micro_project": t("prop.kind.project", lang)}


def status_names(lang: str) -> dict[str, str]:
    """Proposal statuses in the UI language."""
    return {"open": t("prop.status.open", lang), "adopted": t("prop.status.adopted", lang),
            "declined": t("prop.status.declined", lang)}


def reason_names(lang: str) -> dict[str, str]:
    """Why points were earned, in the UI language."""
    return {"service_hours": t("svc.reason.hours", lang),
            "valid_report": t("svc.reason.report", lang),
            "poll_answer": t("svc.reason.poll", lang),
            "proposal_adopted": t("svc.reason.proposal", lang),
            "adjust": t("svc.reason.adjust", lang)}


def choose_place(grid_cells, lang: str, *, key: str, locate: bool = True,
                 buildings=None) -> tuple[float, float] | None:
    """Tap the map or use the device's location; return the place chosen so far."""
    if grid_cells is None or len(grid_cells) == 0:
        st.info(t("svc.no_grids", lang))
        return None
    if locate:
        located, failed = picker.device_location(t("svc.locate", lang), key=f"{key}_locate")
        if located is not None and located != st.session_state.get(HERE):
            st.session_state[HERE] = located
            st.rerun()
        if failed:
            st.warning(t("svc.locate_failed", lang))
    tapped = picker.pick_place(grid_cells, key=f"{key}_map", picked=st.session_state.get(HERE),
                               buildings=buildings, height=320)
    if tapped is not None and tapped != st.session_state.get(HERE):
        st.session_state[HERE] = tapped
        st.rerun()
    st.caption(t("svc.tap_hint", lang))
    here = st.session_state.get(HERE)
    if here is not None:
        st.caption(t("svc.here", lang, lon=f"{here[0]:.6f}", lat=f"{here[1]:.6f}"))
    return here


def my_points(store, user, lang: str) -> None:
    """The user's points balance, and their entries in an expander."""
    if not trust.can(user, "points.own"):
        return
    total, entries = volunteers.my_points(store, user)
    st.metric(t("svc.points", lang), total)
    if len(entries):
        with st.expander(t("svc.points_entries", lang)):
            st.dataframe(pd.DataFrame({
                t("svc.col.when", lang): local_time(entries["at"]),
                t("svc.col.points", lang): entries["delta"],
                t("svc.col.why", lang): entries["reason"].map(reason_names(lang)),
            }), hide_index=True, width="stretch")


def indicators(store, user, lang: str, grid_names: dict[str, str] | None = None) -> None:
    """Volunteer hours per grid and proposals per grid: counts only (cockpit, public page)."""
    if not trust.can(user, "service.indicators"):
        return
    names = grid_names or {}
    hours = volunteers.hours_per_grid(store, user)
    summary = proposals.proposal_summary(store, user)
    left, right = st.columns(2)
    with left:
        st.markdown(f"**{t('svc.hours_per_grid', lang)}**")
        st.dataframe(pd.DataFrame({
            t("svc.col.grid", lang): hours["grid_code"].map(lambda g: names.get(g, g)),
            t("svc.col.tasks", lang): hours["tasks"],
            t("svc.col.volunteers", lang): hours["volunteers"],
            t("svc.col.hours", lang): hours["hours"],
        }), hide_index=True, width="stretch", height=220)
    with right:
        st.markdown(f"**{t('svc.proposals_per_grid', lang)}**")
        st.dataframe(pd.DataFrame({
            t("svc.col.grid", lang): summary["grid_code"].map(lambda g: names.get(g, g)),
            t("svc.col.proposed", lang): summary["proposed"],
            t("svc.col.adopted", lang): summary["adopted"],
            t("svc.col.declined", lang): summary["declined"],
            t("svc.col.supports", lang): summary["supports"],
        }), hide_index=True, width="stretch", height=220)


def grid_names(twin_layers) -> dict[str, str]:
    """Unit grid code → name, for tables."""
    cells = twin_layers.get("grid_cells")
    if cells is None or "name" not in cells:
        return {}
    return dict(zip(cells["grid_code"].astype(str), cells["name"].astype(str), strict=True))


def proposals_map(store, user, extent, *, status: tuple[str, ...] = ("adopted",),
                  height: int = 280) -> None:
    """Proposals *user* may see on a small map: orange open, green adopted (tooltips)."""
    layer = proposals.proposals_layer(store, user, status=status)
    if layer.empty:
        return
    points = pd.DataFrame({"lon": layer.geometry.x, "lat": layer.geometry.y,
                           "tooltip": layer["tooltip"],
                           "color": [[240, 140, 40, 220] if s == "open" else [40, 170, 90, 220]
                                     for s in layer["status"]]})
    bounds = tuple((extent if extent is not None and len(extent) else layer).total_bounds)
    context = []
    if extent is not None and len(extent):  # the grids' outlines: where the places are
        context.append(data_layer(
            "PolygonLayer", pd.DataFrame({"polygon": polygon_rings(extent.geometry.values)}),
            id="proposal-grids", get_polygon="polygon", filled=True, stroked=True,
            get_fill_color=[0, 229, 255, 18], get_line_color=[0, 229, 255, 200],
            line_width_min_pixels=1, pickable=False))
    st.pydeck_chart(offline_deck(
        [*context,
         data_layer("ScatterplotLayer", points, id="proposal-points", get_position="[lon, lat]",
                    get_radius=8, radius_units="'meters'", radius_min_pixels=6,
                    get_fill_color="color", pickable=True)],
        fit_view(bounds, width=360, height=height), tooltip=TEXT_TOOLTIP, height=height),
        height=height)
