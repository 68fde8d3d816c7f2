"""While and If against the official runtime's Module API (the Session API cannot run them): ONNX
Loop/If/LSTM as the converter emits them, and a TF-style While (cond graph + aliases) built by hand."""
from __future__ import annotations

import numpy as np

import MNN  # noqa: F401,E402  (test oracle: a declared test dependency)
import onnx  # noqa: F401,E402
from onnx import TensorProto, helper  # noqa: E402

from mnnlite.format.tables import TABLE_CLASSES as T, OpType  # noqa: E402
from mnnlite.runtime import Interpreter  # noqa: E402
from builders.mnn_graph import NetBuilder, strings  # noqa: E402
from builders.onnx_graph import onnx_graph  # noqa: E402
from oracle import assert_matches, run_oracle  # noqa: E402
from oracle import convert_onnx as convert  # noqa: E402

node = helper.make_node
vi = helper.make_tensor_value_info
rng = np.random.default_rng(3)


def _if_loop_model():
    """If on sign(sum(x)) whose branches read the outer x; Loop with a carried value, a captured outer
    tensor, a scan output, and a body condition that stops it before the trip count."""
    then_g = helper.make_graph([node("Mul", ["x", "two"], ["then_out"])], "then_b", [],
                               [vi("then_out", TensorProto.FLOAT, [1, 8])])
    else_g = helper.make_graph([node("Sub", ["x", "one"], ["else_out"])], "else_b", [],
                               [vi("else_out", TensorProto.FLOAT, [1, 8])])
    body = helper.make_graph(
        [node("Less", ["it", "stop"], ["c_out"]),
         node("Mul", ["v_in", "half"], ["vh"]),
         node("Add", ["vh", "x"], ["v_out"]),
         node("Tanh", ["v_out"], ["scan"])],
        "body",
        [vi("it", TensorProto.INT64, []), vi("c_in", TensorProto.BOOL, []), vi("v_in", TensorProto.FLOAT, [1, 8])],
        [vi("c_out", TensorProto.BOOL, []), vi("v_out", TensorProto.FLOAT, [1, 8]),
         vi("scan", TensorProto.FLOAT, [1, 8])])
    nodes = [node("ReduceSum", ["x"], ["s"], keepdims=0),
             node("Greater", ["s", "zero"], ["cond"]),
             node("If", ["cond"], ["if_out"], then_branch=then_g, else_branch=else_g),
             node("Loop", ["trip", "true", "if_out"], ["loop_out", "loop_scan"], body=body)]
    inits = {"two": np.array(2.0, np.float32), "one": np.array(1.0, np.float32),
             "half": np.array(0.5, np.float32), "zero": np.array(0.0, np.float32),
             "trip": np.array(6, np.int64), "true": np.array(True), "stop": np.array(3, np.int64)}
    return onnx_graph(nodes, [("x", [1, 8], "FLOAT")], ["if_out", "loop_out", "loop_scan"], inits)


def _lstm_model():
    h, i = 8, 4
    inits = {"W": rng.standard_normal((1, 4 * h, i)).astype(np.float32) * 0.4,
             "R": rng.standard_normal((1, 4 * h, h)).astype(np.float32) * 0.4,
             "B": rng.standard_normal((1, 8 * h)).astype(np.float32) * 0.1}
    # without initial states: with them the 3.6.1 converter unrolls the LSTM for the declared length
    nodes = [node("LSTM", ["x", "W", "R", "B"], ["y", "yh", "yc"], hidden_size=h)]
    return onnx_graph(nodes, [("x", ["T", 1, i], "FLOAT")], ["y", "yh", "yc"], inits, opset=14)


def test_onnx_if_and_loop(tmp_path):
    path = convert(_if_loop_model(), tmp_path / "ifloop.mnn")
    types = {OpType(op.type).name for op in Interpreter(path).model.graph.ops}
    assert {"If", "While"} <= types
    interp = Interpreter(path)
    for sign in (1.0, -1.0):       # both branches
        x = (np.abs(rng.standard_normal((1, 8))) * sign).astype(np.float32)
        got = interp.run({"x": x})
        assert_matches(got, run_oracle(path, {"x": x}, api="module", layout="nchw"), f"sign {sign}")
        assert got["loop_scan"].shape == (4, 1, 8)      # iterations 0..3: the body stops at it == 3


