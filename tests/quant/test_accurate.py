"""The accurate flow (``"preset": "accurate"``, README "Accurate preset"): each technique on a small graph
whose right answer is known, a real model end to end, and every file checked in MNN's official runtime.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from builders.onnx_graph import save_onnx
from quant_helpers import needs_oracle
from test_pipeline_oracle import calib_config, image_feeds

import mnnlite
from mnnlite.errors import ConfigError
from mnnlite.format.tables import OpType
from mnnlite.metrics import cosine
from mnnlite.quant.config import load_config
from mnnlite.quant.ranges import Downstream, RangeObserver, choose_downstream, choose_range
from mnnlite.runtime import Interpreter
from oracle import convert_onnx, run_oracle

pytestmark = needs_oracle


# ------------------------------------------------------------------------------------------ helpers

def _histogram(x: np.ndarray):
    obs = RangeObserver()
    for p in range(2):
        obs.start_pass(p)
        obs.update(np.asarray(x, np.float32))
    return obs.histogram()


def _fake_quant_mse(x, r) -> float:
    s, z = r.params()
    q = np.clip(np.round(x / s) + z, -127, 127)
    return float(np.mean(np.square((q - z) * s - x)))


def _save_onnx(tmp_path, nodes, inits, x_shape, name="m"):
    save_onnx(tmp_path / f"{name}.onnx", nodes, [("x", x_shape)], ["y"],
              {k: np.asarray(v, np.float32) for k, v in inits.items()})
    convert_onnx(tmp_path / f"{name}.onnx", tmp_path / f"{name}.mnn")
    return tmp_path / f"{name}.mnn"


def _samples(tmp_path, make, count: int = 12):
    """A sequence-mode calibration folder: one .npz per sample (input "x")."""
    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(7)
    for k in range(count):
        np.savez(folder / f"s{k:02d}.npz", x=make(rng).astype(np.float32))
    return folder


def _oracle_agrees(path, feeds_list, tol: float = 1e-4) -> None:
    """Our int8 runtime (MNN's rounding) gives the official runtime's outputs on ``path``."""
    ours = Interpreter(str(path))
    for feeds in feeds_list:
        theirs, got = run_oracle(path, feeds), ours.run(feeds)
        for k in theirs:
            assert np.all(np.isfinite(theirs[k]))
            np.testing.assert_allclose(got[k], theirs[k], rtol=0, atol=tol * max(1.0, float(np.abs(theirs[k]).max())))


def _output_cosine(src, dst, feeds_list) -> float:
    ref, q = Interpreter(str(src), precision="float"), Interpreter(str(dst), impl="mnn")
    a = np.concatenate([ref.run(f)["y"].ravel() for f in feeds_list])
    b = np.concatenate([q.run(f)["y"].ravel() for f in feeds_list])
    return cosine(a, b)


def _mnn_kl(tmp_path, src, cfg):
    """MNN's KL file (mnnlite's MNN-exact flow: ``quantized.out`` reads sequence samples only from its own
    per-sample folders; the scales are the same, tests/quant/test_pipeline_kl.py)."""
    mnnlite.quantize(src, tmp_path / "mnn_kl.mnn", {**cfg, "feature_quantize_method": "KL"})
    return tmp_path / "mnn_kl.mnn"


# ------------------------------------------------------------------------------------------ ranges

def test_bimodal_activation_gets_an_asymmetric_range():
    """Two modes at -5 and +20: a zero point spends the codes on [-5, 20] instead of [-20, 20]."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-5, 0.3, 20000), rng.normal(20, 0.3, 20000)])
    h = _histogram(x)
    auto, sym = choose_range(h, "auto"), choose_range(h, "auto", asymmetric=False)
    assert not auto.symmetric and auto.lo < -4.5 and auto.hi > 19.5
    assert _fake_quant_mse(x, auto) < 0.7 * _fake_quant_mse(x, sym)


def test_relu_output_uses_every_code():
    x = np.maximum(np.random.default_rng(1).normal(size=50000), 0)
    r = choose_range(_histogram(x), "auto")
    assert r.lo == 0 and not r.symmetric and r.params()[1] == -127


