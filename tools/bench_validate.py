#!/usr/bin/env python3
"""What validate's per-layer statistics cost: wall time with them (the default) / without (``--worst 0``).

    python tools/bench_validate.py [--models ppocr_det ppocr_cls] [--num 6] [--repeat 3]

Per zoo model (KL file, held-out images), both runs side by side in this process, alternating, best of
``--repeat``; the target is a ratio of at most 1.5 (README: Int8 execution and validation).
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]       # this checkout's mnnlite, and the test zoo

import model_zoo as zoo  # noqa: E402

from mnnlite.validation import validate  # noqa: E402


def measure(name: str, num: int, repeat: int) -> tuple[float, float]:
    flt, quant = zoo.quant_source_path(name, "quant_kl"), zoo.model_path(name, "quant_kl")
    cfg, data = zoo.quant_config(name, "quant_kl"), str(zoo.heldout_dir(name))
    validate(flt, quant, cfg, data=data, num=1)                    # warm-up: plans, packed weights, caches
    best = {True: float("inf"), False: float("inf")}
    for _ in range(repeat):
        for layers in (False, True):
            start = time.perf_counter()
            validate(flt, quant, cfg, data=data, num=num, layers=layers)
            best[layers] = min(best[layers], time.perf_counter() - start)
    return best[False], best[True]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["ppocr_det", "ppocr_cls"])
    parser.add_argument("--num", type=int, default=6, help="held-out samples per run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"{'model':12} {'plain s':>9} {'layers s':>9} {'ratio':>6}")
    for name in args.models:
        plain, layers = measure(name, args.num, args.repeat)
        print(f"{name:12} {plain:9.2f} {layers:9.2f} {layers / plain:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
