"""Fast exact forms of the int8 conversions and of elementwise int8 kernels, for the executor.

* ``dequantize``: ``mnnlite.ref.int8.dequantize`` without the int32 detour.
* ``quantize``: the FloatToInt8 cast of ``mnnlite.ref.int8.quantize`` in fewer numpy passes (same
  float32 operations: ``x * (1/s) + z``, clamp, ``trunc(x ± 0.5)``; NaN ends at the upper bound).
* ``UnaryTable``: MNN's int8 lookup table as one compiled gather.
* ``BinaryTable``: an int8 binary op depends only on its two input codes, so its whole result is a
  256 x 256 table, computed once with the reference formula and then gathered; a comparison's table
  holds the 0/1 result before requantization too.

tests/int8/test_fastq.py checks every one against the references, bit for bit.
"""
from __future__ import annotations

import functools

import numpy as np

# compiled gathers and cast (a missing build is one error at import: mnnlite._build_check)
from ..kernels.eltwise import binary_int8 as _binary_arithmetic
from ..kernels.eltwise import lut2_int8 as _lut2, lut2_outer_int8 as _lut2_outer, lut_int8 as _lut
from ..kernels.eltwise import dequantize_i8 as _dequantize, quantize_f32 as _quantize
from ..ref.int8 import unary_table_ref

F32 = np.float32
_CODES = np.arange(-128, 128, dtype=np.int16).astype(np.int8)


def dequantize(q: np.ndarray, scale, zero) -> np.ndarray:
    """``(q - z) * s`` in float32: the operations of ``mnnlite.ref.int8.dequantize`` in place (int8
    codes: in one compiled pass)."""
    if type(q) is np.ndarray and q.dtype == np.int8:
        return _dequantize(q, F32(scale), F32(zero))
    f = np.array(q, dtype=F32)                      # int8 -> float32 is exact
    f -= F32(zero)
    f *= F32(scale)
    return f


def offset_codes(q: np.ndarray) -> np.ndarray:
    """q + 128 as uint8 (an index into a 256-entry table)."""
    return q.view(np.uint8) ^ np.uint8(0x80)


def quantize(x: np.ndarray, scale, zero=0, qmin=-128, qmax=127) -> np.ndarray:
    """``mnnlite.ref.int8.quantize``: roundf(clamp(x * (1/s) + z, qmin, qmax)) with MNN's rounding."""
    inv = F32(0.0) if F32(scale) == 0 else F32(1.0) / F32(scale)
    if type(x) is np.ndarray and x.dtype == F32 and -128 <= qmin <= qmax <= 127 \
            and qmin == int(qmin) and qmax == int(qmax):
        return _quantize(x, inv, F32(zero), int(qmin), int(qmax))     # the same operations, one pass
    f = np.array(x, dtype=F32)                      # a copy, even of a 0-d array
    f *= inv
    if zero:
        f += F32(zero)
    np.clip(f, F32(qmin), F32(qmax), out=f)
    f += np.copysign(F32(0.5), f)
    np.trunc(f, out=f)
    if np.isnan(f).any():                           # minps/maxps: NaN becomes the upper bound
        f[np.isnan(f)] = qmax
    return f.astype(np.int8)


@functools.lru_cache(maxsize=4096)     # a function of two shapes, asked on every broadcast op and run
def _outer_broadcast(small: tuple, big: tuple) -> bool:
    """``small`` broadcasts to ``big`` by repeating each of its elements over trailing dims only
    ([1, C, 1, 1] against [1, C, H, W]): big's leading dims are small's (left-padded with 1s), then 1s."""
    if len(small) > len(big):
        return False
    small = (1,) * (len(big) - len(small)) + tuple(small)
    k = len(small)
    while k and small[k - 1] == 1:
        k -= 1
    return small[:k] == big[:k]


def lookup(table: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``table[q + 128]`` for a 256-entry int8 table."""
    if q.dtype == np.int8:
        return _lut(table, q)
    return table[offset_codes(np.ascontiguousarray(q))]


class UnaryTable:
    """out = table[q + 127] of MNN's int8 UnaryOp table (``mnnlite.ref.int8.unary_table_ref``), as one
    256-entry gather built from the reference on every code."""

    def __init__(self, table):
        self.lut = unary_table_ref(_CODES, np.asarray(table).astype(np.int8))

    def __call__(self, q: np.ndarray) -> np.ndarray:
        return lookup(self.lut, q)


class BinaryTable:
    """out = table[qa + 128, qb + 128] for an elementwise int8 op whose result depends on the codes only.

    ``arithmetic``: optionally the float32 arithmetic the function performs (``(op, sa, za, sb, zb, inv,
    z_out, lo, hi)`` of ``kernels.eltwise.binary_int8``): equal shapes then run it instead of the 64 KiB
    gather (2x faster on large maps with AVX-512; the gather where no vector path is allowed), but only if
    it gives the whole table, ``fn`` on every pair of codes -- the result depends on the two codes alone,
    so the two then agree on every input."""

    def __init__(self, fn, arithmetic: tuple | None = None):
        a = np.repeat(_CODES, 256).reshape(256, 256)
        b = np.tile(_CODES, 256).reshape(256, 256)
        self.table = np.ascontiguousarray(fn(a, b))
        self.flat = self.table.reshape(-1)
        self.columns: dict = {}         # qb + 128 -> the table's column, contiguous (scalar qb)
        self.arithmetic = None
        if arithmetic is not None and self.table.dtype == np.int8:
            got = _binary_arithmetic(arithmetic[0], a, b, *arithmetic[1:])
            if got is not None and np.array_equal(got, self.table):
                self.arithmetic = arithmetic

    def __call__(self, qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
        if self.table.dtype == np.int8 and qa.dtype == np.int8 and qb.dtype == np.int8:
            # the usual cases in one compiled pass: equal shapes, or one scalar operand of no more dims
            if qa.shape == qb.shape:
                if self.arithmetic is not None:
                    got = _binary_arithmetic(self.arithmetic[0], qa, qb, *self.arithmetic[1:])
                    if got is not None:            # None: no vector path under the CPU limit now
                        return got
                return _lut2(self.flat, qa, qb)
            if qb.size == 1 and qb.ndim <= qa.ndim:
                j = int(qb.reshape(-1)[0]) + 128
                column = self.columns.get(j)
                if column is None:
                    column = self.columns[j] = np.ascontiguousarray(self.table[:, j])
                return _lut(column, qa)
            if qa.size == 1 and qa.ndim <= qb.ndim:
                return _lut(self.table[int(qa.reshape(-1)[0]) + 128], qb)
            if _outer_broadcast(qb.shape, qa.shape):
                return _lut2_outer(self.flat, qa, qb, False)
            if _outer_broadcast(qa.shape, qb.shape):
                return _lut2_outer(self.flat, qb, qa, True)
        ia, ib = offset_codes(np.ascontiguousarray(qa)), offset_codes(np.ascontiguousarray(qb))
        if ia.size == 1:
            return self.table[int(ia.reshape(-1)[0])][ib].reshape(np.broadcast_shapes(qa.shape, qb.shape))
        if ib.size == 1:
            return self.table[:, int(ib.reshape(-1)[0])][ia].reshape(np.broadcast_shapes(qa.shape, qb.shape))
        return self.flat[np.left_shift(ia, 8, dtype=np.uint16) | ib]


__all__ = ["dequantize", "quantize", "offset_codes", "lookup", "BinaryTable", "UnaryTable"]
