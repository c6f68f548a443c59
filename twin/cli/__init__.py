"""The ``gridtwin`` command line: one program, a subcommand per staff task.

Every subcommand module declares ``NAME``, ``HELP``, ``DESCRIPTION``, ``EPILOG``,
``configure(parser)`` and ``run(args) -> int``; this module assembles them. The same subcommand
runs standalone as the old console scripts (``gridtwin-load`` …) and as
``python scripts/<name>.py`` (thin shims over :func:`run_command`). Exit codes: 0 done,
2 bad input or usage (nothing changed), 1 failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from twin import __version__
from twin.cli._common import BAD_INPUT, execute

__all__ = ["COMMANDS", "build_parser", "main", "run_command"]

#: subcommand → module, in the order ``--help`` lists them
COMMANDS = {
    "load": "twin.cli.load",
    "query": "twin.cli.query",
    "export": "twin.cli.export",
    "feeds": "twin.cli.feeds",
    "simulate": "twin.cli.simulate",
    "users": "twin.cli.users",
    "retention": "twin.cli.retention",
    "batch": "twin.cli.batch",
    "audit": "twin.cli.audit",
    "make-demo": "twin.cli.make_demo",
    "seed": "twin.cli.seed",
    "notify": "twin.cli.notify",
    "serve": "twin.cli.serve",
    "supervise": "twin.cli.supervise",
}

_FORMATTER = argparse.RawDescriptionHelpFormatter


def _module(name: str):
    return importlib.import_module(COMMANDS[name])


def _common_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    parser.add_argument("--version", action="version", version=f"gridtwin {__version__}")
    parser.add_argument("--debug", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="show the traceback of an internal error")


def _configure(parser: argparse.ArgumentParser, module, *, top: bool) -> None:
    _common_options(parser, top=top)
    module.configure(parser)
    parser.set_defaults(_command=module.NAME)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``gridtwin`` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="gridtwin", formatter_class=_FORMATTER,
        description="GridTwin (智慧社区数字孪生): load layers, ask planner questions, run the live "
        "feeds, export reports and manage users of a community twin.",
        epilog="`gridtwin COMMAND --help` shows a command's options and examples. Every command "
        "that opens a store takes --store URL_OR_PATH (default: TWIN_DATABASE_URL, then the "
        "demo GeoPackage).\nexit codes: 0 done, 2 bad input or usage (nothing "
        "changed), 1 failure (a service down, an internal error)")
    _common_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        module = _module(name)
        p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION,
                           epilog=module.EPILOG, formatter_class=_FORMATTER)
        _configure(p, module, top=False)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None):
    try:
        return parser.parse_args(argv), None
    except SystemExit as exc:  # argparse printed the help, the version or its usage error
        return None, 0 if exc.code in (0, None) else BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gridtwin`` with *argv* (default: the process's arguments); return the exit code."""
    parser = build_parser()
    args, code = _parse(parser, argv)
    if args is None:
        return code
    if not args.command:
        parser.print_help(sys.stderr)
        return BAD_INPUT
    return execute(args.command, _module(args.command).run, args)


def run_command(name: str, argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run subcommand *name* on its own, as ``gridtwin-<name>`` or ``python scripts/<x>.py`` do.

    Parameters
    ----------
    name
        A key of :data:`COMMANDS`.
    argv
        The arguments after the program name (default: the process's).
    prog
        The program name shown in ``--help`` (default: the name the process was started as).
    """
    module = _module(name)
    parser = argparse.ArgumentParser(prog=prog, description=module.DESCRIPTION,
                                     epilog=module.EPILOG, formatter_class=_FORMATTER)
    _configure(parser, module, top=True)
    args, code = _parse(parser, argv)
    if args is None:
        return code
    return execute(name, module.run, args)
