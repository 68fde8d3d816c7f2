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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnnlite", description="Read, run, quantize and validate MNN models.",
        epilog="Every command takes --help, --version, -q/--quiet, -v/--verbose and --json [OUT]. "
               "Exit codes: 0 done, 1 a threshold was missed, 2 bad input.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"mnnlite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def run_guarded(fn, *args) -> int:
    """Run a command; a user error becomes one line on stderr and exit code 2 (3: interrupted)."""
    from ..safety import guarded_call

    return guarded_call(fn, *args)


def main(argv=None) -> int:
    from .common import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args)
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
