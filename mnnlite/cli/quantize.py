"""``mnnlite quantize SRC DST CONFIG`` and ``mnnquant-lite SRC DST CONFIG`` (MNN's ``quantized.out``).

Both write the quantizer's console lines to stdout, the quantized model to DST and the scale dump to
DST.json.  Lines are MNN's messages with their time stamps; ``--mnn-log`` writes them exactly as
``quantized.out`` does (with its C++ source line numbers and ``\\r`` progress).  Exit codes: 0 done, 2 bad
input (arguments, model, config, calibration data) with one line on stderr and nothing written.  Unlike
``quantized.out``, which returns 0 after printing its usage line, a wrong number of arguments exits with 2.
"""
from __future__ import annotations

import sys

from ..layout import DEFAULT_LAYOUT
from ..safety import check_distinct
from .common import Output, add_common_options, add_layout_option, add_memory_option, add_ray_option

USAGE = "Usage: ./quantized.out src.mnn dst.mnn preTreatConfig.json"
# Blocks from 256 KiB up get their own mappings, returned on free (glibc; csrc/heap.h): calibration frees
# activations of a few MiB per op, which glibc's dynamic threshold would keep in the heap.  MTCNN O-Net,
# two threads, peak RSS: KL 70 -> 56 MiB, EMA 59 -> 52 MiB (quantized.out 41 / 51).  The command's process
# only: the Python API leaves the caller's allocator alone.
CALIBRATION_MMAP_THRESHOLD = 256 * 1024
DESCRIPTION = ("Quantize SRC into DST with MNN's offline-quantizer config CONFIG; also writes DST.json "
               "(the scale dump).")


def _arguments(p) -> None:
    p.add_argument("src", metavar="SRC", help="float .mnn model")
    p.add_argument("dst", metavar="DST", help="quantized .mnn to write")
    p.add_argument("config", metavar="CONFIG", help="quantizer JSON config (MNN's keys)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="calibration samples run at once (default: cores, at most 4; same result for any N)")
    p.add_argument("--preset", choices=("accurate",), default=None,
                   help="mnnlite's accurate flow (README 'Accurate preset'); the config's \"preset\" key wins")
    add_layout_option(p)
    add_ray_option(p, "calibration samples (KL, EMA)")
    add_memory_option(p)
    add_common_options(p, "the summary (files, methods, ops quantized and skipped, time)", log=True)


def add_parser(sub):
    p = sub.add_parser("quantize", help="calibrate and quantize a model to int8 (MNN's quantized.out)",
                       description=DESCRIPTION)
    _arguments(p)
    p.set_defaults(func=main)


def main(args) -> int:
    from ..kernels.cpu import fix_mmap_threshold
    from ..quant.quantize import quantize

    fix_mmap_threshold(CALIBRATION_MMAP_THRESHOLD)
    out = Output(args)
    if out.json_to not in (None, "-"):      # the --json file is refused before the work, like DST
        check_distinct([("--json report", out.json_to)],
                       [("source model", args.src), ("source model's weight file", args.src + ".weight"),
                        ("config", args.config), ("quantized model", args.dst), ("scale dump", args.dst + ".json"),
                        ("debug dump", args.dst + ".debug.json")])
    report = quantize(args.src, args.dst, args.config, log=out.stream, threads=getattr(args, "threads", None),
                      mnn_log=getattr(args, "mnn_log", False), layout=getattr(args, "layout", DEFAULT_LAYOUT),
                      ray=getattr(args, "ray", None), preset=getattr(args, "preset", None),
                      max_memory=getattr(args, "max_memory", None))
    if out.verbose:
        out.print("quantized ops: " + (", ".join(report.quantized_ops) or "-"))
        out.print("float ops:     " + (", ".join(report.skipped_ops) or "-"))
    out.print(f"wrote {report.dst} and {report.scale_file}" + (f" and {report.debug_file}" if report.debug_file
                                                               else ""))
    out.json(report.to_dict())
    return 0


def quantized_parser(mnn_lines: bool = False):
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            # MNN's answer to a wrong argument count: its usage line (exit 2 here, 0 in MNN)
            if "arguments are required" in message or "unrecognized arguments" in message:
                from ..quant.log import QuantLog

                QuantLog(sys.stderr, mnn_lines=mnn_lines).line("usage")
                sys.exit(2)
            super().error(message)

    p = Parser(prog="mnnquant-lite", description=DESCRIPTION + " Drop-in for MNN's quantized.out / mnnquant: "
               "the same three arguments.")
    _arguments(p)
    return p


def quantized_main(argv=None) -> int:
    """The console script ``mnnquant-lite`` (and tools/quantized.py): MNN's three positional arguments
    plus the usual options; fewer or more than three arguments print MNN's usage line and exit 2."""
    from .common import setup_logging
    from .main import run_guarded

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = quantized_parser("--mnn-log" in argv).parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    setup_logging(args)
    return run_guarded(main, args)


__all__ = ["add_parser", "main", "quantized_main", "USAGE"]
