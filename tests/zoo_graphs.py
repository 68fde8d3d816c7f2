"""The zoo's synthetic ONNX models (test-only code; needs ``onnx``): each builder returns a checked
ModelProto whose weights are seeded by the model's name, so a rebuild gives the same file."""
from __future__ import annotations

import math
from typing import Callable, Dict

import numpy as np

from builders.onnx_graph import Graph


def build_cnn():
    """Classic CNN op families on an image with dynamic H/W (multiples of 8).

    Conv+BN+Relu, depthwise+Clip(0,6), grouped conv + PRelu, MaxPool, AveragePool with pads and
    ceil_mode (count_include_pad=0), SE-like GlobalAveragePool+Sigmoid+Mul, HardSwish, residual Add,
    Resize nearest (asymmetric/floor) + Concat, ConvTranspose stride 2, Resize linear (half_pixel and
    align_corners), and a classifier head GlobalAveragePool -> Flatten -> Gemm -> Softmax.
    """
    g = Graph("cnn")
    x = g.input("image", [1, 3, "H", "W"])
    c1 = g.op("Relu", [g.bn(g.conv(x, 3, 16, 3), 16)])                           # H
    d1 = g.relu6(g.conv(c1, 16, 16, 3, s=2, group=16))                            # H/2, depthwise
    g1 = g.op("PRelu", [g.conv(d1, 16, 32, 3, group=2), g.const(g.randn((32, 1, 1), 0.1) + 0.25)])
    m1 = g.op("MaxPool", [g1], kernel_shape=[2, 2], strides=[2, 2])               # H/4
    a1 = g.op("AveragePool", [g1], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
              ceil_mode=1, count_include_pad=0)                                   # H/4 + 1
    se = g.op("Sigmoid", [g.op("GlobalAveragePool", [a1])])
    s1 = g.op("Mul", [m1, se])
    h1 = g.op("HardSwish", [g.conv(s1, 32, 32, 3)])
    r1 = g.op("Add", [h1, s1])
    u1 = g.op("Resize", [r1, "", g.const([1, 1, 2, 2])], mode="nearest",
              coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # H/2
    e1 = g.conv(g.op("Concat", [u1, d1], axis=1), 48, 24, 1)
    w_t = g.weight((24, 16, 4, 4), 24 * 16)
    t1 = g.op("ConvTranspose", [e1, w_t, g.const(g.randn(16, 0.1))], kernel_shape=[4, 4],
              strides=[2, 2], pads=[1, 1, 1, 1])                                  # H
    f1 = g.op("Concat", [t1, c1], axis=1)
    r2 = g.op("Resize", [f1, "", g.const([1, 1, 0.5, 0.5])], mode="linear",
              coordinate_transformation_mode="half_pixel")
    r3 = g.op("Resize", [r2, "", g.const([1, 1, 2, 2])], mode="linear",
              coordinate_transformation_mode="align_corners")
    g.output(g.op("Sigmoid", [g.conv(r3, 32, 2, 1)]), "seg")
    p = g.op("Relu", [g.conv(r1, 32, 64, 3, s=2)])
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [p])], axis=1)
    fc = g.op("Gemm", [flat, g.weight((10, 64), 64), g.const(g.randn(10, 0.1))], transB=1)
    g.output(g.op("Softmax", [fc], axis=1), "prob")
    return g.model(14)  # HardSwish needs opset 14


def build_mobilenet():
    """MobileNetV2-style: 10 inverted residual blocks, BN kept for the converter to fold, ReLU6 as
    Clip(0,6); 224x224 nominal input, dynamic H/W (multiples of 32)."""
    g = Graph("mobilenet")
    x = g.input("input", [1, 3, "H", "W"])
    y = g.relu6(g.bn(g.conv(x, 3, 32, 3, s=2, bias=False), 32))
    cin = 32
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2), (6, 96, 1, 1)]:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            z = y
            if t != 1:
                z = g.relu6(g.bn(g.conv(z, cin, hidden, 1, bias=False), hidden))
            z = g.relu6(g.bn(g.conv(z, hidden, hidden, 3, s=stride, group=hidden, bias=False), hidden))
            z = g.bn(g.conv(z, hidden, c, 1, bias=False), c)
            y = g.op("Add", [y, z]) if stride == 1 and cin == c else z
            cin = c
    y = g.relu6(g.bn(g.conv(y, cin, 320, 1, bias=False), 320))
    flat = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    g.output(g.op("Gemm", [flat, g.weight((1000, 320), 320), g.const(g.randn(1000, 0.01))], transB=1),
             "logits")
    return g.model(13)


