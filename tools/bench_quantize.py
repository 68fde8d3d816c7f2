#!/usr/bin/env python3
"""Quantization wall time and peak memory: ``tools/quantized.py`` (mnnlite) vs ``_tools.mnnquant`` (MNN 3.6.1).

    python tools/bench_quantize.py                          # zoo image models, KL / ADMM / EMA
    python tools/bench_quantize.py --models cnn ppocr_cls --methods KL --repeat 3
    python tools/bench_quantize.py --json bench.json
    python tools/bench_quantize.py --images 200 --methods KL   # many samples: the forward passes dominate
    python tools/bench_quantize.py --threads 1 --methods KL    # mnnlite on one core, like quantized.out
    python tools/bench_quantize.py --models ppocr_det --methods EMA --size 640 640 --batch-size 32 --images 64
                                                            # calibration memory on large batches

Both tools run as child processes on the same float model, config and calibration images (every image of
the zoo folder, so both pick the same files); each child's wall time is measured around it and its peak
RSS read from its own resource usage (``os.wait4``, the per-child form of ``getrusage(RUSAGE_CHILDREN)``).
Python start-up and imports are included on both sides.  EMA runs on a copy of the model with fixed input
dims and ADMM on one with an NC4HW4 input (``quantized.out`` crashes on the converted models for both, doc
§14.7); where it still crashes its column says so.  Needs the test extras (the ``mnn``
wheel, for the oracle) and the zoo fixtures (built on first use, tests/model_zoo.py).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from corpus_steps import measured_argv, read_peak_kib  # noqa: E402  (tests/ on the path above)

MODELS = ("cnn", "mobilenet", "ppocr_cls", "ppocr_det", "ppocr_rec")
METHODS = ("KL", "ADMM", "EMA")


def run_child(argv: list[str], cwd: str) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit status) of one child process."""
    start = time.perf_counter()
    # timed as installed: a pip-installed package runs from cached bytecode, so a shell that disables bytecode
    # writing (PYTHONDONTWRITEBYTECODE) would time ~0.3 s of source compilation per start instead of the work
    # and measured under corpus_steps' launcher (a child of this process would report at least its RSS)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="mnnlite-rss-") as rss_dir:
        rss_file = os.path.join(rss_dir, "peak")
        proc = subprocess.Popen(measured_argv(argv, rss_file), cwd=cwd, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        peak_kib = read_peak_kib(rss_file, usage.ru_maxrss)
    return wall, peak_kib / 1024.0, proc.returncode     # ru_maxrss is in KiB on Linux


def config(zoo, name: str, method: str, images: Path | None, size=None, batch_size: int = 0) -> dict:
    cfg = zoo.quant_config(name, "quant_kl")
    cfg.pop("used_image_num")
    cfg["feature_quantize_method"] = method
    if images is not None:
        cfg["path"] = str(images)
    if size:
        cfg["width"], cfg["height"] = size
    if batch_size:
        cfg["batch_size"] = batch_size
    return cfg


def make_images(zoo, name: str, count: int, work: Path) -> Path:
    """``count`` images drawn like the zoo's calibration images (deterministic)."""
    import numpy as np
    from zoo_images import draw_image

    folder = work / f"{name}-images-{count}"
    if not folder.exists():
        folder.mkdir()
        rng = np.random.default_rng(count)
        spec = zoo.image_spec(name)
        for i in range(count):
            draw_image(spec, rng).save(folder / f"img_{i:04d}.png")
    return folder


def model_for(zoo, name: str, method: str, work: Path, size=None) -> Path:
    """The float model both tools quantize: as converted for KL; for EMA a copy with fixed input dims and for
    ADMM one with an NC4HW4 input, the only forms ``quantized.out`` runs those methods on (it crashes on the
    converted models); the test suite compares scales on the same copies (tests/quant/test_pipeline_oracle.py).
    ``size`` (width, height): the copies' input dims, when not the zoo's calibration size."""
    if method == "KL":
        return zoo.model_path(name, "float")
    sys.path.insert(0, str(REPO / "tests" / "quant"))
    import test_pipeline_oracle as copies

    path = copies.fixed_shape_model(name) if method == "EMA" else copies.c4_input_model(name)
    if not size:
        return path
    import mnnlite
    from mnnlite.format.tables import OpType

    model = mnnlite.load_model(path)
    for op in model.net.oplists:
        if op.type == OpType.Input:
            op.main.dims = [1, 3, size[1], size[0]]
    out = work / f"{name}.{method}.{size[0]}x{size[1]}.mnn"
    mnnlite.save_model(model, out)
    return out


def bench_one(zoo, name: str, method: str, repeat: int, work: Path, images: int = 0, threads: int = 0,
              size=None, batch_size: int = 0, tools=("ours", "oracle")) -> dict:
    src = str(model_for(zoo, name, method, work, size))
    cfg_path = work / f"{name}.{method}.json"
    folder = make_images(zoo, name, images, work) if images else None
    cfg_path.write_text(json.dumps(config(zoo, name, method, folder, size, batch_size)))
    ours_cmd = [sys.executable, str(REPO / "tools" / "quantized.py"), src, str(work / "ours.mnn"), str(cfg_path)]
    if threads:
        ours_cmd = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                    "from mnnlite.cli.main import main; sys.exit(main(sys.argv[2:]))", str(REPO),
                    "quantize", "--quiet", "--threads", str(threads), src, str(work / "ours.mnn"), str(cfg_path)]
    oracle_cmd = [sys.executable, "-c", "import sys, _tools; _tools.mnnquant(sys.argv[1:])", "quantized.out",
                  src, str(work / "oracle.mnn"), str(cfg_path)]
    row = {"model": name, "method": method, "images": images or len(os.listdir(zoo.calibration_dir(name)))}
    row["ours"] = row["oracle"] = {"failed": "not run"}
    for tag, cmd, out in (("ours", ours_cmd, work / "ours.mnn"), ("oracle", oracle_cmd, work / "oracle.mnn")):
        if tag not in tools:
            continue
        walls, peaks, failed = [], [], None
        for _ in range(repeat):
            if out.exists():
                out.unlink()
            wall, peak, code = run_child(cmd, str(work))
            if code != 0 or not out.exists():
                failed = f"exit {code}" if code >= 0 else f"signal {-code}"
                break
            walls.append(wall)
            peaks.append(peak)
        row[tag] = {"failed": failed} if failed else {"seconds": statistics.median(walls), "peak_mib": max(peaks)}
    ours, oracle = row["ours"], row["oracle"]
    if "seconds" in ours and "seconds" in oracle:
        row["speedup"] = oracle["seconds"] / ours["seconds"]
        row["memory_ratio"] = ours["peak_mib"] / oracle["peak_mib"]
    return row


