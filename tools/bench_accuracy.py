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
from dataclasses import dataclass
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
    """One model: its source ONNX (None: no ONNX source), float .mnn, quantizer config, samples, task."""

    name: str
    onnx: Path | None
    float_mnn: Path
    config: dict                       # mnnlite / quantized.out config (calibration data included)
    calib: list                        # [{input: array}] the same samples the config points at
    held: list                         # held-out feeds, in the model's declared layout
    task: tuple | None = None          # (kind, parameters): see TASKS
    source: str = "zoo"
    why_no_onnx: str = ""


def _zoo_case(name: str, work: Path) -> Case:
    import model_zoo as z

    onnx_file, float_mnn = z.onnx_path(name), z.model_path(name, "float")
    try:
        spec = z.image_spec(name)
    except ValueError:
        spec = None
    task = TASKS.get(name, ("top1",) if spec is not None else None)
    if spec is not None:
        config = z.quant_config(name, "quant_kl")
        files = sorted(Path(config["path"]).glob("*.png"))[:config["used_image_num"]]
        (inp,) = z.input_shapes(name)
        calib = [{inp: z.load_image(name, f)} for f in files]
        return Case(name, onnx_file, float_mnn, config, calib, z.image_feeds(name), task)
    # sequence models: random valid feeds, written as .npz samples for the quantizer's sequence mode
    folder = work / "samples" / name
    folder.mkdir(parents=True, exist_ok=True)
    calib = [z.random_feeds(name, 0, seed=100 + i) for i in range(SEQUENCE_SAMPLES[0])]
    held = [z.random_feeds(name, 0, seed=200 + i) for i in range(SEQUENCE_SAMPLES[1])]
    for i, feeds in enumerate(calib):
        np.savez(folder / f"sample_{i:02d}.npz", **feeds)
    config = {"input_type": "sequence", "path": str(folder), "used_sample_num": len(calib)}
    return Case(name, onnx_file, float_mnn, config, calib, held, task)


CORPUS_PREFIX = "corpus:"


def _corpus_case(name: str) -> Case:
    """A model of the real-model corpus (tests/corpus.py): its own calibration and held-out data."""
    import corpus

    spec = corpus.spec(name)
    source = corpus.source_model(name)
    onnx_file = source if str(source).endswith(".onnx") else None
    task = TASKS[name] if name in TASKS else (
        {"classifier": ("top1",)}.get(spec.kind) if spec.metric is None else (spec.metric,))
    return Case(CORPUS_PREFIX + name, onnx_file, corpus.float_model(name), corpus.config(name, "KL", "MAX_ABS"),
                corpus.calibration_samples(name), corpus.heldout_samples(name), task, "corpus",
                "" if onnx_file else f"the source model is {spec.origin} (the peers quantize ONNX)")


def corpus_names() -> list[str]:
    try:
        import corpus
    except ImportError:
        return []
    return [CORPUS_PREFIX + n for n in corpus.names()]


def model_names() -> list[str]:
    return list(ZOO_MODELS) + corpus_names()


def load_case(name: str, work: Path) -> Case:
    if name in ZOO_MODELS:
        return _zoo_case(name, work)
    if name in corpus_names():
        return _corpus_case(name[len(CORPUS_PREFIX):])
    raise SystemExit(f"bench_accuracy: unknown model {name!r}; known: {', '.join(model_names())}")


# ---------------------------------------------------------------------------------------------- metrics

