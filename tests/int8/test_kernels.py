"""Int8 C kernels == numpy references, bit for bit, on every SIMD path and over shapes that hit every tail.

The references are checked against the official MNN runtime in test_vs_mnn.py and against plain
float64 arithmetic here (test_reference_*), so these tests chain to an independent oracle.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from mnnlite.kernels import cpu, threads
from mnnlite.kernels import int8 as K
from mnnlite.ref import int8 as R

# Each kernel with the reference it must equal; test_every_kernel_has_a_reference walks the module.
PAIRS = {
    "conv2d_int8": R.conv2d_int8_ref,
    "depthwise_int8": R.depthwise_int8_ref,
    "maxpool_int8": R.maxpool_int8_ref,
    "avgpool_int8": R.avgpool_int8_ref,
}

# name -> cpu.set_limit argument; "vnni" lifts the limit and is only run on CPUs that have VNNI.
PATHS = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"], "vnni": None}


def _available(name):
    need = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"], "vnni": ["vnni"]}[name]
    return all(f in cpu.features() for f in need)


@pytest.fixture(params=[p for p in PATHS if _available(p)])
def path(request):
    """Limit the kernels to one SIMD path for the test (and check it is the one selected)."""
    cpu.set_limit(PATHS[request.param])
    try:
        assert K.path() == request.param
        yield request.param
    finally:
        cpu.set_limit(None)


def _codes(rng, shape, extreme=False):
    """Codes over the full int8 range, with -128 and 127 present; extreme: all -128."""
    if extreme:
        return np.full(shape, -128, np.int8)
    q = rng.integers(-128, 128, shape).astype(np.int8)
    flat = q.reshape(-1)
    flat[:: 7] = -128
    flat[3:: 11] = 127
    return q


def _first_diff(got, want, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape} != reference {want.shape}"
    bad = np.argwhere(got != want)
    if bad.size:
        i = tuple(bad[0])
        pytest.fail(f"{what}: {len(bad)} of {want.size} codes differ; first at {i}: got {got[i]}, reference {want[i]}")


# ------------------------------------------------------------------------------------------ dense

# (n, c, o, h, w, kh, kw, stride, pad, dilation, groups)
CONV_CASES = {
    "3x3_odd_channels": (2, 5, 13, 9, 11, 3, 3, 1, (1, 1, 1, 1), 1, 1),
    "1x1_direct": (2, 19, 21, 7, 9, 1, 1, 1, (0, 0, 0, 0), 1, 1),
    "1x1_stride2": (1, 8, 17, 9, 9, 1, 1, 2, (0, 0, 0, 0), 1, 1),
    "3x3_stride2_asym_pad": (2, 6, 9, 12, 10, 3, 3, 2, (2, 0, 1, 3), 1, 1),
    "3x3_dilation2": (1, 7, 12, 11, 13, 3, 3, 1, (2, 2, 2, 2), 2, 1),
    "groups3": (2, 6, 9, 8, 7, 3, 3, 1, (1, 1, 1, 1), 1, 3),
    "5x5_deep_k": (1, 37, 33, 6, 6, 5, 5, 1, (2, 2, 2, 2), 1, 1),
    "64ch": (1, 64, 40, 8, 8, 3, 3, 1, (1, 1, 1, 1), 1, 1),
    "3x1_stride_2x1": (1, 3, 16, 10, 7, 3, 1, (2, 1), (1, 0, 1, 0), 1, 1),
    "single_pixel": (3, 4, 5, 1, 1, 1, 1, 1, (0, 0, 0, 0), 1, 1),
}
QUANT = {  # (s_in, z_in, s_out, z_out, out_min, out_max, alpha gain)
    "symmetric": (0.02, 0, 0.05, 0, -127, 127, 1.0),
    "zero_points": (0.013, -9, 0.041, 17, -128, 127, 1.0),
    "saturating": (0.05, 127, 0.01, -128, -100, 90, 30.0),
}


def _conv_inputs(case, quant, extreme=False, seed=0):
    n, c, o, h, w, kh, kw, stride, pad, dil, groups = CONV_CASES[case]
    s_in, z_in, s_out, z_out, lo, hi, gain = QUANT[quant]
    rng = np.random.default_rng(seed)
    xq, wq = _codes(rng, (n, c, h, w), extreme), _codes(rng, (o, c // groups, kh, kw), extreme)
    fan = c // groups * kh * kw
    alpha = (rng.uniform(0.3, 1.5, o) * gain / (127 * np.sqrt(fan))).astype(np.float32)
    bias = rng.normal(0, 0.3, o).astype(np.float32)
    args = (xq, wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi)
    return args, dict(stride=stride, pad=pad, dilation=dil, groups=groups)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("quant", list(QUANT))
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv2d_matches_reference(path, case, quant, relu):
    args, kw = _conv_inputs(case, quant)
    _first_diff(K.conv2d_int8(*args, relu=relu, **kw), R.conv2d_int8_ref(*args, relu=relu, **kw), f"{case}/{path}")


@pytest.mark.parametrize("offset", [R.X86_OFFSET, R.ARM_OFFSET])
@pytest.mark.parametrize("case", ["3x3_odd_channels", "5x5_deep_k", "groups3"])
def test_conv2d_extreme_codes_and_offsets(path, case, offset):
    """All codes -128 (largest accumulators, the u8 x s8 corner of vpdpbusd/vpmaddwd) and both float orders."""
    for extreme in (True, False):
        args, kw = _conv_inputs(case, "zero_points", extreme=extreme, seed=1)
        _first_diff(K.conv2d_int8(*args, offset=offset, **kw), R.conv2d_int8_ref(*args, offset=offset, **kw),
                    f"{case}/{path}/offset {offset}/extreme {extreme}")


def test_prepared_layer_reused_across_input_sizes(path):
    args, kw = _conv_inputs("3x3_stride2_asym_pad", "zero_points")
    layer = K.Conv2dInt8(*args[1:], **kw)
    assert layer.path == path
    rng = np.random.default_rng(5)
    for shape in [(1, 6, 12, 10), (3, 6, 5, 17), (1, 6, 40, 33)]:
        xq = _codes(rng, shape)
        _first_diff(layer(xq), R.conv2d_int8_ref(xq, *args[1:], **kw), f"{shape}/{path}")


def test_threads_give_the_same_codes():
    args, kw = _conv_inputs("64ch", "zero_points")
    one = K.conv2d_int8(*args, **kw)
    threads.set_num_threads(3)
    try:
        assert np.array_equal(K.conv2d_int8(*args, **kw), one)
        dw_args, dw_kw = _dw_inputs(19, 3, 3, 1, (1, 1, 1, 1), 1, "zero_points")
        assert np.array_equal(K.depthwise_int8(*dw_args, **dw_kw), R.depthwise_int8_ref(*dw_args, **dw_kw))
    finally:
        threads.set_num_threads(1)


def test_calls_big_enough_to_split_give_the_same_codes():
    """A conv of 302 MFLOP and a depthwise of 75 MFLOP: over csrc/parallel.h's 2 MFLOP per thread, so they
    run on 2 and 3 threads when asked (smaller calls stay on one)."""
    rng = np.random.default_rng(7)
    s_in, z_in, s_out, z_out, lo, hi, gain = QUANT["zero_points"]
    xq, wq = _codes(rng, (1, 64, 64, 64)), _codes(rng, (64, 64, 3, 3))
    alpha = (rng.uniform(0.3, 1.5, 64) * gain / (127 * 24)).astype(np.float32)
    conv_args = (xq, wq, alpha, rng.normal(0, 0.3, 64).astype(np.float32), s_in, z_in, s_out, z_out, lo, hi)
    conv_kw = dict(stride=1, pad=(1, 1, 1, 1), dilation=1, groups=1)
    dq, dw = _codes(rng, (1, 256, 128, 128)), _codes(rng, (256, 1, 3, 3))
    dalpha = (rng.uniform(0.3, 1.5, 256) * gain / (127 * 3)).astype(np.float32)
    dw_args = (dq, dw, dalpha, rng.normal(0, 0.3, 256).astype(np.float32), s_in, z_in, s_out, z_out, lo, hi)
    dw_kw = dict(stride=1, pad=(1, 1, 1, 1), dilation=1)
    one = K.conv2d_int8(*conv_args, **conv_kw), K.depthwise_int8(*dw_args, **dw_kw)
    try:
        for n in (2, 3):
            threads.set_num_threads(n)
            before = K.parallel_pool_stats()["ranges_on_workers"]
            assert np.array_equal(K.conv2d_int8(*conv_args, **conv_kw), one[0])
            middle = K.parallel_pool_stats()["ranges_on_workers"]
            assert np.array_equal(K.depthwise_int8(*dw_args, **dw_kw), one[1])
            # both calls really ran on pool threads (csrc/parallel.c)
            assert middle >= before + n - 1 and K.parallel_pool_stats()["ranges_on_workers"] >= middle + n - 1
    finally:
        threads.set_num_threads(1)


# ------------------------------------------------------------------------------------------ depthwise

def _dw_inputs(c, kh, kw, stride, pad, dil, quant, seed=2, alpha_edges=True, bias_scale=0.3, width=13,
               weights_127=False):
    s_in, z_in, s_out, z_out, lo, hi, gain = QUANT[quant]
    rng = np.random.default_rng(seed)
    xq, wq = _codes(rng, (2, c, 10, width)), _codes(rng, (c, 1, kh, kw))
    if weights_127:       # MNN's quantizers clamp weights to +-127: the plane kernel pairs taps in int16 then
        wq = np.maximum(wq, np.int8(-127))
    alpha = (rng.uniform(0.3, 1.5, c) * gain / (127 * np.sqrt(kh * kw))).astype(np.float32)
    if alpha_edges:   # MNN replaces |alpha| < 1e-6 by 1e-6 (and then truncates a huge bias term)
        alpha[:3] = [0.0, 5e-7, -2e-7]
    bias = rng.normal(0, bias_scale, c).astype(np.float32)
    return (xq, wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi), dict(stride=stride, pad=pad, dilation=dil)


DW_CASES = {  # (channels, kh, kw, stride, pad, dilation)
    "3x3": (19, 3, 3, 1, (1, 1, 1, 1), 1),
    "3x3_stride2_asym": (24, 3, 3, 2, (2, 0, 1, 3), 1),
    "3x3_dilation2": (7, 3, 3, 1, (2, 2, 2, 2), 2),
    "5x5": (33, 5, 5, 1, (2, 2, 2, 2), 1),
    "1x3_stride_1x2": (5, 1, 3, (1, 2), (0, 1, 0, 1), 1),
}
# Rows of 16 outputs or more with unit stride and dilation along the row take the plane kernels on AVX2 /
# AVX-512 (csrc/int8_depthwise.c): (channels, kh, kw, pad, width, stride, dilation) -- full vectors and
# tails of both widths, odd kernels, asymmetric pads, column strides and dilations (PP-OCR's (2, 1))
DW_PLANE_CASES = {
    "3x3_w40": (9, 3, 3, (1, 1, 1, 1), 40, 1, 1),
    "5x5_w96": (5, 5, 5, (2, 2, 2, 2), 96, 1, 1),
    "5x5_w16_asym": (6, 5, 5, (0, 2, 3, 1), 18, 1, 1),
    "7x7_w33": (3, 7, 7, (3, 3, 3, 3), 33, 1, 1),
    "1x5_w70": (4, 1, 5, (0, 2, 0, 2), 70, 1, 1),
    "3x3_stride_2x1_w50": (7, 3, 3, (1, 1, 1, 1), 50, (2, 1), 1),
    "5x5_dilation_2x1_w24": (4, 5, 5, (4, 2, 4, 2), 24, 1, (2, 1)),
}


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("quant", list(QUANT))
@pytest.mark.parametrize("case", list(DW_CASES))
def test_depthwise_matches_reference(path, case, quant, relu):
    args, kw = _dw_inputs(*DW_CASES[case], quant)
    _first_diff(K.depthwise_int8(*args, relu=relu, **kw), R.depthwise_int8_ref(*args, relu=relu, **kw),
                f"{case}/{path}")


@pytest.mark.parametrize("weights_127", [False, True], ids=["weights_-128", "weights_127"])
@pytest.mark.parametrize("quant", list(QUANT))
@pytest.mark.parametrize("case", list(DW_PLANE_CASES))
def test_depthwise_plane_kernels_match_reference(path, case, quant, weights_127):
    c, kh, kw, pad, width, stride, dilation = DW_PLANE_CASES[case]
    args, kw_ = _dw_inputs(c, kh, kw, stride, pad, dilation, quant, width=width, weights_127=weights_127)
    for relu, offset in ((False, R.X86_OFFSET), (True, R.X86_OFFSET), (False, R.ARM_OFFSET)):
        _first_diff(K.depthwise_int8(*args, relu=relu, offset=offset, **kw_),
                    R.depthwise_int8_ref(*args, relu=relu, offset=offset, **kw_),
                    f"{case}/{path}/relu {relu}/offset {offset}")


@pytest.mark.parametrize("offset", [R.X86_OFFSET, R.ARM_OFFSET])
def test_depthwise_huge_bias_and_offsets(path, offset):
    """bias / (s_in * ws) beyond int32 (ws = 1e-6): MNN's int() gives INT_MIN there; both sides agree."""
    args, kw = _dw_inputs(*DW_CASES["3x3"], "zero_points", bias_scale=5e3)
    _first_diff(K.depthwise_int8(*args, offset=offset, **kw), R.depthwise_int8_ref(*args, offset=offset, **kw),
                f"{path}/offset {offset}")


