#!/usr/bin/env python3
"""Regression harness for quantized models: ``tools/regress.py CASES.toml [--jobs N] ...``.

Same as ``python -m mnnlite regress``; see ``mnnlite/regress/cases.py`` for the case file format.
"""
import sys

from mnnlite.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["regress", *sys.argv[1:]]))
