"""impl="mnn": kernels that round like the official runtime's x86 CPU backend (1 thread), checked bit for
bit against it, and the zoo run with them.

The kernel cases are single-op ONNX graphs converted by the official converter; their shapes reach every
tile path of MNNPackedMatMul (E % 24 in 0, 20 + r, 16 + r, 5s, 4, 3, 2 and the lone last column; K % 4
in 0..3), fused ReLU / ReLU6, MNNExp's 8-wide path and scalar tail, and a global average pool.
"""
from __future__ import annotations

import MNN  # noqa: F401  (test oracle: a declared test dependency)
import model_zoo as zoo
import numpy as np
import onnx  # noqa: F401
import pytest
from builders.onnx_graph import onnx_graph
from oracle import assert_matches, run_oracle
from oracle import convert_onnx as convert
from test_zoo_accuracy import CASES as ZOO_CASES
from test_zoo_accuracy import _feeds as zoo_feeds

from mnnlite.runtime import Interpreter

rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def _conv_model(c, o, k, stride, pad, act):
    from onnx import helper

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[stride] * 2,
                              pads=[pad] * 4)]
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    elif act == "relu6":
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    else:
        nodes[0].output[0] = "y"
    inits = {"w": randn(o, c, k, k) * 0.3, "b": randn(o), "lo": np.float32(0), "hi": np.float32(6)}
    if act != "relu6":
        del inits["lo"], inits["hi"]
    return onnx_graph(nodes, [("x", [None, c, None, None], "FLOAT")], ["y"], inits)


# (in channels, out channels, kernel, stride, pad, activation, input N, H, W): 1x1 convs run
# Convolution1x1Strassen, the others DenseConvolutionTiledExecutor; E = N * OH * OW output columns.
CONV_CASES = {
    "1x1_e49_lone_k13": (13, 20, 1, 1, 0, None, 1, 7, 7),       # 24 + 25: 20, 5, lone column
    "1x1_e36_k8_relu": (8, 12, 1, 1, 0, "relu", 1, 6, 6),       # 24 + 12: 5, 5, 2
    "1x1_e81_k5_relu6": (5, 9, 1, 1, 0, "relu6", 1, 9, 9),      # 72 + 9: 5, 4
    "1x1_e35_k3": (3, 16, 1, 1, 0, None, 1, 5, 7),              # 24 + 11: 5, 5, lone column
    "1x1_e23_k16": (16, 7, 1, 1, 0, None, 1, 1, 23),            # 20, 3
    "1x1_e41_k6": (6, 24, 1, 1, 0, None, 1, 1, 41),             # 24 + 17: 16, lone column
    "1x1_e16_k40": (40, 33, 1, 1, 0, "relu", 1, 4, 4),          # 16 only, odd output channels
    "3x3s2_first_conv": (3, 16, 3, 2, 1, "relu6", 1, 33, 31),    # ppocr_det's stem, odd sizes
    "3x3s2_batch2": (6, 10, 3, 2, 1, None, 2, 9, 11),           # the batch's planes tiled as one
    "5x5s2_k7": (7, 5, 5, 2, 2, None, 1, 13, 10),
    # 3x3 stride 1 where no Winograd unit pays (bestWinogradUnit's rate < 1): MNN's tiled GEMM, not
    # Winograd (MTCNN P-Net's first conv); 10 -> 16 on 23x23 takes F(6x6)
    "3x3s1_no_winograd_unit": (3, 10, 3, 1, 0, None, 1, 48, 48),
    "3x3s1_winograd_f6": (10, 16, 3, 1, 0, None, 1, 23, 23),
    # Convolution1x1Strassen splits large products (StrassenMatrixComputor): ppocr_rec's 480x480 on 6x80,
    # then leftover rows (O = 490: 2 x 240 + 10) and columns (E = 511: 2 x 240 + 31) with ReLU
    "1x1_strassen_480": (480, 480, 1, 1, 0, None, 1, 6, 80),
    "1x1_strassen_remainders": (480, 490, 1, 1, 0, "relu", 1, 7, 73),
    # K above 32768 / (24 + 4): _generateBasicMatMul's K chunks (1168 + 32), bias and clamp at the end
    "1x1_k_chunks": (1200, 16, 1, 1, 0, "relu6", 1, 5, 6),
}


