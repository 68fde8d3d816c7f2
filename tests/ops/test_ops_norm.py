"""LayerNorm (axes, RMSNorm, group, gamma/beta rules), InstanceNormalization, BatchNorm and GroupNorm."""
import dataclasses

import numpy as np
import pytest

from mnnlite.format.tables import TABLE_CLASSES as T
from mnnlite.format.tables import DataFormat, OpType
from mnnlite.ops.norm import group_norm, instance_norm
from mnnlite.ops.registry import OpCall
from mnnlite.runtime import Interpreter
from opcases import check, materialize, node, rng
from oracle import run_oracle
from oracle.compare import assert_output_matches

R = rng(6)
SHAPE = (2, 3, 4, 5)
X = (R.standard_normal(SHAPE) * 3 + 1).astype(np.float32)


def _f(*shape):
    return R.uniform(0.5, 1.5, shape).astype(np.float32)


def ln(case_id, x, axis, norm_shape, patch=None):
    return node(case_id, "LayerNormalization", {"x": x}, inits={"g": _f(*norm_shape), "b": _f(*norm_shape) - 1},
                axis=axis, opset=17, patch=patch)


def _ln(model):
    return next(op for op in model.graph.ops if op.type == OpType.LayerNorm).main


def rms(model):
    _ln(model).useRMSNorm = True


def grouped(model):
    """group = 3 over [2, 3, 4, 5]: 6 rows of 20 (the gamma of axis [-2, -1] has 20 values)."""
    _ln(model).group = 3


def axes(values, size):
    def patch(model):
        p = _ln(model)
        p.axis = np.array(values, np.int32)
        p.gamma, p.beta = _f(size), _f(size) - 1
    patch.__name__ = "axes_" + "_".join(str(v) for v in values)
    return patch


def no_affine(model):
    p = _ln(model)
    p.gamma = p.beta = None


def gamma_only(model):
    """CPULayerNorm applies gamma and beta only when both are present."""
    _ln(model).beta = None


LN_CASES = [
    ln("ln_last", X, -1, (5,)),
    ln("ln_last2", X, -2, (4, 5)),
    ln("ln_3d", X[0], -1, (5,)),
    ln("ln_rms", X, -1, (5,), patch=rms),
    ln("ln_group", X, -2, (4, 5), patch=grouped),
    ln("ln_axis1", X, -1, (5,), patch=axes([1], 3)),
    ln("ln_axis12", X, -1, (5,), patch=axes([1, 2], 12)),
    ln("ln_axis0_2", X[0], -1, (5,), patch=axes([0, 2], 20)),     # MNN normalizes the last 2 dims
    ln("ln_no_affine", X, -1, (5,), patch=no_affine),
    ln("ln_gamma_only", X, -1, (5,), patch=gamma_only),
    node("instance_norm", "InstanceNormalization", {"x": X}, inits={"g": _f(3), "b": _f(3) - 1}, epsilon=1e-5),
]
LRN_CASES = [node(f"lrn_{size}_c{c}", "LRN", {"x": _f(2, c, 4, 5) * 2}, size=size, alpha=0.3, beta=0.75, bias=1.5)
             for size in (1, 3, 4, 5) for c in (3, 8)]


def within_channel(model):
    next(op for op in model.graph.ops if op.type == OpType.LRN).main.regionType = 1


LRN_CASES.append(node("lrn_within", "LRN", {"x": _f(1, 3, 6, 7) * 2}, size=3, alpha=0.2, beta=0.6, bias=2.0,
                      patch=within_channel))


BN_SCALE = node("bn", "BatchNormalization", {"x": X}, inits={k: _f(3) for k in ("s", "b", "m", "v")}, epsilon=1e-3)
BN_TRAIN = dataclasses.replace(BN_SCALE, id="bn_training", flags=("--forTraining",))


@pytest.fixture(scope="module")
def paths():
    return materialize(LN_CASES + LRN_CASES + [BN_TRAIN, BN_SCALE])


@pytest.mark.parametrize("case", LN_CASES, ids=repr)
def test_layer_norm(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", LRN_CASES, ids=repr)
def test_lrn(case, paths):
    check(case, paths[case.id])


def test_batch_norm_matches_the_scale_mnn_folds_it_into(paths):
    """MNN's CPU backend cannot run a BatchNorm op (--forTraining files): compare with the Scale the
    converter makes of the same graph, run by the official runtime."""
    assert any(op.type == OpType.BatchNorm for op in Interpreter(paths[BN_TRAIN.id]).model.graph.ops)
    ref = run_oracle(paths[BN_SCALE.id], BN_TRAIN.feeds)["y"]
    for impl in ("fast", "ref"):
        got = Interpreter(paths[BN_TRAIN.id], impl=impl).run(BN_TRAIN.feeds)["y"]
        assert_output_matches(got, ref, f"BatchNorm [{impl}]")


@pytest.mark.parametrize("swish, prefix", [(0, False), (1, False), (1, True)])
def test_group_norm(swish, prefix):
    """GroupNorm is a GPU op in MNN 3.6.1 (no CPU kernel): checked against its definition."""
    x = X
    gamma, beta = _f(3), _f(3) - 1
    op = T["Op"](type=int(OpType.GroupNorm), name="gn",
                 main=T["GroupNorm"](epsilon=1e-5, gamma=gamma, beta=beta, group=3, bSwish=swish))
    inputs = [x] + ([_f(2, 3)] if prefix else [])
    y = group_norm(OpCall(op, inputs, [DataFormat.NC4HW4] * len(inputs)))[0]
    v = x.astype(np.float64) + (inputs[1].reshape(2, 3, 1, 1) if prefix else 0)
    g = v.reshape(2, 3, -1)
    ref = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(SHAPE)
    ref = ref * gamma.reshape(1, 3, 1, 1) + beta.reshape(1, 3, 1, 1)
    if swish:
        ref = ref / (1 + np.exp(-ref))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_instance_norm_legacy_op():
    """OpType InstanceNorm (x, mean, variance inputs; BatchNorm table): CPUInstanceNorm.cpp's formula."""
    mean, var = _f(2, 3, 1, 1), _f(2, 3, 1, 1)
    slope, bias = _f(3), _f(3)
    op = T["Op"](type=int(OpType.InstanceNorm), name="in",
                 main=T["BatchNorm"](channels=3, slopeData=slope, biasData=bias, epsilon=1e-3))
    y = instance_norm(OpCall(op, [X, mean, var], [DataFormat.NC4HW4] * 3))[0]
    ref = (X - mean) / np.sqrt(var + 1e-3) * slope.reshape(1, 3, 1, 1) + bias.reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
