"""mnnlite.kernels.eltwise against the numpy forms they replace on the hot path, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from mnnlite.int8 import fastq
from mnnlite.kernels import eltwise
from mnnlite.ops.elementwise import _hardswish

CODES = np.arange(-128, 128).astype(np.int8)


def _table(seed, size):
    return np.random.default_rng(seed).integers(-128, 128, size).astype(np.int8)


def test_lut_is_numpy_gather_on_every_code_and_layout():
    table = _table(0, 256)
    np.testing.assert_array_equal(eltwise.lut_int8(table, CODES), table[CODES.astype(np.int16) + 128])
    q = np.random.default_rng(1).integers(-128, 128, (2, 5, 7, 3)).astype(np.int8)
    view = q.transpose(0, 3, 1, 2)                       # not contiguous
    got = eltwise.lut_int8(table, view)
    assert got.shape == view.shape
    np.testing.assert_array_equal(got, table[view.astype(np.int16) + 128])
    assert eltwise.lut_int8(table, np.zeros((0, 4), np.int8)).shape == (0, 4)
    np.testing.assert_array_equal(fastq.lookup(table, view), table[view.astype(np.int16) + 128])


def test_lut2_is_the_flat_table_gather():
    table = _table(2, 65536)
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (3, 4, 9)).astype(np.int8)
    b = rng.integers(-128, 128, (3, 4, 9)).astype(np.int8)
    want = table[(a.astype(np.int32) + 128) * 256 + b.astype(np.int32) + 128]
    np.testing.assert_array_equal(eltwise.lut2_int8(table, a, b), want)
    both = np.repeat(CODES, 256), np.tile(CODES, 256)    # every pair once
    np.testing.assert_array_equal(eltwise.lut2_int8(table, *both), table)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="256-entry"):
        eltwise.lut_int8(np.zeros(255, np.int8), CODES)
    with pytest.raises(TypeError, match="int8 codes"):
        eltwise.lut_int8(np.zeros(256, np.int8), CODES.astype(np.int16))
    with pytest.raises(ValueError, match="differ"):
        eltwise.lut2_int8(np.zeros(65536, np.int8), CODES, CODES[:5])
    with pytest.raises(TypeError, match="float32"):
        eltwise.hardswish_f32(np.zeros(3, np.float64))


def test_hardswish_is_the_numpy_form_bit_for_bit():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(4000).astype(np.float32) * 4,
                        np.array([-3, 3, -3.0000002, 2.9999998, 0, -0.0, 1e-30, -1e-30, 6, -6, 1e30, -1e30,
                                  np.inf, -np.inf, np.nan], np.float32)])
    got, want = eltwise.hardswish_f32(x), _hardswish(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
    assert np.array_equal(np.isnan(got), np.isnan(want))
    img = rng.standard_normal((1, 8, 5, 6)).astype(np.float32)[:, :, ::2]      # strided input
    np.testing.assert_array_equal(eltwise.hardswish_f32(img).view(np.uint32), _hardswish(img).view(np.uint32))


def test_binary_table_fast_paths_match_the_numpy_gathers():
    table = fastq.BinaryTable(lambda a, b: ((a.astype(np.int16) * 3 + b) % 127).astype(np.int8))
    rng = np.random.default_rng(5)
    qa = rng.integers(-128, 128, (1, 6, 4, 4)).astype(np.int8)
    for qb in (rng.integers(-128, 128, (1, 6, 4, 4)).astype(np.int8), np.array([7], np.int8),
               np.array(-128, np.int8), rng.integers(-128, 128, (1, 6, 1, 1)).astype(np.int8),
               rng.integers(-128, 128, (6, 1, 1)).astype(np.int8), rng.integers(-128, 128, (1, 6, 4, 1)).astype(np.int8),
               rng.integers(-128, 128, (1, 1, 4, 4)).astype(np.int8)):      # the last: not an outer broadcast
        want = table.table[qa.astype(np.int32) + 128, qb.astype(np.int32) + 128]
        np.testing.assert_array_equal(table(qa, qb), want)
        np.testing.assert_array_equal(table(qb, qa), table.table[qb.astype(np.int32) + 128, qa.astype(np.int32) + 128])


def test_lut2_outer_repeats_each_row_code_over_its_block():
    table = _table(6, 65536)
    rng = np.random.default_rng(7)
    q = rng.integers(-128, 128, (1, 5, 3, 4)).astype(np.int8)
    r = rng.integers(-128, 128, (1, 5, 1, 1)).astype(np.int8)
    qi, ri = q.astype(np.int32) + 128, r.astype(np.int32) + 128
    np.testing.assert_array_equal(eltwise.lut2_outer_int8(table, q, r), table.reshape(256, 256)[qi, ri])
    np.testing.assert_array_equal(eltwise.lut2_outer_int8(table, q, r, True), table.reshape(256, 256)[ri, qi])
    with pytest.raises(ValueError, match="do not divide"):
        eltwise.lut2_outer_int8(table, q, np.zeros(7, np.int8))


@pytest.mark.parametrize("scale, zero, qmin, qmax", [(0.0123, 0, -127, 127), (0.5, -7, -128, 127), (1e-7, 117, -128, 127),
                                                     (0.0, 0, -127, 127), (3.0, 5, 0, 127), (0.02, 0, -8, 7)])
def test_quantize_is_the_numpy_cast(scale, zero, qmin, qmax):
    rng = np.random.default_rng(8)
    x = np.concatenate([rng.standard_normal(5000).astype(np.float32) * 4,
                        np.array([0.5, -0.5, 1.5, -1.5, 2.5, 0, -0.0, 1e30, -1e30, np.inf, -np.inf, np.nan, -np.nan],
                                 np.float32) * np.float32(scale or 1)])
    inv = np.float32(0) if np.float32(scale) == 0 else np.float32(1) / np.float32(scale)
    f = x * inv
    if zero:
        f += np.float32(zero)
    np.clip(f, np.float32(qmin), np.float32(qmax), out=f)
    f += np.copysign(np.float32(0.5), f)
    np.trunc(f, out=f)
    f[np.isnan(f)] = qmax
    want = f.astype(np.int8)
    np.testing.assert_array_equal(eltwise.quantize_f32(x, inv, np.float32(zero), qmin, qmax), want)
    np.testing.assert_array_equal(fastq.quantize(x, scale, zero, qmin, qmax), want)
    np.testing.assert_array_equal(fastq.quantize(x.reshape(-1, 1)[::3], scale, zero, qmin, qmax), want[::3, None])
    assert fastq.quantize(np.float32(x[0]).reshape(()), scale, zero, qmin, qmax).shape == ()
