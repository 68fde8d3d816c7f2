"""KL path acceptance: ``mnnlite.quantize`` against the official quantizer on the zoo's image models.

(a) the official runtime runs our file; (b) per-tensor scales equal the oracle's; (c) on held-out images
our int8 model is at least as close to the float model as the oracle's.  Two levels for (b):

* exact: our calibration fed with MNN's *own* activations (``MNNForward``) must give the oracle's scales
  to 1e-5 for every tensor — this checks tracking, histograms, thresholds and propagation on their own;
* end to end: calibration runs our runtime with ``impl="mnn"`` (MNN's float rounding: Winograd and
  Strassen convs, pooling, LayerNorm, Softmax, sigmoid), so the scales are the oracle's to 1e-5 on every
  model (a KL threshold is an argmin over a histogram: where the divergence curve is flat, one last-bit
  difference in an activation moves it a few bins, so this needs MNN's bits exactly).

By default every tensor MNN gives quant info gets it from us too, with the same scale: model inputs use
KL as in MNN 3.6.1 (docs/mnn-quantization.md §14.6) and scale-0 tensors (comparison outputs, all-zero constants) are written.
The opt-in deviations (``input_threshold``, ``quantize_rangeless_tensors``) are checked separately.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_pipeline_oracle import (MNNForward, calib_config, conv_params, fidelity, image_feeds, model_params,
                                  no_worse, oracle_quant, our_plan, our_quant, rel, scale_map)

import mnnlite
from mnnlite.quant.feature.kl import KLObserver
from mnnlite.quant.log import QuantLog
from mnnlite.quant.statistics import collect_scales
from mnnlite.quant.tracking import propagate
from oracle import run_oracle

TOL = 1e-5
NOT_BIT_EXACT: dict[str, tuple[int, float]] = {}     # model: (tensors allowed off, by at most)



def _inputs(graph) -> set[int]:
    inputs = set(graph.inputs)
    # the layout conversion right after the input is a single-input Raster: it shares the input's scale
    for op in graph.ops:
        if op.inputIndexes is not None and len(op.inputIndexes) == 1 and int(op.inputIndexes[0]) in graph.inputs \
                and op.type == mnnlite.graph.OpType.ConvertTensor:
            inputs.update(int(t) for t in op.outputIndexes)
    return inputs


@pytest.mark.parametrize("name", model_params(fast=("cnn", "ppocr_cls")))
def test_kl_scales_exact_on_mnn_activations(zoo, name):
    graph, _facts, plan = our_plan(name)
    feeds = list(image_feeds(name))
    raw = collect_scales(KLObserver, MNNForward(zoo.model_path(name, "float"), plan), plan, feeds, 127,
                         QuantLog(None), max_tensors=())         # MNN's (buggy) KL for the input, to compare
    ours = {t: s for t, (s, _) in propagate(raw, plan).items() if t >= 0}
    theirs = scale_map(oracle_quant(name, calib_config(name)))
    common = set(ours) & set(theirs)
    bad = {graph.tensors[t]: (ours[t], theirs[t]) for t in common if rel(ours[t], theirs[t]) > TOL}
    assert not bad
    assert len(common) >= len(theirs) - 2


@pytest.mark.parametrize("name", model_params(models=("cnn", "ppocr_cls", "nhwc_like", "mobilenet",
                                                      "ppocr_det", "ppocr_rec"),
                                              fast=("cnn", "ppocr_cls", "nhwc_like")))
def test_kl_end_to_end(zoo, name):
    cfg = calib_config(name)
    ours_path, report = our_quant(name, cfg)
    theirs_path = oracle_quant(name, cfg)
    graph = mnnlite.load_model(zoo.model_path(name, "float")).graph
    ours, theirs = scale_map(ours_path), scale_map(theirs_path)
    # (a) the official runtime loads and runs our file
    out = run_oracle(ours_path, image_feeds(name, "heldout")[0])
    assert all(np.isfinite(v).all() for v in out.values())
    # (b) scales: the same tensors get quant info, with the same scales (inputs and scale-0 tensors included)
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    off = sorted((rel(ours[t], theirs[t]), graph.tensors[t]) for t in ours if rel(ours[t], theirs[t]) > TOL)
    allowed, worst = NOT_BIT_EXACT.get(name, (0, 0.0))
    assert len(off) <= allowed and all(r <= worst for r, _ in off), off
    # (c) fidelity on held-out images, both files in the official runtime
    assert no_worse(fidelity(name, ours_path), fidelity(name, theirs_path))
    assert report.feature_method == "KL" and report.quantized_ops


def test_opt_in_deviations(zoo):
    """``input_threshold: max`` raises the input scales to MAX's; ``quantize_rangeless_tensors: false``
    leaves out exactly the scale-0 tensors (cnn's PReLU: GREATER output, its NC4HW4 copy, the 0 constant);
    every other scale stays MNN's."""
    default = scale_map(our_quant("cnn", calib_config("cnn"))[0])
    graph = mnnlite.load_model(zoo.model_path("cnn", "float")).graph
    inputs = _inputs(graph)
    zero = {t for t, s in default.items() if s == 0}
    assert len(zero) == 3
    opted = scale_map(our_quant("cnn", calib_config("cnn", input_threshold="max",
                                                    quantize_rangeless_tensors=False))[0])
    assert set(opted) == set(default) - zero
    for t in opted:
        if t in inputs:     # MAX threshold: (2047 + 0.5) / interval / 127, above KL's
            assert opted[t] > default[t] * (1 + TOL)
        else:
            assert opted[t] == default[t], graph.tensors[t]


@pytest.mark.parametrize("weights", ["MAX_ABS", pytest.param("ADMM", marks=pytest.mark.slow)])
def test_conv_weights_match_oracle(zoo, weights):
    """Same int8 codes and per-channel alpha as the official quantizer (KL features, ppocr_cls)."""
    cfg = calib_config("ppocr_cls", weight_quantize_method=weights)
    ours = mnnlite.load_model(our_quant("ppocr_cls", cfg)[0]).graph.ops
    theirs = mnnlite.load_model(oracle_quant("ppocr_cls", cfg)).graph.ops
    n = 0
    for a, b in zip(ours, theirs):
        qa = getattr(a.main, "quanParameter", None)
        qb = getattr(b.main, "quanParameter", None)
        assert (qa is None) == (qb is None), a.name
        if qa is None:
            continue
        n += 1
        assert a.main.weight is None and np.array_equal(a.main.bias, b.main.bias)
        assert qa.type == qb.type and qa.buffer.tobytes() == qb.buffer.tobytes(), a.name
        np.testing.assert_allclose(qa.alpha, qb.alpha, rtol=3e-7 if weights == "ADMM" else 0)
        assert qa.quantScale == 1.0 and qa.aMaxOrBits == 8 and qa.readType == 0
        assert a.main.symmetricQuan == b.main.symmetricQuan
        assert a.main.common == b.main.common
    assert n > 40


def test_conv_scales_follow_tensor_scales(zoo):
    """quanParameter.scaleIn/scaleOut are the scales of the conv's input/output tensors (docs/mnn-quantization.md §8.2)."""
    path, _ = our_quant("cnn", calib_config("cnn"))
    g = mnnlite.load_model(path).graph
    qi = g.quant_info
    for op in g.ops:
        q = getattr(op.main, "quanParameter", None)
        if q is not None:
            assert q.scaleIn == qi[int(op.inputIndexes[0])].scale
            assert q.scaleOut == qi[int(op.outputIndexes[0])].scale
    assert conv_params(path)