TRANSFORMER_VOCAB = 128


def build_transformer():
    """2-layer pre-LN encoder over int64 tokens of dynamic length S (max 64).

    Token embedding Gather, positional embedding via Shape/Gather/Range/Gather, LayerNormalization,
    MatMul with constant weights, Reshape/Transpose into heads, Q x K^T and P x V (activation x
    activation MatMul), Softmax over scores, Gelu as the Erf pattern, residual Adds.
    """
    g = Graph("transformer")
    d, heads, ffn, layers, max_len = 64, 4, 128, 2, 64
    dh = d // heads
    tok = g.input("tokens", [1, "S"], elem="INT64")
    x = g.op("Gather", [g.const(g.randn((TRANSFORMER_VOCAB, d), 0.5)), tok], axis=0)    # [1,S,d]
    seq_len = g.op("Gather", [g.op("Shape", [tok]), g.const(1, np.int64)], axis=0)      # scalar
    pos = g.op("Range", [g.const(0, np.int64), seq_len, g.const(1, np.int64)])
    x = g.op("Add", [x, g.op("Gather", [g.const(g.randn((max_len, d), 0.1)), pos], axis=0)])
    split_heads = g.ints([0, 0, heads, dh])
    merge_heads = g.ints([0, 0, d])
    for _ in range(layers):
        hdn = g.layer_norm(x, d)
        q, k, v = (g.op("Reshape", [g.linear(hdn, d, d), split_heads]) for _ in range(3))
        q = g.op("Transpose", [q], perm=[0, 2, 1, 3])                                   # [1,h,S,dh]
        kt = g.op("Transpose", [k], perm=[0, 2, 3, 1])                                  # [1,h,dh,S]
        v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
        scores = g.op("Mul", [g.op("MatMul", [q, kt]), g.const(1.0 / math.sqrt(dh))])
        att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])                   # [1,h,S,dh]
        att = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), merge_heads])
        x = g.op("Add", [x, g.linear(att, d, d)])
        hdn = g.gelu_erf(g.linear(g.layer_norm(x, d), d, ffn))
        x = g.op("Add", [x, g.linear(hdn, ffn, d)])
    g.output(g.linear(g.layer_norm(x, d), d, TRANSFORMER_VOCAB), "logits")
    return g.model(17)


