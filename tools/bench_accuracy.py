#!/usr/bin/env python3
"""Accuracy of int8 files side by side: mnnlite (MNN-exact KL / EMA and with corrections) against
ONNX Runtime's ``quantize_static`` and NNCF, one table, one run (issue 11, acceptance).

    python tools/bench_accuracy.py                                 # every zoo (and corpus) model, every method
    python tools/bench_accuracy.py --models ppocr_cls cnn --methods mnn_kl ort_minmax_pc --json out.json

Per model and method, on held-out samples (never the calibration ones):

* **cos**: mean cosine of the int8 outputs to the float outputs, every output of every sample; each tool's
  file runs on its own runtime against its own float model (mnnlite's files in MNN's *official* runtime,
  the peers' QDQ files in onnxruntime);
* **task**: the task metric against the float model's decisions where the model has one: top-1 agreement
  (classifiers), exact decoded text (PP-OCR rec: CTC greedy decoding with the dictionary shipped inside the
  model, ``character`` metadata of the rapidocr wheel's ONNX), mask IoU of the probability map at 0.3
  (PP-OCR det);
* **int8**: the share of conv / matmul multiply-accumulates that run in int8 (MNN: the ops the official
  runtime's int8 plan runs in int8, as replayed by ``mnnlite.int8``; QDQ: Conv/MatMul/Gemm whose data and
  weight inputs both come out of a DequantizeLinear).

Methods: ``float``; ``mnn_kl`` / ``mnn_ema`` (mnnlite's MNN-exact quantizer); ``kl_w`` / ``ema_w`` (the same
plus ``bias_correction``, ``cross_layer_equalization``, ``weight_range_method: mse``); ``accurate``
(``"preset": "accurate"``, when this mnnlite has the preset); ``ort_{minmax,entropy,percentile}_{pt,pc}``
(onnxruntime ``quantize_static``, QDQ, per-tensor / per-channel weights); ``nncf`` (``nncf.quantize``
defaults on the ONNX model).  Every cell runs in its own child process with a time limit: a method that
fails, crashes or times out on a model is a cell saying why, the table goes on.

NNCF telemetry is switched off before nncf is imported (``NNCF_CI``: nncf replaces its telemetry object by
a stub; ``CI=true``: the openvino_telemetry backend declines consent), and the child checks the stub is in
place before it quantizes.  (``opt_in_out --opt_out`` is not used: it sends an opt-out event.)

Needs the test extras (``mnn`` oracle, onnx) and the bench extras (``pip install -e ".[bench]"``:
onnxruntime, nncf); models from the fixture zoo (built on first use) and, when ``tests/corpus.py`` is
present, the real-model corpus.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# before anything can import nncf (children inherit the environment)
os.environ["NNCF_CI"] = "1"
os.environ["CI"] = "true"

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
sys.path[:0] = [str(REPO), str(TESTS)]

ZOO_MODELS = ("cnn", "mobilenet", "ppocr_cls", "ppocr_det", "ppocr_rec", "transformer", "lstm")
MNN_METHODS = ("mnn_kl", "mnn_ema", "kl_w", "ema_w", "accurate")
ORT_METHODS = tuple(f"ort_{c}_{g}" for c in ("minmax", "entropy", "percentile") for g in ("pt", "pc"))
METHODS = ("float",) + MNN_METHODS + ORT_METHODS + ("nncf",)
WEIGHT_KEYS = {"bias_correction": True, "cross_layer_equalization": True, "weight_range_method": "mse"}
SEQUENCE_SAMPLES = (8, 6)          # calibration / held-out samples of the zoo's non-image models
MASK_THRESHOLD = 0.3               # PP-OCR det's binarisation threshold (its DB post-processing default)


# ------------------------------------------------------------------------------------------------ cases

@dataclass
class Case:
    """One model: its source ONNX, float .mnn, quantizer config, samples and task."""

    name: str
    onnx: Path
    float_mnn: Path
    config: dict                       # mnnlite / quantized.out config (calibration data included)
    calib: list                        # [{input: array}] the same samples the config points at
    held: list                         # held-out feeds
    task: str | None = None            # "top1", "ctc", "mask_iou", "f1" or None
    extra: dict = field(default_factory=dict)


def _zoo_case(name: str, work: Path) -> Case:
    import model_zoo as z

    onnx_file, float_mnn = z.onnx_path(name), z.model_path(name, "float")
    try:
        spec = z.image_spec(name)
    except ValueError:
        spec = None
    if spec is not None:
        config = z.quant_config(name, "quant_kl")
        files = sorted(Path(config["path"]).glob("*.png"))[:config["used_image_num"]]
        (inp,) = z.input_shapes(name)
        calib = [{inp: z.load_image(name, f)} for f in files]
        held = z.image_feeds(name)
        task = {"ppocr_rec": "ctc", "ppocr_det": "mask_iou"}.get(name, "top1")
        return Case(name, onnx_file, float_mnn, config, calib, held, task)
    # sequence models: random valid feeds, written as .npz samples for the quantizer's sequence mode
    folder = work / "samples" / name
    folder.mkdir(parents=True, exist_ok=True)
    calib = [z.random_feeds(name, 0, seed=100 + i) for i in range(SEQUENCE_SAMPLES[0])]
    held = [z.random_feeds(name, 0, seed=200 + i) for i in range(SEQUENCE_SAMPLES[1])]
    for i, feeds in enumerate(calib):
        np.savez(folder / f"sample_{i:02d}.npz", **feeds)
    config = {"input_type": "sequence", "path": str(folder), "used_sample_num": len(calib)}
    return Case(name, onnx_file, float_mnn, config, calib, held, None)


def _corpus_cases(work: Path) -> dict:
    """The real-model corpus (branch ``corpus``): ``tests/corpus.py`` when present."""
    try:
        import corpus
    except ImportError:
        return {}
    cases = {}
    for entry in corpus.bench_cases(work) if hasattr(corpus, "bench_cases") else []:
        cases[entry.name] = entry if isinstance(entry, Case) else Case(**entry)
    return cases


def model_names() -> list[str]:
    try:
        import corpus
        names = list(corpus.model_names()) if hasattr(corpus, "model_names") else []
    except ImportError:
        names = []
    return list(ZOO_MODELS) + [n for n in names if n not in ZOO_MODELS]


def load_case(name: str, work: Path) -> Case:
    if name in ZOO_MODELS:
        return _zoo_case(name, work)
    cases = _corpus_cases(work)
    if name not in cases:
        raise SystemExit(f"bench_accuracy: unknown model {name!r}; known: {', '.join(model_names())}")
    return cases[name]


# ---------------------------------------------------------------------------------------------- metrics

def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def ctc_greedy(probs: np.ndarray, characters: list[str]) -> str:
    """PP-OCR's CTC decoding: argmax per step, repeats merged, blank (class 0) dropped."""
    best = np.asarray(probs).reshape(-1, np.asarray(probs).shape[-1]).argmax(axis=1)
    keep = np.ones(best.size, bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(characters[i] for i in best[keep] if 0 < i < len(characters))


def ctc_characters(onnx_file: Path) -> list[str]:
    """blank + the dictionary in the model's ``character`` metadata + space (rapidocr's use_space_char)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    if "character" not in meta:
        raise ValueError(f"{onnx_file}: no 'character' metadata (the CTC dictionary)")
    return ["blank"] + meta["character"].splitlines() + [" "]


def task_metric(task: str | None, refs: list, outs: list, extra: dict) -> float | None:
    """The int8 outputs' task score against the float outputs' decisions, in % (None: no task)."""
    if task is None:
        return None
    scores = []
    for ref, out in zip(refs, outs):
        r, o = _first(ref), _first(out)
        if task == "top1":
            scores.append(float(np.argmax(r.reshape(-1)) == np.argmax(o.reshape(-1))))
        elif task == "ctc":
            chars = extra["characters"]
            scores.append(float(ctc_greedy(r, chars) == ctc_greedy(o, chars)))
        elif task == "mask_iou":
            a, b = r > MASK_THRESHOLD, o > MASK_THRESHOLD
            union = np.logical_or(a, b).sum()
            scores.append(1.0 if union == 0 else float(np.logical_and(a, b).sum() / union))
        elif task == "f1":
            scores.append(extra["f1"](r, o))
        else:
            raise ValueError(f"unknown task {task!r}")
    return 100.0 * float(np.mean(scores))


def _first(outputs: dict) -> np.ndarray:
    """The output a task reads: the first by name (the zoo's task models have one output)."""
    return np.asarray(outputs[sorted(outputs)[0]])


def mean_cosine(refs: list, outs: list) -> float:
    values = []
    for ref, out in zip(refs, outs):
        for key in ref:
            values.append(cosine(ref[key], out[key]) if key in out else float("nan"))
    return float(np.mean(values))


# ------------------------------------------------------------------------------------- MNN side (ours)

def _oracle_outputs(path, feeds_list) -> list:
    import model_zoo as z

    return [z.run_oracle(path, feeds) for feeds in feeds_list]


def _mnn_macs(float_mnn: Path, feeds: dict) -> dict:
    """op name -> multiply-accumulates of every conv / matmul of the float model on ``feeds``."""
    import mnnlite
    from mnnlite.format.tables import OpType
    from mnnlite.ops.weights import conv_weights
    from mnnlite.runtime import Interpreter

    model = mnnlite.load_model(float_mnn)
    shapes = {}
    Interpreter(model, precision="float").run(feeds, observe=lambda i, _n, a: shapes.__setitem__(i, np.shape(a)))
    macs = {}
    for op in model.graph.ops:
        outs = [int(t) for t in (op.outputIndexes if op.outputIndexes is not None else [])]
        ins = [int(t) for t in (op.inputIndexes if op.inputIndexes is not None else [])]
        if not outs or outs[0] not in shapes:
            continue
        out_size = int(np.prod(shapes[outs[0]]))
        if op.type in (OpType.Convolution, OpType.ConvolutionDepthwise) and len(ins) == 1:
            weights = conv_weights(op)[0]
            macs[op.name] = out_size * (weights.size // max(int(op.main.common.outputCount), 1))
        elif op.type == OpType.Deconvolution and len(ins) == 1 and ins[0] in shapes:
            weights = conv_weights(op)[0]               # [C, O/g, KH, KW]: each input feeds O/g * KH * KW
            macs[op.name] = int(np.prod(shapes[ins[0]])) * int(np.prod(weights.shape[1:]))
        elif op.type in (OpType.MatMul, OpType.BatchMatMul) and ins and ins[0] in shapes:
            a = shapes[ins[0]]
            transpose = bool(getattr(op.main, "transposeA", False) or getattr(op.main, "adjX", False))
            macs[op.name] = out_size * int(a[-2] if transpose else a[-1]) if len(a) >= 2 else out_size
        elif op.type == OpType.InnerProduct and ins and ins[0] in shapes:
            macs[op.name] = out_size * int(np.prod(shapes[ins[0]][1:]))
    return macs


def mnn_int8_share(case: Case, quant_path: Path) -> float:
    from mnnlite.int8 import int8_plan
    from mnnlite.runtime import Interpreter

    feeds = case.held[0]
    macs = _mnn_macs(case.float_mnn, feeds)
    interp = Interpreter(str(quant_path))
    int8 = set(int8_plan(interp, feeds).int8_ops())
    total = sum(macs.values())
    return 100.0 * sum(v for k, v in macs.items() if k in int8) / total if total else float("nan")


def run_mnn_method(case: Case, method: str, work: Path) -> dict:
    from mnnlite.quant.config import load_config
    from mnnlite.quant.quantize import quantize

    refs = _oracle_outputs(case.float_mnn, case.held)
    if method == "float":
        return {"cos": 1.0, "task": task_metric(case.task, refs, refs, case.extra), "int8": 0.0}
    config = dict(case.config)
    config["feature_quantize_method"] = "EMA" if method in ("mnn_ema", "ema_w") else "KL"
    if method in ("kl_w", "ema_w"):
        config.update(WEIGHT_KEYS)
    if method == "accurate":
        try:
            load_config({**config, "preset": "accurate"})
        except Exception as exc:   # this mnnlite has no preset yet
            raise RuntimeError(f"no preset: {str(exc).splitlines()[0][:80]}") from None
        config["preset"] = "accurate"
    dst = work / f"{case.name}.{method}.mnn"
    start = time.perf_counter()
    quantize(case.float_mnn, dst, config)
    seconds = time.perf_counter() - start
    outs = _oracle_outputs(dst, case.held)
    return {"cos": mean_cosine(refs, outs), "task": task_metric(case.task, refs, outs, case.extra),
            "int8": mnn_int8_share(case, dst), "seconds": seconds}


# -------------------------------------------------------------------------------------------- peers

def _ort_session(model_or_path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    source = model_or_path if isinstance(model_or_path, (str, Path)) else model_or_path.SerializeToString()
    return ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                providers=["CPUExecutionProvider"])


def _onnx_feeds(session, feeds: dict) -> dict:
    out = {}
    for inp in session.get_inputs():
        value = np.asarray(feeds[inp.name])
        out[inp.name] = value.astype(np.int64) if "int64" in inp.type else (
            value.astype(np.int32) if "int32" in inp.type else value.astype(np.float32))
    return out


def _ort_outputs(model_or_path, feeds_list) -> list:
    session = _ort_session(model_or_path)
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(names, _onnx_feeds(session, f)))) for f in feeds_list]