# ------------------------------------------------------------------------------------------ pooling

POOL_CASES = {  # (kernel, stride, pad)
    "3x3_s2_p1": ((3, 3), 2, (1, 1, 1, 1)),
    "2x2_s2": ((2, 2), 2, (0, 0, 0, 0)),
    "3x2_asym": ((3, 2), (1, 2), (2, 0, 1, 1)),
    "kernel_larger_than_input": ((12, 14), 1, (2, 2, 2, 2)),
    "global": ((9, 11), 1, (0, 0, 0, 0)),
    "full_rows": ((3, 11), (2, 1), (1, 0, 1, 0)),     # windows of whole rows: the contiguous-run sum
}


@pytest.mark.parametrize("case", list(POOL_CASES))
def test_pools_match_reference(case):
    xq = _codes(np.random.default_rng(3), (2, 5, 9, 11))
    kernel, stride, pad = POOL_CASES[case]
    _first_diff(K.maxpool_int8(xq, kernel, stride, pad), R.maxpool_int8_ref(xq, kernel, stride, pad), case)
    for offset in (R.X86_OFFSET, R.ARM_OFFSET):
        _first_diff(K.avgpool_int8(xq, kernel, stride, pad, offset=offset),
                    R.avgpool_int8_ref(xq, kernel, stride, pad, offset=offset), f"{case}/avg offset {offset}")
    _first_diff(K.maxpool_int8(xq, kernel, stride, pad, x86_max_bug=True),
                R.maxpool_int8_ref(xq, kernel, stride, pad, x86_max_bug=True), f"{case}/x86 max")


