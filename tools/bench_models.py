"""Whole-model latency, same run, medians: mnnlite vs the official MNN runtime vs onnxruntime, fp32 and int8.

    python tools/bench_models.py                                   # fixture CNNs, 1 and 2 threads
    python tools/bench_models.py --models ppocr_cls --threads 1 --repeat 50 --json out.json

Two tables per thread count:
* fp32: "ours" = mnnlite.runtime.Interpreter (impl "fast") on the float zoo model; "MNN" = one Session of
  the official runtime on the same file (Session API, input copied in on every run); "ORT" = onnxruntime
  on the ONNX file the model was converted from (none for TFLite models; ``pip install mnnlite[bench]``).
  Ratios: ours/MNN, ours/ORT, ours/best (the faster of MNN and ORT).  Aim: ours/best <= 1.
* int8 (``--variants``, default quant_kl): ours and MNN on the same quantized file, and our own fp32 on
  the float file it was made from.  Ratios: ours int8/MNN int8, ours int8/ours fp32.  Aim: both <= 1.
Every model runs on its first held-out fixture image (random normalised pixels for models without an
image spec).  The contenders are timed in turn, run after run, the order rotated, so that a machine
whose load changes slows all alike; the first run of each (plans, packed weights) is not timed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import model_zoo as zoo  # noqa: E402
from benchlib import write_rows  # noqa: E402

from mnnlite.kernels.threads import set_num_threads  # noqa: E402
from mnnlite.runtime import Interpreter  # noqa: E402
from oracle import OracleSession  # noqa: E402

MODELS = ("ppocr_det", "ppocr_rec", "ppocr_cls", "mobilenet", "cnn")


def _feeds(name: str) -> dict:
    try:
        zoo.image_spec(name)
    except ValueError:                       # no image input: the zoo's random feeds
        return zoo.random_feeds(name, 0)
    return zoo.image_feeds(name)[0]


class _Ours:
    def __init__(self, path, feeds, threads: int, precision: str = "auto"):
        self.interp, self.feeds, self.threads = Interpreter(str(path), precision=precision), feeds, threads

    def run(self):
        set_num_threads(self.threads)
        self.interp.run(self.feeds)


class _Ort:
    """onnxruntime on the model's ONNX source, all graph optimisations on (its default)."""

    def __init__(self, onnx_file, feeds, threads: int):
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        # ORT's pool threads spin after a run by default; in the rotation below they would hold the second
        # core while the next contender runs (on a 2-core machine our 2-thread mobilenet went 5.6 -> 9.2 ms
        # when it followed ORT).  mnnlite's pool spins ~100 us, MNN's pool sleeps once a run ends.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        dtypes = {i.name: i.type for i in self.session.get_inputs()}
        self.feeds = {k: v.astype("int64") if dtypes.get(k) == "tensor(int64)" else v for k, v in feeds.items()}

    def run(self):
        self.session.run(None, self.feeds)


def _onnx_source(name: str):
    """The ONNX file a zoo model comes from, or None (TFLite models, onnxruntime not installed)."""
    if name in zoo.TFLITE_MODELS:
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    return zoo.onnx_path(name)


def _medians_ms(runners: dict, repeat: int) -> dict:
    """{label: median ms}; each round runs every runner once, the starting one rotated."""
    labels = list(runners)
    for label in labels:
        runners[label]()                     # warm-up: plans, packed weights, caches
    times = {label: [] for label in labels}
    for k in range(repeat):
        for j in range(len(labels)):
            label = labels[(k + j) % len(labels)]
            start = time.perf_counter()
            runners[label]()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) * 1e3 for label, t in times.items()}


