"""``gridtwin audit``: check the audit log, protect its PostGIS table, reset its anchor."""

from __future__ import annotations

import argparse

from twin.cli._common import (
    FAILURE,
    OK,
    add_json_option,
    add_store_option,
    open_store,
    print_json,
)

NAME = "audit"
HELP = "check the audit log's keyed chain and anchored head; protect or re-anchor it"
DESCRIPTION = "The audit log's keyed chain and anchored head (docs/trust.md, Audit log)."
EPILOG = """\
examples:
  gridtwin audit verify                        the whole chain and its anchored head
  gridtwin audit verify --incremental          only the rows since the last verified one
  gridtwin audit protect --admin-url postgresql+psycopg://postgres@127.0.0.1/twin \\
      --app-role twin                          the app role may only INSERT and SELECT
  gridtwin audit reset-anchor --actor 王芳      after restoring a backup (audited)
(also: gridtwin-audit …, python scripts/audit.py …)

exit codes: 0 intact or done, 1 the log is broken (or a failure), 2 refused
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    add_json_option(p, "the check's result")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser("verify", help="check the chain and its anchored head (exit 1 if not)")
    check.add_argument("--incremental", action="store_true",
                       help="only the rows since the last verified one (as the audit page)")
    guard = sub.add_parser("protect", help="PostGIS: the app role may only INSERT and SELECT")
    guard.add_argument("--admin-url", required=True,
                       help="postgresql+psycopg://admin@host:port/db (a superuser)")
    guard.add_argument("--app-role", required=True, help="the login role of TWIN_DATABASE_URL")
    guard.add_argument("--schema", help="the store's schema (default: public)")
    guard.add_argument("--owner-role", default="twin_audit_owner",
                       help="NOLOGIN role to own the table (default: twin_audit_owner)")
    reset = sub.add_parser("reset-anchor",
                           help="accept the log as it is now, after restoring a backup (audited)")
    reset.add_argument("--actor", required=True, help="who resets it (recorded)")
    for child in (check, guard, reset):
        add_store_option(child)
        add_json_option(child, "the check's result")


def run(args: argparse.Namespace) -> int:
    if args.action == "protect":
        from twin.store.audit_roles import protect_audit_table

        report = protect_audit_table(args.admin_url, args.app_role, schema=args.schema,
                                     owner_role=args.owner_role)
        may = [name for name, allowed in report.items() if allowed]
        print(f"audit table protected; {args.app_role} now: {', '.join(may)}")
        return OK
    from twin import audit_anchor, trust

    with open_store(args) as store:
        if args.action == "reset-anchor":
            row = audit_anchor.reset(store, args.actor, "gridtwin audit")
            print(f"anchor reset; recorded as audit row {row['seq']}")
            return OK
        result = trust.verify_audit_chain(store, incremental=args.incremental)
    if getattr(args, "json", False):
        print_json({"ok": result.ok, "rows": result.rows, "rows_read": result.rows_read,
                    "first_bad_seq": result.first_bad_seq, "message": result.message})
    else:
        print(f"audit log {'intact' if result.ok else 'BROKEN'}: {result.message} "
              f"({result.rows_read} rows read)")
    return OK if result.ok else FAILURE


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-audit`` (and ``python scripts/audit.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