def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def ctc_characters(onnx_file: Path) -> list[str] | None:
    """blank + the dictionary in the model's ``character`` metadata + space (rapidocr's use_space_char),
    or None when the model carries no dictionary."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file), load_external_data=False).metadata_props}
    if "character" not in meta:
        return None
    return ["blank"] + meta["character"].splitlines() + [" "]


def _iou_cxcywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of matching rows of two [N, 4] (cx, cy, w, h) arrays."""
    a_lo, a_hi = a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2
    b_lo, b_hi = b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2
    inter = np.clip(np.minimum(a_hi, b_hi) - np.maximum(a_lo, b_lo), 0, None).prod(axis=1)
    union = np.abs(a[:, 2:]).prod(axis=1) + np.abs(b[:, 2:]).prod(axis=1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _anchor_rows(x: np.ndarray, columns: int) -> np.ndarray:
    """[anchors, columns] from an output laid out either way ([1, A, C] or [1, C, A])."""
    x = np.asarray(x, np.float64)
    if x.shape[-1] != columns and x.ndim >= 2 and x.shape[-2] == columns:
        x = np.swapaxes(x, -1, -2)
    return x.reshape(-1, columns)


def _sigmoid(x):
    return 1 / (1 + np.exp(-np.clip(x, -80, 80)))


def detections(outputs: dict, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """(scores [A], boxes [A, 4] cx/cy/w/h) per anchor of a detector head, before NMS.

    Boxes are only compared anchor by anchor, so offsets that do not depend on the anchor (grid position,
    anchor centre, stride) cancel in the IoU and are left out."""
    layout = params["layout"]
    if layout == "yolox":                       # [1, A, 5 + C]: cx, cy, log w, log h, obj, cls (sigmoided)
        rows = _anchor_rows(outputs[params["output"]], params["columns"])
        return rows[:, 4] * rows[:, 5:].max(axis=1), np.c_[rows[:, :2], np.exp(np.clip(rows[:, 2:4], -20, 20))]
    if layout == "ssd":                          # scores (logits) [1, A, 1], regressors [1, A, R]: dx, dy, w, h
        scores = _sigmoid(_anchor_rows(outputs[params["scores"]], 1)[:, 0])
        return scores, _anchor_rows(outputs[params["boxes"]], params["columns"])[:, :4]
    if layout == "mtcnn":                        # prob [1, H, W, 2], offsets [1, H, W, 4] of a 12x12 cell
        prob = _anchor_rows(outputs[params["scores"]], 2)[:, 1]
        off = _anchor_rows(outputs[params["boxes"]], 4) * 12.0
        x1, y1, x2, y2 = off[:, 0], off[:, 1], 12.0 + off[:, 2], 12.0 + off[:, 3]
        return prob, np.c_[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    raise ValueError(f"unknown detector layout {layout!r}")


def detection_counts(ref: dict, out: dict, params: dict) -> tuple[float, float]:
    """(2 x matched detections, detections of both models) of one sample: a detection is an anchor
    scoring above the threshold; it matches when the other model keeps the same anchor with box IoU >= 0.5.
    Pooled over the samples this is the F1 of the int8 detections against the float ones."""
    s_ref, b_ref = detections(ref, params)
    s_out, b_out = detections(out, params)
    pos_ref, pos_out = s_ref > params["threshold"], s_out > params["threshold"]
    both = pos_ref & pos_out
    hits = int((_iou_cxcywh(b_ref[both], b_out[both]) >= 0.5).sum())
    return 2.0 * hits, float(pos_ref.sum() + pos_out.sum())


def _smallest_output(outputs: dict) -> np.ndarray:
    """The classifier's decision: the smallest output with at least two values (one for a probability)."""
    sized = sorted((np.size(v), k) for k, v in outputs.items() if np.size(v) >= 1)
    multi = [k for n, k in sized if n >= 2]
    return np.asarray(outputs[multi[0] if multi else sized[0][1]])


def ctc_indices(probs: np.ndarray) -> tuple:
    """CTC greedy decoding: argmax per step, repeats merged, blank (class 0) dropped."""
    best = np.asarray(probs).reshape(-1, np.asarray(probs).shape[-1]).argmax(axis=1)
    keep = np.ones(best.size, bool)
    keep[1:] = best[1:] != best[:-1]
    return tuple(int(i) for i in best[keep] if i != 0)


def task_counts(task: tuple, ref: dict, out: dict) -> tuple[float, float]:
    """One sample's (hits, cases) of the int8 outputs against the float outputs' decisions; the metric is
    sum(hits) / sum(cases) over the held-out samples, so a sample with nothing to find (an empty mask, no
    detection) weighs nothing instead of counting as a perfect score."""
    kind, params = task[0], (task[1] if len(task) > 1 else {})
    if kind == "top1":
        return float(np.argmax(_smallest_output(ref).reshape(-1)) == np.argmax(_smallest_output(out).reshape(-1))), 1.0
    if kind == "vad":
        return float((_smallest_output(ref).reshape(-1)[0] > 0.5) == (_smallest_output(out).reshape(-1)[0] > 0.5)), 1.0
    if kind == "ctc":
        key = params.get("output") or sorted(ref)[0]
        chars = params.get("characters")
        a, b = ctc_indices(ref[key]), ctc_indices(out[key])
        if chars is not None:                    # decoded text (indices past the dictionary decode to "")
            a, b = ("".join(chars[i] for i in a if i < len(chars)), "".join(chars[i] for i in b if i < len(chars)))
        return float(a == b), 1.0
    if kind == "mask_iou":                       # pooled over the samples: sum(intersection) / sum(union)
        key = params.get("output") or sorted(ref)[0]
        a, b = np.asarray(ref[key]) > params["threshold"], np.asarray(out[key]) > params["threshold"]
        return float(np.logical_and(a, b).sum()), float(np.logical_or(a, b).sum())
    if kind == "f1":
        return detection_counts(ref, out, params)
    raise ValueError(f"unknown task {kind!r}")


def task_metric(task: tuple | None, refs: list, outs: list) -> float | None:
    """The task metric over the held-out samples, in % (None: the model has no task metric here)."""
    if task is None:
        return None
    counts = np.array([task_counts(task, r, o) for r, o in zip(refs, outs)], np.float64).reshape(-1, 2)
    hits, cases = counts.sum(axis=0)
    return 100.0 if cases == 0 else 100.0 * float(hits / cases)


def task_label(task: tuple | None) -> str:
    if task is None:
        return "-"
    return {"top1": "top-1", "vad": "speech", "ctc": "text", "mask_iou": "IoU", "f1": "F1"}[task[0]]


# Task metrics by model (zoo names and corpus names alike); image classifiers default to top-1.
_BLAZE = {"layout": "ssd", "scores": "classificators", "boxes": "regressors", "columns": 16, "threshold": 0.5}
TASKS = {
    "ppocr_det": ("mask_iou", {"threshold": MASK_THRESHOLD}),
    "ppocr_rec": ("ctc", {}),                    # characters: from the model's metadata (run_cell)
    "ddddocr_ocr": ("ctc", {}),                  # decoded index sequences (the charset is not in the model)
    "selfie_segmentation": ("mask_iou", {"threshold": 0.5}),
    "silero_vad": ("vad",),
    "ddddocr_det": ("f1", {"layout": "yolox", "output": "output", "columns": 6, "threshold": 0.3}),
    "mtcnn_pnet": ("f1", {"layout": "mtcnn", "scores": "softmax", "boxes": "conv2d_4", "threshold": 0.6}),
    "blazeface_short": ("f1", _BLAZE), "blazeface_back": ("f1", _BLAZE), "blazeface_full": ("f1", _BLAZE),
    "palm_detection": ("f1", {**_BLAZE, "columns": 18}),
    "transformer": None, "lstm": None,
    "minilm": None,        # its metric is the embeddings' cosine: the held-out cosine column itself
}


def mean_cosine(refs: list, outs: list) -> float:
    values = []
    for ref, out in zip(refs, outs):
        for key in ref:
            values.append(cosine(ref[key], out[key]) if key in out else float("nan"))
    return float(np.mean(values))


# ------------------------------------------------------------------------------------- MNN side (ours)

def _oracle_outputs(path, feeds_list, fresh: bool = True) -> list:
    """The official runtime's outputs, feeds and outputs in the declared layout, in child processes; with
    ``fresh`` one per sample (MNN's int8 kernels may read memory they never wrote; a fresh process reads
    zeros)."""
    import corpus_steps

    return corpus_steps.oracle_outputs(path, feeds_list, fresh=fresh)


def _float_references(case: Case, work: Path) -> list:
    """The float model's outputs in the official runtime, computed once per model and kept in ``work``."""
    cache = work / f"{_file_stem(case)}.float_outputs.npz"
    if cache.exists():
        with np.load(cache) as data:
            refs = [{} for _ in case.held]
            for key in data.files:
                i, name = key.split("/", 1)
                refs[int(i)][name] = data[key]
            return refs
    refs = _oracle_outputs(case.float_mnn, case.held, fresh=False)
    np.savez(cache, **{f"{i}/{k}": v for i, r in enumerate(refs) for k, v in r.items()})
    return refs


def _mnn_macs(float_mnn: Path, feeds: dict) -> dict:
    """op name -> multiply-accumulates of every conv / matmul of the float model on ``feeds``."""
    import mnnlite
    from mnnlite.format.tables import OpType
    from mnnlite.ops.weights import conv_weights
    from mnnlite.runtime import Interpreter

    model = mnnlite.load_model(float_mnn)
    shapes = {}
    interp = Interpreter(model, precision="float")
    interp.run(feeds, observe=lambda i, _n, a: shapes.__setitem__(i, np.shape(a)))
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
    from mnnlite.errors import UnsupportedOpError
    from mnnlite.int8 import int8_plan
    from mnnlite.runtime import Interpreter

    feeds = case.held[0]
    macs = _mnn_macs(case.float_mnn, feeds)
    try:
        interp = Interpreter(str(quant_path))
        int8 = set(int8_plan(interp, feeds).int8_ops())     # feeds in the declared layout
    except UnsupportedOpError:          # While/If models: mnnlite's int8 plan covers the main graph only
        return float("nan")
    total = sum(macs.values())
    return 100.0 * sum(v for k, v in macs.items() if k in int8) / total if total else float("nan")


def run_mnn_method(case: Case, method: str, work: Path) -> dict:
    from mnnlite.quant.config import load_config
    from mnnlite.quant.quantize import quantize

    refs = _float_references(case, work)
    if method == "float":
        return {"cos": 1.0, "task": task_metric(case.task, refs, refs), "int8": 0.0}
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
    dst = work / f"{_file_stem(case)}.{method}.mnn"
    start = time.perf_counter()
    quantize(case.float_mnn, dst, config)
    seconds = time.perf_counter() - start
    outs = _oracle_outputs(dst, case.held)
    return {"cos": mean_cosine(refs, outs), "task": task_metric(case.task, refs, outs),
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
    source = peer_source(case, work)
    session = _ort_session(source)
    reader = Reader([_onnx_feeds(session, f) for f in case.calib])
    dst = work / f"{_file_stem(case)}.{method}.onnx"
    start = time.perf_counter()
    quantize_static(str(source), str(dst), reader, quant_format=QuantFormat.QDQ,
                    per_channel=granularity == "pc",
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                                      "percentile": CalibrationMethod.Percentile}[calibrator])
    seconds = time.perf_counter() - start
    return _peer_result(case, source, onnx.load(str(dst)), dst, seconds)


def run_nncf(case: Case, method: str, work: Path) -> dict:
    import onnx
    from unittest.mock import MagicMock

    import nncf
    from nncf.telemetry import wrapper

    if not isinstance(wrapper.telemetry, MagicMock):
        raise RuntimeError("NNCF telemetry is not the stub: refusing to run nncf")
    source = peer_source(case, work)
    session = _ort_session(source)
    items = [_onnx_feeds(session, f) for f in case.calib]
    start = time.perf_counter()
    try:
        quantized = nncf.quantize(onnx.load(str(source)), nncf.Dataset(items), subset_size=len(items))
    except AttributeError:
        if source == case.onnx:
            raise
        # NNCF 3.4's eliminate_nop_cast reads a value_info `type` that initializers feeding a Cast lack
        # (ppocr_cls); NNCF takes Constant-node weights itself, so it gets the model as exported
        source = case.onnx
        quantized = nncf.quantize(onnx.load(str(source)), nncf.Dataset(items), subset_size=len(items))
    seconds = time.perf_counter() - start
    dst = work / f"{_file_stem(case)}.nncf.onnx"
    onnx.save(quantized, str(dst))
    return _peer_result(case, source, quantized, dst, seconds)


PEER_OPSET = 13    # per-channel QDQ (DequantizeLinear's axis) needs opset 13; both peers say so


def _file_stem(case: Case) -> str:
    return case.name.replace(":", "_")


def peer_source(case: Case, work: Path) -> Path:
    """The ONNX model the peers quantize, prepared as their documentation asks of a user: Constant nodes
    turned into initializers (PaddlePaddle exports keep every weight in a Constant node, and both peers
    only treat initializers as weights: they would quantize those weights per tensor as activations),
    and opset raised to 13 when older (per-channel DequantizeLinear needs it).  The source itself when
    the conversion fails."""
    import onnx
    from onnx import numpy_helper, version_converter

    out = work / f"{_file_stem(case)}.peer.onnx"
    if out.exists():
        return out
    model = onnx.load(str(case.onnx))
    constants = [n for n in model.graph.node if n.op_type == "Constant" and len(n.attribute) == 1
                 and n.attribute[0].name == "value"]
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=PEER_OPSET)
    if not constants and opset >= PEER_OPSET:
        return case.onnx
    try:
        for node in constants:
            array = numpy_helper.to_array(node.attribute[0].t)
            model.graph.initializer.append(numpy_helper.from_array(array, node.output[0]))
            model.graph.node.remove(node)
        if opset < PEER_OPSET:
            model = version_converter.convert_version(model, PEER_OPSET)
        onnx.checker.check_model(model)
    except Exception:   # noqa: BLE001 - a model the converter cannot lift stays as it is
        return case.onnx
    onnx.save(model, str(out))
    return out


def _peer_result(case: Case, source: Path, quant_model, dst: Path, seconds: float) -> dict:
    refs, outs = _ort_outputs(source, case.held), _ort_outputs(dst, case.held)
    return {"cos": mean_cosine(refs, outs), "task": task_metric(case.task, refs, outs),
            "int8": qdq_int8_share(source, quant_model, case.held[0]), "seconds": seconds}


# ---------------------------------------------------------------------------------------- one cell

def run_cell(name: str, method: str, work: Path) -> dict:
    case = load_case(name, work)
    if case.task is not None and case.task[0] == "ctc" and case.onnx is not None:
        characters = ctc_characters(case.onnx)
        if characters is not None:
            case.task = ("ctc", {**case.task[1], "characters": characters})
    if method in ("float",) + MNN_METHODS:
        return run_mnn_method(case, method, work)
    if case.onnx is None:
        raise RuntimeError(case.why_no_onnx)
    if method in ORT_METHODS:
        return run_ort(case, method, work)
    if method == "nncf":
        return run_nncf(case, method, work)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def child(name: str, method: str, work: Path, timeout: float, resume: bool = False) -> dict:
    """``run_cell`` in a fresh process: a crash, an exception or a timeout becomes the cell's reason.
    ``resume``: a cell whose result is already in ``work`` is not run again."""
    out = work / f"{name.replace(':', '_')}.{method}.result.json"
    if resume and out.exists():
        return json.loads(out.read_text())
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
    parts.append(f"{result['int8']:.0f}%" if np.isfinite(result["int8"]) else "no MACs")
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
    parser.add_argument("--resume", action="store_true",
                        help="with --work: keep the cells an earlier run left there, run the others")
    parser.add_argument("--render", nargs="+", metavar="JSON",
                        help="print the table of earlier --json files (merged) instead of running")
    parser.add_argument("--cell", nargs=3, metavar=("MODEL", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.render:
        rows, tasks = {}, {}
        for path in args.render:            # later files add or replace cells
            data = json.loads(Path(path).read_text())
            for name, cells in data["rows"].items():
                rows.setdefault(name, {}).update(cells)
            tasks.update(data["tasks"])
        methods = [m for m in METHODS if any(m in cells for cells in rows.values())]
        print(render(rows, methods, tasks))
        return 0
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
            try:
                tasks[name] = task_label(load_case(name, work).task)
            except Exception as exc:   # noqa: BLE001 - a model whose files cannot be built is a row saying why
                tasks[name] = "-"
                rows[name] = {m: {"error": f"model not available: {type(exc).__name__}: {exc}"[:200]}
                              for m in args.methods}
                continue
            rows[name] = {}
            for method in args.methods:
                rows[name][method] = result = child(name, method, work, args.timeout, args.resume)
                print(f"{name:12s} {method:18s} {format_cell(result):24s} {result.get('error', '')}",
                      file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps({"rows": rows, "tasks": tasks}, indent=1))
        print(render(rows, args.methods, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
