"""The int8 references and C kernels against the official MNN 3.6.1 runtime (x86 wheel, the oracle).

Small ONNX models are converted and quantized by MNN's own tools (KL features, MAX_ABS weights), run in
MNN's int8 CPU backend, and every quantized op is recomputed from the parameters our reader finds in the
file.  MNN returns dequantized floats (q - z) * s; they are turned back into codes exactly (checked).
Zero points and output ranges are rewritten in the files to exercise asymmetric quantization.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import mnnlite
from mnnlite.format.model_io import load_model
from mnnlite.graph import op_type_name
from mnnlite.kernels import cpu
from mnnlite.kernels import int8 as K
from mnnlite.ref import int8 as R
from builders.onnx_graph import onnx_graph
from oracle import convert_onnx, quantize, run_oracle

H = W = 16
ALL_PATHS = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"], "vnni": None}


def _paths():
    have = cpu.features()
    return [name for name, lim in ALL_PATHS.items() if lim is None or all(f in have for f in lim)]


# ------------------------------------------------------------------------------------------ models

def _onnx(layers, outputs, seed):
    """x [1,3,H,W] -> layers; layers = [(op, inputs, output, attrs, weight_shape or None)]."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    for op, inputs, out, attrs, wshape in layers:
        inputs = list(inputs)
        if wshape is not None and len(wshape) == 1:   # BatchNormalization: gamma, beta, mean, var
            stats = [1 + 0.3 * rng.standard_normal(wshape), 0.3 * rng.standard_normal(wshape),
                     0.3 * rng.standard_normal(wshape), 0.5 + np.abs(rng.standard_normal(wshape))]
            names = [f"{out}_{k}" for k in ("gamma", "beta", "mean", "var")]
            inits.update({n: v.astype(np.float32) for v, n in zip(stats, names)})
            inputs += names
        elif wshape is not None:
            fan = int(np.prod(wshape[1:]))
            w = (rng.standard_normal(wshape) * np.sqrt(2.0 / fan)).astype(np.float32)
            b = (rng.standard_normal(wshape[0]) * 0.1).astype(np.float32)
            inits.update({out + "_w": w, out + "_b": b})
            inputs += [out + "_w", out + "_b"]
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
    return onnx_graph(nodes, [("x", [1, 3, H, W])], outputs, inits, name="int8")


def _conv(inp, out, cin, cout, k, stride=1, pads=None, dilation=1, group=1):
    pads = pads or [k // 2 * dilation] * 4
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=pads, dilations=[dilation, dilation],
                 group=group)
    return ("Conv", [inp], out, attrs, (cout, cin // group, k, k))


def _relu(inp, out):
    return ("Relu", [inp], out, {}, None)


MODELS = {
    # conv+relu -> stride-2 conv with asymmetric padding -> dilated depthwise+relu -> 1x1 conv
    "chain": ([_conv("x", "c1", 3, 16, 3), _relu("c1", "t1"),
               _conv("t1", "t2", 16, 24, 3, stride=2, pads=[0, 1, 2, 1]),
               _conv("t2", "c3", 24, 24, 3, pads=[2, 2, 2, 2], dilation=2, group=24), _relu("c3", "t3"),
               _conv("t3", "t4", 24, 10, 1)], ["t1", "t2", "t3", "t4"]),
    # one wide conv: many outputs per run, to find inputs where the two float orders disagree
    "wide": ([_conv("x", "y", 3, 32, 3)], ["y"]),
    # two convs -> Add with a fused ReLU -> a lone BatchNorm, which the converter turns into Scale
    "add_scale": ([_conv("x", "a", 3, 8, 3), _conv("x", "b", 3, 8, 1), ("Add", ["a", "b"], "y", {}, None),
                   _relu("y", "r"), ("BatchNormalization", ["r"], "s", dict(epsilon=1e-5), (8,))],
                  ["a", "b", "r", "s"]),
    "maxpool": ([("MaxPool", ["x"], "y", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), None)],
                ["y"]),
    "avgpool": ([("AveragePool", ["x"], "y", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                                   count_include_pad=0), None)], ["y"]),
}


