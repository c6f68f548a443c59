"""Manage cockpit users: create, list, disable, set password, role and grids; demo users."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

if not __package__:  # run as `python scripts/users.py`: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twin.errors import TwinError  # noqa: E402

EXAMPLES = """\
examples:
  python scripts/users.py --demo                        one user per role (docs/trust.md)
  python scripts/users.py create wang --role grid_worker --grids R01,R02 --name 王芳
  python scripts/users.py create li --role resident --resident-id P3 --building B3
  python scripts/users.py list
  python scripts/users.py set-password wang             asks for the new password
  python scripts/users.py set-role wang dispatcher
  python scripts/users.py set-grids wang R03
  python scripts/users.py disable wang   |   enable wang   |   unlock wang

The password is asked for on the terminal, or read from TWIN_NEW_PASSWORD (never an argument,
so it does not end up in the shell history). The store is TWIN_DATABASE_URL or --store.
exit codes: 0 done, 2 refused (nothing changed), 1 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridtwin-users", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", help="store URL or GeoPackage (default: TWIN_DATABASE_URL / demo)")
    p.add_argument("--demo", action="store_true", help="create one user per role (demo passwords)")
    sub = p.add_subparsers(dest="command")
    c = sub.add_parser("create", help="create a user")
    c.add_argument("username")
    c.add_argument("--role", required=True)
    c.add_argument("--name", default="", help="display name")
    c.add_argument("--grids", default="", help="responsibility grids of a grid worker, a,b,c")
    c.add_argument("--resident-id")
    c.add_argument("--building")
    sub.add_parser("list", help="list users (no password hashes)")
    for name in ("set-password", "disable", "enable", "unlock"):
        sub.add_parser(name).add_argument("username")
    r = sub.add_parser("set-role")
    r.add_argument("username")
    r.add_argument("role")
    g = sub.add_parser("set-grids")
    g.add_argument("username")
    g.add_argument("grids", help="a,b,c")
    return p


def _password(prompt: str = "password: ") -> str:
    value = os.environ.get("TWIN_NEW_PASSWORD")
    if value:
        return value
    first = getpass.getpass(prompt)
    if getpass.getpass("again: ") != first:
        from twin.errors import ValidationError

        raise ValidationError("the two passwords differ; nothing was changed")
    return first


def _grids(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def run(args: argparse.Namespace) -> int:
    from twin import trust
    from twin.store import open_store

    actor = f"cli:{getpass.getuser()}"
    origin = "scripts/users.py"
    with open_store(args.store) as store:
        if args.demo:
            for user in trust.create_demo_users(store, actor=actor, origin=origin):
                role, password = trust.DEMO_USERS[user.username]
                extra = f" grids={','.join(user.grids)}" if user.grids else ""
                extra += f" resident={user.resident_id}" if user.resident_id else ""
                print(f"{user.username:<11} {role:<12} password {password}{extra}")
            return 0
        if args.command == "create":
            user = trust.create_user(
                store, args.username, _password(), args.role, display_name=args.name,
                grids=_grids(args.grids), resident_id=args.resident_id,
                building_code=args.building, actor=actor, origin=origin)
            print(f"created {user.username} ({user.role})")
        elif args.command == "list":
            users = trust.list_users(store)
            cols = ["username", "role", "display_name", "grids", "resident_id", "disabled",
                    "locked_until", "last_login_at"]
            print(users[cols].to_string(index=False) if len(users) else "no users")
        elif args.command == "set-password":
            trust.update_user(store, args.username, password=_password("new password: "),
                               actor=actor, origin=origin)
            print(f"password of {args.username} changed")
        elif args.command in ("disable", "enable"):
            trust.update_user(store, args.username, disabled=args.command == "disable",
                               actor=actor, origin=origin)
            print(f"{args.username} {args.command}d")
        elif args.command == "unlock":
            trust.update_user(store, args.username, unlock=True, actor=actor, origin=origin)
            print(f"{args.username} unlocked")
        elif args.command == "set-role":
            trust.update_user(store, args.username, role=args.role, actor=actor, origin=origin)
            print(f"{args.username} is now {args.role}")
        elif args.command == "set-grids":
            trust.update_user(store, args.username, grids=_grids(args.grids), actor=actor,
                               origin=origin)
            print(f"{args.username} works in {args.grids}")
        else:
            print("nothing to do; see --help", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except TwinError as exc:
        print(f"users: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
