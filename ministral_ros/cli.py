"""``ministral-ros``: the command-line entry point.

Each subcommand lives in its own module under ``ministral_ros.commands`` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their subcommand runs, so ``ministral-ros tokenize`` never pays for importing torch.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
import importlib
import logging
import sys

SUBCOMMANDS: dict[str, str] = {
    'export': 'ministral_ros.commands.export',
    'generate': 'ministral_ros.commands.generate',
    'bench': 'ministral_ros.commands.bench',
    'tokenize': 'ministral_ros.commands.tokenize',
    'plan': 'ministral_ros.commands.plan',
    'transcribe': 'ministral_ros.commands.transcribe',
}


class CommandError(Exception):
    """A user-facing failure: printed as one line on stderr, exit status 2."""


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='ministral-ros',
        description='Offline Ministral for robots: export, generate, tokenize, plan, transcribe, bench.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging on stderr')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, module_name in SUBCOMMANDS.items():
        if selected is None or name != selected:
            sub.add_parser(name, help=f'see `ministral-ros {name} --help`', add_help=False)
            continue
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command_parser)
        command_parser.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith('-')), None)
    if selected not in SUBCOMMANDS:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s', stream=sys.stderr)
    try:
        return int(args.run(args) or 0)
    except CommandError as error:
        print(f'ministral-ros {args.command}: error: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    # ``python -m ministral_ros.cli`` runs this file as ``__main__``, a second copy of the module: the commands
    # raise the CommandError of ``ministral_ros.cli``, which only that module's ``main`` catches.
    from ministral_ros import cli
    sys.exit(cli.main())
