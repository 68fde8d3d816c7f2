#!/usr/bin/env python3
"""``preset accurate`` against MNN's own flows on the zoo's image models, all files run by MNN's runtime.

    python tools/bench_accurate.py                           # cnn mobilenet ppocr_cls ppocr_det ppocr_rec
    python tools/bench_accurate.py --models cnn ppocr_det --json out.json
    python tools/bench_accurate.py --models corpus:ppocr_det corpus:minilm    # real-model corpus (tests/corpus.py)
    python tools/bench_accurate.py --models corpus:ppocr_rec --keys '{"target_cosine": 0.998}'   # a preset change

Per model, on every calibration image of the zoo folder (the same config on every side):

* held-out cosine to the float model (mean over the held-out images and outputs, both files run by the
  official runtime in a child process) of: MNN's ``quantized.out`` KL file, mnnlite's MNN-exact EMA file
  (``quantized.out``'s EMA crashes on these converted models), and the ``preset accurate`` file;
* the accurate file: share of conv MACs int8 (from ``<dst>.report.json``), and whether mnnlite's int8
  runtime gives the official runtime's outputs bit for bit (max |difference| on the held-out images);
* calibration wall time (child processes, Python start-up included) of ``preset accurate`` and of
  ``quantized.out`` KL on the same data, and their ratio.

Corpus models (``corpus:<name>``) use the corpus's own calibration folder and config and its held-out samples
(cosines: the official runtime's int8 outputs against its float outputs, mean over samples and outputs).

Needs the test extras (the ``mnn`` wheel) and the zoo fixtures (built on first use, tests/model_zoo.py).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "quant"), str(REPO / "tools")]

MODELS = ("cnn", "mobilenet", "ppocr_cls", "ppocr_det", "ppocr_rec")

_EXACT_CHILD = """
import sys, json
sys.path[:0] = sys.argv[1:4]
import numpy as np
from test_pipeline_oracle import image_feeds
from mnnlite.runtime import Interpreter
from oracle import run_oracle
worst = 0.0
ours = Interpreter(sys.argv[5], impl="mnn")
for feeds in image_feeds(sys.argv[4], "heldout"):
    ref, got = run_oracle(sys.argv[5], feeds), ours.run(feeds)
    worst = max(worst, max(float(np.max(np.abs(ref[k] - got[k]))) for k in ref))
print(json.dumps(worst))
"""


_CORPUS_CHILD = """
import sys, json
sys.path[:0] = sys.argv[1:4]
import numpy as np
import corpus, corpus_steps
from mnnlite.runtime import Interpreter
name, path, mode = sys.argv[4], sys.argv[5], sys.argv[6]
held = corpus.heldout_samples(name)
theirs = corpus_steps.oracle_outputs(path, held, fresh=True)
if mode == "exact":
    ours = Interpreter(path, impl="mnn")
    print(json.dumps(max(float(np.max(np.abs(np.asarray(t[k], np.float64).reshape(np.shape(g[k])) - g[k])))
                         for t, g in ((t, ours.run(f)) for t, f in zip(theirs, held)) for k in t)))
else:
    ref = corpus_steps.oracle_outputs(str(corpus.float_model(name)), held, fresh=False)
    cos = []
    for r, t in zip(ref, theirs):
        for k in r:
            a, b = np.asarray(r[k], np.float64).ravel(), np.asarray(t[k], np.float64).ravel()
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos.append(1.0 if na == nb == 0 else float(a @ b / (na * nb)) if na * nb > 0 else 0.0)
    print(json.dumps(float(np.mean(cos))))
"""
CORPUS_PREFIX = "corpus:"


def corpus_child(name: str, path: Path, mode: str) -> float | str:
    """``mode`` "exact": max |official runtime - mnnlite's runtime| over the held-out samples (``impl="mnn"``:
    the float ops between int8 ones round as MNN's, as the corpus tests measure); "cosine": the
    mean cosine of the official runtime's outputs of ``path`` to those of the float model."""
    proc = subprocess.run([sys.executable, "-c", _CORPUS_CHILD, *_paths(), name, str(path), mode],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode})"
    return float(proc.stdout.split()[-1])


def _paths() -> list[str]:
    return [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "quant")]