def test_onnx_lstm_while_two_lengths(tmp_path):
    path = convert(_lstm_model(), tmp_path / "lstm.mnn")
    interp = Interpreter(path)
    assert any(op.type == OpType.While for op in interp.model.graph.ops)
    for steps in (5, 2):
        feeds = {"x": rng.standard_normal((steps, 1, 4)).astype(np.float32)}
        assert_matches(interp.run(feeds), run_oracle(path, feeds, api="module", layout="nchw"), f"T={steps}")


def _tf_while(tmp_path):
    """i = 0; acc = x; while i < n: acc = acc * 0.5 + x; i += 1  (cond and body wired by alias names)."""
    b = NetBuilder()
    # cond graph: inputs (i, n) -> i < n
    b.input("i", [], dtype=3)
    b.input("n", [], dtype=3)
    b.op(OpType.BinaryOp, ["i", "n"], ["keep"], T["BinaryOp"](opType=12, T=3))
    b.subgraph("cond", ["i", "n"], ["keep"])
    # body graph: inputs (i, acc, x) -> (i + 1, acc * 0.5 + x)
    b.input("i", [], dtype=3)
    b.input("acc", [1, 6])
    b.input("x", [1, 6])
    b.const("one", np.array(1, np.int32))
    b.const("half", np.array(0.5, np.float32))
    b.op(OpType.BinaryOp, ["i", "one"], ["i_next"], T["BinaryOp"](opType=0, T=3))
    b.op(OpType.BinaryOp, ["acc", "half"], ["acc_half"], T["BinaryOp"](opType=2, T=1))
    b.op(OpType.BinaryOp, ["acc_half", "x"], ["acc_next"], T["BinaryOp"](opType=0, T=1))
    b.subgraph("body", ["i", "acc", "x"], ["i_next", "acc_next"])
    # main graph
    b.input("x", [1, 6])
    b.const("i0", np.array(0, np.int32))
    b.const("n", np.array(3, np.int32))
    param = T["WhileParam"](cond_graph="cond", body_graph="body",
                            aliases_inputs=[strings("i"), strings("n"), strings("acc", "x")],
                            aliases_outputs=["acc", "i"],
                            aliases_updates=[strings("i_next", "i"), strings("acc_next", "acc")])
    b.op(OpType.While, ["i0", "n", "x"], ["acc_out", "i_out"], param)
    return b.save(tmp_path / "tfwhile.mnn", ["acc_out", "i_out"])


def test_tf_style_while_with_cond_graph(tmp_path):
    path = _tf_while(tmp_path)
    x = rng.standard_normal((1, 6)).astype(np.float32)
    got = Interpreter(path).run({"x": x})
    ref = run_oracle(path, {"x": x}, api="module", layout="nchw")
    assert_matches(got, ref, "tf while")
    acc = x
    for _ in range(3):
        acc = acc * 0.5 + x
    np.testing.assert_allclose(got["acc_out"], acc, rtol=1e-6)
    assert int(got["i_out"]) == 3


def test_if_without_output_aliases_picks_outputs_by_position(tmp_path):
    b = NetBuilder()
    b.input("a", [1, 4])
    b.const("k", np.array(3.0, np.float32))
    b.op(OpType.BinaryOp, ["a", "k"], ["t"], T["BinaryOp"](opType=2, T=1))
    b.subgraph("then", ["a"], ["t"])
    b.input("a", [1, 4])
    b.op(OpType.UnaryOp, ["a"], ["e"], T["UnaryOp"](opType=1, T=1))
    b.subgraph("else", ["a"], ["e"])
    b.input("c", [1], dtype=3)
    b.input("x", [1, 4])
    b.op(OpType.If, ["c", "x"], ["y"], T["IfParam"](then_graph="then", else_graph="else",
                                                   aliases_inputs=[strings(), strings("a")]))
    path = b.save(tmp_path / "if.mnn", ["y"])
    x = rng.standard_normal((1, 4)).astype(np.float32)
    interp = Interpreter(path)
    for c, expect in ((1, x * 3), (0, -x)):
        feeds = {"c": np.array([c], np.int32), "x": x}
        got = interp.run(feeds)
        np.testing.assert_allclose(got["y"], expect, rtol=1e-6)
        assert_matches(got, run_oracle(path, feeds, api="module", layout="nchw"), f"cond {c}")