# ------------------------------------------------------------------------------------------ references

def test_every_kernel_has_a_reference():
    not_kernels = ("path", "parallel_pool_stats")
    kernels = {name for name, obj in vars(K).items() if not name.startswith("_") and not inspect.isclass(obj)
               and callable(obj) and getattr(obj, "__module__", None) == K.__name__ and name not in not_kernels}
    assert kernels == set(PAIRS), f"kernels without a reference pair: {kernels ^ set(PAIRS)}"
    for name, ref in PAIRS.items():   # same leading arguments, so one can stand in for the other
        want = list(inspect.signature(ref).parameters)
        got = list(inspect.signature(getattr(K, name)).parameters)
        assert got == want, f"{name}{got} vs {ref.__name__}{want}"


def test_reference_rounding():
    """MNN's x86 rounding: half away from zero, except 0.5 - 2^-25 which x + 0.5 rounds up in float32."""
    x = np.array([0.5, -0.5, 1.5, 2.5, -2.5, 0.4999999, np.float32(0.5) - np.float32(2 ** -25), 126.5, np.nan],
                 np.float32)
    assert R.mnn_round(x).tolist() == [1, -1, 2, 3, -3, 0, 1, 127, -2 ** 31]
    assert R.quantize(np.array([1e9, -1e9, np.nan], np.float32), 0.1, 3, -127, 127).tolist() == [127, -127, 127]
    assert R.requantize(np.array([-0.25, 0.25], np.float32), 0.5, 3).tolist() == [2, 4]   # roundf(+-0.5) then + z


