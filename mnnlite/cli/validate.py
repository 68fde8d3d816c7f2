"""``mnnlite validate FLOAT.mnn QUANT.mnn CONFIG.json [--num N] [--data DIR] [--labels FILE]
[--min-cosine X] [--min-agreement X] [--json [OUT]] [--layout model|nchw] [--ray ADDRESS]``: compare a quantized
model (run in int8) with its float original on held-out samples.  Exit 0 when every given threshold is met or
none was given (the verdict then says MEASURED, not PASS), 1 when one is missed, 2 on bad input (files, config,
data)."""
from __future__ import annotations

from ..errors import ConfigError
from ..safety import check_distinct
from .common import (Output, add_common_options, add_layout_option, add_ray_option, add_runtime_options,
                     apply_threads)

VERBOSE_WORST = 20       # worst layers listed with -v


def add_parser(sub):
    p = sub.add_parser("validate", help="compare a quantized model with its float original on held-out samples")
    p.add_argument("float_model", metavar="FLOAT.mnn", help="the float model")
    p.add_argument("quant_model", metavar="QUANT.mnn", help="the quantized model (runs in int8)")
    p.add_argument("config", metavar="CONFIG.json", help="the quantizer config (its preprocessing is used)")
    p.add_argument("--num", type=int, help="use at most N samples")
    p.add_argument("--data", metavar="DIR",
                   help="held-out folder (default: the config's path, after the calibration samples)")
    p.add_argument("--labels", metavar="FILE", help="'NAME LABEL' per line: report labelled accuracy")
    p.add_argument("--min-cosine", type=float, metavar="X", help="fail (exit 1) when an output's cosine is below X")
    p.add_argument("--min-agreement", type=float, metavar="X",
                   help="fail (exit 1) when a classifier output's top-1 agreement is below X")
    p.add_argument("--target", choices=("x86", "arm"), default="x86",
                   help="whose int8 kernels to emulate: MNN's x86 build (default, bit-exact) or ARM (true "
                        "max pooling where x86 compares codes as signed bytes)")
    p.add_argument("--worst", type=int, default=None, metavar="N",
                   help=f"per-layer statistics: list the N worst layers (off by default: they cost about 2x the "
                        f"plain comparison; -v lists {VERBOSE_WORST})")
    add_runtime_options(p)
    add_layout_option(p)
    add_ray_option(p, "held-out samples")
    add_common_options(p, "the report")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..progress import ProgressDisplay
    from ..validation import validate

    out = Output(args)
    for name in ("min_cosine", "min_agreement"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    worst = args.worst if args.worst is not None else VERBOSE_WORST if out.verbose else 0
    if worst < 0:
        raise ConfigError(f"--worst must be >= 0, got {worst}")
    inputs = [("float model", args.float_model), ("quantized model", args.quant_model),
              ("config", args.config), ("labels file", args.labels)]
    if out.json_to not in (None, "-"):      # refused before the work, and again when written
        check_distinct([("--json report", out.json_to)], inputs)
    apply_threads(args)
    display = ProgressDisplay(out.stream)
    report = validate(args.float_model, args.quant_model, args.config, data=args.data, labels=args.labels,
                      num=args.num, min_cosine=args.min_cosine, min_agreement=args.min_agreement,
                      impl=args.impl, worst=worst, layers=worst > 0, progress=display.update,
                      layout=args.layout, ray=args.ray, target=args.target)
    display.close()
    out.print(report.render())
    if out.verbose:
        out.print("samples: " + ", ".join(report.samples))
    out.json(report.to_dict(), inputs + [("held-out file", p) for p in report.samples if isinstance(p, str)])
    return 0 if report.passed else 1
