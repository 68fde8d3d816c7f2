"""Single int8 ops against the official runtime: small hand-written .mnn graphs with quant info.

The zoo files exercise conv/depthwise/pool/binary/unary-table/interp/softmax/layernorm; these graphs
add what they miss or only touch lightly: every int8 BinaryOp kind (incl. MNN's fixed-point MIN/MAX),
NEG/ABS/SIGN without a table, an arbitrary lookup table, PReLU, Scale, ReLU made int8 by attribute
propagation, ReLU6 (float), Interp with an output scale different from the input's, and zero points /
[-128, 127] ranges.  Inputs are NC4HW4 like convolution outputs.
"""
from __future__ import annotations

import numpy as np
import pytest

from mnnlite.format.tables import TABLE_CLASSES as T
from mnnlite.format.tables import BinaryOpOperation as B
from mnnlite.format.tables import DataFormat, OpType
from mnnlite.format.tables import UnaryOpOperation as U
from mnnlite.int8 import int8_plan
from mnnlite.runtime import Interpreter
from builders.mnn_graph import NetBuilder
from oracle import run_oracle

C4 = DataFormat.NC4HW4
SHAPE = (1, 6, 5, 7)


def _feeds(names, seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return {n: (rng.standard_normal(shape) * 1.5).astype(np.float32) for n in names}


def _agree(mnn_oracle, path, feeds, exact=True):
    interp = Interpreter(path)
    ours = interp.run(feeds)
    theirs = run_oracle(path, feeds)
    for k in theirs:
        if exact:
            np.testing.assert_array_equal(ours[k], theirs[k], err_msg=f"output {k}")
        else:
            np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-6, err_msg=f"output {k}")
    return interp


BINARY = [B.ADD, B.SUB, B.MUL, B.REALDIV, B.MINIMUM, B.MAXIMUM, B.SquaredDifference, B.POW]


@pytest.mark.oracle
@pytest.mark.parametrize("op", BINARY, ids=[B(o).name for o in BINARY])
def test_binary_int8(mnn_oracle, tmp_path, op):
    b = NetBuilder()
    b.input("a", list(SHAPE), dformat=C4, fmt=C4)
    b.input("b", list(SHAPE), dformat=C4, fmt=C4)
    b.op(OpType.BinaryOp, ["a", "b"], ["y"], T["BinaryOp"](opType=int(op), T=1), C4)
    b.quant("a", 0.021, 3)
    b.quant("b", 0.017, -5, -128, 127)
    b.quant("y", 0.05, 2, -128, 127)
    path = b.save(tmp_path / "bin.mnn", ["y"])
    feeds = _feeds(["a", "b"])
    if op == B.POW:
        feeds["a"] = np.abs(feeds["a"])
    interp = _agree(mnn_oracle, path, feeds)
    assert interp.model.graph.ops[-1].name in int8_plan(interp, feeds).int8_ops()


UNARY = [U.NEG, U.ABS, U.SIGN]


@pytest.mark.oracle
@pytest.mark.parametrize("op", UNARY + ["table"], ids=[U(o).name for o in UNARY] + ["table"])
def test_unary_int8(mnn_oracle, tmp_path, op):
    b = NetBuilder()
    b.input("x", list(SHAPE), dformat=C4, fmt=C4)
    if op == "table":
        table = np.random.default_rng(3).integers(-127, 128, 255).astype(np.int8)
        main = T["UnaryOp"](opType=int(U.SIGMOID), T=1, tableInt8=table)
    else:
        main = T["UnaryOp"](opType=int(op), T=1)
    b.op(OpType.UnaryOp, ["x"], ["y"], main, C4)
    b.quant("x", 0.03, 4)
    b.quant("y", 0.02, -3)
    interp = _agree(mnn_oracle, b.save(tmp_path / "u.mnn", ["y"]), _feeds(["x"], 1))
    assert "y" in int8_plan(interp, _feeds(["x"], 1)).int8_ops()