def test_reference_conv_against_float64():
    """The int8 conv is the float conv on codes: within one code of the exact float64 formula (docs/mnn-quantization.md §13.2),
    off only where the float32 rounding of a near-tie differs."""
    args, kw = _conv_inputs("3x3_stride2_asym_pad", "zero_points")
    xq, wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi = args
    xf = np.pad(xq.astype(np.float64) - z_in, [(0, 0), (0, 0), (2, 1), (0, 3)])
    acc = np.zeros((2, 9, 7, 6))
    for i in range(7):
        for j in range(6):
            patch = xf[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            acc[:, :, i, j] = np.einsum("nchw,ochw->no", patch, wq.astype(np.float64))
    y = acc * (alpha.astype(np.float64) * s_in / s_out)[:, None, None] + (bias / s_out)[:, None, None] + z_out
    exact = np.clip(np.where(y < 0, -np.floor(-y + 0.5), np.floor(y + 0.5)), lo, hi)
    got = R.conv2d_int8_ref(*args, **kw).astype(np.float64)
    assert np.abs(got - exact).max() <= 1 and np.mean(got != exact) < 0.01


def test_reference_depthwise_and_pools_against_float64():
    args, kw = _dw_inputs(*DW_CASES["3x3"], "symmetric", alpha_edges=False)
    xq, wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi = args
    full = R.conv2d_int8_ref(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, lo, hi, groups=19, **kw)
    got = R.depthwise_int8_ref(*args, **kw)   # integer bias: at most one code from the dense rule
    assert np.abs(got.astype(int) - full).max() <= 1
    xq = _codes(np.random.default_rng(8), (1, 3, 6, 6))
    mean = xq.astype(np.float64).reshape(1, 3, 3, 2, 3, 2).mean(axis=(3, 5))
    assert np.abs(R.avgpool_int8_ref(xq, 2, 2) - mean).max() < 1
    assert np.array_equal(R.maxpool_int8_ref(xq, 2, 2), xq.reshape(1, 3, 3, 2, 3, 2).max(axis=(3, 5)))
    stored = (xq.astype(np.int16) + 128).astype(np.uint8).view(np.int8)   # x86 bytes, compared as int8
    x86 = stored.reshape(1, 3, 3, 2, 3, 2).max(axis=(3, 5)).view(np.uint8).astype(np.int16) - 128
    assert np.array_equal(R.maxpool_int8_ref(xq, 2, 2, x86_max_bug=True), x86)


def test_reference_scale_and_float_ops():
    xq = _codes(np.random.default_rng(6), (1, 4, 3, 3))
    scale, bias = np.array([0.5, -1.25, 2.0, 0.1], np.float32), np.array([0.1, 0.0, -0.3, 1.0], np.float32)
    got = R.scale_int8_ref(xq, scale, bias, 0.02, 3, 0.03, -2)
    want = ((xq - 3.0) * 0.02 * scale[None, :, None, None] + bias[None, :, None, None]) / 0.03 - 2
    assert np.abs(got - np.clip(np.round(want), -128, 127)).max() <= 1
    a, b = _codes(np.random.default_rng(1), (2, 7)), _codes(np.random.default_rng(2), (2, 7))
    add = R.float_op_int8_ref(np.add, [a, b], [(0.1, 2), (0.05, -3)], (0.12, 1, -128, 127))
    exact = ((a - 2.0) * 0.1 + (b + 3.0) * 0.05) / 0.12 + 1
    assert np.abs(add - np.clip(exact, -128, 127)).max() <= 0.5 + 1e-4
    table = np.arange(-127, 128).astype(np.int8)[::-1].copy()   # negation
    assert np.array_equal(R.unary_table_ref(np.array([-127, 0, 127]), table), [127, 0, -127])


# ------------------------------------------------------------------------------------------ validation

def test_wrapper_errors_name_the_argument():
    args, kw = _conv_inputs("3x3_odd_channels", "symmetric")
    with pytest.raises(TypeError, match="xq: expected an int8"):
        K.conv2d_int8(args[0].astype(np.int32), *args[1:], **kw)
    layer = K.Conv2dInt8(np.zeros((4, 6, 3, 3), np.int8), np.ones(4, np.float32), np.zeros(4, np.float32),
                         0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="xq has 5 channels, the layer expects 6"):
        layer(args[0])
    with pytest.raises(ValueError, match="z_in: expected an int8 code"):
        K.conv2d_int8(*args[:5], 300, *args[6:], **kw)
    with pytest.raises(ValueError, match="alpha: expected 13"):
        K.conv2d_int8(args[0], args[1], args[2][:3], *args[3:], **kw)
    with pytest.raises(ValueError, match="empty output"):
        K.maxpool_int8(args[0], 30)