def _images(folder, count=4):
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(7)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def quantized(mnn_oracle, tmp_path_factory):
    """{name: path of the MNN-quantized model}, built once with the official converter and quantizer."""
    root = tmp_path_factory.mktemp("int8_vs_mnn")
    images = _images(root / "images")
    config = {"format": "RGB", "mean": [127.5] * 3, "normal": [0.0078125] * 3, "width": W, "height": H,
              "path": str(images), "used_image_num": 4, "feature_quantize_method": "KL",
              "weight_quantize_method": "MAX_ABS"}
    (root / "config.json").write_text(json.dumps(config))
    paths = {}
    for seed, (name, (layers, outputs)) in enumerate(MODELS.items()):
        flt, dst = root / f"{name}.mnn", root / f"{name}_q.mnn"
        convert_onnx(_onnx(layers, outputs, seed), flt)
        quantize(flt, dst, root / "config.json")
        paths[name] = dst
    return paths


def _families(graph):
    """Tensor index -> representative: ConvertTensor ops only relayout, input and output share quant info."""
    rep = {}

    def find(t):
        while rep.get(t, t) != t:
            t = rep[t]
        return t

    for op in graph.ops:
        if op_type_name(op) == "ConvertTensor":
            rep[find(int(op.outputIndexes[0]))] = find(int(op.inputIndexes[0]))
    return find


def _rewrite(src, dst, zero_of=None, range_of=None, same_scale=False):
    """Copy of a quantized model with new zero points / [min, max] per tensor family (and one scale)."""
    model = load_model(src)
    graph = model.graph
    family = _families(graph)
    scale = graph.quant_info[graph.inputs[0]].scale
    for d in graph.describe:
        if d.quantInfo is None:
            continue
        f = family(d.index)
        if zero_of:
            d.quantInfo.zero = float(zero_of(f))
        if range_of and range_of(f):
            d.quantInfo.min, d.quantInfo.max = map(float, range_of(f))
        if same_scale:
            d.quantInfo.scale = scale
    mnnlite.save_model(model, dst)
    return load_model(dst)


# ------------------------------------------------------------------------------------------ running

def _codes(mnn_oracle, path, model, x):
    """{tensor family: int8 codes} of every graph output (MNN's int8 results) and of the input (the
    cast MNN applies to it, recomputed)."""
    outs = run_oracle(path, {"x": x})
    graph, family = model.graph, _families(model.graph)
    qi = graph.quant_info[graph.inputs[0]]
    codes = {family(graph.inputs[0]): R.quantize(x, qi.scale, qi.zero, int(qi.min), int(qi.max))}
    for name, y in outs.items():
        t = graph.index(name)
        info = graph.quant_info[t]
        q = R.quantize(y, info.scale, info.zero, -128, 127)
        assert np.array_equal(R.dequantize(q, info.scale, info.zero), y), f"{name}: not a dequantized int8 tensor"
        codes[family(t)] = q
    return codes


def _conv_params(graph, op):
    """Keyword arguments of conv2d_int8_ref / depthwise_int8_ref for a quantized conv op of the file."""
    conv, common = op.main, op.main.common
    quan = conv.quanParameter
    assert quan is not None and quan.type in (1, 2) and not quan.readType, "expected symmetric int8 codes"
    codes = _decode_codes(quan)
    wq = codes.reshape(common.outputCount, -1, common.kernelY, common.kernelX)
    qi, qo = graph.quant_info[int(op.inputIndexes[0])], graph.quant_info[int(op.outputIndexes[0])]
    pads = [int(v) for v in common.pads] if common.pads is not None else [common.padY, common.padX] * 2
    return dict(wq=wq, alpha=np.asarray(quan.alpha, np.float32), bias=np.asarray(conv.bias, np.float32),
                s_in=np.float32(qi.scale), z_in=int(qi.zero), s_out=np.float32(qo.scale), z_out=int(qo.zero),
                out_min=int(qo.min), out_max=int(qo.max), stride=(common.strideY, common.strideX),
                pad=tuple(pads), dilation=(common.dilateY, common.dilateX), relu=bool(common.relu or common.relu6))


