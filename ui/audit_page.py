"""审计 The audit log for auditors (admin): browse, filter, export CSV, check the keyed chain."""

from __future__ import annotations

import streamlit as st

from twin import trust
from ui.auth import origin, require_page
from ui.common import current_language, open_twin, t

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
log = trust.read_audit(store, user, **filters)
st.caption(t("audit.rows", LANG, rows=len(log)))
# st.dataframe shows every value as plain text: nothing a user typed is rendered as markup
st.dataframe(log.iloc[::-1], hide_index=True, width="stretch")

if st.button(t("audit.prepare_export", LANG), key="audit_prepare"):
    st.session_state["audit_csv"] = trust.export_audit_csv(store, user, origin=origin(),
                                                            **filters)
if st.session_state.get("audit_csv"):
    st.download_button(t("audit.export", LANG), st.session_state["audit_csv"],
                       file_name="gridtwin_audit.csv", mime="text/csv", key="audit_download")
