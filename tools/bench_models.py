"""Float latency per model, 1 thread: mnnlite vs the official MNN runtime, measured in the same run.

    python tools/bench_models.py                          # ppocr_det, ppocr_rec, ppocr_cls, mobilenet
    python tools/bench_models.py --models ppocr_cls --repeat 50 --json out.json

"ours" = mnnlite.runtime.Interpreter (impl "fast") on the float zoo model; "MNN" = one Session of the
official runtime (Session API, numThread 1) on the same file, the input copied in on every run, as in
tests/benchmarks/test_bench_float.py.  Both get the same random input of the model's first shape set;
the two are timed alternately, run after run, so that a machine whose load changes slows both alike.
The first run of each (plans, packed weights) is not timed; times are medians.  The aim is
ours/MNN <= 2.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import model_zoo as zoo
from benchlib import write_rows

from mnnlite.kernels.threads import set_num_threads
from mnnlite.runtime import Interpreter

MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls", "mobilenet")
AIM = 2.0



def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(name: str, repeat: int) -> dict:
    path, feeds = zoo.model_path(name), zoo.random_feeds(name, 0)
    ours, mnn = Interpreter(str(path)), zoo.OracleSession(path, feeds)
    def run_ours():
        ours.run(feeds)

    run_ours(), mnn.run()                       # warm-up: plans, packed weights, caches
    t_ours, t_mnn = [], []
    for _ in range(repeat):
        t_ours.append(_timed(run_ours))
        t_mnn.append(_timed(mnn.run))
    row = {"model": name, "shape": {k: list(v.shape) for k, v in feeds.items()},
           "ours_ms": statistics.median(t_ours) * 1e3, "mnn_ms": statistics.median(t_mnn) * 1e3}
    row["ratio"] = row["ours_ms"] / row["mnn_ms"]
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = p.parse_args(argv)
    set_num_threads(1)
    rows = []
    print(f"{'model':10} {'input':18} {'ours':>10} {'MNN':>10} {'ours/MNN':>9}")
    for name in args.models.split(","):
        r = bench(name, args.repeat)
        rows.append(r)
        shape = "x".join(str(d) for d in next(iter(r["shape"].values())))
        flag = "" if r["ratio"] <= AIM else f"  (> {AIM:g}x)"
        print(f"{name:10} {shape:18} {r['ours_ms']:8.2f}ms {r['mnn_ms']:8.2f}ms {r['ratio']:8.2f}x{flag}",
              flush=True)
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
