#!/usr/bin/env python3
"""The corpus table: every real model (tests/corpus.py) through every step, against the official runtime
and MNN's own quantizer, with cosines, timings and calibration peak memory side by side.

    python tools/bench_corpus.py                               # every model, every step
    python tools/bench_corpus.py --models ppocr_cls mtcnn_onet --steps info run quantize
    python tools/bench_corpus.py --json corpus.json --jobs 2     # two models at a time

Steps (tests/corpus_steps.py; the slow tests tests/corpus/test_corpus.py assert the same):
  info        ``python -m mnnlite info --json``: the official runtime's inputs and declared layouts
  run         float run vs the official runtime on held-out samples (declared layout both sides)
  quantize    ``python -m mnnlite quantize`` per config (KL, EMA, ADMM features with MAX_ABS weights, KL
              with ADMM weights), timed, peak RSS from wait4; except for the ADMM feature (many minutes,
              crashes on ONNX models) also quantized.out on the same config, same figures
  official    the official runtime runs our file: held-out cosine to the float model, and MNN's own file's
  int8-mnn    our int8 runtime vs the official runtime on quantized.out's KL, EMA, KL+ADMM-weight files
  int8-ours   the same on our files
  validate    ``python -m mnnlite validate`` on the held-out folder with our KL file

Each model runs in a child process (a crash of ours or of MNN is a row, not the end of the table).  The
corpus is built first where missing (tools/build_corpus.py).  Exit status 1 if any step failed.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

STEPS = ("info", "run", "quantize", "official", "int8-mnn", "int8-ours", "validate")


def _parse(argv):
    import corpus

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=corpus.names(), metavar="NAME", help="models (default: all)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="steps (default: all)")
    ap.add_argument("--json", metavar="OUT", help="write every row as JSON")
    ap.add_argument("--jobs", type=int, default=1,
                    help="models measured at once (default 1: timings and peak RSS without interference)")
    ap.add_argument("--threads", type=int, help="--threads of our quantizer (default: its own, <= 4 cores)")
    ap.add_argument("--no-mnn-quant", action="store_true",
                    help="do not re-run quantized.out for its time and peak RSS")
    ap.add_argument("--one", metavar="NAME", help=argparse.SUPPRESS)       # child mode: one model
    ap.add_argument("--out", metavar="FILE", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


# ----------------------------------------------------------------------------------- one model (child)
def _record(rows, model, step, case, fn):
    import corpus_steps as steps

    start = time.monotonic()
    row = {"model": model, "step": step, "case": case}
    try:
        figures = fn() or {}
        row.update(status="ok", **{k: v for k, v in figures.items() if k != "path"})
        if "path" in figures:
            row["path"] = str(figures["path"])
    except steps.StepFailed as exc:
        row.update(status="FAIL", detail=str(exc).splitlines()[0][:400])
    except Exception as exc:  # noqa: BLE001 -- a crash of ours is a finding of the table
        row.update(status="ERROR", detail=f"{type(exc).__name__}: {str(exc).splitlines()[0][:400] if str(exc) else ''}")
    row.setdefault("seconds", time.monotonic() - start)
    rows.append(row)
    return row


def run_one(name: str, wanted, measure_mnn: bool, threads=None) -> list:
    import corpus
    import corpus_steps as steps

    rows: list = []
    built = corpus.build(name)
    if not corpus.usable(built):
        rows.append({"model": name, "step": "build", "case": "", "status": "FAIL",
                     "detail": "; ".join(f"{k}: {v}" for k, v in built.items() if v != "ok")})
        return rows
    if "info" in wanted:
        _record(rows, name, "info", "", lambda: steps.step_info(name))
    if "run" in wanted:
        _record(rows, name, "run", "", lambda: steps.step_run(name))
    need_ours = {c for c in steps.QUANT_CASES if {"quantize", "official"} & wanted}
    need_ours |= {c for c in steps.MNN_FILE_CASES if "int8-ours" in wanted}
    if "validate" in wanted:
        need_ours.add(("KL", "MAX_ABS"))
    ours = {}
    with tempfile.TemporaryDirectory(prefix="mnnlite-bench-corpus-") as tmp:
        for case in steps.QUANT_CASES:
            if case not in need_ours:
                continue
            feature, weight = case
            label = f"{feature}/{weight}"
            row = _record(rows, name, "quantize", label, lambda: steps.our_quantize(name, feature, weight, tmp, threads))
            if row["status"] == "ok":
                ours[case] = row["path"]
            if measure_mnn and "quantize" in wanted and case in steps.MNN_FILE_CASES:
                mnn = steps.mnn_quantize_measured(name, feature, weight, tmp)
                row.update(mnn_ok=mnn["ok"], mnn_seconds=mnn["seconds"], mnn_peak_rss_mb=mnn["peak_rss_mb"],
                           mnn_detail=mnn["detail"])
        for case in steps.QUANT_CASES:
            feature, weight = case
            label = f"{feature}/{weight}"
            if "official" in wanted:
                _record(rows, name, "official", label, lambda: _needs(ours, case, label) and
                        steps.step_official_on_ours(name, ours[case], feature, weight))
        for case in steps.MNN_FILE_CASES:
            feature, weight = case
            label = f"{feature}/{weight}"
            if "int8-mnn" in wanted:
                def mnn_file():
                    path = corpus.mnn_quantized(name, feature, weight)
                    if not isinstance(path, Path):
                        return {"detail": f"MNN crashed: {path}", "mnn_crash": True}
                    return steps.step_int8_agreement(name, path, f"mnn-{feature}-{weight}")
                _record(rows, name, "int8-mnn", label, mnn_file)
            if "int8-ours" in wanted:
                _record(rows, name, "int8-ours", label, lambda: _needs(ours, case, label) and
                        steps.step_int8_agreement(name, ours[case], f"ours-{feature}-{weight}"))
        if "validate" in wanted:
            case = ("KL", "MAX_ABS")
            _record(rows, name, "validate", "KL/MAX_ABS", lambda: _needs(ours, case, "KL/MAX_ABS") and
                    steps.step_validate(name, ours[case], *case))
    return rows


def _needs(ours, case, label) -> bool:
    import corpus_steps as steps

    if case not in ours:
        raise steps.StepFailed(f"our quantizer made no {label} file")
    return True


# ----------------------------------------------------------------------------------- the table (parent)
def _cell(row) -> str:
    if row["status"] != "ok":
        return row["status"]
    if row.get("mnn_crash"):
        return "MNN crash"
    cos = row.get("cosine")
    return f"ok {cos:.4f}" if isinstance(cos, float) else "ok"


def print_table(rows) -> None:
    print(f"{'model':20} {'step':9} {'case':12} {'result':12} {'MNN cos':>8} {'time s':>7}  detail")
    for r in rows:
        mnn = r.get("mnn_cosine")
        print(f"{r['model']:20} {r['step']:9} {r.get('case', ''):12} {_cell(r):12} "
              f"{(f'{mnn:.4f}' if isinstance(mnn, float) else ''):>8} {r.get('seconds', 0):7.1f}  "
              f"{r.get('detail', '')}")
    quant = [r for r in rows if r["step"] == "quantize" and "mnn_peak_rss_mb" in r]
    if quant:
        print()
        print("calibration: wall time and peak RSS, ours (python -m mnnlite quantize) vs quantized.out, same config")
        print(f"{'model':20} {'config':12} {'ours s':>7} {'MNN s':>7} {'ours MB':>8} {'MNN MB':>8} "
              f"{'RSS ratio':>9}  MNN")
        for r in quant:
            ours_mb = r.get("peak_rss_mb")
            ratio = f"{ours_mb / r['mnn_peak_rss_mb']:.2f}" if ours_mb and r["mnn_ok"] else "-"
            print(f"{r['model']:20} {r['case']:12} {r.get('seconds', 0):7.1f} {r['mnn_seconds']:7.1f} "
                  f"{(f'{ours_mb:.0f}' if ours_mb else '-'):>8} {r['mnn_peak_rss_mb']:8.0f} {ratio:>9}  "
                  f"{'ok' if r['mnn_ok'] else r['mnn_detail']}")
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    print()
    print("steps: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def _model_rows(name: str, args) -> list:
    """One model's rows from a child process; a crash of the child is a row of its own."""
    with tempfile.TemporaryDirectory(prefix="mnnlite-bench-") as tmp:
        out = Path(tmp) / "rows.json"
        cmd = [sys.executable, __file__, "--one", name, "--out", str(out), "--steps", *args.steps]
        if args.no_mnn_quant:
            cmd.append("--no-mnn-quant")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if out.exists():
            rows = json.loads(out.read_text())
        else:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            rows = [{"model": name, "step": "(all)", "case": "", "status": "CRASH",
                     "seconds": time.monotonic() - start,
                     "detail": f"child exited {proc.returncode}: {tail[0][:300]}"}]
    print(f"[{name}: {sum(r['status'] == 'ok' for r in rows)}/{len(rows)} steps ok, "
          f"{time.monotonic() - start:.0f}s]", file=sys.stderr, flush=True)
    return rows


def _in_order(done: dict, names) -> list:
    return [row for name in names if name in done for row in done[name]]


def main(argv=None) -> int:
    args = _parse(argv)
    if args.one:
        rows = run_one(args.one, set(args.steps), not args.no_mnn_quant, args.threads)
        Path(args.out).write_text(json.dumps(rows, indent=1, default=str))
        return 0
    import corpus
    from concurrent.futures import ThreadPoolExecutor, as_completed

    names = args.models or corpus.names()
    for name in names:                 # build (downloads, conversions) once, before the children share it
        corpus.build(name)
    done: dict = {}
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = {pool.submit(_model_rows, n, args): n for n in names}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            if args.json:              # written as models finish: a long run interrupted keeps its rows
                Path(args.json).write_text(json.dumps(_in_order(done, names), indent=1, default=str))
    rows = _in_order(done, names)
    print_table(rows)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
