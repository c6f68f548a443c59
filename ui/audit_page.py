"""审计 The audit log for auditors (admin): browse, filter, export CSV, check the keyed chain."""

from __future__ import annotations

import streamlit as st

from twin import trust
from ui.auth import origin, require_page
from ui.common import current_language, local_time, open_twin, t

LANG = current_language()
user = require_page("page.audit", LANG)

st.title(t("audit.title", LANG))
st.caption(t("audit.caption", LANG))

opened = open_twin(LANG)
if opened is None:
    st.stop()
store, _ = opened

# each visit checks only the rows since the last verified one and the anchored head; the
# button reads the whole log (twin.audit_anchor.verify_chain says what each proves)
full = st.button(t("audit.full_check", LANG), key="audit_full_check")
check = trust.verify_audit_chain(store, incremental=not full)
reasons = {
    "changed": t("audit.reason_changed", LANG),
    "missing": t("audit.reason_missing", LANG),
    "truncated": t("audit.reason_truncated", LANG),
    "anchor": t("audit.reason_anchor", LANG),
    "earlier": t("audit.reason_earlier", LANG),
}
if check.ok:
    st.success(t("audit.chain_ok", LANG, rows=check.rows))
else:
    st.error(t("audit.chain_broken", LANG, seq=check.first_bad_seq) + " "
             + reasons.get(check.reason, ""))
st.caption(t("audit.checked", LANG, read=check.rows_read,
             anchored=check.anchored_seq if check.anchored_seq is not None else "—"))

columns = st.columns(3)
filters = {
    "actor": columns[0].text_input(t("audit.actor", LANG), key="audit_actor"),
    "action": columns[1].text_input(t("audit.action", LANG), key="audit_action"),
    "target": columns[2].text_input(t("audit.target", LANG), key="audit_target"),
}
# one page at a time, filtered in the database; the cursors of the pages seen so far are kept
# per filter, so that changing a filter starts again at the newest rows
PAGE_ROWS = 100
cursors = st.session_state.setdefault("audit_cursors", {})
key = repr(sorted(filters.items()))
stack = cursors.setdefault(key, [None])
page = trust.audit_page(store, user, before=stack[-1], limit=PAGE_ROWS, **filters)
if page.rows.empty:
    st.info(t("audit.none", LANG))
else:
    first = (len(stack) - 1) * PAGE_ROWS + 1
    st.caption(t("audit.page_rows", LANG, first=first, last=first + len(page.rows) - 1,
                 total=page.total))
    shown = page.rows.assign(at=local_time(page.rows["at"], "%Y-%m-%d %H:%M:%S"))
    names = {"seq": t("audit.col.seq", LANG), "at": t("audit.col.at", LANG),
             "actor": t("audit.col.actor", LANG), "action": t("audit.col.action", LANG),
             "target": t("audit.col.target", LANG), "detail": t("audit.col.detail", LANG),
             "origin": t("audit.col.origin", LANG)}
    # st.dataframe shows every value as plain text: nothing a user typed is rendered as markup
    st.dataframe(shown[list(names)].rename(columns=names), hide_index=True, width="stretch")
newer, older = st.columns(2)
if newer.button(t("audit.newer", LANG), key="audit_newer", disabled=len(stack) == 1):
    stack.pop()
    st.rerun()
if older.button(t("audit.older", LANG), key="audit_older", disabled=page.next_before is None):
    stack.append(page.next_before)
    st.rerun()

if st.button(t("audit.prepare_export", LANG), key="audit_prepare"):
    st.session_state["audit_csv"] = trust.export_audit_csv(store, user, origin=origin(),
                                                            **filters)
if st.session_state.get("audit_csv"):
    st.download_button(t("audit.export", LANG), st.session_state["audit_csv"],
                       file_name="gridtwin_audit.csv", mime="text/csv", key="audit_download")
