"""Shared helpers for the quantizer pipeline tests (test_pipeline_*.py), plus tests of the helpers.

The official ``mnn`` 3.6.1 wheel is the oracle: ``quantized.out`` (``_tools.mnnquant``, in a child process)
writes the reference files, the Session API runs models and reports every command it executes
(``runSessionWithCallBackInfo``), and those callbacks give MNN's own activations.

Calibration folders: the zoo quantizes with ``used_image_num`` 8 of 12 images, and ``quantized.out``
takes the first 8 in *readdir* order (docs/mnn-quantization.md §14.19) while we sort first, so the two would calibrate on
different images.  Comparisons here therefore use every image of the folder (no ``used_image_num``).

Everything expensive is cached per process (``functools.lru_cache``) in one temporary folder, so the
test modules share the oracle runs and our own quantizations.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

import mnnlite
from mnnlite.format.tables import OpType
from mnnlite.metrics import cosine
from oracle import OracleToolError, quantize, run_oracle, trace

_WORK = Path(tempfile.mkdtemp(prefix="mnnlite-pipeline-"))
atexit.register(shutil.rmtree, _WORK, True)

IMAGE_MODELS = ("cnn", "mobilenet", "ppocr_det", "ppocr_cls", "ppocr_rec")
FAST_MODELS = ("cnn", "ppocr_cls")          # the default run; the others are marked slow
METHODS = {"KL": "quant_kl", "ADMM": "quant_admm", "EMA": "quant_ema"}


def zoo():
    import model_zoo

    return model_zoo


def model_params(models=IMAGE_MODELS, fast=FAST_MODELS):
    """pytest params over models, the heavy ones marked slow."""
    return [pytest.param(m, marks=() if m in fast else pytest.mark.slow) for m in models]


# ------------------------------------------------------------------------------------------ configs

def calib_config(name: str, method: str = "KL", **extra) -> dict:
    """The zoo's quantizer config for ``name`` on every calibration image (see the module doc)."""
    z = zoo()
    cfg = z.quant_config(name, "quant_kl")
    cfg.pop("used_image_num")
    cfg["feature_quantize_method"] = method
    cfg.update(extra)
    return cfg


