"""The kernel table (mnnlite.kernels.table), walked: every entry's fast and mnn forms against its reference,
on every SIMD path this CPU has and always on the scalar C path.  A path this CPU cannot run is reported as
a skip naming it, never passed silently.  Each entry needs its cases here: a new kernel without them fails
``test_every_kernel_has_cases``."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mnnlite.format.tables import AvgPoolCountType
from mnnlite.kernels import cpu, table

F32 = np.float32
# name -> the features allowed (cpu.set_limit); [] is the scalar C path
SIMD_PATHS = {"scalar": [], "avx2": ["avx2"], "avx512": ["avx2", "avx512"], "vnni": ["avx2", "avx512", "vnni"],
              "vbmi": ["avx2", "avx512", "vnni", "vbmi"]}


def _rng(seed=0):
    return np.random.default_rng(seed)


def _normal(shape, seed=0, scale=1.0):
    return (_rng(seed).standard_normal(shape) * scale).astype(F32)


def _codes(shape, seed=0):
    return _rng(seed).integers(-128, 128, shape).astype(np.int8)


# --------------------------------------------------------------------------------- cases per kernel
# Each yields (label, run): run(form) calls one form of the kernel and returns its array result.

def _conv_cases():
    for label, shape, wshape, stride, pad, dil, groups, act in [
        ("3x3 dense", (1, 8, 12, 12), (16, 8, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, 0),
        ("1x1 relu", (1, 16, 9, 7), (24, 16, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, 1),
        ("5x5 stride 2 relu6", (2, 6, 17, 13), (10, 6, 5, 5), (2, 2), (2, 1, 2, 1), (1, 1), 1, 2),
        ("depthwise dilated", (1, 12, 15, 15), (12, 1, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 12, 0),
        ("grouped", (1, 8, 10, 10), (8, 4, 3, 3), (1, 2), (1, 1, 1, 1), (1, 1), 2, 1),
    ]:
        x, w, b = _normal(shape, 1), _normal(wshape, 2, 0.3), _normal(wshape[0], 3)
        yield label, (lambda fn, x=x, w=w, b=b, a=(stride, pad, dil, groups, act): fn(x, w, b, *a))


def _conv_layer_cases():
    for label, run in _conv_cases():
        yield label, (lambda fn, run=run: run(lambda x, w, b, *a: fn(w, b, *a)(x)))


def _deconv_cases():
    x, w, b = _normal((1, 6, 7, 9), 4), _normal((6, 4, 3, 3), 5, 0.3), _normal(4, 6)
    yield "stride 2", lambda fn: fn(x, w, b, (2, 2), (1, 1, 0, 0), (1, 1), 1, output_size=(13, 17), act=1)
    x, w, b = _normal((1, 8, 5, 5), 7), _normal((8, 1, 4, 4), 8, 0.3), _normal(8, 9)
    yield "depthwise", lambda fn: fn(x, w, b, (2, 2), (1, 1, 0, 0), (1, 1), 8, output_size=(10, 10), act=0)


def _matmul_cases():
    a, b, bias = _normal((3, 17, 33), 10), _normal((33, 21), 11), _normal(21, 12)
    yield "batched + bias", lambda fn: fn(a, b, False, False, bias)
    a, b = _normal((2, 1, 40, 9), 13), _normal((3, 12, 40), 14)
    yield "transposed, broadcast", lambda fn: fn(a, b, True, True, None)


def _softmax_cases():
    yield "last axis", lambda fn: fn(_normal((4, 37), 15, 3.0), -1)
    yield "channel axis, strided branch", lambda fn: fn(_normal((2, 5, 6, 7), 16, 3.0), 1)
    yield "channel axis, rows", lambda fn: fn(_normal((1, 20, 3, 3), 17, 3.0), 1)


def _softmax_rows_cases():
    for n in (1, 7, 8, 9, 64, 1001):
        yield f"{n} per row", (lambda fn, x=_normal((5, n), 18 + n, 4.0): fn(x))


def _sigmoid_cases():
    x = np.concatenate([_normal(1003, 20, 4.0), np.array([-100, -87, 0, 87, 100, -0.0], F32)])
    yield "scalar tail", lambda fn: fn(x, False)
    yield "all 8-wide", lambda fn: fn(x, True)


def _softmax_nofma_cases():
    yield "rows of 37 (8-wide body and expf tail)", lambda fn: fn(_normal((5, 37), 48, 6.0))
    yield "two classes (tail only)", lambda fn: fn(_normal((3, 2), 49, 3.0))
    x = _normal((4, 16), 50, 40.0)
    x[0, :] = 0.0
    x[1, 3] = 1e4
    yield "clamped exponents, equal values", lambda fn: fn(x)


def _clamp_cases():
    x = np.concatenate([_normal(1001, 51, 5.0), np.array([-0.0, 0.0, 6.0, -6.0, np.nan, np.inf, -np.inf], F32)])
    yield "relu6: values, signed zeros, NaN, infinities", lambda fn: fn(x, F32(0), F32(6))
    yield "negative-zero bounds, strided", lambda fn: fn(x[::3], F32(-0.0), F32(0.0))
    yield "one value", lambda fn: fn(np.array([-0.0], F32), F32(0), F32(6))
    yield "NaN bounds", lambda fn: fn(x, F32(np.nan), F32(6))
    yield "NaN upper bound", lambda fn: fn(x, F32(0), F32(np.nan))


def _exp_cases():
    # up to e^20: MNNExp reduces the range with a float ln 2, so its relative error grows with |x|
    x = np.concatenate([_normal(1003, 27, 4.0).clip(-20, 20), np.array([-20, 0, 20, -0.0], F32)])
    yield "scalar tail", lambda fn: fn(x, False)
    yield "all 8-wide", lambda fn: fn(x, True)


def _libm_unary_cases():
    from mnnlite.format.tables import UnaryOpOperation as U

    wide = np.concatenate([_normal(1003, 26, 2.0), np.array([0, -0.0, 1e-30, -4, 4, 10, -10], F32)])
    for op, x in ((U.ERF, wide), (U.SIN, wide), (U.COS, wide), (U.TAN, np.clip(wide, -1.4, 1.4)),
                  (U.ATAN, wide), (U.LOG, np.abs(wide) + 1e-3), (U.LOG1P, np.abs(wide)),
                  (U.ACOSH, np.abs(wide) + 1), (U.SINH, wide), (U.ASINH, wide), (U.ATANH, np.tanh(wide) * 0.99),
                  (U.COSH, wide)):
        yield op.name, (lambda fn, op=op, x=x: fn(op, x))


def _hardswish_cases():
    x = np.concatenate([_normal(999, 21, 4.0), np.array([-3, 3, 0, -0.0, 6, -6, 1e30, -1e30], F32),
                        np.array([np.nan, np.inf, -np.inf], F32)])
    yield "values and edges", lambda fn: fn(x)
    yield "strided view", lambda fn: fn(x[::5])


def _norm_rows_cases():
    x, g, b = _normal((6, 70), 22, 2.0), _normal(70, 23), _normal(70, 24)
    yield "layer norm", lambda fn: fn(x, 1e-5, False, g, b)
    yield "rms norm, no affine", lambda fn: fn(x, 1e-6, True, None, None)


def _avg_pool_cases():
    x = _normal((1, 5, 11, 13), 25)
    inc, exc = AvgPoolCountType.INCLUDE_PADDING, AvgPoolCountType.EXCLUDE_PADDING
    yield "3x3 s1 pad 1", lambda fn: fn(x, (3, 3), (1, 1), (1, 1), (11, 13), inc)
    yield "2x2 s2 no pad", lambda fn: fn(x, (2, 2), (2, 2), (0, 0), (5, 6), exc)
    yield "5x3 s2 pad", lambda fn: fn(x, (5, 3), (2, 2), (2, 1), (6, 7), exc)
    # windows of -0.0: a sum that stays -0.0 without padding and becomes +0.0 with it (the fast form
    # must give the reference's sign bits)
    z = np.where(_rng(47).random((1, 3, 6, 7)) < 0.7, F32(-0.0), F32(0.0)).astype(F32)
    z[0, 0, :3, :3] = -0.0
    yield "signed zeros, padded", lambda fn: fn(z, (3, 3), (1, 1), (1, 1), (6, 7), inc)
    yield "signed zeros, unpadded", lambda fn: fn(z, (2, 2), (2, 2), (0, 0), (3, 3), exc)
    yield "negative pad (crop)", lambda fn: fn(x, (3, 3), (2, 2), (-1, -1), (4, 5), exc)


def _resize_axes(n_in, n_out, seed):
    """Bilinear rows (floor, right neighbour, fraction) and nearest rows of an up- or down-scale, with
    the clamped edges (positions below 0 and past the last row)."""
    from mnnlite.ops.resize import bilinear_axis, nearest_index, source_positions
    src = source_positions(n_out, F32(n_in) / F32(n_out), F32(0.5) * F32(n_in) / F32(n_out) - F32(0.5))
    return bilinear_axis(n_in, src), nearest_index(n_in, src, seed % 2 == 1)


def _resize_nearest_cases():
    x = _normal((2, 3, 7, 9), 42)
    (_, ry), (_, rx) = _resize_axes(7, 15, 0), _resize_axes(9, 4, 1)
    yield "up rows, down columns", lambda fn: fn(x, ry, rx)
    yield "strided input", lambda fn: fn(x.transpose(0, 1, 3, 2), rx[rx < 7], ry[ry < 9])
    yield "int8 codes", lambda fn: fn(_codes((1, 4, 7, 9), 46), ry, rx)


def _resize_bilinear_cases():
    x = _normal((2, 3, 7, 9), 43, 3.0)
    (by, _), (bx, _) = _resize_axes(7, 16, 0), _resize_axes(9, 5, 0)
    yield "up rows, down columns", lambda fn: fn(x, *by, *bx)
    (by1, _), (bx1, _) = _resize_axes(7, 1, 0), _resize_axes(9, 20, 0)
    yield "one row, x2 columns", lambda fn: fn(x, *by1, *bx1)


def _resize_bilinear_int8_cases():
    from mnnlite.int8.ops import _bilinear_weights
    x = _codes((2, 3, 7, 9), 44)
    for n_out_y, n_out_x in ((16, 5), (1, 20)):
        (y0, y1, fy), _ = _resize_axes(7, n_out_y, 0)
        (x0, x1, fx), _ = _resize_axes(9, n_out_x, 0)
        yield f"{n_out_y}x{n_out_x}", lambda fn, a=(y0, y1, *_bilinear_weights(fy), x0, x1, *_bilinear_weights(fx)): \
            fn(x, 5, -7, *a)
    yield "zero points at the ends", lambda fn: fn(_codes((1, 2, 7, 9), 45), -128, 127, y0, y1,
                                                   *_bilinear_weights(fy), x0, x1, *_bilinear_weights(fx))


def _max_pool_cases():
    x = _normal((2, 3, 9, 11), 52)
    yield "3x3 s2 pad 1", lambda fn: fn(x, (3, 3), (2, 2), (1, 1), (5, 6))
    yield "2x2 s2, window past the end", lambda fn: fn(x, (2, 2), (2, 2), (0, 0), (5, 6))
    yield "negative pad (crop)", lambda fn: fn(x, (3, 2), (1, 2), (-1, 0), (6, 5))
    # ties of signed zeros (numpy keeps the later tap), NaN and inf
    z = np.where(_rng(53).random((1, 2, 5, 6)) < 0.5, F32(-0.0), F32(0.0)).astype(F32)
    z[0, 1, 2, 3], z[0, 1, 4, 0], z[0, 0, 1, 1] = np.nan, np.inf, -np.inf
    yield "signed zeros, NaN, inf", lambda fn: fn(z, (2, 2), (1, 1), (1, 1), (5, 6))


def _global_pool_cases():
    yield "plane 7x9", lambda fn: fn(_normal((2, 13, 7, 9), 26))
    yield "plane 1x1", lambda fn: fn(_normal((1, 4, 1, 1), 27))


def _global_mean_cases():
    yield "4-D", lambda fn: fn(_normal((2, 13, 7, 9), 28))
    yield "5-D", lambda fn: fn(_normal((1, 6, 3, 4, 5), 29))


def _int8_conv_args(depthwise: bool):
    c, o = (8, 8) if depthwise else (8, 12)
    xq, wq = _codes((1, c, 9, 11), 30), _codes((o, 1 if depthwise else c, 3, 3), 31)
    alpha, bias = (np.abs(_normal(o, 32)) * 0.01 + 0.001).astype(F32), _normal(o, 33)
    return xq, wq, alpha, bias, F32(0.05), 3, F32(0.2), -4


def _conv_int8_layer_cases():
    xq, wq, alpha, bias, s_in, z_in, s_out, z_out = _int8_conv_args(False)
    for label, stride, pad, relu in [("s1 pad 1", (1, 1), (1, 1, 1, 1), False), ("s2 relu", (2, 2), (0, 1, 0, 1), True)]:
        yield label, (lambda fn, a=(stride, pad, (1, 1), 1, relu):
                      fn(wq, alpha, bias, s_in, z_in, s_out, z_out, -128, 127, *a)(xq))


def _depthwise_int8_cases():
    xq, wq, alpha, bias, s_in, z_in, s_out, z_out = _int8_conv_args(True)
    yield "s1 pad 1", lambda fn: fn(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, -128, 127, (1, 1), (1, 1, 1, 1),
                                    (1, 1), relu=False)
    yield "s2 relu", lambda fn: fn(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, -128, 127, (2, 2), (1, 1, 1, 1),
                                   (1, 1), relu=True)


def _pool_int8_cases(kwargs):
    xq = _codes((1, 6, 9, 10), 34)
    yield "3x3 s2", lambda fn: fn(xq, (3, 3), (2, 2), (1, 1, 1, 1), **kwargs)
    yield "2x2 s2", lambda fn: fn(xq, (2, 2), (2, 2), (0, 0, 1, 0), **kwargs)


def _dequantize_cases():
    yield "codes", lambda fn: fn(_codes((3, 50), 35), F32(0.037), 5)


def _quantize_cases():
    x = np.concatenate([_normal(999, 36, 8.0), np.array([np.nan, np.inf, -np.inf, 0.5, -0.5, 2.5], F32)])
    yield "signed", lambda fn: fn(x, F32(0.05), 0, -128, 127)
    yield "zero point, narrow", lambda fn: fn(x, F32(0.11), 7, -127, 100)


def _code_table2_cases():
    def fn_of_codes(a, b):
        return np.clip((a.astype(np.int32) * 3 - b.astype(np.int32)) // 2, -128, 127).astype(np.int8)
    a, b = _codes((2, 3, 5, 4), 37), _codes((2, 3, 5, 4), 38)
    yield "same shapes", lambda fn: fn(fn_of_codes)(a, b)
    yield "scalar operand", lambda fn: fn(fn_of_codes)(a, b[:1, :1, :1, :1])
    yield "per-channel operand", lambda fn: fn(fn_of_codes)(a, b[:1, :, :1, :1])
    # rows of 256 codes and more take the 256-entry lookup kernel (VBMI: 64 at a time, then a tail)
    long_a, long_b = _codes((1, 3, 16, 21), 41), _codes((1, 3, 1, 1), 42)
    yield "per-channel operand, long rows", lambda fn: fn(fn_of_codes)(long_a, long_b)
    yield "per-channel first operand, long rows", lambda fn: fn(fn_of_codes)(long_b, long_a)


def _code_table_cases():
    lut = _codes(255, 39)
    yield "every code", lambda fn: fn(lut)(np.arange(-128, 128).astype(np.int8))
    yield "strided view", lambda fn: fn(lut)(_codes((2, 5, 7, 3), 40).transpose(0, 3, 1, 2))


CASES = {
    "conv2d": _conv_cases, "conv2d_layer": _conv_layer_cases, "conv2d_fed": _conv_cases,
    "deconv2d": _deconv_cases, "matmul": _matmul_cases, "softmax": _softmax_cases,
    "softmax_rows": _softmax_rows_cases, "sigmoid": _sigmoid_cases, "silu": _sigmoid_cases,
    "hardswish": _hardswish_cases, "tanh": _sigmoid_cases, "exp": _exp_cases, "libm_unary": _libm_unary_cases,
    "clamp": _clamp_cases, "softmax_rows_nofma": _softmax_nofma_cases, "resize_nearest": _resize_nearest_cases,
    "resize_bilinear": _resize_bilinear_cases, "max_pool2d": _max_pool_cases, "resize_bilinear_int8": _resize_bilinear_int8_cases,
    "norm_rows": _norm_rows_cases, "avg_pool2d": _avg_pool_cases, "global_avg_pool2d": _global_pool_cases,
    "global_mean": _global_mean_cases, "conv2d_int8_layer": _conv_int8_layer_cases,
    "depthwise_int8": _depthwise_int8_cases,
    "maxpool_int8": lambda: _pool_int8_cases({"x86_max_bug": True}),
    "avgpool_int8": lambda: _pool_int8_cases({}),
    "dequantize": _dequantize_cases, "quantize": _quantize_cases,
    "code_table2": _code_table2_cases, "code_table": _code_table_cases,
}

# How close a form must be to the reference: None = bit for bit; else |got - ref| <= bound * max(1, max|ref|)
# ({form: bound} where the forms differ).
# Float kernels sum in other orders than the float64 references; the MNN forms add Winograd F(6x6, 3x3)
# noise (conv), MNN's exp polynomial (softmax, sigmoid, silu, tanh, exp) and libm's float functions
# (libm_unary).
BOUNDS = {
    "conv2d": 1e-5, "conv2d_layer": 1e-3, "conv2d_fed": 1e-5, "deconv2d": 1e-5, "matmul": 1e-5,
    "softmax": 1e-6, "softmax_rows": 1e-6, "sigmoid": 1e-6, "silu": 1e-6, "tanh": 1e-6, "exp": 1e-6,
    "libm_unary": 1e-6, "hardswish": None, "norm_rows": 1e-5,
    "avg_pool2d": {"fast": None, "mnn": 1e-6}, "global_avg_pool2d": {"fast": None, "mnn": 1e-6}, "global_mean": {"fast": None, "mnn": 1e-6},
}


def _compare(name: str, form: str, got, want, what: str):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, reference {want.dtype}"
    bound = BOUNDS.get(name)
    bound = bound.get(form) if isinstance(bound, dict) else bound
    if bound is None:
        if got.dtype.kind == "f":      # bit for bit: signed zeros too; any NaN for a NaN
            bits = np.dtype(f"u{got.dtype.itemsize}")
            same = (got.view(bits) == want.view(bits)) | (np.isnan(got) & np.isnan(want))
        else:
            same = got == want
        assert same.all(), f"{what}: {int((~same).sum())} of {got.size} values differ from the reference"
        return
    err = np.abs(got.astype(np.float64) - want.astype(np.float64))
    limit = bound * max(1.0, float(np.abs(want).max(initial=0)))
    assert err.max(initial=0) <= limit, f"{what}: max error {err.max():.3g} > {limit:.3g}"


def test_every_kernel_has_cases_and_a_reference():
    assert set(CASES) == set(table.KERNELS), "each kernel of the table needs its cases in CASES (and only those)"
    assert set(BOUNDS) <= set(table.KERNELS)
    for name, kernel in table.KERNELS.items():
        assert kernel.name == name and kernel.ref, name
        for form, path in kernel.forms().items():
            assert callable(table.resolve(path)), f"{name}: {form} form {path} is not callable"


@pytest.mark.parametrize("path", list(SIMD_PATHS))
@pytest.mark.parametrize("name", sorted(table.KERNELS))
def test_forms_match_the_reference(name, path):
    cpu.set_limit(None)
    missing = [f for f in SIMD_PATHS[path] if f not in cpu.features()]
    if missing:
        pytest.skip(f"SIMD path {path!r} not run: this CPU has no {', '.join(missing)}")
    kernel = table.KERNELS[name]
    ref = table.resolve(kernel.ref)
    others = {form: table.resolve(p) for form, p in kernel.forms().items() if form != "ref"}
    cpu.set_limit(SIMD_PATHS[path])
    try:
        ran = 0
        for label, run in CASES[name]():
            want = run(ref)
            assert np.asarray(want).size, f"{name} {label}: an empty reference result proves nothing"
            for form, fn in others.items():
                _compare(name, form, run(fn), want, f"{name} ({form} form, {label}, SIMD path {path})")
                ran += 1
        assert ran == len(others) * len(list(CASES[name]()))
    finally:
        cpu.set_limit(None)


def test_softmax_pair_stays_within_32_ulps():
    """The two emulations of _AVX_MNNSoftmax (numpy without FMA: the int8 Softmax; C with FMA: float
    impl="mnn") differ only by the FMA contractions of MNN's avxfma build (x - n*ln2 and the polynomial's
    steps): measured up to 25 float32 ulps on random rows, about 1.5e-6 of the value."""
    from mnnlite.kernels import mnn_exact
    from mnnlite.ref.mnn_softmax import softmax_rows

    x = _normal((64, 77), 41, 5.0)
    a, b = softmax_rows(x), mnn_exact.softmax_rows(x)
    ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
    assert 0 < ulps.max() <= 32, f"{ulps.max()} ulps apart"


def test_form_picks_the_documented_fallback():
    assert table.form("matmul", "mnn") is table.form("matmul", "fast")           # no mnn form: the fast one
    assert table.form("softmax", "fast") is table.form("softmax", "ref")         # no fast form: the reference
    assert table.form("conv2d_layer", "mnn") is not table.form("conv2d_layer", "fast")
    with pytest.raises(ValueError, match="impl must be one of"):
        table.form("matmul", "gpu")
    with pytest.raises(KeyError):
        table.form("no_such_kernel", "fast")


def test_a_missing_build_is_one_error_at_import():
    """Without a compiled module the table refuses to load: one line naming the module and how to build
    it, not a numpy fallback."""
    code = ("import sys; sys.modules['mnnlite.kernels.mnn_exact'] = None\n"
            "from mnnlite.errors import BuildError\n"
            "try:\n    import mnnlite.kernels.table\nexcept BuildError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "mnnlite.kernels.mnn_exact" in lines[0] and "build_ext --inplace" in lines[0]


def test_no_op_tests_impl_itself():
    """The choice between forms is the table's: no ``impl ==`` / ``impl in`` left in the ops, the runtime or
    the int8 kernels (the runtime only checks that ``impl`` is one of ``table.IMPLS``)."""
    import re
    from pathlib import Path

    import mnnlite

    root = Path(mnnlite.__file__).parent
    files = sorted((root / "ops").glob("*.py")) + [root / "runtime.py"] + sorted((root / "int8").glob("*.py"))
    pattern = re.compile(r"\bimpl\b\s*(==|!=|\bin\b|\bnot in\b)")
    found = [f"{p.relative_to(root)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text().splitlines(), 1)
             if pattern.search(line) and "IMPLS" not in line]
    assert not found, "inline impl tests (ask kernel_table.form instead):\n" + "\n".join(found)