def build_misc():
    """Shape/index/elementwise op zoo on two float inputs x, y of shape [1, 4, H, W] (H, W even)."""
    g = Graph("misc")
    x = g.input("x", [1, 4, "H", "W"])
    y = g.input("y", [1, 4, "H", "W"])
    big = 2 ** 31 - 1
    # Slice with steps and negative end, Split, Gather, reductions
    g.output(g.op("Slice", [x, g.ints([1, 0, 1]), g.ints([3, big, -1]), g.ints([1, 2, 3]),
                            g.ints([1, 2, 1])]), "slice_out")
    sa, sb = g.op("Split", [x, g.ints([1, 3])], n_out=2, axis=1)
    red = g.op("Sub", [g.op("Mul", [sa, g.const(2.0)]),
                       g.op("ReduceSum", [sb, g.ints([1])], keepdims=1)])
    red = g.op("Add", [red, g.op("ReduceMax", [x], axes=[1], keepdims=1)])
    g.output(red, "split_reduce")
    gat = g.op("Gather", [x, g.ints([3, 0, 2])], axis=1)
    g.output(g.op("ReduceMean", [gat], axes=[2, 3], keepdims=0), "gather_mean")
    # Pad: constant / reflect / edge, all to [1, 4, H+2, W+2]
    p_c = g.op("Pad", [x, g.ints([0, 0, 1, 1, 0, 0, 1, 1]), g.const(0.5)], mode="constant")
    p_r = g.op("Pad", [y, g.ints([0, 0, 1, 1, 0, 0, 1, 1])], mode="reflect")
    p_e = g.op("Pad", [x, g.ints([0, 0, 2, 0, 0, 0, 0, 2])], mode="edge")
    g.output(g.op("Add", [g.op("Add", [p_c, p_r]), p_e]), "pad_out")
    # Tile and Expand (to the runtime shape of y)
    g.output(g.op("Tile", [y, g.ints([1, 1, 1, 2])]), "tile_out")
    mean_y = g.op("ReduceMean", [y], axes=[2, 3], keepdims=1)
    g.output(g.op("Add", [x, g.op("Expand", [mean_y, g.op("Shape", [y])])]), "expand_out")
    # TopK / ArgMax (int64 in ONNX -> int32 in MNN), Cast, Where/Greater, Equal
    vals, idx = g.op("TopK", [x, g.ints([3])], n_out=2, axis=-1)
    g.output(vals, "topk_values")
    g.output(idx, "topk_indices", elem="INT64")
    am_x = g.op("ArgMax", [x], axis=1, keepdims=0)
    g.output(am_x, "argmax", elem="INT64")
    as_int = g.op("Cast", [g.op("Mul", [x, g.const(10.0)])], to=6)                     # INT32
    g.output(g.op("Div", [g.op("Cast", [as_int], to=1), g.const(10.0)]), "cast_out")
    g.output(g.op("Where", [g.op("Greater", [x, y]), x, g.op("Neg", [y])]), "where_out")
    same = g.op("Equal", [am_x, g.op("ArgMax", [y], axis=1, keepdims=0)])
    g.output(g.op("Cast", [same], to=1), "equal_out")
    # Range over the runtime width, ConstantOfShape, Squeeze/Unsqueeze
    width = g.op("Gather", [g.op("Shape", [x]), g.const(3, np.int64)], axis=0)
    ramp = g.op("Cast", [g.op("Range", [g.const(0, np.int64), width, g.const(1, np.int64)])], to=1)
    from onnx import numpy_helper
    quarter = numpy_helper.from_array(np.array([0.25], np.float32))
    cos_ = g.op("ConstantOfShape", [g.op("Shape", [x])], value=quarter)
    g.output(g.op("Add", [g.op("Add", [x, ramp]), cos_]), "range_out")
    sq = g.op("Unsqueeze", [g.op("ReduceSum", [x, g.ints([1])], keepdims=0), g.ints([1])])
    g.output(g.op("Squeeze", [sq, g.ints([0])]), "squeeze_out")
    # DepthToSpace (DCR and CRD) / SpaceToDepth
    d2s = g.op("Add", [g.op("DepthToSpace", [x], blocksize=2, mode="DCR"),
                       g.op("DepthToSpace", [y], blocksize=2, mode="CRD")])
    g.output(d2s, "d2s_out")
    g.output(g.op("SpaceToDepth", [d2s], blocksize=2), "s2d_out")
    # elementwise math
    a = g.op("Add", [g.op("Abs", [x]), g.const(1.0)])                                  # >= 1
    m1 = g.op("Add", [g.op("Pow", [a, g.const(1.5)]), g.op("Div", [x, a])])
    m1 = g.op("Sub", [m1, g.op("Mul", [g.op("Min", [x, y]), g.op("Max", [x, y])])])
    m1 = g.op("Add", [m1, g.op("Pow", [a, g.op("Sigmoid", [y])])])
    g.output(m1, "math1")
    m2 = g.op("Add", [g.op("Exp", [g.op("Neg", [g.op("Abs", [x])])]), g.op("Log", [a])])
    g.output(g.op("Add", [m2, g.op("Mul", [g.op("Sqrt", [a]), g.op("Tanh", [y])])]), "math2")
    m3 = g.op("Add", [g.op("Erf", [x]), g.op("Mul", [g.op("Sin", [x]), g.op("Cos", [y])])])
    g.output(g.op("Sub", [g.op("Add", [m3, g.op("Reciprocal", [a])]), g.op("Sub", [x, y])]), "math3")
    return g.model(13)


