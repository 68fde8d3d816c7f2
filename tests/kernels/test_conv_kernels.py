"""mnnlite.kernels.conv against the numpy references in mnnlite.ref.conv, on every SIMD path."""
import numpy as np
import pytest

from mnnlite.kernels import conv, threads
from mnnlite.ref.conv import conv2d_ref, deconv2d_ref

# (n, c, h, w, o, (kh, kw), stride, pad (top, left, bottom, right), dilation, groups); sizes are odd
# or off the SIMD widths on purpose, so every tail of every loop runs.
CONV_CASES = {
    "1x1": (1, 7, 5, 6, 9, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "1x1_stride2_pad": (2, 5, 9, 7, 6, (1, 1), (2, 2), (1, 0, 0, 1), (1, 1), 1),
    "3x3_odd": (1, 3, 7, 9, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "3x3_asym_pad_batch2": (2, 16, 13, 17, 24, (3, 3), (1, 1), (1, 0, 2, 1), (1, 1), 1),
    "3x3_no_pad": (1, 20, 11, 19, 18, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "3x3_stride2": (1, 8, 15, 16, 12, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "3x3_stride2_wide": (1, 5, 7, 80, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    "3x3_stride_2x1": (1, 6, 10, 13, 7, (3, 3), (2, 1), (0, 1, 2, 1), (1, 1), 1),
    "3x3_dilation2": (1, 6, 12, 11, 7, (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),
    "5x5_s2_d2_groups3": (1, 6, 11, 10, 9, (5, 5), (2, 2), (2, 1, 0, 3), (2, 2), 3),
    "7x1_groups2": (1, 4, 9, 8, 6, (7, 1), (1, 1), (3, 0, 3, 0), (1, 1), 2),
    "1x7": (1, 5, 6, 12, 3, (1, 7), (1, 1), (0, 3, 0, 3), (1, 1), 1),
    "3x3_groups2": (2, 8, 10, 9, 6, (3, 3), (1, 2), (0, 1, 1, 0), (1, 1), 2),
    "dw_3x3": (2, 8, 12, 13, 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
    "dw_3x3_s2_asym": (1, 12, 15, 33, 12, (3, 3), (2, 2), (0, 2, 1, 0), (1, 1), 12),
    "dw_5x5_d2": (1, 5, 14, 19, 5, (5, 5), (1, 1), (4, 3, 4, 5), (2, 2), 5),
    "dw_7x7_s2_wide": (1, 3, 9, 150, 3, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 3),
    "dw_3x3_s3": (1, 4, 10, 11, 4, (3, 3), (3, 3), (1, 1, 1, 1), (1, 1), 4),
    # rows of 32+ outputs are written straight into the output, each rounded up to 16 (csrc/conv.c dw_range)
    "dw_3x3_rows_33_batch2": (2, 5, 7, 33, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 5),
    "dw_5x5_rows_48": (1, 3, 6, 48, 3, (5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 3),
    "tiny_1x1_pixel": (1, 2, 1, 1, 3, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "kernel_fills_input": (1, 3, 3, 3, 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "pad_larger_than_kernel": (1, 2, 2, 3, 3, (2, 2), (1, 1), (3, 2, 3, 2), (1, 1), 1),
    # Several K blocks (K = 576 > 256), N blocks (960 > 480 pixels) and Winograd tile blocks.
    "3x3_large": (1, 64, 24, 40, 48, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "3x3_wide_channels": (1, 128, 10, 30, 136, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "ocr_like": (1, 48, 12, 80, 56, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    # Wide rows: whole groups of 16 Winograd tiles side by side, away from the edges (the vector paths).
    "3x3_wide_rows": (1, 16, 9, 150, 20, (3, 3), (1, 1), (1, 1, 1, 2), (1, 1), 1),
    "3x3_wide_rows_batch2": (2, 17, 13, 200, 16, (3, 3), (1, 1), (0, 2, 1, 0), (1, 1), 1),
}

ALGOS = ("auto", "gemm", "winograd", "depthwise")


def _supports(algo, case):
    n, c, h, w, o, (kh, kw), stride, pad, dilation, groups = case
    if algo == "winograd":
        return (kh, kw) == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1
    if algo == "depthwise":
        return groups > 1 and groups == c == o
    return True


def _conv_inputs(case, seed):
    n, c, h, w, o, (kh, kw), *_, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((o, c // groups, kh, kw), dtype=np.float32)
    return x, wt, rng.standard_normal(o, dtype=np.float32)


def _conv_attrs(case):
    *_, stride, pad, dilation, groups = case
    return dict(stride=stride, pad=pad, dilation=dilation, groups=groups)


@pytest.mark.parametrize("name, algo", [(name, algo) for name, case in CONV_CASES.items() for algo in ALGOS
                                         if _supports(algo, case)])
def test_conv2d_matches_reference(name, algo, simd_path, assert_close):
    case = CONV_CASES[name]
    x, w, b = _conv_inputs(case, seed=len(name))
    act = len(name) % 3  # every activation, spread over the cases
    got = conv.conv2d(x, w, b, **_conv_attrs(case), act=act, algo=algo)
    ref = conv2d_ref(x, w, b, **_conv_attrs(case), act=act)
    magnitude = conv2d_ref(np.abs(x), np.abs(w), np.abs(b), **_conv_attrs(case)).astype(np.float64)
    assert_close(got, ref.astype(np.float64), magnitude, f"conv2d {name} algo={algo} path={simd_path} act={act}")


@pytest.mark.parametrize("name", ["3x3_asym_pad_batch2", "dw_3x3_s2_asym", "5x5_s2_d2_groups3", "1x1"])
def test_prepared_conv2d_equals_one_shot_on_several_sizes(name, simd_path):
    case = CONV_CASES[name]
    x, w, b = _conv_inputs(case, seed=1)
    layer = conv.Conv2d(w, b, **_conv_attrs(case), act=1)
    for h, wd in [(x.shape[2], x.shape[3]), (x.shape[2] + 3, x.shape[3] + 5)]:
        xs = np.ascontiguousarray(np.resize(x, (x.shape[0], x.shape[1], h, wd)))
        np.testing.assert_array_equal(layer(xs), conv.conv2d(xs, w, b, **_conv_attrs(case), act=1))


def test_prepared_conv2d_is_safe_to_share_between_threads():
    """The GIL is released while the C core runs: calls with different input sizes must not mix."""
    from concurrent.futures import ThreadPoolExecutor
    x, w, b = _conv_inputs(CONV_CASES["3x3_large"], seed=4)
    layer = conv.Conv2d(w, b, pad=(1, 1, 1, 1))
    inputs = [np.ascontiguousarray(x[:, :, :h, :wd]) for h, wd in [(24, 40), (9, 13), (17, 31), (5, 7)] * 4]
    expected = [layer(xi) for xi in inputs]
    with ThreadPoolExecutor(4) as pool:
        for got, want in zip(pool.map(layer, inputs), expected):
            np.testing.assert_array_equal(got, want)


def test_conv2d_impulse_is_exact():
    """One 1 in x and power-of-two weights: every output is an exact sum, so any index error shows."""
    x = np.zeros((1, 2, 9, 11), np.float32)
    x[0, 1, 4, 6] = 1.0
    w = (2.0 ** -np.arange(2 * 2 * 15, dtype=np.float32)).reshape(2, 2, 3, 5)
    attrs = dict(stride=(1, 2), pad=(1, 2, 0, 1), dilation=(2, 1))
    for algo in ("gemm", "auto"):
        np.testing.assert_array_equal(conv.conv2d(x, w, None, **attrs, algo=algo), conv2d_ref(x, w, None, **attrs))


# Calls big enough to be split (csrc/parallel.h: a thread per 2 MFLOP of the call): Winograd, GEMM (1x1)
# and depthwise, 75-300 MFLOP each; the small cases run on one thread whatever is asked
SPLIT_CASES = {
    "3x3_split": (1, 64, 64, 64, 64, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),        # 302 MFLOP
    "1x1_split": (1, 256, 32, 32, 256, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),      # 134 MFLOP
    "dw_split": (1, 256, 128, 128, 256, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 256),  # 75 MFLOP
}


@pytest.mark.parametrize("name", ["3x3_large", "dw_3x3", "ocr_like", "1x1_stride2_pad", *SPLIT_CASES])
def test_threads_give_identical_results(name):
    case = SPLIT_CASES.get(name) or CONV_CASES[name]
    x, w, b = _conv_inputs(case, seed=3)
    try:
        threads.set_num_threads(1)
        one = conv.conv2d(x, w, b, **_conv_attrs(case))
        for n in (2, 3):
            threads.set_num_threads(n)
            before = conv.parallel_pool_stats()["ranges_on_workers"]
            np.testing.assert_array_equal(conv.conv2d(x, w, b, **_conv_attrs(case)), one)
            if name in SPLIT_CASES:     # the split really ran on pool threads (csrc/parallel.c)
                assert conv.parallel_pool_stats()["ranges_on_workers"] >= before + n - 1, (name, n)
    finally:
        threads.set_num_threads(1)


# (n, c, h, w, o, (kh, kw), stride, pad, dilation, groups, output_padding, output_size)
DECONV_CASES = {
    "3x3_s2_outpad": (1, 4, 5, 6, 6, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (1, 1), None),
    "4x4_s2_groups3_asym": (2, 6, 4, 7, 9, (4, 4), (2, 2), (1, 0, 2, 1), (1, 1), 3, (0, 1), None),
    "3x2_dilation": (1, 3, 6, 5, 2, (3, 2), (1, 3), (0, 0, 0, 0), (2, 1), 1, (0, 0), None),
    "depthwise_s2": (1, 4, 5, 5, 4, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 4, (0, 0), None),
    "1x1": (1, 7, 3, 4, 5, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0), None),
    "3x3_s1_wide_rows": (1, 3, 4, 40, 5, (3, 3), (1, 1), (1, 2, 1, 0), (1, 1), 1, (0, 0), None),
    "explicit_size": (1, 3, 4, 4, 5, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, (0, 0), (10, 9)),
    "tiny": (1, 1, 1, 1, 1, (2, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1, (0, 0), None),
    # Many input-row blocks for the column buffer, and K (= input channels) > 256.
    "upsample_wide": (1, 8, 20, 300, 64, (4, 4), (2, 2), (1, 1, 1, 1), (1, 1), 1, (0, 0), None),
    "deep": (1, 300, 6, 7, 10, (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, (0, 0), None),
}


@pytest.mark.parametrize("name", DECONV_CASES)
def test_deconv2d_matches_reference(name, simd_path, assert_close):
    n, c, h, w, o, (kh, kw), stride, pad, dilation, groups, out_pad, out_size = DECONV_CASES[name]
    rng = np.random.default_rng(len(name))
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((c, o // groups, kh, kw), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    attrs = dict(stride=stride, pad=pad, dilation=dilation, groups=groups, output_padding=out_pad,
                 output_size=out_size)
    act = len(name) % 3
    got = conv.deconv2d(x, wt, b, **attrs, act=act)
    ref = deconv2d_ref(x, wt, b, **attrs, act=act)
    magnitude = deconv2d_ref(np.abs(x), np.abs(wt), np.abs(b), **attrs).astype(np.float64)
    assert_close(got, ref.astype(np.float64), magnitude, f"deconv2d {name} path={simd_path}")


def test_deconv2d_impulse_is_exact():
    x = np.zeros((1, 2, 4, 5), np.float32)
    x[0, 0, 2, 3] = 1.0
    w = (2.0 ** -np.arange(2 * 3 * 6, dtype=np.float32)).reshape(2, 3, 2, 3)
    attrs = dict(stride=(2, 3), pad=(1, 0, 0, 2), dilation=(1, 2), output_padding=(1, 1))
    np.testing.assert_array_equal(conv.deconv2d(x, w, None, **attrs), deconv2d_ref(x, w, None, **attrs))


def _ok_conv():
    return np.zeros((1, 4, 5, 5), np.float32), np.zeros((6, 2, 3, 3), np.float32), np.zeros(6, np.float32)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(x=a["x"].astype(np.float64)), "x: expected a C-contiguous float32"),
    (lambda a: a.update(x=np.zeros((1, 4, 5, 10), np.float32)[..., ::2]), "x: expected a C-contiguous"),
    (lambda a: a.update(x=np.zeros((4, 5, 5), np.float32)), "x: expected 4 dimensions"),
    (lambda a: a.update(x=np.zeros((1, 3, 5, 5), np.float32)), "x has 3 channels"),
    (lambda a: a.update(bias=np.zeros(5, np.float32)), "bias: expected 6 values"),
    (lambda a: a.update(groups=4), "not divisible by groups=4"),
    (lambda a: a.update(act=3), "act: expected one of"),
    (lambda a: a.update(stride=(0, 1)), "stride: expected 2 ints >= 1"),
    (lambda a: a.update(pad=(1, 1, 1)), "pad: expected 4 ints"),
    (lambda a: a.update(x=np.zeros((1, 4, 1, 1), np.float32)), "does not fit"),
    (lambda a: a.update(algo="winograd", stride=(2, 2)), "algo 'winograd' cannot run"),
    (lambda a: a.update(algo="fft"), "algo 'fft'"),
])
def test_conv2d_rejects_bad_arguments(change, message):
    x, w, b = _ok_conv()
    args = dict(x=x, w=w, bias=b, groups=2)
    change(args)
    with pytest.raises(ValueError, match=message):
        conv.conv2d(**args)


def test_deconv2d_rejects_bad_arguments():
    x = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ValueError, match="x has 4 channels"):
        conv.deconv2d(x, np.zeros((3, 2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="output size"):
        conv.deconv2d(x, np.zeros((4, 2, 3, 3), np.float32), pad=(3, 3, 3, 3))
    with pytest.raises(ValueError, match="output_padding"):
        conv.deconv2d(x, np.zeros((4, 2, 3, 3), np.float32), output_padding=(-1, 0))


def test_empty_batch_gives_empty_output():
    x, w, b = _ok_conv()
    assert conv.conv2d(x[:0], w, b, groups=2).shape == (0, 6, 3, 3)


def test_zero_input_channels_give_the_activated_bias():
    x, b = np.zeros((1, 0, 5, 5), np.float32), np.array([-1.0, 7.0], np.float32)
    expected = np.broadcast_to(np.array([0.0, 6.0], np.float32).reshape(1, 2, 1, 1), (1, 2, 3, 3))
    np.testing.assert_array_equal(conv.conv2d(x, np.zeros((2, 0, 3, 3), np.float32), b, act=2), expected)
    np.testing.assert_array_equal(conv.Conv2d(np.zeros((2, 0, 3, 3), np.float32), b, act=2)(x), expected)
    expected = np.broadcast_to(expected[:, :, :1, :1], (1, 2, 7, 7))
    np.testing.assert_array_equal(conv.deconv2d(x, np.zeros((0, 2, 3, 3), np.float32), b, act=2), expected)


# MNN's own Winograd (units 2/4/6 with points 0, +-1, +-2, +-3) carries F(6x6,3x3) rounding noise of a
# few 1e-4 of the magnitude: the budget for the MNN-compatible option is that, not the fp32 one.
WINOGRAD_MNN_RTOL = 1e-3


@pytest.mark.parametrize("name", [n for n, case in CONV_CASES.items() if _supports("winograd", case)])
def test_winograd_mnn_is_within_mnns_error(name, simd_path):
    case = CONV_CASES[name]
    x, w, b = _conv_inputs(case, seed=len(name))
    got = conv.conv2d(x, w, b, **_conv_attrs(case), algo="winograd_mnn").astype(np.float64)
    ref = conv2d_ref(x, w, b, **_conv_attrs(case)).astype(np.float64)
    magnitude = conv2d_ref(np.abs(x), np.abs(w), np.abs(b), **_conv_attrs(case)).astype(np.float64)
    excess = np.abs(got - ref) - (1e-5 + WINOGRAD_MNN_RTOL * magnitude)
    assert excess.max() <= 0, f"winograd_mnn {name}: worst excess {excess.max():.3g}"
    prepared = conv.Conv2d(w, b, **_conv_attrs(case), algo="winograd_mnn")
    np.testing.assert_array_equal(prepared(x), got.astype(np.float32))