@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_dense_conv_is_bit_exact_with_mnn(tmp_path, case):
    c, o, k, stride, pad, act, n, h, w = CONV_CASES[case]
    path = convert(_conv_model(c, o, k, stride, pad, act), tmp_path / f"{case}.mnn")
    feeds = {"x": randn(n, c, h, w) * 2}
    got, want = Interpreter(path, impl="mnn").run(feeds), run_oracle(path, feeds, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"], err_msg=case)


# op -> the input's scale and offset (inside the function's domain)
_ACTIVATIONS = {"Sigmoid": (12, 0), "Tanh": (6, 0), "Exp": (6, 0), "Erf": (2, 0), "Sin": (4, 0), "Cos": (4, 0),
                "Tan": (0.4, 0), "Atan": (4, 0), "Log": (0, 0), "Sinh": (3, 0), "Cosh": (3, 0), "Asinh": (4, 0),
                "Acosh": (0, 1), "Atanh": (0.3, 0)}


@pytest.mark.parametrize("op", list(_ACTIVATIONS))
@pytest.mark.parametrize("shape", [(1, 3, 17, 5), (5, 13), (2, 4, 3)], ids=str)
def test_activation_is_bit_exact_with_mnn(tmp_path, shape, op):
    """NC4HW4 4-D tensors (every value 8-wide) and NCHW ones whose size leaves a scalar tail.  MNNTanh is
    MNNExp(-2x), then (1 - e) / (1 + e): numpy's exp missed MNN by an ulp on silero VAD's LSTM cell; Erf,
    Sin, Cos, Log, ... are libm's float functions, not the correctly rounded values (MiniLM's GELU erf: one
    code after a cast)."""
    from onnx import helper

    dims = [None] * len(shape)
    path = convert(onnx_graph([helper.make_node(op, ["x"], ["y"])], [("x", dims, "FLOAT")], ["y"]),
                   tmp_path / f"{op}.mnn")
    scale, offset = _ACTIVATIONS[op]
    x = randn(*shape) * scale + offset if scale else np.abs(randn(*shape)) * 3 + offset + 1e-3
    got, want = Interpreter(path, impl="mnn").run({"x": x}), run_oracle(path, {"x": x}, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])


def test_global_average_pool_is_bit_exact_with_mnn(tmp_path):
    from onnx import helper

    path = convert(onnx_graph([helper.make_node("GlobalAveragePool", ["x"], ["y"])],
                              [("x", [None, 13, None, None], "FLOAT")], ["y"]), tmp_path / "gap.mnn")
    x = randn(2, 13, 19, 23) * 3 + 1
    got, want = Interpreter(path, impl="mnn").run({"x": x}), run_oracle(path, {"x": x}, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])


def test_strassen_matmul_splits_only_large_products():
    """Where StrassenMatrixComputor does not split, strassen_matmul is packed_matmul's bits; where it does
    (the bits differ from the plain product's), it stays within float rounding of the product."""
    from mnnlite.kernels import mnn_exact

    a, w, b = randn(64, 50), randn(12, 64), randn(12)
    np.testing.assert_array_equal(mnn_exact.strassen_matmul(a, w, b, 1), mnn_exact.packed_matmul(a, w, b, 1))
    a, w, b = randn(480, 480), randn(480, 480) * 0.05, randn(480)
    split, plain = mnn_exact.strassen_matmul(a, w, b), mnn_exact.packed_matmul(a, w, b)
    assert not np.array_equal(split, plain)
    exact = (w.astype(np.float64) @ a.astype(np.float64) + b[:, None]).astype(np.float32)
    np.testing.assert_allclose(split, exact, rtol=0, atol=2e-5 * np.abs(exact).max())