def _onnx_macs(onnx_file: Path, feeds: dict) -> dict:
    """node key -> multiply-accumulates of every Conv / ConvTranspose / MatMul / Gemm (shapes from one run)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    inits = {i.name: numpy_helper.to_array(i).shape for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")]
    wanted = {t for n in nodes for t in (n.input[0], n.output[0]) if t not in inits}
    existing = {o.name for o in model.graph.output}
    for t in sorted(wanted - existing):
        model.graph.output.append(onnx.ValueInfoProto(name=t))
    session = _ort_session(model)
    names = [o.name for o in session.get_outputs()]
    shapes = {k: np.shape(v) for k, v in zip(names, session.run(names, _onnx_feeds(session, feeds)))}
    shapes.update(inits)
    macs = {}
    for n in nodes:
        out, a = shapes.get(n.output[0]), shapes.get(n.input[0])
        w = shapes.get(n.input[1]) if len(n.input) > 1 else None
        if out is None:
            continue
        if n.op_type == "Conv" and w is not None:
            per = int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose" and w is not None and a is not None:
            macs[_node_key(n)] = int(np.prod(a)) * int(np.prod(w[1:]))   # each input feeds O/g * KH * KW
            continue
        elif a is not None and len(a) >= 1:
            trans_a = any(at.name == "transA" and at.i for at in n.attribute)
            per = int(a[-2] if trans_a and len(a) >= 2 else a[-1])
        else:
            continue
        macs[_node_key(n)] = int(np.prod(out)) * per
    return macs


def _node_key(node) -> str:
    return node.name or node.output[0]


def qdq_int8_share(float_onnx: Path, quant_model, feeds: dict) -> float:
    macs = _onnx_macs(float_onnx, feeds)
    producers = {o: n for n in quant_model.graph.node for o in n.output}
    int8 = 0
    seen = set()
    for n in quant_model.graph.node:
        key = _node_key(n)
        if key not in macs or key in seen:
            continue
        seen.add(key)
        sources = [producers.get(t) for t in n.input[:2]]
        if len(sources) == 2 and all(s is not None and s.op_type == "DequantizeLinear" for s in sources):
            int8 += macs[key]
    total = sum(macs.values())
    return 100.0 * int8 / total if total else float("nan")


def run_ort(case: Case, method: str, work: Path) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self, items):
            self.items = iter(items)

        def get_next(self):
            return next(self.items, None)

    _, calibrator, granularity = method.split("_")
    session = _ort_session(case.onnx)
    reader = Reader([_onnx_feeds(session, f) for f in case.calib])
    dst = work / f"{case.name}.{method}.onnx"
    start = time.perf_counter()
    quantize_static(str(case.onnx), str(dst), reader, quant_format=QuantFormat.QDQ,
                    per_channel=granularity == "pc",
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[calibrator])
    seconds = time.perf_counter() - start
    return _peer_result(case, onnx.load(str(dst)), dst, seconds)


def run_nncf(case: Case, method: str, work: Path) -> dict:
    import onnx
    from unittest.mock import MagicMock

    import nncf
    from nncf.telemetry import wrapper

    if not isinstance(wrapper.telemetry, MagicMock):
        raise RuntimeError("NNCF telemetry is not the stub: refusing to run nncf")
    model = onnx.load(str(case.onnx))
    session = _ort_session(case.onnx)
    items = [_onnx_feeds(session, f) for f in case.calib]
    start = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    seconds = time.perf_counter() - start
    dst = work / f"{case.name}.nncf.onnx"
    onnx.save(quantized, str(dst))
    return _peer_result(case, quantized, dst, seconds)


def _peer_result(case: Case, quant_model, dst: Path, seconds: float) -> dict:
    refs, outs = _ort_outputs(case.onnx, case.held), _ort_outputs(dst, case.held)
    return {"cos": mean_cosine(refs, outs), "task": task_metric(case.task, refs, outs, case.extra),
            "int8": qdq_int8_share(case.onnx, quant_model, case.held[0]), "seconds": seconds}


# ---------------------------------------------------------------------------------------- one cell

def run_cell(name: str, method: str, work: Path) -> dict:
    case = load_case(name, work)
    if case.task == "ctc":
        case.extra["characters"] = ctc_characters(case.onnx)
    if method in ("float",) + MNN_METHODS:
        return run_mnn_method(case, method, work)
    if method in ORT_METHODS:
        return run_ort(case, method, work)
    if method == "nncf":
        return run_nncf(case, method, work)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def child(name: str, method: str, work: Path, timeout: float) -> dict:
    """``run_cell`` in a fresh process: a crash, an exception or a timeout becomes the cell's reason."""
    out = work / f"{name}.{method}.result.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", name, method, str(out), "--work", str(work)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else ""
        code = proc.returncode
        head = f"crashed (signal {-code})" if code < 0 else f"failed (exit {code})"
        return {"error": f"{head}: {why[:160]}" if why else head}
    return json.loads(out.read_text())