def bit_exact(name: str, path: Path) -> float | str:
    proc = subprocess.run([sys.executable, "-c", _EXACT_CHILD, *_paths(), name, str(path)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode})"
    return float(proc.stdout.split()[-1])


def bench_one(zoo, name: str, work: Path, keys: dict | None = None) -> dict:
    from bench_quantize import run_child
    from quant_acceptance import child_fidelity

    in_corpus = name.startswith(CORPUS_PREFIX)
    if in_corpus:
        import corpus

        name = name[len(CORPUS_PREFIX):]
        src = str(corpus.float_model(name))
        base = corpus.config(name, "KL", "MAX_ABS")

        def fidelity(_name, out):
            return corpus_child(name, out, "cosine")

        def exact(_name, out):
            return corpus_child(name, out, "exact")
    else:
        src = str(zoo.model_path(name, "float"))
        base = zoo.quant_config(name, "quant_kl")
        base.pop("used_image_num")
        fidelity, exact = child_fidelity, bit_exact
    row: dict = {"model": name}
    files = {}
    for tag, extra in (("mnn_kl", {"feature_quantize_method": "KL"}), ("ema", {"feature_quantize_method": "EMA"}),
                       ("accurate", {"preset": "accurate", **(keys or {})})):
        cfg = work / f"{name}.{tag}.json"
        cfg.write_text(json.dumps({**base, **extra}))
        out = work / f"{name}.{tag}.mnn"
        if tag == "mnn_kl":
            cmd = [sys.executable, "-c", "import sys, _tools; _tools.mnnquant(sys.argv[1:])", "quantized.out",
                   src, str(out), str(cfg)]
        else:
            cmd = [sys.executable, "-m", "mnnlite", "quantize", "--quiet", src, str(out), str(cfg)]
        wall, _, code = run_child(cmd, str(REPO))
        row[f"{tag}_seconds"] = wall
        files[tag] = out if code == 0 and out.exists() else None
        row[f"{tag}_cosine"] = fidelity(name, out) if files[tag] else f"quantizer failed (exit {code})"
    if files["accurate"]:
        rep = json.loads(Path(str(files["accurate"]) + ".report.json").read_text())
        row["int8_conv_macs"] = rep["int8_conv_mac_share"]
        row["float_convs"] = [o["name"] for o in rep["ops"] if o["type"].startswith("Conv") and not o["int8"]]
        row["max_abs_vs_mnn"] = exact(name, files["accurate"])
    row["time_ratio"] = row["accurate_seconds"] / row["mnn_kl_seconds"]
    return row


def _fmt(v) -> str:
    return f"{v:.5f}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS),
                   help=f"zoo models ({', '.join(MODELS)}) or {CORPUS_PREFIX}<name> (tests/corpus.py)")
    p.add_argument("--json", metavar="OUT", help="write the rows as JSON")
    p.add_argument("--keys", metavar="JSON", help='config keys on top of the preset, to measure a change of it '
                   'before adopting it, e.g. \'{"target_cosine": 0.998}\'')
    args = p.parse_args(argv)
    try:
        keys = json.loads(args.keys) if args.keys else {}
    except ValueError as exc:
        p.error(f"--keys: not JSON: {exc}")
    if not isinstance(keys, dict):
        p.error("--keys: must be a JSON object")
    import model_zoo as zoo

    unknown = [m for m in args.models if m not in MODELS and not m.startswith(CORPUS_PREFIX)]
    if unknown:
        p.error(f"unknown model {unknown[0]!r}: one of {', '.join(MODELS)} or {CORPUS_PREFIX}<name>")

    rows = []
    print("model                  | MNN KL   | EMA      | accurate | int8 conv MACs | ours vs MNN int8 | time accurate / quantized.out KL")
    with tempfile.TemporaryDirectory(prefix="mnnlite-bench-accurate-") as tmp:
        for name in args.models:
            r = bench_one(zoo, name, Path(tmp), keys)
            rows.append(r)
            print(f"{name:22s} | {_fmt(r['mnn_kl_cosine'])} | {_fmt(r['ema_cosine'])} | {_fmt(r['accurate_cosine'])} | "
                  f"{100 * r.get('int8_conv_macs', 0):6.1f} % | {_fmt(r.get('max_abs_vs_mnn'))} | "
                  f"{r['accurate_seconds']:.2f} s / {r['mnn_kl_seconds']:.2f} s = {r['time_ratio']:.2f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
