"""The executor's fast paths against the numpy references, bit for bit.

* mnnlite.int8.fastq: table dequantization, the FloatToInt8 cast, the 256 x 256 binary tables;
* whole models: impl="fast" (C conv/depthwise/pool kernels, tables) against impl="ref" (numpy
  references everywhere), every tensor of the run compared;
* packed_int_output: the int32 view MNN leaves behind an int8 comparison.
"""
from __future__ import annotations

import numpy as np
import pytest

from mnnlite.format.tables import BinaryOpOperation as B
from mnnlite.format.tables import DataFormat
from mnnlite.int8 import fastq
from mnnlite.kernels import cpu
from mnnlite.int8.ops import _arithmetic, _binary_codes, packed_int_output
from mnnlite.int8.plan import QuantAttr
from mnnlite.ref import int8 as R
from mnnlite.runtime import Interpreter

CODES = np.arange(-128, 128).astype(np.int8)


@pytest.mark.parametrize("scale, zero", [(0.0123, 0), (0.5, -7), (1e-7, 117), (0.0, 0), (3.0, -128)])
def test_table_dequantize_is_the_reference(scale, zero):
    q = np.random.default_rng(0).integers(-128, 128, (3, 5, 7)).astype(np.int8)
    np.testing.assert_array_equal(fastq.dequantize(q, scale, zero), R.dequantize(q, scale, zero))
    np.testing.assert_array_equal(fastq.dequantize(CODES, scale, zero), R.dequantize(CODES, scale, zero))


@pytest.mark.parametrize("scale, zero, lo, hi", [(0.0123, 0, -127, 127), (0.07, -5, -128, 127),
                                                  (0.2, 117, -127, 127), (0.0, 3, -127, 127)])
def test_fast_quantize_is_the_reference(scale, zero, lo, hi):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(20000) * 4).astype(np.float32)
    # exact ties and the +-0.49999997 corner of MNN's rounding, NaN and infinities
    ties = ((np.arange(-300, 300) + 0.5) * np.float32(scale if scale else 1)).astype(np.float32)
    special = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 0.49999997, -0.49999997], np.float32)
    for arr in (x, ties, special, np.float32(0.3), x.reshape(4, 50, 100)):
        np.testing.assert_array_equal(fastq.quantize(arr, scale, zero, lo, hi), R.quantize(arr, scale, zero, lo, hi))


@pytest.mark.parametrize("op", [B.ADD, B.SUB, B.MUL, B.MINIMUM, B.MAXIMUM, B.SquaredDifference, B.REALDIV,
                                B.LESS, B.GREATER_EQUAL, B.POW])
def test_binary_table_is_the_formula(op):
    a_attr, b_attr = QuantAttr(0.05, 3), QuantAttr(0.02, -4)
    out = QuantAttr(0.08, 1)
    table = fastq.BinaryTable(lambda a, b: _binary_codes(op, a, b, [a_attr, b_attr], out, -127, 127))
    rng = np.random.default_rng(int(op))
    qa = rng.integers(-128, 128, (2, 3, 17, 5)).astype(np.int8)
    qb = rng.integers(-128, 128, (2, 3, 17, 5)).astype(np.int8)
    want = _binary_codes(op, qa, qb, [a_attr, b_attr], out, -127, 127)
    np.testing.assert_array_equal(table(qa, qb), want)
    scalar = np.array(rng.integers(-128, 128), np.int8).reshape(())
    np.testing.assert_array_equal(table(qa, scalar), _binary_codes(op, qa, scalar, [a_attr, b_attr], out, -127, 127))
    np.testing.assert_array_equal(table(scalar, qb), _binary_codes(op, scalar, qb, [a_attr, b_attr], out, -127, 127))
    row = qb[:, :, :1]                                    # a broadcast operand
    np.testing.assert_array_equal(table(qa, row), _binary_codes(op, qa, row, [a_attr, b_attr], out, -127, 127))


@pytest.mark.parametrize("op", [B.ADD, B.SUB, B.MUL])
@pytest.mark.parametrize("attrs", [
    ((0.05, 3), (0.02, -4), (0.08, 1), (-127, 127)),
    ((0.013, -128), (0.4, 127), (0.031, -20), (0, 127)),       # fused ReLU: lower bound 0
    ((1.5e-6, 0), (2.5e-6, 0), (1e-6, 0), (-128, 127)),        # ties and near-ties after the division
])
@pytest.mark.parametrize("path", [["avx2"], ["avx2", "avx512"]], ids=["avx2", "avx512"])
def test_binary_arithmetic_is_the_formula(path, op, attrs):
    """ADD/SUB/MUL on equal shapes run float32 arithmetic (csrc/int8_eltwise.c) once it matched the table on
    every pair of codes; on each vector path it gives the formula's codes, tails included (the AVX2 path's
    tails run the scalar loop)."""
    missing = [f for f in path if f not in cpu.features()]
    if missing:
        pytest.skip(f"path {path} not run: this CPU has no {', '.join(missing)}")
    cpu.set_limit(path)
    try:
        _check_binary_arithmetic(op, attrs)
    finally:
        cpu.set_limit(None)


