#!/usr/bin/env python3
"""Regression harness for quantized models: ``tools/regress.py CASES.toml [--jobs N] ...``.

Same as ``python -m mnnlite regress``; the case file format is in README ("Regression harness").
"""
import sys

from mnnlite.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["regress", *sys.argv[1:]]))