def _key(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


# ------------------------------------------------------------------------------------- quantization

class OracleQuantError(AssertionError):
    """The official quantizer wrote no output.  An AssertionError for the tests; ``returncode`` (negative:
    the signal that killed it) lets tools/quant_acceptance.py report the crash instead of failing."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode


@functools.lru_cache(maxsize=None)
def _oracle(name: str, cfg_key: str, src: str, timeout: float) -> Path:
    cfg = json.loads(cfg_key)
    dst = _WORK / f"oracle-{name}-{abs(hash((cfg_key, src)))}.mnn"
    try:
        quantize(src, dst, cfg, timeout=timeout)
    except OracleToolError as exc:
        raise OracleQuantError(f"the oracle quantizer failed on {name}: {exc}", exc.returncode) from None
    return dst


def oracle_quant(name: str, cfg: dict, src=None, timeout: float = 900) -> Path:
    """The official quantizer's output for the float zoo model ``name`` (or ``src``) with ``cfg``."""
    src = str(src or zoo().model_path(name, "float"))
    return _oracle(name, _key(cfg), src, timeout)


@functools.lru_cache(maxsize=None)
def _ours(name: str, cfg_key: str, src: str):
    from mnnlite.quant.quantize import quantize

    dst = _WORK / f"ours-{name}-{abs(hash((cfg_key, src)))}.mnn"
    report = quantize(src, dst, json.loads(cfg_key), log=None)
    return dst, report


def our_quant(name: str, cfg: dict, src=None):
    """(path, QuantReport) of ``mnnlite.quantize`` on the float zoo model ``name`` (or ``src``)."""
    src = str(src or zoo().model_path(name, "float"))
    return _ours(name, _key(cfg), src)


@functools.lru_cache(maxsize=None)
def fixed_shape_model(name: str) -> Path:
    """The float model with its input dims fixed to the calibration size (the oracle's EMA needs them:
    with dynamic H/W it crashes, "Invalid Tensor, the session may not be ready")."""
    z = zoo()
    spec = z.image_spec(name)
    model = mnnlite.load_model(z.model_path(name, "float"))
    for op in model.net.oplists:
        if op.type == OpType.Input:       # the declared layout's order
            nhwc = z.input_layout(name) == "NHWC"
            op.main.dims = [1, spec.height, spec.width, 3] if nhwc else [1, 3, spec.height, spec.width]
    out = _WORK / f"{name}.fixed.mnn"
    mnnlite.save_model(model, out)
    return out


@functools.lru_cache(maxsize=None)
def c4_input_model(name: str) -> Path:
    """The float model taking its input in NC4HW4 (the ConvertTensor after the input removed), fixed size:
    the only kind of model ``quantized.out``'s ADMM runs on (it crashes on NCHW inputs, docs/mnn-quantization.md §14.7)."""
    z = zoo()
    spec = z.image_spec(name)
    model = mnnlite.load_model(z.model_path(name, "float"))
    ops = model.net.oplists
    inp = next(op for op in ops if op.type == OpType.Input)
    src = int(inp.outputIndexes[0])
    convert = next(op for op in ops if op.type == OpType.ConvertTensor and int(op.inputIndexes[0]) == src)
    old = int(convert.outputIndexes[0])
    model.net.oplists = [op for op in ops if op is not convert]
    for op in model.net.oplists:
        if op.inputIndexes is not None:
            op.inputIndexes = [src if int(i) == old else int(i) for i in op.inputIndexes]
    inp.main.dformat = 2                                 # NC4HW4
    inp.main.dims = [1, 3, spec.height, spec.width]
    out = _WORK / f"{name}.c4.mnn"
    mnnlite.save_model(model, out)
    return out


def transplant_c4(name: str, quant_c4) -> Path:
    """A quantized ``c4_input_model`` file carried back onto the NCHW float model (same tensor indexes;
    the restored input conversion shares the input's quant info, as MNN's single-input Raster rule does).
    The official runtime gives run-to-run different outputs for int8 models with an NC4HW4 input (the
    input's channel padding is not cleared), so fidelity is measured on the NCHW form."""
    import copy

    z = zoo()
    model = mnnlite.load_model(z.model_path(name, "float"))
    quant = mnnlite.load_model(quant_c4)
    by_name = {op.name: op for op in quant.net.oplists}
    ops = []
    for op in model.net.oplists:
        src = by_name.get(op.name)
        if src is not None and op.type in (OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Deconvolution):
            op = copy.copy(op)
            op.main = src.main
        ops.append(op)
    model.net.oplists = ops
    describes = {int(d.index): d for d in quant.net.extraTensorDescribe or []}
    graph = model.graph
    first = next(op for op in ops if op.type == OpType.ConvertTensor and int(op.inputIndexes[0]) in graph.inputs)
    if int(first.inputIndexes[0]) in describes:
        d = copy.copy(describes[int(first.inputIndexes[0])])
        d.index = int(first.outputIndexes[0])
        describes[d.index] = d
    model.net.extraTensorDescribe = [describes[i] for i in sorted(describes)]
    out = Path(str(quant_c4) + ".nchw.mnn")
    mnnlite.save_model(model, out)
    return out


# ------------------------------------------------------------------------------------------- data

@functools.lru_cache(maxsize=None)
def image_feeds(name: str, which: str = "calib") -> tuple:
    """Preprocessed images of a zoo folder as model feeds in the declared layout (our dataset = MNN's
    preprocessing)."""
    from mnnlite.layout import input_specs
    from mnnlite.quant.config import load_config
    from mnnlite.quant.dataset import CalibrationSet

    z = zoo()
    folder = z.calibration_dir(name) if which == "calib" else z.heldout_dir(name)
    cfg = load_config(dict(calib_config(name), path=str(folder)))
    specs = input_specs(mnnlite.load_model(z.model_path(name, "float")), "model")
    return tuple(dict(f) for f in CalibrationSet(cfg, specs[:1]))


def fidelity(name: str, quant_path) -> float:
    """Mean cosine between the float model and ``quant_path`` over the held-out images, every output,
    both run by the official runtime."""
    z = zoo()
    ref_path = z.model_path(name, "float")
    values = []
    for feeds in image_feeds(name, "heldout"):
        ref, out = run_oracle(ref_path, feeds), run_oracle(quant_path, feeds)
        values += [cosine(ref[k], out[k]) for k in ref]
    return float(np.mean(values))


def no_worse(ours: float, theirs: float) -> bool:
    """(c): our mean cosine to the float model at least the oracle's, up to the noise of 6 held-out images
    (2e-3, or 5 % of the oracle's own loss 1 - cos when that is larger: MNN's int8 ppocr_det keeps only
    cos ~0.12, ours too)."""
    return ours >= theirs - max(2e-3, 0.05 * (1 - theirs))


def scale_map(path) -> dict[int, float]:
    """tensor index -> quant scale of a quantized file."""
    return {t: float(q.scale) for t, q in mnnlite.load_model(path).graph.quant_info.items()}


def conv_params(path) -> list[tuple]:
    """(scaleIn, zeroPoint, scaleOut, outputZeroPoint) of each int8 conv, in op order."""
    out = []
    for op in mnnlite.load_model(path).graph.ops:
        if op.type in (OpType.Convolution, OpType.ConvolutionDepthwise) and op.main.quanParameter is not None:
            q, s = op.main.quanParameter, op.main.symmetricQuan
            out.append((float(q.scaleIn), int(s.zeroPoint), float(q.scaleOut), int(s.outputZeroPoint)))
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# ----------------------------------------------------------------------------- MNN's own execution

class MNNForward:
    """Runs a model in the official runtime and reports its tensors by index, like ``Interpreter.run``'s
    ``observe``: MNN's commands are matched to our lowered schedule (same names, same order)."""

    def __init__(self, path, plan):
        self.path, self.plan = str(path), plan

    def run(self, feeds, observe=None):
        by_name = {s.name: s for s in self.plan.steps}
        seen = set()
        for name, _kind, ins, outs in trace(self.path, feeds):
            step = by_name.get(name)
            if step is None:
                continue
            for ids, arrays in ((step.inputs, ins), (step.outputs, outs)):
                if len(ids) != len(arrays):
                    continue
                for t, a in zip(ids, arrays):
                    if t >= 0 and t not in seen and a is not None:
                        seen.add(t)
                        observe(t, "", a.reshape(a.shape))
        return {}


def our_plan(name: str):
    """(graph, facts, plan) of a zoo model on its first calibration image, with our runtime."""
    from mnnlite.quant.tracking import plan_tracking
    from mnnlite.quant.workers import tensor_facts
    from mnnlite.runtime import Interpreter

    model = mnnlite.load_model(zoo().model_path(name, "float"))
    facts = tensor_facts(Interpreter(model), image_feeds(name)[0])
    return model.graph, facts, plan_tracking(model.graph, facts)


# --------------------------------------------------------------------------------------- the tests

def test_mnn_forward_matches_our_runtime(zoo):
    """The oracle-activation helper maps MNN's tensors to the right indexes."""
    from mnnlite.runtime import Interpreter

    graph, _facts, plan = our_plan("cnn")
    feeds = image_feeds("cnn")[0]
    ours = Interpreter(zoo.model_path("cnn", "float")).run(feeds, return_all=True)
    got = {}
    MNNForward(zoo.model_path("cnn", "float"), plan).run(feeds, observe=lambda t, _n, a: got.setdefault(t, a))
    assert set(plan.tracked) <= set(got)
    for t in plan.tracked:
        a = ours[graph.tensors[t]]
        if a.dtype == np.float32:
            np.testing.assert_allclose(got[t].reshape(a.shape), a, rtol=1e-4, atol=1e-4)


def test_calib_config_uses_every_image(zoo):
    cfg = calib_config("cnn")
    assert "used_image_num" not in cfg and Path(cfg["path"]).is_dir()
    assert len(image_feeds("cnn")) == len(os.listdir(cfg["path"]))