def _cell(side: dict) -> str:
    if side.get("failed") == "not run":
        return "not run"
    return f"crash ({side['failed']})" if "failed" in side else f"{side['seconds']:.2f} s, {side['peak_mib']:.0f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the median time is kept")
    ap.add_argument("--images", type=int, default=0,
                    help="calibrate on this many generated images instead of the zoo's 12")
    ap.add_argument("--threads", type=int, default=0,
                    help="mnnlite's calibration threads (default: its own choice, the cores up to 4); "
                         "quantized.out always runs one")
    ap.add_argument("--size", nargs=2, type=int, metavar=("W", "H"),
                    help="calibrate at this input size (config width/height; EMA/ADMM copies get these dims)")
    ap.add_argument("--batch-size", type=int, default=0, help="the config's batch_size (EMA)")
    ap.add_argument("--tools", nargs="+", default=["ours", "oracle"], choices=("ours", "oracle"),
                    help="run only one side (e.g. to re-measure ours after a change)")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    import model_zoo as zoo

    rows = []
    print(f"{'model':10s} {'method':6s} {'images':>6s} {'mnnlite':>22s} {'quantized.out':>26s} {'speed-up':>9s} "
          f"{'memory':>7s}")
    with tempfile.TemporaryDirectory(prefix="mnnlite-bench-") as tmp:
        for name in args.models:
            for method in args.methods:
                row = bench_one(zoo, name, method, args.repeat, Path(tmp), args.images, args.threads,
                                args.size, args.batch_size, args.tools)
                rows.append(row)
                speed = f"{row['speedup']:.2f}x" if "speedup" in row else "-"
                memory = f"{row['memory_ratio']:.2f}x" if "memory_ratio" in row else "-"
                print(f"{name:10s} {method:6s} {row['images']:6d} {_cell(row['ours']):>22s} "
                      f"{_cell(row['oracle']):>26s} "
                      f"{speed:>9s} {memory:>7s}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
