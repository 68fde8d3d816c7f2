"""Whole-model latency, 1 thread: mnnlite int8 vs the official MNN runtime's int8 vs mnnlite fp32.

    python tools/bench_int8_models.py                      # every quantized zoo model, both variants
    python tools/bench_int8_models.py --models cnn,mobilenet --variants quant_kl --repeat 20

Each model runs on the first held-out image of the fixture zoo (tests/model_zoo.py; fixtures are built
on first use).  "ours int8" = mnnlite.runtime.Interpreter on the quantized file (precision "auto");
"MNN int8" = the official runtime's Session on the same file; "ours fp32" = our Interpreter on the
float file the variant was made from.  The first run of each (plan building, weight packing) is not
timed; times are the median of ``--repeat`` runs.  The MNN wheel's x86 int8 path has no VNNI kernels.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import model_zoo as zoo
from benchlib import write_rows  # noqa: E402

from mnnlite.kernels.threads import set_num_threads  # noqa: E402
from mnnlite.runtime import Interpreter  # noqa: E402
from oracle import OracleSession  # noqa: E402

QUANT_VARIANTS = ("quant_kl", "quant_ema")


def _median_ms(fn, repeat: int) -> float:
    fn()                                            # warm-up: plans, packed weights, caches
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000



def bench(name: str, variant: str, repeat: int) -> dict:
    qpath = zoo.model_path(name, variant)
    fpath = zoo.quant_source_path(name, variant)
    feeds = zoo.image_feeds(name)[0]
    ours_q = Interpreter(str(qpath))
    ours_f = Interpreter(str(fpath), precision="float")
    mnn = OracleSession(qpath, feeds)
    row = {
        "model": name, "variant": variant, "precision": ours_q.precision,
        "ours_int8_ms": _median_ms(lambda: ours_q.run(feeds), repeat),
        "mnn_int8_ms": _median_ms(mnn.run, repeat),
        "ours_fp32_ms": _median_ms(lambda: ours_f.run(feeds), repeat),
    }
    row["int8_vs_mnn"] = row["mnn_int8_ms"] / row["ours_int8_ms"]
    row["int8_vs_fp32"] = row["ours_fp32_ms"] / row["ours_int8_ms"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(n for n in zoo.model_names()
                                                  if "quant_kl" in zoo.variants_for(n)))
    p.add_argument("--variants", default=",".join(QUANT_VARIANTS))
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = p.parse_args(argv)
    set_num_threads(1)
    rows = []
    print(f"{'model':10} {'variant':9} {'ours int8':>10} {'MNN int8':>10} {'ours fp32':>10} "
          f"{'MNN/ours':>9} {'fp32/int8':>9}")
    for name in args.models.split(","):
        for variant in args.variants.split(","):
            if variant not in zoo.variants_for(name):
                continue
            r = bench(name, variant, args.repeat)
            rows.append(r)
            print(f"{name:10} {variant:9} {r['ours_int8_ms']:9.2f}ms {r['mnn_int8_ms']:9.2f}ms "
                  f"{r['ours_fp32_ms']:9.2f}ms {r['int8_vs_mnn']:8.2f}x {r['int8_vs_fp32']:8.2f}x", flush=True)
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