def _decode_codes(quan):
    try:
        from mnnlite.format.idst import decode_codes
    except ImportError:  # the IDST module is not there yet: the dense 8-bit form (docs/mnn-format.md §6.2)
        return _decode_dense8(np.asarray(quan.buffer).view(np.uint8))
    return decode_codes(quan.buffer, quan.type, shape_int32=bool(quan.shapeInt32), alpha=quan.alpha)[1]


def _decode_dense8(buf):
    ndims = int(buf[0])
    dims = np.frombuffer(buf[1:1 + 2 * ndims].tobytes(), "<u2").astype(int)
    pos = 1 + 2 * ndims
    count = int(buf[pos]) or 256
    assert count == 256, "only the full 8-bit value set is decoded here"
    pos += 1 + count
    n = int(np.prod(dims))
    return (buf[pos:pos + n].astype(np.int16) - 128).astype(np.int8).reshape(dims[0], -1)


def _run_conv(op_type, params, xq, groups, path=None, offset=R.X86_OFFSET):
    """The reference (path None) or the C kernel limited to one SIMD path."""
    if op_type == "ConvolutionDepthwise":
        fn = R.depthwise_int8_ref if path is None else K.depthwise_int8
        return fn(xq, offset=offset, **params)
    if path is None:
        return R.conv2d_int8_ref(xq, groups=groups, offset=offset, **params)
    cpu.set_limit(ALL_PATHS[path])
    try:
        return K.conv2d_int8(xq, groups=groups, offset=offset, **params)
    finally:
        cpu.set_limit(None)


def _conv_ops(model):
    return [op for op in model.graph.ops if op_type_name(op) in ("Convolution", "ConvolutionDepthwise")]


# ------------------------------------------------------------------------------------------ tests

ZERO_POINTS = {"symmetric": None, "asymmetric": lambda f: (5 * f + 3) % 23 - 11}


@pytest.mark.parametrize("zeros", list(ZERO_POINTS))
def test_conv_chain_bit_exact(mnn_oracle, quantized, tmp_path, zeros):
    """conv+relu, strided conv with asymmetric pads, dilated depthwise, 1x1: every code equal to MNN's."""
    def narrow(family):   # output ranges tighter than +-127 on every other tensor
        return (-100, 90) if family % 2 else None

    model = _rewrite(quantized["chain"], tmp_path / "chain.mnn", ZERO_POINTS[zeros], narrow)
    family = _families(model.graph)
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(6):
        x = rng.uniform(-1.2, 1.2, (1, 3, H, W)).astype(np.float32)
        codes = _codes(mnn_oracle, tmp_path / "chain.mnn", model, x)
        for op in _conv_ops(model):
            params = _conv_params(model.graph, op)
            xq, want = codes[family(int(op.inputIndexes[0]))], codes[family(int(op.outputIndexes[0]))]
            kind = op_type_name(op)
            for path in [None] + _paths():
                got = _run_conv(kind, params, xq, op.main.common.group, path)
                bad = int((got != want).sum())
                assert bad == 0, f"{op.name} ({kind}, path {path or 'ref'}): {bad} of {want.size} codes differ"
            checked += want.size
    assert checked > 10000


