#!/usr/bin/env python3
"""The quantizer's acceptance table: mnnlite against MNN 3.6.1's ``quantized.out`` on the zoo's image models.

    python tools/quant_acceptance.py                                  # every model x feature x weight method
    python tools/quant_acceptance.py --models cnn --features KL EMA --weights MAX_ABS --json out.json

Per model x feature method x weight method, on every calibration image of the zoo folder (the config of the
pipeline tests, ``calib_config``, identical on both sides):

(a) ``mnnlite.quantize`` on the float model, and the official runtime (in a child process) runs the file on a
    held-out image with finite outputs;
(b) the oracle quantizer on the same model and config; per-tensor scales of the two ``<dst>.json`` dumps,
    matched within 1e-5 relative (KL, EMA) or 1e-3 (ADMM) of the tensors either side gives a scale;
(c) mean cosine to the float model on the held-out images, both files in the official runtime (each in a
    child process: a runtime crash is reported, not fatal), and whether ours is no worse.

Where the pipeline tests compare on a copy of the model, so does this tool, and the row says so:
EMA on a copy with fixed input dims (``quantized.out``'s EMA crashes on dynamic dims) and winogradOpt off;
ADMM on an NC4HW4-input copy (its ADMM crashes on NCHW inputs), fidelity on the copy carried back to NCHW.
MNN's EMA dump holds only zero scales and MNN renames the tensors, so EMA compares each int8 conv's
scaleIn/scaleOut and zero points in op order (test_pipeline_ema.py).  KL compares every tensor, the model
inputs and scale-0 tensors included (the defaults follow MNN; README deviations 2 and 3 are opt-in).

Exit status 1 when our quantizer or check (a) fails, else 0 (oracle crashes and mismatches are reported).
Needs the test extras (the ``mnn`` wheel, pytest) and the zoo fixtures (built on first use).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path[:0] = [str(REPO), str(TESTS), str(TESTS / "quant")]

MODELS = ("cnn", "mobilenet", "ppocr_cls", "ppocr_det", "ppocr_rec")
FEATURES = ("KL", "ADMM", "EMA")
WEIGHTS = ("MAX_ABS", "ADMM")
TOLERANCE = {"KL": 1e-5, "ADMM": 1e-3, "EMA": 1e-5}
SHOW_MISMATCHES = 4

# fidelity() in a fresh process: MNN's int8 kernels may read memory they never wrote (tests/int8),
# so only fresh-process results are reproducible, and a segfault must not take the table down with it
_FIDELITY_CHILD = """
import sys
sys.path[:0] = sys.argv[1:4]
from test_pipeline_oracle import fidelity
print(repr(fidelity(sys.argv[4], sys.argv[5])))
"""


def read_dump(path) -> dict[int, float]:
    """tensor index -> scale of a ``<dst>.json`` dump."""
    from oracle.tools import dump_scales, scale_dump

    return dump_scales(scale_dump(path))


def child_fidelity(name: str, path) -> float | str:
    code = [sys.executable, "-c", _FIDELITY_CHILD, str(REPO), str(TESTS), str(TESTS / "quant"), name, str(path)]
    proc = subprocess.run(code, capture_output=True, text=True, errors="replace", timeout=1800)
    if proc.returncode != 0:
        return _failure("runtime", proc.returncode)
    return float(proc.stdout.split()[-1])


def _failure(what: str, code: int) -> str:
    return f"{what} crashed (signal {-code})" if code < 0 else f"{what} failed (exit {code})"


def check_runs(name: str, path) -> str | None:
    """(a): None when the official runtime runs ``path`` on a held-out image with finite outputs."""
    import numpy as np
    from oracle import run_oracle_isolated
    from test_pipeline_oracle import image_feeds

    try:
        out = run_oracle_isolated(path, image_feeds(name, "heldout")[0])
    except Exception as e:                    # OracleToolError: the child crashed or MNN returned an error
        return f"official runtime failed: {str(e).splitlines()[0][:200]}"
    bad = [k for k, v in out.items() if not np.isfinite(v).all()]
    return f"non-finite outputs: {', '.join(bad)}" if bad else None


def compare_dumps(graph, ours_path, theirs_path, tol: float, exclude=()) -> dict:
    ours, theirs = read_dump(ours_path), read_dump(theirs_path)
    entries = []
    for t in sorted(set(ours) & set(theirs)):
        if t in exclude or (ours[t] == 0 and theirs[t] == 0):     # neither side quantizes it
            continue
        entries.append((graph.tensors[t], ours[t], theirs[t], None))
    return _tally(entries, tol)


def compare_ema_convs(ours_path, theirs_path, tol: float) -> dict:
    from test_pipeline_oracle import conv_params

    ours, theirs = conv_params(ours_path), conv_params(theirs_path)
    if len(ours) != len(theirs):
        return {"error": f"{len(ours)} int8 convs in ours, {len(theirs)} in the oracle's"}
    entries = []
    for op_name, a, b in zip(_int8_conv_names(ours_path), ours, theirs):
        entries.append((f"{op_name}:in", a[0], b[0], a[1] == b[1]))
        entries.append((f"{op_name}:out", a[2], b[2], a[3] == b[3]))
    return _tally(entries, tol)


def _int8_conv_names(path) -> list[str]:
    import mnnlite
    from mnnlite.format.tables import OpType

    # the same ops, in the same order, as conv_params lists
    return [op.name for op in mnnlite.load_model(path).graph.ops
            if op.type in (OpType.Convolution, OpType.ConvolutionDepthwise) and op.main.quanParameter is not None]


def _tally(entries, tol: float) -> dict:
    from test_pipeline_oracle import rel

    worst, off, nonfinite, one_sided = 0.0, [], 0, 0
    for label, a, b, zero_ok in entries:
        nonfinite += not math.isfinite(b)
        # a scale on one side only, or a non-finite one, has no meaningful relative difference
        if not (math.isfinite(a) and math.isfinite(b)) or (a == 0) != (b == 0):
            one_sided += math.isfinite(b)
            off.append((math.inf, label))
            continue
        r = rel(a, b)
        worst = max(worst, r)
        if r > tol or zero_ok is False:
            off.append((r, label))
    off.sort(key=lambda x: (-x[0], x[1]))
    return {"compared": len(entries), "matched": len(entries) - len(off), "worst_rel": worst,
            "oracle_nonfinite": nonfinite, "one_side_only": one_sided, "mismatches": [label for _, label in off]}


def evaluate(name: str, features: str, weights: str, oracle_timeout: float = 900) -> dict:
    from test_pipeline_oracle import (OracleQuantError, c4_input_model, calib_config, fixed_shape_model, no_worse,
                                      oracle_quant, our_quant, transplant_c4, zoo)

    import mnnlite

    extra = {"weight_quantize_method": weights}
    if features == "EMA":
        extra["winogradOpt"] = False          # we always write direct int8 convs (README deviation 6)
    cfg = calib_config(name, features, **extra)
    row = {"model": name, "features": features, "weights": weights, "tolerance": TOLERANCE[features],
           "compared_on": "float model", "notes": []}

    try:
        ours_native, report = our_quant(name, cfg)
    except Exception as e:
        row.update(ours_error=f"{type(e).__name__}: {e}", a_passed=False)
        return row
    row["ours_quantized_ops"] = len(report.quantized_ops)
    a_error = check_runs(name, ours_native)
    row["a_passed"], row["a_error"] = a_error is None, a_error

    src = None
    if features == "EMA":
        src, row["compared_on"] = fixed_shape_model(name), "fixed-shape copy"
    elif features == "ADMM":
        src, row["compared_on"] = c4_input_model(name), "NC4HW4-input copy"
    try:
        ours = our_quant(name, cfg, src=src)[0] if src is not None else ours_native
    except Exception as e:
        row["ours_error"] = f"on the {row['compared_on']}: {type(e).__name__}: {e}"
        return row

    try:
        theirs = oracle_quant(name, cfg, src=src, timeout=oracle_timeout)
        row["oracle"] = "ok"
    except OracleQuantError as e:
        row["oracle"] = _failure("oracle", e.returncode)
        return row
    except subprocess.TimeoutExpired:
        row["oracle"] = f"oracle timed out ({oracle_timeout:g} s)"
        return row

    tol = TOLERANCE[features]
    if features == "EMA":
        row.update(compare_ema_convs(ours, theirs, tol))
        row["notes"].append("int8 conv scaleIn/scaleOut + zero points (MNN's EMA dump is all zero)")
    else:
        graph = mnnlite.load_model(src or zoo().model_path(name, "float")).graph
        row.update(compare_dumps(graph, ours, theirs, tol, set()))
    if row.get("one_side_only"):
        row["notes"].append(f"{row['one_side_only']} scaled on one side only (worst rel excludes them)")
    if row.get("oracle_nonfinite"):
        row["notes"].append(f"{row['oracle_nonfinite']} oracle scales non-finite"
                            + (" (README deviation 9)" if features == "EMA" else ""))
    if features == "ADMM":
        row["notes"].append("not bit-comparable: MNN's float32 sums, no propagation (README deviation 5)")
    if features == "EMA" and weights != "MAX_ABS":
        row["notes"].append("MNN's EMA ignores the weight method, ours does not (README deviation 6)")

    if features == "ADMM":      # MNN's int8 outputs on an NC4HW4 input vary run to run: measure the NCHW form
        ours, theirs = transplant_c4(name, ours), transplant_c4(name, theirs)
    row["ours_cos"], row["oracle_cos"] = child_fidelity(name, ours), child_fidelity(name, theirs)
    if isinstance(row["ours_cos"], float) and isinstance(row["oracle_cos"], float):
        row["no_worse"] = no_worse(row["ours_cos"], row["oracle_cos"])
    return row


HEADER = (f"{'model':10s} {'feat':4s} {'weights':7s} {'(a)':4s} {'compared on':17s} {'(b) matched':>11s} "
          f"{'worst rel':>9s} {'cos ours':>8s} {'cos MNN':>8s} {'(c)':5s} notes")


def format_row(row: dict) -> str:
    def cos(v):
        return f"{v:8.5f}" if isinstance(v, float) else f"{'-':>8s}"

    a = "FAIL" if not row.get("a_passed") else "ok"
    head = f"{row['model']:10s} {row['features']:4s} {row['weights']:7s} {a:4s} {row['compared_on']:17s} "
    notes = list(row.get("notes", []))
    for key in ("ours_error", "a_error", "error"):
        if row.get(key):
            notes.insert(0, row[key])
    if "ours_error" in row or row.get("oracle", "ok") != "ok" or "error" in row:
        if row.get("oracle", "ok") != "ok":
            notes.insert(0, row["oracle"])
        return head + f"{'-':>11s} {'-':>9s} {'-':>8s} {'-':>8s} {'-':5s} " + "; ".join(notes)
    matched = f"{row['matched']}/{row['compared']}"
    if row["mismatches"]:
        shown = ", ".join(row["mismatches"][:SHOW_MISMATCHES])
        more = len(row["mismatches"]) - SHOW_MISMATCHES
        notes.insert(0, f"off: {shown}" + (f" +{more}" if more > 0 else ""))
    for key in ("ours_cos", "oracle_cos"):
        if isinstance(row[key], str):
            notes.append(f"{'ours' if key == 'ours_cos' else 'oracle file'}: {row[key]}")
    c = {True: "yes", False: "NO"}.get(row.get("no_worse"), "-")
    return head + (f"{matched:>11s} {row['worst_rel']:9.2e} {cos(row['ours_cos'])} {cos(row['oracle_cos'])} "
                   f"{c:5s} " + "; ".join(notes))


def summary(rows: list[dict]) -> str:
    ours_ok = [r for r in rows if "ours_error" not in r]
    a_ok = [r for r in ours_ok if r.get("a_passed")]
    ran = [r for r in ours_ok if r.get("oracle") == "ok" and "matched" in r]
    all_matched = [r for r in ran if r["matched"] == r["compared"]]
    c_rows = [r for r in ran if "no_worse" in r]
    crashed = [r for r in ours_ok if r.get("oracle", "ok") != "ok"]
    return (f"{len(rows)} combinations: our quantizer ok {len(ours_ok)}/{len(rows)}, (a) runs in MNN "
            f"{len(a_ok)}/{len(rows)}; (b) oracle ran {len(ran)}/{len(rows)} "
            f"({len(crashed)} crashed, failed or timed out), every scale matched in {len(all_matched)}/{len(ran)}; "
            f"(c) ours no worse "
            f"{sum(r['no_worse'] for r in c_rows)}/{len(c_rows)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--features", nargs="+", default=list(FEATURES), choices=FEATURES)
    ap.add_argument("--weights", nargs="+", default=list(WEIGHTS), choices=WEIGHTS)
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--oracle-timeout", type=float, default=900,
                    help="seconds per quantized.out run (its ADMM takes minutes on the PP-OCR models)")
    args = ap.parse_args(argv)

    import MNN  # noqa: F401  (prints the CPU's features on import: above the table, not inside it)

    rows = []
    print(HEADER, flush=True)
    for name in args.models:
        for features in args.features:
            for weights in args.weights:
                row = evaluate(name, features, weights, args.oracle_timeout)
                rows.append(row)
                print(format_row(row), flush=True)
    print(summary(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    failed = [r for r in rows if "ours_error" in r or not r.get("a_passed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
