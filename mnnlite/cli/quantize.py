"""``mnnlite quantize SRC DST CONFIG`` and ``mnnquant-lite SRC DST CONFIG`` (MNN's ``quantized.out``).

Both write MNN's console lines to stdout, the quantized model to DST and the scale dump to DST.json.
Exit codes: 0 done, 2 bad input (arguments, model, config, calibration data) with one line on stderr and
nothing written.  Unlike ``quantized.out``, which returns 0 after printing its usage line, a wrong number
of arguments exits with 2.
"""
from __future__ import annotations

import sys

from ..layout import DEFAULT_LAYOUT
from .common import add_layout_option, add_memory_option, add_ray_option

USAGE = "Usage: ./quantized.out src.mnn dst.mnn preTreatConfig.json"


def add_parser(sub):
    p = sub.add_parser("quantize", help="calibrate and quantize a model to int8 (MNN's quantized.out)",
                       description="Quantize SRC into DST with MNN's offline-quantizer config CONFIG; "
                                   "also writes DST.json (the scale dump).")
    p.add_argument("src", metavar="SRC", help="float .mnn model")
    p.add_argument("dst", metavar="DST", help="quantized .mnn to write")
    p.add_argument("config", metavar="CONFIG", help="quantizer JSON config (MNN's keys)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="calibration samples run at once (default: cores, at most 4; same result for any N)")
    add_layout_option(p)
    add_ray_option(p, "calibration samples (KL, EMA)")
    add_memory_option(p)
    p.set_defaults(func=main)


def main(args) -> int:
    from ..quant.quantize import quantize

    quantize(args.src, args.dst, args.config, log=None if getattr(args, "quiet", False) else sys.stdout,
             threads=getattr(args, "threads", None), layout=getattr(args, "layout", DEFAULT_LAYOUT),
             ray=getattr(args, "ray", None), max_memory=getattr(args, "max_memory", None))
    return 0


def quantized_main(argv=None) -> int:
    """The console script ``mnnquant-lite``: exactly MNN's three positional arguments."""
    import argparse

    from ..quant.log import QuantLog
    from .main import run_guarded

    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 3 or any(a.startswith("-") and a != "-" for a in argv):
        QuantLog(sys.stderr).line("usage")
        return 2
    return run_guarded(main, argparse.Namespace(src=argv[0], dst=argv[1], config=argv[2], quiet=False))


__all__ = ["add_parser", "main", "quantized_main", "USAGE"]