def _check_binary_arithmetic(op, attrs):
    (sa, za), (sb, zb), (so, zo), (lo, hi) = attrs
    a_attr, b_attr, out = QuantAttr(sa, za), QuantAttr(sb, zb), QuantAttr(so, zo)
    table = fastq.BinaryTable(lambda a, b: _binary_codes(op, a, b, [a_attr, b_attr], out, lo, hi),
                              arithmetic=_arithmetic(int(op), [a_attr, b_attr], out, lo, hi))
    assert table.arithmetic is not None, f"{op.name} {attrs}: the arithmetic did not reproduce the table"
    rng = np.random.default_rng(int(op))
    for shape in [(2, 3, 17, 5), (1, 7), (16,), (1, 240, 3, 80)]:
        qa, qb = (rng.integers(-128, 128, shape).astype(np.int8) for _ in range(2))
        np.testing.assert_array_equal(table(qa, qb), _binary_codes(op, qa, qb, [a_attr, b_attr], out, lo, hi))


def _assert_keeps_the_table(a_attr, b_attr, out):
    """A MUL table offered its arithmetic does not adopt it, and still gives the formula's codes."""
    table = fastq.BinaryTable(lambda a, b: _binary_codes(B.MUL, a, b, [a_attr, b_attr], out, -127, 127),
                              arithmetic=_arithmetic(int(B.MUL), [a_attr, b_attr], out, -127, 127))
    assert table.arithmetic is None
    qa = np.arange(-128, 128, dtype=np.int16).astype(np.int8)
    qb = qa[::-1].copy()
    np.testing.assert_array_equal(table(qa, qb), _binary_codes(B.MUL, qa, qb, [a_attr, b_attr], out, -127, 127))


def test_binary_arithmetic_without_a_vector_path_keeps_the_table():
    """The scalar C limit: the arithmetic is not adopted (libm's roundf per code is slower than the gather)."""
    cpu.set_limit([])
    try:
        _assert_keeps_the_table(QuantAttr(0.05, 3), QuantAttr(0.02, -4), QuantAttr(0.08, 1))
    finally:
        cpu.set_limit(None)


def test_binary_arithmetic_that_differs_keeps_the_table():
    """Scales whose products overflow to inf: the formula's integer cast and the kernel's clamp part ways
    there, so the table stays in use, and the results stay the formula's."""
    _assert_keeps_the_table(QuantAttr(3e19, 0), QuantAttr(3e19, 0), QuantAttr(1e-3, 0))


def test_binary_minmax_ignores_the_output_scale():
    """MNNBinaryMaxInt8: the fixed-point result (q - z) * s is never divided by the output scale."""
    a_attr, b_attr, out = QuantAttr(0.5, 0), QuantAttr(0.5, 0), QuantAttr(0.01, 0)
    got = _binary_codes(B.MAXIMUM, np.array([10], np.int8), np.array([4], np.int8), [a_attr, b_attr], out, -127, 127)
    assert got.tolist() == [5]        # max(5.0, 2.0) = 5.0 "codes", not 500 clamped to 127


def test_packed_int_output_fills_the_first_quarter():
    codes = np.zeros((1, 32, 4, 4), np.int8)
    words = packed_int_output(codes, DataFormat.NC4HW4)
    assert words.shape == codes.shape and words.dtype == np.int32
    # NC4HW4 memory [C/4][H][W][4]: the first quarter (channels 0..7) holds 0x80808080, the rest 0
    assert (words[:, :8] == np.int32(-2139062144)).all()
    assert (words[:, 8:] == 0).all()
    flat = packed_int_output(np.array([[1, 2, 3, 4, 5]], np.int8), DataFormat.NCHW)
    assert flat[0, 0] == int.from_bytes(bytes([129, 130, 131, 132]), "little", signed=True)
    assert flat[0, 1] == 133 and (flat[0, 2:] == 0).all()


FAST_REF_CASES = [("cnn", "quant_kl"), ("cnn", "quant_ema"), ("nhwc_like", "quant_kl"), ("ppocr_cls", "quant_kl"),
                  ("ppocr_cls", "quant_ema")]


@pytest.mark.parametrize("name, variant", FAST_REF_CASES, ids=[f"{n}-{v}" for n, v in FAST_REF_CASES])
def test_fast_kernels_match_references_on_whole_models(zoo, name, variant):
    """Every int8 op whose inputs agree between the two runs gives the same codes.  (Float ops such as
    the Deconvolution may differ by float rounding between their own fast and reference kernels.)"""
    from mnnlite.int8 import int8_plan

    path = zoo.model_path(name, variant)
    feeds = zoo.image_feeds(name)[0]
    runs = {}
    for impl in ("fast", "ref"):
        seen = {}
        interp = Interpreter(path, impl=impl)
        interp.run(feeds, observe=lambda i, n, a: seen.__setitem__(n, np.array(a)))
        runs[impl] = seen
    fast, ref = runs["fast"], runs["ref"]
    plan = int8_plan(interp, feeds)
    graph = interp.model.graph
    checked = 0
    for op_plan in plan.ops:
        if op_plan.kind != "compute" or not op_plan.int8:
            continue
        ins = [graph.tensors[int(i)] for i in op_plan.op.inputIndexes]
        if not all(n in fast and np.array_equal(fast[n], ref[n], equal_nan=True) for n in ins):
            continue
        for o in op_plan.op.outputIndexes:
            n = graph.tensors[int(o)]
            np.testing.assert_array_equal(fast[n], ref[n], err_msg=f"{op_plan.op.name}: output {n}")
        checked += 1
    assert checked >= 0.8 * len(plan.int8_ops()), f"only {checked} of {len(plan.int8_ops())} int8 ops compared"