LSTM_STEPS = 12


def build_lstm():
    """Speech-style recurrent stack: ONNX LSTM (forward, initial states as inputs) then a
    bidirectional GRU (linear_before_reset=1, the PyTorch export).

    The 3.6.1 converter rewrites both into ``While`` ops with loop-body subgraphs ("Use While to
    compute LSTM, if don't want it, add --useOriginRNNImpl"; with that flag it keeps its own
    ``LSTM``/``RNN`` ops instead, which cannot be weight-quantized, so the zoo keeps the default).
    Converter bug: an LSTM node that does not use all three outputs (Y, Y_h, Y_c) crashes the
    While rewrite with SIGSEGV, so all three are graph outputs here.  Second bug: with a symbolic
    sequence length the converter silently treats T as 1 (one unrolled step, no While; the runtime
    then reads the T axis as batch and returns wrongly shaped results), so T is fixed (12).
    """
    g = Graph("lstm")
    t_in, h1, h2 = 16, 24, 16
    seq = g.input("seq", [LSTM_STEPS, 1, t_in])
    h0 = g.input("h0", [1, 1, h1])
    c0 = g.input("c0", [1, 1, h1])
    w = g.const(g.randn((1, 4 * h1, t_in), 0.25))
    r = g.const(g.randn((1, 4 * h1, h1), 0.25))
    b = g.const(g.randn((1, 8 * h1), 0.1))
    y, yh, yc = g.op("LSTM", [seq, w, r, b, "", h0, c0], n_out=3, hidden_size=h1)
    ys = g.op("Squeeze", [y, g.ints([1])])                                             # [T,1,h1]
    gw = g.const(g.randn((2, 3 * h2, h1), 0.25))
    gr = g.const(g.randn((2, 3 * h2, h2), 0.25))
    gb = g.const(g.randn((2, 6 * h2), 0.1))
    gy, gh = g.op("GRU", [ys, gw, gr, gb], n_out=2, hidden_size=h2, direction="bidirectional",
                  linear_before_reset=1)
    g.output(yh, "lstm_h")
    g.output(yc, "lstm_c")
    g.output(gy, "gru_y")
    g.output(gh, "gru_h")
    return g.model(14)


def build_ifgraph():
    """Control flow: ONNX If on a data-dependent condition and a Loop with a scan output
    (the converter emits MNN ``If`` and ``While`` ops with subgraphs)."""
    from onnx import TensorProto, helper

    g = Graph("ifgraph")
    x = g.input("x", [1, 8])
    cond = g.op("Greater", [g.op("ReduceSum", [x], keepdims=0), g.const(0.0)])
    # branches read the outer-scope x
    then_g = helper.make_graph([helper.make_node("Mul", [x, "k_two"], ["then_out"])], "then_branch", [],
                               [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, [1, 8])])
    else_g = helper.make_graph([helper.make_node("Sub", [x, "k_one"], ["else_out"])], "else_branch", [],
                               [helper.make_tensor_value_info("else_out", TensorProto.FLOAT, [1, 8])])
    g.const(2.0, name="k_two")
    g.const(1.0, name="k_one")
    g.const(0.5, name="k_half")
    if_out = g.op("If", [cond], out="if_out", then_branch=then_g, else_branch=else_g)
    g.outputs.append((if_out, TensorProto.FLOAT))
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["v_in", "k_half"], ["v_half"]),
         helper.make_node("Add", ["v_half", x], ["v_out"]),
         helper.make_node("Tanh", ["v_out"], ["scan_out"])],
        "loop_body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 8]),
         helper.make_tensor_value_info("scan_out", TensorProto.FLOAT, [1, 8])])
    trip = g.const(4, np.int64)
    keep_going = g.const(True, np.bool_)
    g.op("Loop", [trip, keep_going, if_out], out=["loop_out", "loop_scan"], body=body)
    g.outputs += [("loop_out", TensorProto.FLOAT), ("loop_scan", TensorProto.FLOAT)]
    return g.model(13)


