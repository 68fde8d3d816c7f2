"""``mnnlite validate FLOAT.mnn QUANT.mnn CONFIG.json [--num N] [--data DIR] [--labels FILE]
[--min-cosine X] [--min-agreement X] [--json OUT] [--layout model|nchw]``: compare a quantized model (run in int8) with its
float original on held-out samples.  Exit 0 when every given threshold is met, 1 when one is missed,
2 on bad input (files, config, data)."""
from __future__ import annotations

import json
import sys

from ..errors import ConfigError
from ..safety import check_distinct, write_files
from .common import add_layout_option, add_ray_option, add_runtime_options, apply_threads


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
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--worst", type=int, default=5, metavar="N", help="worst layers to list (default 5)")
    add_runtime_options(p)
    add_layout_option(p)
    add_ray_option(p, "held-out samples")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..validation import validate

    for name in ("min_cosine", "min_agreement"):
        value = getattr(args, name)
        if value is not None and not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {value}")
    if args.worst < 0:
        raise ConfigError(f"--worst must be >= 0, got {args.worst}")
    inputs = [("float model", args.float_model), ("quantized model", args.quant_model),
              ("config", args.config), ("labels file", args.labels)]
    if args.json:       # refuse before the work, and again once the held-out files are known
        check_distinct([("--json report", args.json)], inputs)
    apply_threads(args)
    report = validate(args.float_model, args.quant_model, args.config, data=args.data, labels=args.labels,
                      num=args.num, min_cosine=args.min_cosine, min_agreement=args.min_agreement,
                      impl=args.impl, worst=args.worst, layers=args.worst > 0,
                      layout=args.layout, ray=args.ray)
    print(report.render())
    if args.json:
        inputs += [("held-out file", path) for path in report.samples if isinstance(path, str)]
        write_files([(args.json, (json.dumps(report.to_dict(), indent=2) + "\n").encode(), "--json report")],
                    inputs)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if report.passed else 1