def bench_fp32(name: str, threads: int, repeat: int) -> dict:
    path, feeds = zoo.model_path(name), _feeds(name)
    runners = {"ours": _Ours(path, feeds, threads).run,
               "mnn": OracleSession(path, feeds, threads=threads).run}
    onnx_file = _onnx_source(name)
    if onnx_file is not None:
        runners["ort"] = _Ort(onnx_file, feeds, threads).run
    ms = _medians_ms(runners, repeat)
    row = {"table": "fp32", "model": name, "threads": threads, "ours_ms": ms["ours"], "mnn_ms": ms["mnn"],
           "ort_ms": ms.get("ort"), "ours_vs_mnn": ms["ours"] / ms["mnn"]}
    row["ours_vs_ort"] = ms["ours"] / ms["ort"] if "ort" in ms else None
    row["ours_vs_best"] = ms["ours"] / min(ms["mnn"], ms.get("ort", ms["mnn"]))
    return row


def bench_int8(name: str, variant: str, threads: int, repeat: int) -> dict:
    qpath, fpath, feeds = zoo.model_path(name, variant), zoo.quant_source_path(name, variant), _feeds(name)
    ours_q = _Ours(qpath, feeds, threads)
    ms = _medians_ms({"ours_int8": ours_q.run,
                      "mnn_int8": OracleSession(qpath, feeds, threads=threads).run,
                      "ours_fp32": _Ours(fpath, feeds, threads, precision="float").run}, repeat)
    return {"table": "int8", "model": name, "variant": variant, "threads": threads,
            "precision": ours_q.interp.precision, **{f"{k}_ms": v for k, v in ms.items()},
            "int8_vs_mnn": ms["ours_int8"] / ms["mnn_int8"], "int8_vs_fp32": ms["ours_int8"] / ms["ours_fp32"]}


def _opt(v, fmt: str) -> str:
    return fmt.format(v) if v is not None else "-".rjust(len(fmt.format(0.0)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="zoo models, comma-separated")
    p.add_argument("--variants", default="quant_kl", help="quantized variants for the int8 table ('' = none)")
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--repeat", type=int, default=20, help="timed runs per contender (medians)")
    p.add_argument("--no-fp32", action="store_true", help="only the int8 table")
    p.add_argument("--json", metavar="OUT", help="also write the rows as JSON")
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in zoo.model_names()]
    if unknown:
        print(f"bench_models: unknown model {unknown[0]!r}; known: {', '.join(zoo.model_names())}",
              file=sys.stderr)
        return 2
    variants = [v for v in args.variants.split(",") if v]
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        if not args.no_fp32:
            print(f"\nfp32, {threads} thread(s), median of {args.repeat}")
            print(f"{'model':10} {'ours':>9} {'MNN':>9} {'ORT':>9} {'ours/MNN':>9} {'ours/ORT':>9} {'ours/best':>9}")
            for name in models:
                r = bench_fp32(name, threads, args.repeat)
                rows.append(r)
                print(f"{name:10} {r['ours_ms']:7.2f}ms {r['mnn_ms']:7.2f}ms {_opt(r['ort_ms'], '{:7.2f}ms')} "
                      f"{r['ours_vs_mnn']:8.2f}x {_opt(r['ours_vs_ort'], '{:8.2f}x')} {r['ours_vs_best']:8.2f}x",
                      flush=True)
        pairs = [(n, v) for n in models for v in variants if v in zoo.variants_for(n)]
        if pairs:
            print(f"\nint8, {threads} thread(s), median of {args.repeat}")
            print(f"{'model':10} {'variant':9} {'ours int8':>10} {'MNN int8':>10} {'ours fp32':>10} "
                  f"{'int8/MNN':>9} {'int8/fp32':>9}")
            for name, variant in pairs:
                r = bench_int8(name, variant, threads, args.repeat)
                rows.append(r)
                print(f"{name:10} {variant:9} {r['ours_int8_ms']:8.2f}ms {r['mnn_int8_ms']:8.2f}ms "
                      f"{r['ours_fp32_ms']:8.2f}ms {r['int8_vs_mnn']:8.2f}x {r['int8_vs_fp32']:8.2f}x", flush=True)
    if args.json:
        write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