def _weights_as_inputs_model(c, o, k, group):
    """A conv whose weights and bias are graph inputs: MNN runs ConvolutionTiledExecutorMultiInput /
    the multi-input depthwise kernel (the EMA calibration's convs), never Winograd or Strassen."""
    from onnx import helper

    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], pads=[k // 2] * 4, group=group)
    return onnx_graph([node], [("x", [1, c, None, None], "FLOAT"), ("w", [o, c // group, k, k], "FLOAT"),
                               ("b", [o], "FLOAT")], ["y"])


@pytest.mark.parametrize("c, o, k, group, hw", [(16, 24, 3, 1, (20, 30)), (480, 480, 1, 1, (6, 80)),
                                                (24, 24, 3, 24, (13, 17))],
                         ids=["3x3_dense", "1x1_large", "3x3_depthwise"])
def test_conv_with_weights_as_inputs_is_bit_exact_with_mnn(tmp_path, c, o, k, group, hw):
    path = convert(_weights_as_inputs_model(c, o, k, group), tmp_path / "conv_inputs.mnn")
    feeds = {"x": randn(1, c, *hw) * 2, "w": randn(o, c // group, k, k) * 0.2, "b": randn(o)}
    got, want = Interpreter(path, impl="mnn").run(feeds), run_oracle(path, feeds, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])


@pytest.mark.parametrize("kernel, stride, pads, include", [((3, 2), (3, 2), (0, 0, 0, 0), 0),
                                                           ((3, 3), (2, 2), (1, 1, 1, 1), 0),
                                                           ((3, 3), (2, 2), (1, 1, 1, 1), 1),
                                                           ((2, 2), (1, 1), (0, 1, 0, 1), 0)],
                         ids=["ppocr_rec", "pad_exclude", "pad_include", "right_pad"])
def test_average_pool_is_bit_exact_with_mnn(tmp_path, kernel, stride, pads, include):
    """CPUPool's poolingAvg: windows inside the input add each tap times 1/count, windows on the padding
    sum the taps and then multiply."""
    from onnx import helper

    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=list(kernel), strides=list(stride),
                            pads=list(pads), count_include_pad=include)
    path = convert(onnx_graph([node], [("x", [None, 11, None, None], "FLOAT")], ["y"]), tmp_path / "avg.mnn")
    x = randn(1, 11, 9, 20) * 3 + 1
    got, want = Interpreter(path, impl="mnn").run({"x": x}), run_oracle(path, {"x": x}, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])


@pytest.mark.parametrize("shape", [(1, 40, 120), (3, 37), (2, 5, 8)], ids=str)
def test_layer_norm_is_bit_exact_with_mnn(tmp_path, shape):
    """MNNNorm's 8-lane sums with a scalar tail, and (x - mean) * gamma * (1 / sqrt(var + eps)) + beta."""
    from onnx import helper

    n = shape[-1]
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-6)
    path = convert(onnx_graph([node], [("x", [None] * len(shape), "FLOAT")], ["y"],
                              {"g": randn(n) * 0.5 + 1, "b": randn(n) * 0.1}, opset=17), tmp_path / "ln.mnn")
    x = randn(*shape) * 4 + 2
    got, want = Interpreter(path, impl="mnn").run({"x": x}), run_oracle(path, {"x": x}, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])


@pytest.mark.parametrize("shape, axis", [((320, 40), -1), ((5, 13), 1), ((2, 12, 3, 5), 1), ((4, 9, 6), 0)],
                         ids=["rows40", "tail", "inner_axis", "outer_axis"])
def test_softmax_is_bit_exact_with_mnn(tmp_path, shape, axis):
    """_AVX_MNNSoftmax: MNNExp's 8-wide polynomial on whole groups, libm expf on the tail, sums in order."""
    from onnx import helper

    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    path = convert(onnx_graph([node], [("x", [None] * len(shape), "FLOAT")], ["y"]), tmp_path / "softmax.mnn")
    x = randn(*shape) * 5
    got, want = Interpreter(path, impl="mnn").run({"x": x}), run_oracle(path, {"x": x}, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])


