#!/usr/bin/env python3
"""Drop-in for MNN's offline quantizer: ``tools/quantized.py origin.mnn quan.mnn config.json``.

Same three arguments, same JSON config and output as ``quantized.out`` (see mnnlite/cli/quantize.py).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from a checkout

from mnnlite.cli.quantize import quantized_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(quantized_main())