# ----------------------------------------------------------------------------------------- the table

def format_cell(result: dict) -> str:
    if "error" in result:
        return "n/a"
    parts = [f"{result['cos']:.4f}" if np.isfinite(result["cos"]) else "nan"]
    if result.get("task") is not None:
        parts.append(f"{result['task']:.0f}")
    parts.append(f"{result['int8']:.0f}%")
    return " / ".join(parts)


def render(rows: dict, methods: list[str], tasks: dict) -> str:
    """Markdown table: one row per model, one column per method; cells 'cos / task / int8 MACs'."""
    header = "| model (task) | " + " | ".join(methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 1)]
    notes = []
    for name, cells in rows.items():
        row = [f"{name} ({tasks.get(name) or '-'})"]
        for m in methods:
            cell = cells.get(m, {"error": "not run"})
            text = format_cell(cell)
            if "error" in cell:
                notes.append(f"{name} / {m}: {cell['error']}")
            row.append(text)
        lines.append("| " + " | ".join(row) + " |")
    out = "\n".join(lines)
    if notes:
        out += "\n\nCells marked n/a:\n" + "\n".join(f"- {n}" for n in notes)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=None, help="models (default: the zoo and the corpus)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", help="write every cell (figures, times, reasons) to this JSON file")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per cell (default 1800)")
    parser.add_argument("--work", help="folder for the files made (default: a temporary folder)")
    parser.add_argument("--cell", nargs=3, metavar=("MODEL", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        name, method, out = args.cell
        result = run_cell(name, method, Path(args.work))
        Path(out).write_text(json.dumps(result))
        return 0
    models = args.models or model_names()
    with tempfile.TemporaryDirectory(prefix="mnnlite-bench-accuracy-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows, tasks = {}, {}
        for name in models:
            tasks[name] = load_case(name, work).task
            rows[name] = {}
            for method in args.methods:
                rows[name][method] = result = child(name, method, work, args.timeout)
                print(f"{name:12s} {method:18s} {format_cell(result):24s} {result.get('error', '')}",
                      file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"rows": rows, "tasks": tasks}, indent=1))
        print(render(rows, args.methods, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