def test_ppocr_rec_is_bit_exact_with_mnn():
    """Strassen 1x1 convs, average pool, LayerNorm and Softmax rounding like MNN: PP-OCR rec gives MNN's
    bits, tensor for tensor (the KL scales then equal the oracle quantizer's)."""
    path = zoo.model_path("ppocr_rec")
    feeds = zoo_feeds("ppocr_rec", 0)
    got, want = Interpreter(path, impl="mnn").run(feeds), run_oracle(path, feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"ppocr_rec {name}")


@pytest.mark.parametrize("size", [0, 1])
def test_ppocr_det_is_bit_exact_with_mnn(size):
    """The issue's case: with impl="fast" the sigmoid map is 1e-3 * max away (Winograd noise on
    decorrelated inputs, see test_zoo_accuracy.ORACLE_WINOGRAD_REL_ERR); with impl="mnn" every op on
    the path rounds like MNN, so the outputs are MNN's bits."""
    path = zoo.model_path("ppocr_det")
    feeds = zoo_feeds("ppocr_det", size)
    got, want = Interpreter(path, impl="mnn").run(feeds), run_oracle(path, feeds)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=f"ppocr_det size {size} {name}")


@pytest.mark.parametrize("name, variant", ZOO_CASES, ids=[f"{n}-{v}" for n, v in ZOO_CASES])
def test_zoo_model_matches_official_runtime_with_impl_mnn(name, variant):
    """Every float zoo model within the default budget (1e-4 * max|ref|, cosine 0.999999), ppocr_det
    included: no oracle allowance needed."""
    path = zoo.model_path(name, variant)
    interp = Interpreter(path, impl="mnn")
    sizes = 1 if variant == "float_static" else len(next(iter(zoo.input_shapes(name).values())))
    for i in range(sizes):
        feeds = zoo_feeds(name, i)
        assert_matches(interp.run(feeds), run_oracle(path, feeds), f"{name}/{variant} size {i} impl=mnn")



def test_portable_path_gives_the_fma_path_bits():
    """Without AVX2 the kernels call libm's fmaf (also one rounding): the same bits, slower."""
    from mnnlite.kernels import cpu, mnn_exact

    a, w, b, x = randn(37, 49) * 3, randn(11, 37), randn(11), randn(3, 5, 67) * 12

    big_a, big_w, big_b = randn(480, 500), randn(490, 480) * 0.05, randn(490)
    rows, gamma, beta = randn(7, 45) * 4, randn(45), randn(45)

    def run():
        return (mnn_exact.packed_matmul(a, w, b, act=1), mnn_exact.sigmoid(x),
                mnn_exact.strassen_matmul(big_a, big_w, big_b, act=1), mnn_exact.softmax_rows(rows),
                mnn_exact.norm_rows(rows, 1e-5, False, gamma, beta), mnn_exact.exp(rows))

    simd = run()
    cpu.set_limit([])
    try:
        portable = run()
    finally:
        cpu.set_limit(None)
    for got, want in zip(portable, simd):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(1, 3, 17, 5), (5, 13)], ids=str)
def test_silu_is_bit_exact_with_mnn(tmp_path, shape):
    """x * sigmoid(x) converts to UnaryOp SILU: MNNSiLu is MNNExp(-x) then x / (1 + e) (ddddocr_det's
    activations; a one-ulp difference flips int8 codes after it)."""
    from onnx import helper

    from mnnlite.format.tables import UnaryOpOperation

    dims = [None] * len(shape)
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])]
    path = convert(onnx_graph(nodes, [("x", dims, "FLOAT")], ["y"]), tmp_path / "silu.mnn")
    interp = Interpreter(path, impl="mnn")
    assert any(op.main is not None and getattr(op.main, "opType", None) == UnaryOpOperation.SILU
               for op in interp.model.graph.ops)
    x = randn(*shape) * 12
    got, want = interp.run({"x": x}), run_oracle(path, {"x": x}, layout="nchw")
    np.testing.assert_array_equal(got["y"], want["y"])
