"""``gridtwin users``: create, list, disable cockpit users; passwords, roles, grids; demo users."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from twin.cli._common import add_json_option, add_store_option, open_store, print_json
from twin.errors import ValidationError

NAME = "users"
HELP = "manage cockpit users, passwords, roles and grids"
DESCRIPTION = (
    "Manage cockpit users: create, list, disable, set password, role and grids; demo users."
)
EPILOG = """\
examples:
  gridtwin users --demo                        one user per role (docs/trust.md)
  gridtwin users create wang --role grid_worker --grids R01,R02 --name 王芳
  gridtwin users create li --role resident --resident-id P3 --building B3
  gridtwin users create zhao --role org_staff --org PM1 --name 赵客服
  gridtwin users list [--json]
  gridtwin users set-password wang             asks for the new password
  gridtwin users set-role wang dispatcher
  gridtwin users set-grids wang R03
  gridtwin users disable wang   |   enable wang   |   unlock wang
  gridtwin users create-key wang --label "district platform" [--rate 600]
                                               prints the API key ONCE (docs/api.md)
  gridtwin users keys [wang] [--json]          the keys (ids, owners, limits; no secrets)
  gridtwin users revoke-key 3f9a0c1e2b4d       refused from the next request on
(also: gridtwin-users …, python scripts/users.py …)