@pytest.mark.parametrize("zeros", list(ZERO_POINTS))
def test_add_relu_and_scale(mnn_oracle, quantized, tmp_path, zeros):
    """Int8 Add (+ fused ReLU) = dequantize, add in float, roundf, + zero point, with the ReLU clamping
    codes at 0; int8 Scale = 15-bit fixed point (CPUScaleInt8)."""
    model = _rewrite(quantized["add_scale"], tmp_path / "add.mnn", ZERO_POINTS[zeros])
    graph, family = model.graph, _families(model.graph)
    add = next(op for op in graph.ops if op_type_name(op) == "BinaryOp")
    scale = next(op for op in graph.ops if op_type_name(op) == "Scale")
    assert add.main.activationType == 1, "the converter was expected to fuse the ReLU into the Add"
    qa, qb = (graph.quant_info[int(t)] for t in add.inputIndexes)
    qr, qs = graph.quant_info[int(add.outputIndexes[0])], graph.quant_info[int(scale.outputIndexes[0])]
    assert (qr.zero != 0) == (zeros == "asymmetric")   # the ReLU-at-code-0 quirk only shows with z != 0
    rng = np.random.default_rng(2)
    for _ in range(4):
        x = rng.uniform(-1.2, 1.2, (1, 3, H, W)).astype(np.float32)
        codes = _codes(mnn_oracle, tmp_path / "add.mnn", model, x)
        a, b = (codes[family(int(t))] for t in add.inputIndexes)
        r, s = codes[family(int(add.outputIndexes[0]))], codes[family(int(scale.outputIndexes[0]))]
        want_r = R.binary_int8_ref(np.add, a, b, (qa.scale, qa.zero), (qb.scale, qb.zero),
                                   (qr.scale, qr.zero, int(qr.min), int(qr.max)), relu=True)
        assert np.array_equal(r, want_r)
        want_s = R.scale_int8_ref(r, scale.main.scaleData, scale.main.biasData, qr.scale, int(qr.zero), qs.scale,
                                  int(qs.zero), int(qs.min), int(qs.max))
        assert np.array_equal(s, want_s)


def test_x86_float_order_is_the_one_mnn_uses(mnn_oracle, quantized, tmp_path):
    """The +128 trick changes float rounding: on inputs where offset 128 and offset 0 (the doc's formula)
    disagree, MNN's x86 runtime agrees with offset 128 every time."""
    model = _rewrite(quantized["wide"], tmp_path / "wide.mnn", lambda f: 5 if f == 0 else -7)
    op = _conv_ops(model)[0]
    params = _conv_params(model.graph, op)
    qi = model.graph.quant_info[model.graph.inputs[0]]
    rng = np.random.default_rng(3)
    found = []
    for _ in range(400):
        x = rng.uniform(-1.2, 1.2, (1, 3, H, W)).astype(np.float32)
        xq = R.quantize(x, qi.scale, qi.zero, int(qi.min), int(qi.max))
        x86, arm = (R.conv2d_int8_ref(xq, offset=o, **params) for o in (R.X86_OFFSET, R.ARM_OFFSET))
        if (x86 != arm).any():
            found.append((x, x86, arm))
        if len(found) == 3:
            break
    assert found, "no input separates the two float orders (the search budget is too small)"
    family = _families(model.graph)
    for x, x86, arm in found:
        mnn = _codes(mnn_oracle, tmp_path / "wide.mnn", model, x)[family(int(op.outputIndexes[0]))]
        assert np.array_equal(mnn, x86), f"{int((mnn != x86).sum())} codes differ from the x86 order"
        assert np.array_equal(K.conv2d_int8(_input_codes(model, x), **params), x86)


def _input_codes(model, x):
    qi = model.graph.quant_info[model.graph.inputs[0]]
    return R.quantize(x, qi.scale, qi.zero, int(qi.min), int(qi.max))


def _pool_io(mnn_oracle, path, model, x):
    """(input codes, MNN's output codes) of a one-pool model."""
    codes = _codes(mnn_oracle, path, model, x)
    inp = model.graph.inputs[0]
    out = next(v for k, v in codes.items() if k != inp)
    return codes[inp], out


