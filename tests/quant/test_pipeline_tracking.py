"""Which tensors get statistics and quant info, and the scale propagation (backend.lowering / tracking.plan_tracking).

Oracles: the commands the official runtime executes (Session debug callbacks: names and types after
MNN's geometry lowering) and the set of tensors the official quantizer gives quant info.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_pipeline_oracle import IMAGE_MODELS, calib_config, image_feeds, our_plan, scale_map

import mnnlite
from mnnlite.quant.feature.kl import uses_max_threshold
from mnnlite.quant.tracking import TrackingPlan, needed_statistics, propagate
from builders.onnx_graph import onnx_graph
from oracle import convert_onnx, trace
from oracle import quantize as oracle_quantize

# Region fusion (MNN's RegionFuse) is modelled by one rule (backend.lowering.Lowering._view): a packing conversion
# of a reshaped transpose is not fused, the reshaped view gets a Raster of its own (ppocr_rec: Reshape494,
# Reshape631).  Chains MNN leaves unfused that the rule misses would be listed here: none in the zoo.
UNFUSED: dict[str, set[str]] = {}
ALL_IMAGE_MODELS = IMAGE_MODELS + ("nhwc_like",)


@pytest.mark.parametrize("name", ALL_IMAGE_MODELS)
def test_schedule_matches_mnn_commands(zoo, name):
    """Our lowered schedule names and types every command as MNN's runtime executes them, in order."""
    _graph, _facts, plan = our_plan(name)
    theirs = [(n, t) for n, t, _i, _o in trace(zoo.model_path(name, "float"), image_feeds(name)[0])]
    ours = [(s.name, s.type) for s in plan.steps]
    missing = [c for c in theirs if c not in ours]
    assert [c for c in ours if c not in theirs] == []
    # the only commands we do not predict: the second Raster of each unfused view chain
    assert all(n.endswith("_raster_1") and t == "Raster" for n, t in missing), missing
    assert len(missing) == len(UNFUSED.get(name, ()))
    assert [c for c in theirs if c in ours] == ours


@pytest.mark.parametrize("name", ALL_IMAGE_MODELS)
def test_quant_info_set_matches_oracle(zoo, name):
    """After propagation, exactly the tensors MNN's quantizer writes quant info for."""
    graph, _facts, plan = our_plan(name)
    ours = {t for t in propagate({t: (1.0, 0.0) for t in plan.tracked}, plan) if t >= 0}
    theirs = set(mnnlite.load_model(zoo.model_path(name, "quant_kl")).graph.quant_info)
    # (scale-0 entries included: the set is MNN's; quantize() then leaves those out, see test_zero_scales)
    assert ours - theirs == set()
    assert {graph.producer[t].name for t in theirs - ours} == UNFUSED.get(name, set())


def test_propagation_equalities_match_oracle(zoo):
    """Propagation reproduces MNN's equal-scale groups (concat inputs, pool outputs, reshape chains):
    tensors we make equal are equal in the oracle's file."""
    graph, _facts, plan = our_plan("cnn")
    tokens = propagate({t: (t, 0) for t in plan.tracked}, plan)
    theirs = scale_map(zoo.model_path("cnn", "quant_kl"))
    groups: dict = {}
    for t, (src, _) in tokens.items():
        if t >= 0:
            groups.setdefault(src, []).append(t)
    merged = [g for g in groups.values() if len(g) > 1]
    assert merged, "cnn has concats, pools and reshapes: some scales must be shared"
    for g in merged:
        assert len({theirs[t] for t in g}) == 1, [(graph.tensors[t], theirs[t]) for t in g]


def test_propagate_rules():
    """Doc §6.6: Rasters then Pools, each in name order; >1 input: inputs take the output's scale."""
    plan = TrackingPlan([], {1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}, set())
    plan.rasters = {"b_raster_0": (3, [1, 2]), "a_raster_0": (4, [3])}    # a_... first: 4 := 3
    plan.pools = {"pool": (5, [4])}
    out = propagate({1: (0.1, 0), 2: (0.2, 0), 3: (0.3, 0), 4: (0.4, 0), 5: (0.5, 0)}, plan)
    assert out == {1: (0.3, 0), 2: (0.3, 0), 3: (0.3, 0), 4: (0.3, 0), 5: (0.3, 0)}
    plan.rasters = {"r": (-1, [1, 2])}                 # a temporary output: MNN's map reads (0, 0)
    assert propagate({1: (0.1, 0), 2: (0.2, 0)}, plan)[1] == (0.0, 0.0)


def test_needed_statistics_skip_overwritten_tensors():
    plan = TrackingPlan([], {1: "a", 2: "b", 3: "c"}, set())
    plan.rasters = {"r": (3, [1, 2])}                  # 1 and 2 take 3's scale
    assert needed_statistics(plan) == {3}


@pytest.mark.parametrize("shape, layout, small", [
    ((1, 8, 9, 11), "NCHW", True), ((1, 8, 10, 10), "NCHW", False), ((1, 10), "NCHW", True),
    ((1, 40, 120), "NCHW", False), ((1, 40, 99), "NCHW", True), ((1, 10, 10, 3), "NHWC", False)])
def test_small_area_rule(shape, layout, small):
    """MAX threshold when width*height < 100; dims missing below rank 4 count as 1 (MNN pads them)."""
    assert uses_max_threshold(shape, layout) is small


def test_rank3_tensor_uses_kl_like_mnn(zoo):
    """ppocr_rec's [1, 40, 120] LayerNorm outputs: KL, as the official quantizer does (not MAX)."""
    graph, facts, plan = our_plan("ppocr_rec")
    rank3 = [t for t in plan.tracked if len(facts[t].shape) == 3 and facts[t].shape[2] >= 100]
    assert rank3 and not any(uses_max_threshold(facts[t].shape) for t in rank3)


def _concat_after_interp_model(tmp_path):
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
             "w2": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3,
             "w3": rng.standard_normal((4, 16, 1, 1)).astype(np.float32) * 0.3,
             "sc": np.array([1, 1, 2, 2], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("MaxPool", ["ar"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["p", "", "sc"], ["u"], mode="nearest"),
             helper.make_node("Conv", ["x", "w2"], ["b"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["u", "b"], ["c"], axis=1),
             helper.make_node("Conv", ["c", "w3"], ["y"])]
    return convert_onnx(onnx_graph(nodes, [("x", [1, 3, 32, 32])], ["y"], inits), tmp_path / "m.mnn")


def test_concat_after_interp(zoo, tmp_path):
    """Observed rule: an Interp output is not among a Raster's recorded inputs, so a concat of an upsampled
    tensor and a conv output gives the concat the conv output's scale and leaves the Interp's alone."""
    from mnnlite.quant.quantize import quantize

    src = _concat_after_interp_model(tmp_path)
    cfg = dict(calib_config("cnn"), width=32, height=32)
    oracle = tmp_path / "oracle.mnn"
    oracle_quantize(src, oracle, cfg)
    quantize(src, tmp_path / "ours.mnn", cfg)
    g = mnnlite.load_model(src).graph
    ours, theirs = scale_map(tmp_path / "ours.mnn"), scale_map(oracle)
    assert set(ours) == set(theirs)
    concat = next(op for op in g.ops if op.name == "c")
    u, b = (int(i) for i in concat.inputIndexes)
    c = int(concat.outputIndexes[0])
    for s in (ours, theirs):
        assert s[c] == s[b] and s[u] != s[c]
    for t in (u, b, c):
        assert abs(ours[t] - theirs[t]) <= 1e-5 * theirs[t]