The password is asked for on the terminal, or read from TWIN_NEW_PASSWORD (never an argument,
so it does not end up in the shell history).
exit codes: 0 done, 2 refused (nothing changed), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    p.add_argument("--demo", action="store_true", help="create one user per role (demo passwords)")
    add_json_option(p, "the users listed (list, --demo)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    c = sub.add_parser("create", help="create a user")
    c.add_argument("username")
    c.add_argument("--role", required=True)
    c.add_argument("--name", default="", help="display name")
    c.add_argument("--grids", default="", help="responsibility grids of a grid worker, a,b,c")
    c.add_argument("--resident-id")
    c.add_argument("--building")
    c.add_argument("--org", help="the organisation (org_id of layer organisations) of an "
                   "org_admin or org_staff user")
    listing = sub.add_parser("list", help="list users (no password hashes)")
    children = [c, listing]
    for name in ("set-password", "disable", "enable", "unlock"):
        child = sub.add_parser(name, help=f"{name.replace('-', ' ')} a user")
        child.add_argument("username")
        children.append(child)
    r = sub.add_parser("set-role", help="give a user another role")
    r.add_argument("username")
    r.add_argument("role")
    g = sub.add_parser("set-grids", help="set a grid worker's responsibility grids")
    g.add_argument("username")
    g.add_argument("grids", help="a,b,c")
    k = sub.add_parser("create-key", help="create an API key acting as a user (shown once)")
    k.add_argument("username")
    k.add_argument("--label", default="", help="what the key is for (a partner, a platform)")
    k.add_argument("--rate", type=int, default=None,
                   help="requests per minute (default TWIN_API_RATE_PER_MIN)")
    keys = sub.add_parser("keys", help="list API keys (no secrets)")
    keys.add_argument("username", nargs="?", default=None)
    revoke = sub.add_parser("revoke-key", help="revoke an API key (by its id)")
    revoke.add_argument("key_id")
    for child in (*children, r, g, k, keys, revoke):  # the store, --json may follow the action
        add_store_option(child)
        add_json_option(child, "the users listed")


def _password(prompt: str = "password: ") -> str:
    value = os.environ.get("TWIN_NEW_PASSWORD")
    if value:
        return value
    first = getpass.getpass(prompt)
    if getpass.getpass("again: ") != first:
        raise ValidationError("the two passwords differ; nothing was changed")
    return first


def _grids(text: str) -> list[str]:
    return [g.strip() for g in text.split(",") if g.strip()]


def run(args: argparse.Namespace) -> int:
    from twin import trust

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.demo and not args.action:
        raise ValidationError("nothing to do: give an action (create, list, …) or --demo")
    as_json = bool(getattr(args, "json", False))
    actor = f"cli:{getpass.getuser()}"
    origin = "gridtwin users"
    with open_store(args) as store:
        if args.demo:
            users = trust.create_demo_users(store, actor=actor, origin=origin)
            if as_json:
                print_json([{"username": u.username, "role": trust.DEMO_USERS[u.username][0],
                             "password": trust.DEMO_USERS[u.username][1],
                             "grids": list(u.grids), "resident_id": u.resident_id}
                            for u in users])
                return 0
            for user in users:
                role, password = trust.DEMO_USERS[user.username]
                extra = f" grids={','.join(user.grids)}" if user.grids else ""
                extra += f" resident={user.resident_id}" if user.resident_id else ""
                print(f"{user.username:<11} {role:<12} password {password}{extra}")
            return 0
        username = getattr(args, "username", None)
        if args.action == "create":
            user = trust.create_user(
                store, username, _password(), args.role, display_name=args.name,
                grids=_grids(args.grids), resident_id=args.resident_id,
                building_code=args.building, org_id=args.org, actor=actor, origin=origin)
            print(f"created {user.username} ({user.role})")
        elif args.action == "list":
            _list(trust.list_users(store), as_json)
        elif args.action == "set-password":
            trust.update_user(store, username, password=_password("new password: "),
                               actor=actor, origin=origin)
            print(f"password of {username} changed")
        elif args.action in ("disable", "enable"):
            trust.update_user(store, username, disabled=args.action == "disable",
                               actor=actor, origin=origin)
            print(f"{username} {args.action}d")
        elif args.action == "unlock":
            trust.update_user(store, username, unlock=True, actor=actor, origin=origin)
            print(f"{username} unlocked")
        elif args.action == "set-role":
            trust.update_user(store, username, role=args.role, actor=actor, origin=origin)
            print(f"{username} is now {args.role}")
        elif args.action in ("create-key", "keys", "revoke-key"):
            return _keys(store, args, actor, origin, as_json)
        elif args.action == "set-grids":
            trust.update_user(store, username, grids=_grids(args.grids), actor=actor,
                               origin=origin)
            print(f"{username} works in {args.grids}")
    return 0


def _keys(store, args: argparse.Namespace, actor: str, origin: str, as_json: bool) -> int:
    from twin.trust import apikeys

    if args.action == "create-key":
        text, key = apikeys.create_key(store, args.username, label=args.label,
                                       rate_per_min=args.rate, actor=actor, origin=origin)
        if as_json:
            print_json({"key": text, "key_id": key.key_id, "username": key.username,
                        "rate_per_min": key.rate_per_min})
        else:
            print(f"API key of {key.username} (id {key.key_id}, {key.rate_per_min}/min); "
                  "shown only now, keep it secret:")
            print(text)
    elif args.action == "keys":
        rows = apikeys.list_keys(store, args.username)
        if as_json:
            print(rows.to_json(orient="records", date_format="iso", force_ascii=False))
        else:
            sys.stdout.write((rows.to_string(index=False) if len(rows) else "no keys") + "\n")
    elif apikeys.revoke_key(store, args.key_id, actor=actor, origin=origin):
        print(f"key {args.key_id} revoked")
    else:
        print(f"key {args.key_id} was already revoked")
    return 0


def _list(users, as_json: bool) -> None:
    cols = ["username", "role", "display_name", "grids", "resident_id", "disabled",
            "locked_until", "last_login_at"]
    if as_json:
        print(users[cols].to_json(orient="records", date_format="iso", force_ascii=False))
        return
    sys.stdout.write((users[cols].to_string(index=False) if len(users) else "no users") + "\n")


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-users`` (and ``python scripts/users.py``)."""
    from twin.cli import run_command

    return run_command(NAME, argv)