def test_heavy_tail_is_clipped_by_mse_and_percentile_but_not_max():
    x = np.random.default_rng(2).standard_t(2, size=100000)
    h = _histogram(x)
    top = float(np.abs(x).max())
    assert choose_range(h, "max").hi == pytest.approx(max(x.max(), 0), rel=1e-6)
    for method in ("mse", "auto"):
        r = choose_range(h, method)
        assert max(abs(r.lo), r.hi) < 0.9 * top
        assert _fake_quant_mse(x, r) < _fake_quant_mse(x, choose_range(h, "max"))
    assert choose_range(h, "percentile").error <= choose_range(h, "max").error
    # the histogram's error estimate ranks ranges like the real error does
    est = {m: choose_range(h, m).error for m in ("max", "kl", "mse")}
    real = {m: _fake_quant_mse(x, choose_range(h, m)) for m in est}
    assert sorted(est, key=est.get) == sorted(real, key=real.get)


def test_downstream_objective_weighs_channels_by_their_readers():
    """Channel 0 spans ±10 but its reader multiplies it by 1e-3; channel 1 spans ±0.5 and is multiplied by
    5: the tensor's own error wants the whole ±10, the error the reader sees wants ±0.5 (channel 0
    clipped, channel 1 with 20x finer steps)."""
    rng = np.random.default_rng(3)
    x = np.stack([rng.uniform(-10, 10, 20000), rng.uniform(-0.5, 0.5, 20000)]).astype(np.float32)
    h = _histogram(x)
    seen = Downstream(x, [np.array([1e-6, 25.0])])
    own, down = choose_range(h, "auto"), choose_downstream(h, seen, "auto")
    assert max(-own.lo, own.hi) > 9 and max(-down.lo, down.hi) < 1.5
    assert seen.cost(down) < 0.05 * seen.cost(own)
    # a reader that takes the values as they are (ones): the objective is the tensor's own error again
    plain = Downstream(x, [np.ones(2)])
    assert plain.cost(choose_downstream(h, plain, "auto")) <= plain.cost(own) * 1.01
    assert max(-choose_downstream(h, plain, "auto").lo, choose_downstream(h, plain, "auto").hi) > 5


def test_downstream_objective_on_a_conv_pair(tmp_path):
    """conv (channel gains 10 / 0.5) -> depthwise (weights 1e-3 / 5): the middle tensor's range chosen by
    the depthwise output's error keeps the small channel the output is made of; MNN runs the file and
    our int8 runtime gives its outputs."""
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["m"]),
             helper.make_node("Conv", ["m", "w2", "b2"], ["y"], group=2, pads=[1, 1, 1, 1])]
    inits = {"w1": np.diag([10.0, 0.5]).reshape(2, 2, 1, 1), "b1": np.zeros(2),
             "w2": np.concatenate([np.full((1, 1, 3, 3), 1e-3), np.full((1, 1, 3, 3), 5.0)]), "b2": np.zeros(2)}
    src = _save_onnx(tmp_path, nodes, inits, [1, 2, 16, 16])
    folder = _samples(tmp_path, lambda rng: rng.uniform(-1, 1, (1, 2, 16, 16)))
    cfg = {"path": str(folder), "input_type": "sequence", "range_method": "auto", "int8_ops": "auto"}
    feeds = [{"x": np.random.default_rng(k).uniform(-1, 1, (1, 2, 16, 16)).astype(np.float32)} for k in range(3)]
    scores = {}
    for objective in ("tensor", "downstream"):
        dst = tmp_path / f"{objective}.mnn"
        report = mnnlite.quantize(src, dst, {**cfg, "range_objective": objective})
        assert report.accuracy.range_objective == objective
        scores[objective] = _output_cosine(src, dst, feeds)
    _oracle_agrees(tmp_path / "downstream.mnn", feeds)
    assert scores["downstream"] > 0.999 and 1 - scores["downstream"] < 0.2 * (1 - scores["tensor"])


