"""``python -m mnnlite`` / ``mnnlite``: parse, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a check failed (validate/regress thresholds), 2 bad input (file, config, data,
resources, an output that cannot be written), 3 interrupted (SIGINT/SIGTERM; temporaries removed).
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module exposing add_parser(subparsers) and main(args) -> int
COMMANDS = {
    "info": "mnnlite.cli.info",
    "quantize": "mnnlite.cli.quantize",
    "run": "mnnlite.cli.run",
    "regress": "mnnlite.cli.regress",
    "validate": "mnnlite.cli.validate",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; ``only``: register that subcommand alone (its module is the only one
    imported: ``python -m mnnlite run`` does not pay for ``quantize``'s imports, nor the reverse)."""
    parser = argparse.ArgumentParser(
        prog="mnnlite", description="Read, run, quantize and validate MNN models.",
        epilog="Every command takes --help, --version, -q/--quiet, -v/--verbose and --json [OUT]. "
               "Exit codes: 0 done, 1 a threshold was missed, 2 bad input.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"mnnlite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).add_parser(sub)
    return parser


def run_guarded(fn, *args) -> int:
    """Run a command; a user error becomes one line on stderr and exit code 2 (3: interrupted)."""
    from ..safety import guarded_call

    return guarded_call(fn, *args)


def main(argv=None) -> int:
    from .common import setup_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    # a command given first needs its own parser only; anything else (--help, --version, a typo) gets
    # the full one, which lists every command
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    setup_logging(args)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