def _pool_args(model):
    pool = next(op for op in model.graph.ops if op_type_name(op) == "Pooling").main
    return (pool.kernelY, pool.kernelX), (pool.strideY, pool.strideX), tuple(int(v) for v in pool.pads)


@pytest.mark.parametrize("zero", [0, 7])
def test_avgpool_bit_exact(mnn_oracle, quantized, tmp_path, zero):
    """x86 averages the uint8 (q + 128) bytes: offset 128 matches MNN, the signed formula does not."""
    model = _rewrite(quantized["avgpool"], tmp_path / "avg.mnn", lambda f: zero, same_scale=True)
    args = _pool_args(model)
    rng = np.random.default_rng(9)
    signed_mismatch = 0
    for _ in range(4):
        x = rng.uniform(-1.1, 1.1, (1, 3, H, W)).astype(np.float32)
        xq, want = _pool_io(mnn_oracle, tmp_path / "avg.mnn", model, x)
        assert np.array_equal(R.avgpool_int8_ref(xq, *args), want)
        assert np.array_equal(K.avgpool_int8(xq, *args), want)
        signed_mismatch += int((R.avgpool_int8_ref(xq, *args, offset=R.ARM_OFFSET) != want).sum())
    assert signed_mismatch > 0


def test_maxpool_x86_compares_offset_bytes_as_signed(mnn_oracle, quantized, tmp_path):
    """MNN 3.6.1 x86 int8 MaxPool (MNNMaxPoolInt8_) takes the signed max of the uint8 q + 128 bytes: in a
    window mixing negative and non-negative codes the largest negative code wins."""
    model = _rewrite(quantized["maxpool"], tmp_path / "max.mnn", same_scale=True)
    args = _pool_args(model)
    x = np.random.default_rng(4).uniform(-1.1, 1.1, (1, 3, H, W)).astype(np.float32)
    xq, want = _pool_io(mnn_oracle, tmp_path / "max.mnn", model, x)
    assert np.array_equal(R.maxpool_int8_ref(xq, *args, x86_max_bug=True), want)
    assert np.array_equal(K.maxpool_int8(xq, *args, x86_max_bug=True), want)
    true_max = R.maxpool_int8_ref(xq, *args)
    assert np.array_equal(K.maxpool_int8(xq, *args), true_max)
    assert np.mean(true_max != want) > 0.5
    relu = np.maximum(xq, 0).astype(np.int8)   # after a ReLU every window agrees
    assert np.array_equal(K.maxpool_int8(relu, *args, x86_max_bug=True), R.maxpool_int8_ref(relu, *args))


def _float_times(inv, target):
    """A float32 v with float32(v * inv) == target (searched around target / inv)."""
    for direction in (np.float32(np.inf), np.float32(-np.inf)):
        v = np.float32(target / inv)
        for _ in range(1000):
            if np.float32(v * inv) == target:
                return v
            v = np.nextafter(v, direction)
    raise AssertionError(f"no float32 v with v * {inv!r} == {target!r}")


def test_cast_rounds_like_mnn_not_like_roundf(mnn_oracle, quantized, tmp_path):
    """x * (1/s) = 0.5 - 2^-25 exactly: MNN's float->int8 cast gives 1 (x + 0.5 rounds up in float32),
    roundf would give 0.  Seen through a max pool of a constant image."""
    model = _rewrite(quantized["maxpool"], tmp_path / "max.mnn", same_scale=True)
    scale = np.float32(model.graph.quant_info[model.graph.inputs[0]].scale)
    value = _float_times(np.float32(1) / scale, np.float32(0.5) - np.float32(2.0 ** -25))
    for sign in (1, -1):
        x = np.full((1, 3, H, W), sign * value, np.float32)
        xq, out = _pool_io(mnn_oracle, tmp_path / "max.mnn", model, x)
        assert set(np.unique(out).tolist()) == {sign}
        assert set(np.unique(xq).tolist()) == {sign}
        assert np.round(float(value) * float(1 / scale)) == 0   # what roundf-style rounding would give
