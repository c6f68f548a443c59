"""Check the audit log, protect its PostGIS table, or reset its anchor after a restore."""

from __future__ import annotations

import argparse
import logging
import sys

from twin.errors import TwinError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="gridtwin-audit",
        description="The audit log's keyed chain and anchored head (docs/trust.md, Audit log).")
    p.add_argument("--store", help="store URL or GeoPackage (default: TWIN_DATABASE_URL / demo)")
    sub = p.add_subparsers(dest="command", required=True)
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
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "protect":
            from twin.store.audit_roles import protect_audit_table

            report = protect_audit_table(args.admin_url, args.app_role, schema=args.schema,
                                         owner_role=args.owner_role)
            may = [name for name, allowed in report.items() if allowed]
            print(f"audit table protected; {args.app_role} now: {', '.join(may)}")
            return 0
        from twin import audit_anchor, trust
        from twin.store import open_store

        with open_store(args.store) as store:
            if args.command == "reset-anchor":
                row = audit_anchor.reset(store, args.actor, "scripts/audit.py")
                print(f"anchor reset; recorded as audit row {row['seq']}")
                return 0
            result = trust.verify_audit_chain(store, incremental=args.incremental)
    except TwinError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    print(f"audit log {'intact' if result.ok else 'BROKEN'}: {result.message} "
          f"({result.rows_read} rows read)")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
