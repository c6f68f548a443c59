"""Trust: every decision about who may see or do what, made once, for pages, commands and HTTP.

The faces of the twin (``ui/`` pages, ``gridtwin`` commands, the HTTP service) call these
functions with the user they authenticated and never filter by role or grid themselves.

=================  ==================================================================
module             what it decides
=================  ==================================================================
``permissions``    roles, the permission table, pages per role (:data:`PERMISSIONS`)
``users``          users, argon2 passwords, throttled login, sessions, resolve (the only
                   users the library acts for), demo users
``sessions``       logins that survive a reload: signed, expiring, revocable, stored
``privacy``        masking, rounding for the public, scoped readers of personal data
``casework``       which cases a user sees; case steps run and audited as the user
``public``         what the public transparency page shows
``participation``  notices, polls and answers, scoped to buildings and grids
``audit``          reading, exporting and verifying the audit log
``uploads``        photo checks and storage
``exports``        planner answers and layer files, personal columns protected
``own_data``       a resident's export of everything held about them
``escaping``       text made inert before Markdown or HTML
``admin``          users managed by administrators; layer uploads and rollbacks as a user
``my_reports``     a resident's problem reports: report with a photo, follow their own
``apikeys``        API keys and short-lived tokens of the HTTP service, rate limits
``georeport``      Open311 GeoReport v2: posts filed as the key's owner, requests by role
``sensing``        SensorThings: the public view (rounded, no home presence) or staff's
``organisations``  the organisations layer edited by admins; their indicators by scope
``volunteers``     volunteer tasks, sign-ups (capped atomically), on-site check-in, hours,
                   points as a user may see them
``proposals``      residents' proposals, supports once each, adoption as task or case
=================  ==================================================================
"""

from __future__ import annotations

from twin.trust.audit import (
    AuditPage,
    ChainCheck,
    audit_page,
    export_audit_csv,
    read_audit,
    verify_audit_chain,
    verify_audit_csv,
)
from twin.trust.casework import (
    OutsideGridsError,
    allowed_actions,
    case_card,
    case_for_role,
    case_history,
    category_choices,
    departments,
    eligible_assignees,
    people_names,
    photo_file,
    read_case,
    report_case,
    step_names,
    transition_case,
    visible_cases,
)
from twin.trust.escaping import html_text, safe_text
from twin.trust.exports import export_geopackage, export_layer, query_as
from twin.trust.organisations import (
    organisation_indicators,
    organisation_names,
    organisations_for_edit,
    public_organisations,
    save_organisations,
)
from twin.trust.own_data import export_own_data
from twin.trust.permissions import (
    ANONYMOUS,
    ANONYMOUS_ROLE,
    EVERYONE,
    PERMISSIONS,
    PERSONAL_ACCESS,
    STAFF,
    User,
    can,
    pages_for,
    require,
    with_role,
)
from twin.trust.privacy import (
    buildings_in_scope,
    layer_or_empty,
    mask_frame,
    mask_id_number,
    mask_name,
    mask_other,
    mask_phone,
    protect,
    read_layer,
    read_residents,
    round_location,
    unit_grids_of,
)
from twin.trust.public import PublicSummary, public_summary
from twin.trust.secrets import secret
from twin.trust.sessions import (
    code_pending,
    end_session,
    issue_code,
    open_session,
    redeem_code,
    resume_session,
    session_problem,
)
from twin.trust.uploads import UPLOAD_TYPES, UploadRejectedError, check_photo, store_photo
from twin.trust.users import (
    DEMO_USERS,
    MIN_PASSWORD_LENGTH,
    AccountLockedError,
    LoginError,
    authenticate,
    create_demo_users,
    create_user,
    end_all_sessions_of,
    get_user,
    hash_password,
    list_users,
    record_logout,
    resolve,
    run_as,
    session_expired,
    session_user,
    update_user,
    verify_password,
)

__all__ = [
    "organisation_indicators",
    "organisation_names",
    "organisations_for_edit",
    "public_organisations",
    "save_organisations",
    "allowed_actions",
    "case_card",
    "category_choices",
    "departments",
    "eligible_assignees",
    "OutsideGridsError",
    "people_names",
    "photo_file",
    "step_names",
    "ANONYMOUS",
    "ANONYMOUS_ROLE",
    "DEMO_USERS",
    "EVERYONE",
    "MIN_PASSWORD_LENGTH",
    "PERMISSIONS",
    "PERSONAL_ACCESS",
    "STAFF",
    "UPLOAD_TYPES",
    "AccountLockedError",
    "ChainCheck",
    "LoginError",
    "PublicSummary",
    "UploadRejectedError",
    "User",
    "authenticate",
    "buildings_in_scope",
    "can",
    "case_for_role",
    "case_history",
    "read_case",
    "check_photo",
    "create_demo_users",
    "create_user",
    "export_audit_csv",
    "export_geopackage",
    "export_layer",
    "export_own_data",
    "get_user",
    "hash_password",
    "html_text",
    "layer_or_empty",
    "list_users",
    "mask_frame",
    "mask_id_number",
    "mask_name",
    "mask_other",
    "mask_phone",
    "pages_for",
    "protect",
    "public_summary",
    "query_as",
    "read_audit",
    "audit_page",
    "AuditPage",
    "read_layer",
    "read_residents",
    "record_logout",
    "report_case",
    "require",
    "round_location",
    "run_as",
    "safe_text",
    "secret",
    "session_expired",
    "resolve",
    "session_user",
    "store_photo",
    "transition_case",
    "unit_grids_of",
    "update_user",
    "verify_audit_chain",
    "verify_audit_csv",
    "verify_password",
    "visible_cases",
    "with_role",
    "open_session",
    "resume_session",
    "end_session",
    "end_all_sessions_of",
    "issue_code",
    "redeem_code",
    "session_problem",
    "code_pending",
]