@pytest.mark.oracle
def test_prelu_scale_relu_relu6(mnn_oracle, tmp_path):
    """PReLU and Scale run int8; the ReLU inherits its input's attribute (same object) and runs int8;
    ReLU6 has no int8 kernel in MNN and runs float between casts."""
    c = SHAPE[1]
    rng = np.random.default_rng(5)
    b = NetBuilder()
    b.input("x", list(SHAPE), dformat=C4, fmt=C4)
    b.op(OpType.PReLU, ["x"], ["p"], T["PRelu"](slopeCount=c, slope=(rng.random(c) * 0.5).astype(np.float32)), C4)
    b.op(OpType.Scale, ["p"], ["s"], T["Scale"](channels=c, scaleData=(rng.random(c) + 0.5).astype(np.float32),
                                                 biasData=(rng.standard_normal(c) * 0.1).astype(np.float32)), C4)
    b.op(OpType.ReLU, ["s"], ["r"], T["Relu"](slope=0.0), C4)
    b.op(OpType.ReLU6, ["r"], ["r6"], T["Relu6"](minValue=0.0, maxValue=1.0), C4)
    b.quant("x", 0.025, 2)
    b.quant("p", 0.02, -4)
    b.quant("s", 0.03, 1)
    b.quant("r6", 0.01, 0)
    feeds = _feeds(["x"], 2)
    interp = _agree(mnn_oracle, b.save(tmp_path / "act.mnn", ["p", "s", "r", "r6"]), feeds)
    plan = int8_plan(interp, feeds)
    assert {"p", "s", "r"} <= set(plan.int8_ops()) and "r6" in plan.float_ops()


@pytest.mark.oracle
@pytest.mark.parametrize("kind", [1, 2], ids=["nearest", "bilinear"])
def test_interp_int8_keeps_codes(mnn_oracle, tmp_path, kind):
    """MNN's int8 Interp never rescales: the output scale (here 3x the input's) only relabels codes."""
    b = NetBuilder()
    b.input("x", list(SHAPE), dformat=C4, fmt=C4)
    b.op(OpType.Interp, ["x"], ["y"], T["Interp"](resizeType=kind, outputHeight=11, outputWidth=9, ctm=2), C4)
    b.quant("x", 0.02, 5)
    b.quant("y", 0.06, -7)
    feeds = _feeds(["x"], 4)
    interp = _agree(mnn_oracle, b.save(tmp_path / "interp.mnn", ["y"]), feeds)
    assert "y" in int8_plan(interp, feeds).int8_ops()


@pytest.mark.oracle
def test_pool_softmax_layernorm_int8(mnn_oracle, tmp_path):
    c = SHAPE[1]
    rng = np.random.default_rng(6)
    b = NetBuilder()
    b.input("x", list(SHAPE), dformat=C4, fmt=C4)
    b.op(OpType.Pooling, ["x"], ["mp"], T["Pool"](kernelX=3, kernelY=2, strideX=2, strideY=1, padX=1, padY=0,
                                                   type=0), C4)
    b.op(OpType.Pooling, ["x"], ["ap"], T["Pool"](kernelX=3, kernelY=3, strideX=1, strideY=2, padX=0, padY=1,
                                                   type=1), C4)
    b.op(OpType.Softmax, ["x"], ["sm"], T["Axis"](axis=1), C4)
    b.input("t", [1, 4, 8], dformat=DataFormat.NCHW, fmt=DataFormat.NCHW)
    b.op(OpType.LayerNorm, ["t"], ["ln"], T["LayerNorm"](axis=np.array([-1], np.int32), epsilon=1e-5,
                                                        gamma=(rng.random(8) + 0.5).astype(np.float32),
                                                        beta=(rng.standard_normal(8) * 0.1).astype(np.float32)),
         DataFormat.NCHW)
    b.quant("x", 0.03, -6, -128, 127)
    b.quant("mp", 0.03, -6, -128, 127)
    b.quant("ap", 0.03, -6, -128, 127)
    b.quant("sm", 0.004, -100)
    b.quant("t", 0.02, 0)
    b.quant("ln", 0.03, 3)
    feeds = {**_feeds(["x"], 7), **_feeds(["t"], 8, (1, 4, 8))}
    interp = _agree(mnn_oracle, b.save(tmp_path / "misc.mnn", ["mp", "ap", "sm", "ln"]), feeds)
    assert {"mp", "ap", "sm", "ln"} <= set(int8_plan(interp, feeds).int8_ops())
    del c
