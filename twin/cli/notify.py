"""``gridtwin notify``: deliver the outbox's notifications; channels; status and dead letters."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from twin.cli._common import (
    add_json_option,
    add_store_option,
    add_user_option,
    command_user,
    open_store,
    print_json,
    wants_json,
)

NAME = "notify"
HELP = "deliver notifications (webhooks, WeCom, DingTalk, SMS, e-mail); channels; status"
DESCRIPTION = (
    "Deliver the notifications waiting in the outbox (alarms, case assignments) to their "
    "channels: signed webhooks and apprise URLs (WeCom, DingTalk, SMS, e-mail). Failed "
    "deliveries are retried with backoff and then marked dead; several workers may run at "
    "once (each message is claimed by one). Channels and dead letters are an administrator's "
    "(--user)."
)
EPILOG = """\
examples:
  gridtwin notify                                    deliver until Ctrl-C (a worker)
  gridtwin notify --once                             deliver what is due now, then exit
  gridtwin notify --status [--json]                  rows per status, dead letters and why
  gridtwin notify --user admin channels
  gridtwin notify --user admin add-channel gw-wang --kind webhook \\
      --url https://ops.example/hook --role grid_worker --recipient wang
      (the webhook secret is read from TWIN_NOTIFY_SECRET, never an argument)
  gridtwin notify --user admin add-channel r01-group --kind apprise \\
      --url 'wecombot://BOTKEY' --role grid_worker --grid R01 --events alarm.opened
  gridtwin notify --user admin disable gw-wang   |   enable gw-wang
  gridtwin notify --user admin requeue-dead [ID ...]
See docs/notify.md (signature verification, retry policy).

exit codes: 0 done, 2 refused (nothing changed), 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    add_user_option(p)
    add_json_option(p, "the status, channels or pass report")
    p.add_argument("--once", action="store_true", help="deliver what is due now, then exit")
    p.add_argument("--status", action="store_true", help="show the outbox by status and its "
                   "dead letters")
    p.add_argument("--interval", type=float, default=5.0, metavar="S",
                   help="seconds between passes when nothing is due (default 5)")
    p.add_argument("--limit", type=int, default=20, metavar="N",
                   help="messages claimed per pass (default 20)")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.add_parser("channels", help="list the channels (secrets and URL tokens masked)")
    a = sub.add_parser("add-channel", help="create or replace a channel")
    a.add_argument("id")
    a.add_argument("--kind", choices=("webhook", "apprise"), default="webhook")
    a.add_argument("--url", required=True,
                   help="https://… for a webhook; an apprise URL (wecombot://, dingtalk://, "
                   "mailto://, json://…)")
    a.add_argument("--role", required=True, help="the role whose view the channel gets")
    a.add_argument("--grid", default="", help="unit grid or responsibility grid (default all)")
    a.add_argument("--recipient", default="",
                   help="only events addressed to this user or department")
    a.add_argument("--events", default="", help="event names, a,b (default all)")
    a.add_argument("--lang", default="zh-CN", help="zh-CN or en")
    for name in ("enable", "disable"):
        e = sub.add_parser(name, help=f"{name} a channel")
        e.add_argument("id")
    r = sub.add_parser("requeue-dead", help="put dead notifications back in the queue")
    r.add_argument("ids", nargs="*", help="only these (default: all dead)")


def _print_status(report: dict) -> None:
    statuses = report["statuses"]
    if not statuses:
        print("outbox empty")
    for name, info in sorted(statuses.items()):
        nxt = f" (next try {info['next_at']})" if name == "pending" and info["next_at"] else ""
        print(f"{name}: {info['rows']}{nxt}")
    for row in report["dead"]:
        print(f"dead {row['id']} {row['event']} {row['subject']} → {row['channel']} after "
              f"{row['attempts']} attempts: {row['last_error']}")


def _admin(store, args: argparse.Namespace):
    from twin.trust import outgoing

    user = command_user(store, args)
    action = args.action
    if action == "channels":
        listed = outgoing.list_channels(store, user)
        if wants_json(args):
            print_json(listed)
        for c in listed if not wants_json(args) else ():
            print(f"{c['id']}: {c['kind']} {c['url']} role={c['role']} grid={c['grid'] or '*'} "
                  f"recipient={c['recipient'] or '*'} events={','.join(c['events'])} "
                  f"{c['lang']}{'' if c['enabled'] else ' (disabled)'}")
        return 0
    if action == "add-channel":
        listed = outgoing.save_channel(
            store, user, origin="cli", id=args.id, kind=args.kind, url=args.url,
            secret=os.environ.get("TWIN_NOTIFY_SECRET") or None, role=args.role,
            grid=args.grid, recipient=args.recipient, events=args.events or None,
            lang=args.lang)
    elif action in ("enable", "disable"):
        listed = outgoing.enable_channel(store, user, args.id, action == "enable", origin="cli")
    else:  # requeue-dead
        count = outgoing.requeue_dead(store, user, list(args.ids) or None, origin="cli")
        print_json({"requeued": count}) if wants_json(args) else print(f"requeued {count}")
        return 0
    print_json(listed) if wants_json(args) else print(f"channel {listed['id']}: saved")
    return 0


def run(args: argparse.Namespace) -> int:
    from twin import notify

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with open_store(args) as store:
        if args.action:
            return _admin(store, args)
        if args.status:
            report = notify.status(store)
            print_json(report) if wants_json(args) else _print_status(report)
            return 0
        if args.once:
            total = notify.DeliveryReport()
            while True:  # until nothing is due now
                done = notify.deliver_due(store, limit=args.limit)
                for name in ("claimed", "delivered", "retried", "dead"):
                    setattr(total, name, getattr(total, name) + getattr(done, name))
                if done.claimed < args.limit or done.delivered + done.dead == 0:
                    break
        else:
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                total = notify.run(store, stop=stop, interval_s=args.interval, limit=args.limit)
            except KeyboardInterrupt:
                stop.set()
                return 0
    line = {"claimed": total.claimed, "delivered": total.delivered, "retried": total.retried,
            "dead": total.dead}
    print_json(line) if wants_json(args) else print(
        f"delivered {total.delivered}, retried later {total.retried}, dead {total.dead}",
        file=sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m twin.cli notify`` on its own."""
    from twin.cli import run_command

    return run_command(NAME, argv)