def test_score_on_logits_sees_what_a_saturated_softmax_hides(tmp_path):
    """conv -> Softmax -> Reshape: logits ±20 make the probabilities one-hot, so the cosine of the outputs
    hardly moves under int8 while that of the logits (the Softmax's input, found through the Reshape) does;
    the report says which one was scored."""
    from onnx import helper

    from mnnlite.format.model_io import load_model
    from mnnlite.quant.sensitivity import logit_tensors

    w = np.zeros((4, 3, 1, 1), np.float32)
    w[:, :, 0, 0] = [[20, 0, 0], [0, 20, 0], [0, 0, 20], [-20, -20, -20]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["m"]), helper.make_node("Softmax", ["m"], ["p"], axis=1),
             helper.make_node("Reshape", ["p", "shape"], ["y"])]
    src = _save_onnx(tmp_path, nodes, {"w": w, "b": np.zeros(4), "shape": np.array([1, -1])}, [1, 3, 4, 4])
    graph = load_model(str(src)).graph
    (name, logits), = logit_tensors(graph).items()
    assert name == "y" and graph.tensors[logits] in ("m", "m___tr4p")      # the conv output, or its layout copy

    def one_hot(rng):
        x = np.zeros((1, 3, 4, 4))
        x[0, rng.integers(0, 3, 16), np.arange(16) // 4, np.arange(16) % 4] = 1
        return x + rng.normal(0, 0.05, x.shape)
    folder = _samples(tmp_path, one_hot)
    cfg = {"path": str(folder), "input_type": "sequence", "range_method": "auto", "int8_ops": "auto",
           "target_cosine": 0.5}
    scores = {}
    for score_on in ("outputs", "logits"):
        acc = mnnlite.quantize(src, tmp_path / f"{score_on}.mnn", {**cfg, "score_on": score_on}).accuracy
        assert acc.score_on == score_on
        scores[score_on] = acc.cosine_before["y"]
    assert scores["outputs"] > 1 - 1e-9 and scores["logits"] < 1 - 1e-6          # int8 error only in the logits


def _outlier_softmax_model(tmp_path):
    """conv -> Softmax, calibrated on one-hot inputs (noise 0.05) with one value of ±300 per
    sample: the max range of ``x`` spends its codes on the outlier (step 2.4, every one-hot 1 rounds to 0 or
    2.4); KL's threshold clips it and keeps the inputs.  The histogram's expected error keeps the outlier
    (clipping 300 costs more than the coarse steps), which the model's outputs show to be wrong."""
    from onnx import helper

    w = np.zeros((4, 3, 1, 1), np.float32)
    w[:, :, 0, 0] = [[20, 0, 0], [0, 20, 0], [0, 0, 20], [-20, -20, -20]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["m"]), helper.make_node("Softmax", ["m"], ["y"], axis=1)]
    src = _save_onnx(tmp_path, nodes, {"w": w, "b": np.zeros(4)}, [1, 3, 16, 16])

    def sample(rng):
        x = np.zeros((1, 3, 16, 16))
        hw = np.arange(256)
        x[0, rng.integers(0, 3, 256), hw // 16, hw % 16] = 1
        x = x + rng.normal(0, 0.05, x.shape)
        x[0, rng.integers(0, 3), rng.integers(0, 16), rng.integers(0, 16)] = rng.choice([-300.0, 300.0])
        return x
    return src, _samples(tmp_path, sample), sample


def test_range_candidates_choose_by_the_heldout_samples(tmp_path):
    """``range_candidates`` ["max", "kl"] on the outlier model: each candidate's all-int8 file is scored on
    the held-out samples and the KL file, which keeps them, wins in either order of the list; the judged
    score counts the logits of the final Softmax (int8 error the saturated probabilities hide); the file
    is the one the winning method alone gives, and MNN's runtime gives our int8 runtime's outputs on it."""
    src, folder, sample = _outlier_softmax_model(tmp_path)
    cfg = {"path": str(folder), "input_type": "sequence", "int8_ops": "auto", "target_cosine": 0.5}
    rng = np.random.default_rng(11)
    feeds = [{"x": sample(rng).astype(np.float32)} for _ in range(3)]
    for order in (["max", "kl"], ["kl", "max"]):
        dst = tmp_path / f"{order[0]}.mnn"
        acc = mnnlite.quantize(src, dst, {**cfg, "range_candidates": order}).accuracy
        assert list(acc.range_candidates) == order and acc.range_method == "kl"
        assert acc.range_candidates["kl"] > acc.range_candidates["max"] + 0.1
        assert min(acc.cosine_before.values()) > 0.999                 # the outputs: saturated
        assert acc.range_candidates["kl"] < min(acc.cosine_before.values()) - 0.1   # the logits: not
        assert any("range candidates" in line and "chosen kl" in line for line in acc.summary_lines())
        x_range = next(t for t in acc.tensors if t.name.startswith("x"))
        assert x_range.method == "kl" and x_range.hi < 100
    assert _output_cosine(src, dst, feeds) > 0.99
    _oracle_agrees(dst, feeds)
    mnnlite.quantize(src, tmp_path / "alone.mnn", {**cfg, "range_method": "kl"})
    assert (tmp_path / "alone.mnn").read_bytes() == dst.read_bytes()


def test_range_candidates_keep_the_first_unless_clearly_beaten():
    """A later candidate replaces the earlier one only when it removes at least RANGE_CANDIDATE_MARGIN of
    its held-out error (1 - score); a final activation's logits count like an output."""
    from mnnlite.quant.accurate import RANGE_CANDIDATE_MARGIN, _choose_ranges
    from mnnlite.quant.sensitivity import LOGITS_SUFFIX

    class Built:
        def __init__(self, method):
            self.method = method

        def build(self, names):
            return self.method, {}

    def choose(scores):
        class Judge:
            def score(self, model, finals=False):
                assert finals
                return scores[model]
        b, own, judged = _choose_ranges(Built, list(scores), ["c"], Judge())
        return b.method, own, judged

    error = 0.1
    small = 1 - error * (1 - RANGE_CANDIDATE_MARGIN / 2)
    large = 1 - error * (1 - 2 * RANGE_CANDIDATE_MARGIN)
    assert choose({"auto": {"y": 0.9}, "percentile": {"y": small}})[0] == "auto"
    method, own, judged = choose({"auto": {"y": 0.9}, "percentile": {"y": large}})
    assert method == "percentile" and own == {"y": large} and judged == {"auto": 0.9, "percentile": large}
    # the logits decide where the outputs tie; the outputs' own scores are what the report keeps
    logits = {"auto": {"y": 1.0, "y" + LOGITS_SUFFIX: 0.99}, "percentile": {"y": 1.0, "y" + LOGITS_SUFFIX: 0.999}}
    method, own, judged = choose(logits)
    assert method == "percentile" and own == {"y": 1.0} and judged["percentile"] == 0.999


def test_range_candidates_need_heldout_samples(tmp_path):
    src, folder, _ = _outlier_softmax_model(tmp_path)
    cfg = {"path": str(folder), "input_type": "sequence", "range_candidates": ["auto", "percentile"]}
    with pytest.raises(ConfigError, match="range_candidates.*target_cosine"):
        mnnlite.quantize(src, tmp_path / "n.mnn", cfg)
    assert not (tmp_path / "n.mnn").exists()


def test_unknown_range_method_is_rejected():
    with pytest.raises(ValueError, match="range method"):
        choose_range(_histogram(np.ones(10)), "entropy")


# ------------------------------------------------------------------------------------------ config

def test_config_keys_and_preset(tmp_path):
    cfg = load_config({"path": "x", "preset": "accurate"})
    assert (cfg.range_method, cfg.int8_ops, cfg.target_cosine) == ("auto", "auto", 0.99) and cfg.accurate
    assert cfg.weight_range_method == "mse" and cfg.cross_layer_equalization and not cfg.bias_correction
    cfg = load_config({"path": "x", "preset": "accurate", "target_cosine": 0.995, "range_method": "mse"})
    assert (cfg.range_method, cfg.target_cosine) == ("mse", 0.995)
    assert not load_config({"path": "x"}).accurate
    assert (cfg.range_objective, cfg.score_on) == (None, None)         # the preset keeps both at their defaults
    assert cfg.range_candidates is None                               # an explicit range_method is the choice
    assert load_config({"path": "x", "preset": "accurate"}).range_candidates == ("auto", "percentile")
    assert load_config({"path": "x", "range_candidates": ["kl", "max"]}).range_candidates == ("kl", "max")
    assert load_config({"path": "x", "range_objective": "downstream"}).accurate
    assert load_config({"path": "x"}, overrides={"preset": "accurate"}).accurate
    assert load_config({"path": "x", "range_method": "max"}, overrides={"preset": "accurate"}).range_method == "max"
    for bad, key in (({"preset": "fast"}, "preset"), ({"range_method": "KL"}, "range_method"),
                     ({"target_cosine": 1.5}, "target_cosine"), ({"int8_ops": "all"}, "int8_ops"),
                     ({"holdout": 0}, "holdout"), ({"max_float_convs": 2}, "max_float_convs"),
                     ({"range_objective": "output"}, "range_objective"), ({"score_on": "probs"}, "score_on"),
                     ({"range_candidates": ["auto"]}, "range_candidates"),
                     ({"range_candidates": ["auto", "auto"]}, "range_candidates"),
                     ({"range_candidates": "auto"}, "range_candidates"),
                     ({"range_candidates": ["auto", "KL"]}, "range_candidates")):
        with pytest.raises(ConfigError, match=key):
            load_config({"path": "x", **bad})


# ------------------------------------------------------------------------------------------ small graphs

def _concat_model(tmp_path):
    """Two convs of one input, one 100x the other, concatenated and read by a third conv."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)) * 0.2
    nodes = [_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             _node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),
             _node("Concat", ["a", "b"], ["c"], axis=1),
             _node("Conv", ["c", "w3"], ["y"])]
    inits = {"w1": w1, "w2": rng.standard_normal((4, 3, 3, 3)) * 20.0,
             "w3": np.concatenate([np.eye(4), np.eye(4) * 0.01], axis=1).reshape(4, 8, 1, 1)}
    return _save_onnx(tmp_path, nodes, inits, [1, 3, 16, 16])


def _node(*args, **kwargs):
    from onnx import helper

    return helper.make_node(*args, **kwargs)


def test_concat_of_two_ranges_keeps_a_scale_per_input(tmp_path):
    src = _concat_model(tmp_path)
    folder = _samples(tmp_path, lambda rng: rng.standard_normal((1, 3, 16, 16)))
    cfg = {"path": str(folder), "input_type": "sequence"}
    dst = tmp_path / "acc.mnn"
    report = mnnlite.quantize(src, dst, {**cfg, "preset": "accurate"})
    g = mnnlite.load_model(dst).graph
    concat = next(op for op in mnnlite.load_model(src).graph.ops if op.type == OpType.Concat)
    a, b = (int(t) for t in concat.inputIndexes)
    c = int(concat.outputIndexes[0])
    qa, qb = (g.quant_info[t] for t in (a, b))
    assert qb.scale > 20 * qa.scale                       # each input its own range, not b's for both
    assert c not in g.quant_info                          # so MNN's Raster (Concat) runs float ...
    reader = next(o for o in report.accuracy.ops if o.name == "y")
    assert not reader.int8 and "concatenates" in reader.reason     # ... and so does the conv reading it
    feeds = [{"x": np.load(p)["x"]} for p in sorted(folder.iterdir())][-3:]
    _oracle_agrees(dst, feeds)
    ours = _output_cosine(src, dst, feeds)
    theirs = _output_cosine(src, _mnn_kl(tmp_path, src, {**cfg}), feeds)
    assert ours > 0.999 and ours > theirs
    # int8_ops "convs" (no repairs, no concat rule): the reader is int8, and accuracy drops
    plain = mnnlite.quantize(src, tmp_path / "convs.mnn", {**cfg, "int8_ops": "convs"})
    assert next(o for o in plain.accuracy.ops if o.name == "y").int8 and not plain.accuracy.repairs
    assert _output_cosine(src, tmp_path / "convs.mnn", feeds) < ours


def _attention_model(tmp_path):
    """Conv 1x1 -> tokens; scores = h h^T + additive -10000 mask; softmax; attn h -> conv 1x1."""
    rng = np.random.default_rng(3)
    mask = np.zeros((1, 8, 8))
    mask[..., 6:] = -10000.0
    nodes = [_node("Conv", ["x", "w1"], ["h4"]),
             _node("Reshape", ["h4", "s3"], ["h"]),                 # [1, 16, 8]
             _node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),     # [1, 8, 16]
             _node("MatMul", ["ht", "h"], ["scores"]),              # [1, 8, 8]
             _node("Add", ["scores", "mask"], ["masked"]),
             _node("Softmax", ["masked"], ["attn"], axis=-1),
             _node("MatMul", ["attn", "ht"], ["ctx"]),              # [1, 8, 16]
             _node("Transpose", ["ctx"], ["ctxt"], perm=[0, 2, 1]),
             _node("Reshape", ["ctxt", "s4"], ["c4"]),
             _node("Conv", ["c4", "w2"], ["y"])]
    inits = {"w1": rng.standard_normal((16, 16, 1, 1)) * 0.25, "w2": rng.standard_normal((16, 16, 1, 1)) * 0.25,
             "mask": mask, "s3": np.array([1, 16, 8]), "s4": np.array([1, 16, 8, 1])}
    save_onnx(tmp_path / "att.onnx", nodes, [("x", [1, 16, 8, 1])], ["y"],
              {k: np.asarray(v, np.int64 if k.startswith("s") else np.float32) for k, v in inits.items()})
    convert_onnx(tmp_path / "att.onnx", tmp_path / "att.mnn")
    return tmp_path / "att.mnn"


def test_attention_mask_never_shares_a_range_with_the_scores(tmp_path):
    src = _attention_model(tmp_path)
    folder = _samples(tmp_path, lambda rng: rng.standard_normal((1, 16, 8, 1)))
    cfg = {"path": str(folder), "input_type": "sequence"}
    dst = tmp_path / "acc.mnn"
    mnnlite.quantize(src, dst, {**cfg, "preset": "accurate"})
    g = mnnlite.load_model(dst).graph
    for op in g.ops:                       # the mask add and the softmax carry no int8 range
        if op.type in (OpType.Softmax, OpType.BinaryOp) or op.type == OpType.Eltwise:
            assert not any(int(t) in g.quant_info for t in op.outputIndexes), op.name
    feeds = [{"x": np.load(p)["x"]} for p in sorted(folder.iterdir())][-3:]
    _oracle_agrees(dst, feeds)
    ours = _output_cosine(src, dst, feeds)
    theirs = _output_cosine(src, _mnn_kl(tmp_path, src, cfg), feeds)
    assert ours > 0.995 and ours >= theirs


def _two_concat_model(tmp_path):
    """ddddocr det's neck in small: a SiLU output read by an Interp (downsampling) into one Concat and
    directly by another Concat (each with a ReLU'd conv), each read by a conv."""
    rng = np.random.default_rng(5)
    nodes = [_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             _node("Sigmoid", ["a"], ["sg"]), _node("Mul", ["a", "sg"], ["s"]),
             _node("Resize", ["s", "", "half"], ["u"], mode="nearest"),
             _node("Conv", ["x", "w2"], ["e1"], pads=[1, 1, 1, 1], strides=[2, 2]), _node("Relu", ["e1"], ["d1"]),
             _node("Concat", ["u", "d1"], ["c1"], axis=1),
             _node("Conv", ["c1", "w3"], ["y1"]),
             _node("Conv", ["x", "w4"], ["e2"], pads=[1, 1, 1, 1]), _node("Relu", ["e2"], ["d2"]),
             _node("Concat", ["s", "d2"], ["c2"], axis=1),
             _node("Conv", ["c2", "w5"], ["y2"])]
    # similar ranges everywhere (ReLU'd convs next to the SiLU): no other repair of the flow applies
    inits = {"w1": rng.standard_normal((4, 3, 3, 3)) * 0.4, "w2": rng.standard_normal((4, 3, 3, 3)) * 0.4,
             "w3": rng.standard_normal((4, 8, 1, 1)) * 0.3, "w4": rng.standard_normal((4, 3, 3, 3)) * 0.4,
             "w5": rng.standard_normal((4, 8, 1, 1)) * 0.3, "half": np.array([1, 1, 0.5, 0.5])}
    save_onnx(tmp_path / "neck.onnx", nodes, [("x", [1, 3, 16, 16])], ["y1", "y2"],
              {k: np.asarray(v, np.float32) for k, v in inits.items()})
    convert_onnx(tmp_path / "neck.onnx", tmp_path / "neck.mnn")
    return tmp_path / "neck.mnn"


def test_attribute_mnn_picks_by_heap_address_is_written_instead(tmp_path):
    """MNN's runtime spreads the Concats' attributes back to the SiLU output in ``std::set<const Tensor*>``
    order, so which of the two it gets depends on heap addresses (ddddocr det's accurate file gave
    different outputs in different MNN processes).  The file gives that tensor quant info of its own, the
    attribute the int8 Interp reading it writes, and every process then runs the same."""
    from mnnlite.int8 import int8_plan

    src = _two_concat_model(tmp_path)
    folder = _samples(tmp_path, lambda rng: rng.standard_normal((1, 3, 16, 16)))
    cfg = {"path": str(folder), "input_type": "sequence"}
    feeds = [{"x": np.load(p)["x"]} for p in sorted(folder.iterdir())][-3:]
    silu = mnnlite.load_model(src).graph.tensors.index("s")
    plain = tmp_path / "convs.mnn"                  # MNN's spreading left as it falls
    mnnlite.quantize(src, plain, {**cfg, "int8_ops": "convs"})
    ambiguous = int8_plan(Interpreter(str(plain)), feeds[0]).order_dependent()
    assert silu not in mnnlite.load_model(plain).graph.quant_info and len(ambiguous.get(silu, ())) == 2
    dst = tmp_path / "acc.mnn"
    report = mnnlite.quantize(src, dst, {**cfg, "preset": "accurate"})
    assert any(r["tensor"] == silu and "heap addresses" in r["reason"] for r in report.accuracy.repairs), report.accuracy.repairs
    interp = Interpreter(str(dst), impl="mnn")
    plan = int8_plan(interp, feeds[0])
    assert silu in mnnlite.load_model(dst).graph.quant_info and not plan.order_dependent()
    interp_cmd = next(c for c in plan.commands if c.type == "Interp")
    assert interp_cmd.int8 and plan.tensors[silu].attr.key == plan.tensors[interp_cmd.outputs[0]].attr.key
    for f in feeds:
        theirs, got = run_oracle(dst, f), interp.run(f)
        for k in theirs:
            np.testing.assert_array_equal(got[k], theirs[k])


# ------------------------------------------------------------------------------------------ real model

@pytest.fixture(scope="module")
def cls_accurate(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acc")
    import model_zoo as zoo

    src = zoo.model_path("ppocr_cls", "float")
    dst = tmp / "cls.mnn"
    report = mnnlite.quantize(src, dst, calib_config("ppocr_cls"), preset="accurate")
    return src, dst, report


def test_real_model_accurate_file(cls_accurate):
    src, dst, report = cls_accurate
    acc = report.accuracy
    assert acc.int8_conv_mac_share >= 0.9
    assert min(acc.cosine_after.values()) >= 0.99 or not acc.reached
    feeds = list(image_feeds("ppocr_cls", "heldout"))
    _oracle_agrees(dst, feeds[:2])
    v = mnnlite.validate(src, dst, calib_config("ppocr_cls"), data=str(_heldout("ppocr_cls")))
    assert min(o.cosine for o in v.outputs) >= 0.99


def _heldout(name):
    import model_zoo as zoo

    return zoo.heldout_dir(name)


def test_report_json_and_html(cls_accurate):
    _, dst, report = cls_accurate
    data = json.loads((dst.parent / (dst.name + ".report.json")).read_text())
    convs = [o for o in data["ops"] if o["type"].startswith("Convolution")]
    assert convs and all(o["reason"] for o in data["ops"])
    assert {t["method"] for t in data["tensors"]} <= {"max", "mse", "kl", "percentile99.9", "percentile99.99",
                                                      "percentile99.999"}
    assert data["cosine_before"] and data["cosine_after"]
    # the preset's range candidates, each judged on the held-out samples, and the one the file uses
    assert list(data["range_candidates"]) == ["auto", "percentile"] and data["range_method"] in data["range_candidates"]
    page = (dst.parent / (dst.name + ".report.html")).read_text()
    assert page.count("<svg") >= 2 and "Ops left float" in page and "http" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert report.summary().startswith("quantized")


def test_default_flow_ignores_the_accuracy_machinery(tmp_path):
    """Without the keys the MNN-exact flow runs: no report, KL's file."""
    import model_zoo as zoo

    src = zoo.model_path("cnn", "float")
    report = mnnlite.quantize(src, tmp_path / "kl.mnn", calib_config("cnn"))
    assert report.accuracy is None and not (tmp_path / "kl.mnn.report.json").exists()
    assert report.feature_method == "KL"


def test_target_cosine_leaves_the_most_harmful_convs_float(tmp_path):
    """ppocr_cls at an unreachable-without-help target: the file's score rises above the all-int8 one, the
    convs left float are listed with their reason, and a user metric replaces the cosine."""
    import model_zoo as zoo

    src = zoo.model_path("ppocr_cls", "float")
    calls = []

    def metric(ref, test):
        calls.append(1)
        ref, test = (np.concatenate([np.ravel(a) for a in (x if isinstance(x, list) else [x])]) for x in (ref, test))
        return 1.0 - float(np.abs(ref - test).max())

    cfg = dict(calib_config("ppocr_cls"), target_cosine=0.9999, max_float_convs=0.2, range_method="max",
               int8_ops="auto")
    report = mnnlite.quantize(src, tmp_path / "t.mnn", cfg, metric=metric)
    acc = report.accuracy
    assert calls and acc.evaluations >= 2
    before, after = min(acc.cosine_before.values()), min(acc.cosine_after.values())
    floats = [o for o in acc.ops if o.type.startswith("Conv") and not o.int8]
    assert after > before and floats and all("accuracy control" in o.reason for o in floats)
    assert len(floats) <= int(0.2 * len([o for o in acc.ops if o.type.startswith("Conv")]))


def test_validate_target_arm_switches_the_max_pool_quirk(tmp_path):
    """cnn's KL file runs maxpool_21 in int8 on signed codes: x86 (MNN's signed-byte compare) and ARM (true
    max) differ, and ARM equals float max pooling of the dequantized codes."""
    import model_zoo as zoo

    path = zoo.model_path("cnn", "quant_kl")
    feeds = image_feeds("cnn", "heldout")[0]
    seen = {}
    for target in ("x86", "arm"):
        values = {}

        def grab(i, name, a, values=values):
            values[name] = np.array(a)
        Interpreter(path, target=target).run(feeds, observe=grab)
        seen[target] = values
    pool = next(op for op in mnnlite.load_model(path).graph.ops if op.name == "maxpool_21")
    name = mnnlite.load_model(path).graph.tensors[int(pool.outputIndexes[0])]
    assert not np.array_equal(seen["x86"][name], seen["arm"][name])
    with pytest.raises(ValueError, match="target"):
        Interpreter(path, target="riscv")


def test_cli_preset_and_errors(tmp_path):
    import model_zoo as zoo

    src = zoo.model_path("cnn", "float")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(calib_config("cnn")))
    run = [sys.executable, "-m", "mnnlite", "quantize", "--quiet", "--preset", "accurate", str(src),
           str(tmp_path / "a.mnn"), str(cfg)]
    assert subprocess.run(run, capture_output=True).returncode == 0
    assert (tmp_path / "a.mnn.report.html").exists()
    tool = [sys.executable, "-c", "import sys; from mnnlite.cli.quantize import quantized_main; "
            "sys.exit(quantized_main(sys.argv[1:]))"]
    proc = subprocess.run(tool + [str(src), str(tmp_path / "b.mnn"), str(cfg), "--preset", "accurate"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and (tmp_path / "b.mnn.report.json").exists()
    bad = subprocess.run(run[:6] + ["fast"] + run[7:], capture_output=True, text=True)
    assert bad.returncode == 2 and "preset" in bad.stderr and "Traceback" not in bad.stderr
    cfg.write_text(json.dumps({**calib_config("cnn"), "target_cosine": 2}))
    bad = subprocess.run(run, capture_output=True, text=True)
    assert bad.returncode == 2 and "target_cosine" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "c.mnn").exists()
    cfg.write_text(json.dumps(calib_config("cnn")))
    val = [sys.executable, "-m", "mnnlite", "validate", str(src), str(tmp_path / "a.mnn"), str(cfg),
           "--data", str(_heldout("cnn")), "--target", "arm", "--worst", "0"]
    proc = subprocess.run(val, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


class _Forgetful(dict):
    """A cache that keeps nothing."""

    def __setitem__(self, key, value):
        pass


def _one_by_one(self, samples, fn):
    for feeds in samples:
        yield fn(self.first, feeds)


def test_shared_plan_facts_and_threads_do_not_change_the_file(tmp_path, monkeypatch):
    """The candidate files of accuracy control share the float run their int8 plans start from
    (``Interpreter(plan_facts=)``), their int8 weights are made and the samples run on two threads:
    with that cache keeping nothing and every sample on one interpreter, every plan is built from its
    own float run, and the file and its report are the same."""
    import model_zoo as zoo

    from mnnlite.quant import accurate

    src = zoo.model_path("cnn", "float")
    cfg = dict(calib_config("cnn"), preset="accurate", target_cosine=0.99999, max_float_convs=0.5)
    monkeypatch.setattr(accurate, "SERIAL_BELOW_SECONDS", 0.0)      # two threads even on cnn's short forward
    first = mnnlite.quantize(src, tmp_path / "shared.mnn", cfg, threads=2).accuracy
    build = accurate._Builder.__init__

    def forgetful(self, *args, **kw):
        build(self, *args, **kw)
        self.plan_facts = _Forgetful()
    monkeypatch.setattr(accurate._Builder, "__init__", forgetful)
    monkeypatch.setattr(accurate.Workers, "map", _one_by_one)
    second = mnnlite.quantize(src, tmp_path / "own.mnn", cfg, threads=1).accuracy
    assert first.evaluations >= 2 and len(first.trials) >= 2
    assert (tmp_path / "shared.mnn").read_bytes() == (tmp_path / "own.mnn").read_bytes()
    a, b = first.to_dict(), second.to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b