def build_nhwc_like():
    """ConvNeXt-like block: Conv, Transpose to NHWC, channel-last LayerNorm + MLP (MatMul, Gelu),
    residual, Transpose back to NCHW, 1x1 Conv.  Also outputs the NHWC tensor itself."""
    g = Graph("nhwc_like")
    x = g.input("image", [1, 3, "H", "W"])
    c = g.op("Relu", [g.conv(x, 3, 16, 3, s=2)])
    t = g.op("Transpose", [c], perm=[0, 2, 3, 1])                                      # NHWC
    mlp = g.linear(g.gelu_erf(g.linear(g.layer_norm(t, 16), 16, 64)), 64, 16)
    r = g.op("Add", [t, mlp])
    g.output(g.op("Softmax", [r], axis=-1), "nhwc_out")
    back = g.op("Transpose", [r], perm=[0, 3, 1, 2])
    g.output(g.conv(back, 16, 8, 1), "feat")
    return g.model(17)


MINILM_SEQ, MINILM_HIDDEN, MINILM_HEADS = 16, 32, 4


def build_minilm_block():
    """A MiniLM-like attention block whose graph fixes the batch at 1, as exported encoders do: the
    head split is a Reshape to the constant shape [1, S, heads, D] (and the merge to [1, S, H]), so the
    model runs on batch 1 only.  Input ``hidden`` [1, S, H] (static), output ``out`` [1, S, H]:
    Q/K/V MatMuls (converted to 1x1 convs), Transpose, Q x K^T, Softmax, P x V, output MatMul, residual
    Add and LayerNorm.  The EMA quantizer's batching must fall back to one sample per forward here."""
    g = Graph("minilm_block")
    s, d, heads = MINILM_SEQ, MINILM_HIDDEN, MINILM_HEADS
    dh = d // heads
    x = g.input("hidden", [1, s, d])
    split = g.ints([1, s, heads, dh])              # the batch fixed inside the graph
    q, k, v = (g.op("Reshape", [g.linear(x, d, d), split]) for _ in range(3))
    q = g.op("Transpose", [q], perm=[0, 2, 1, 3])
    kt = g.op("Transpose", [k], perm=[0, 2, 3, 1])
    v = g.op("Transpose", [v], perm=[0, 2, 1, 3])
    scores = g.op("Mul", [g.op("MatMul", [q, kt]), g.const(1.0 / math.sqrt(dh))])
    att = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    att = g.op("Reshape", [g.op("Transpose", [att], perm=[0, 2, 1, 3]), g.ints([1, s, d])])
    y = g.op("Add", [x, g.linear(att, d, d)])
    g.output(g.layer_norm(g.op("Relu", [g.linear(y, d, d)]), d), "out")
    return g.model(17)


BUILDERS: Dict[str, Callable] = {
    "cnn": build_cnn,
    "mobilenet": build_mobilenet,
    "transformer": build_transformer,
    "misc": build_misc,
    "lstm": build_lstm,
    "ifgraph": build_ifgraph,
    "nhwc_like": build_nhwc_like,
    "minilm_block": build_minilm_block,
}


def onnx_models() -> Dict[str, Callable]:
    """{name: builder} of the synthetic models; builder() returns a checked onnx.ModelProto."""
    return dict(BUILDERS)


def build_big():
    g = Graph("big")
    x = g.input("image", [1, 3, 64, 64])
    y = g.op("Relu", [g.conv(x, 3, 256, 3, s=2)])
    y = g.op("Relu", [g.conv(y, 256, 512, 3, s=2)])      # 4.7 MB
    y = g.op("Relu", [g.conv(y, 512, 512, 3, s=2)])      # 9.4 MB
    y = g.op("Flatten", [g.op("GlobalAveragePool", [y])], axis=1)
    y = g.op("Relu", [g.op("Gemm", [y, g.weight((4096, 512), 512), g.const(g.randn(4096, 0.01))], transB=1)])
    y = g.op("Relu", [g.op("Gemm", [y, g.weight((4096, 4096), 4096), g.const(g.randn(4096, 0.01))],
                           transB=1)])                   # 67 MB
    g.output(g.op("Gemm", [y, g.weight((10, 4096), 4096), g.const(g.randn(10, 0.01))], transB=1), "logits")
    return g.model(13)
