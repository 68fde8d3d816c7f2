"""Single-pass element-wise kernels for the runtime's hot path (GIL released).

* ``lut_int8(table, q)``: ``table[q + 128]`` for int8 codes ``q`` and a 256-entry int8 table -- the
  int8 UnaryOp (MNN's tableInt8) and the int8 BinaryOp with one scalar operand (a row of its 256 x 256
  table).  numpy's fancy indexing first widens the uint8 index to intp and is 10-20x slower.
* ``lut2_int8(table, qa, qb)``: ``table[(qa + 128) * 256 + qb + 128]`` for two int8 arrays of one
  shape: the int8 BinaryOp on equal shapes; ``lut2_outer_int8`` the same with one operand broadcast
  along the trailing dims (squeeze-excitation scales).
* ``quantize_f32(x, inv, zero, qmin, qmax)``: MNN's FloatToInt8 cast as ``mnnlite.int8.fastq.quantize``
  computes it: ``x * inv (+ zero)``, clamp, ``trunc(v ± 0.5)``, NaN to ``qmax`` -- one pass, not six.
* ``hardswish_f32(x)``: ``x * clamp(x + 3, 0, 6) / 6`` in float32, the same operations in the same
  order as ``mnnlite.ops.elementwise._hardswish`` (one pass instead of four; NaN propagates).

Pure lookups and IEEE float32 operations, so the results equal the numpy forms bit for bit
(tests/kernels/test_eltwise.py).  Arguments are validated here; the loops trust them.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, uint8_t
from libc.stddef cimport size_t
from libc.math cimport copysignf, truncf

cnp.import_array()


def _table(name, table, size):
    t = np.ascontiguousarray(table)
    if t.dtype != np.int8 or t.size != size:
        raise ValueError(f"{name}: a {size}-entry int8 table is needed, got {t.size} entries of {t.dtype}")
    return t.reshape(-1)


def _floats(name, x, out_dtype):
    """(contiguous float32 source, fresh output of its shape) for a one-pass float32 kernel."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"{name}: a float32 array is needed")
    src = np.ascontiguousarray(x)
    return src, np.empty(src.shape, out_dtype)


def _codes(name, q):
    if not isinstance(q, np.ndarray) or q.dtype != np.int8:
        raise TypeError(f"{name}: int8 codes are needed")
    return np.ascontiguousarray(q)


def lut_int8(table, q):
    """``table[q + 128]``, shape of ``q``."""
    cdef int8_t[::1] t = _table("lut_int8", table, 256)
    src = _codes("lut_int8", q)
    out = np.empty(src.shape, np.int8)
    cdef size_t n = src.size, i
    if n == 0:
        return out
    cdef const uint8_t *s = <const uint8_t *> cnp.PyArray_DATA(src)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef const int8_t *tp = &t[0]
    with nogil:
        for i in range(n):
            d[i] = tp[s[i] ^ 0x80]
    return out


def lut2_int8(table, qa, qb):
    """``table[qa + 128, qb + 128]`` element by element, ``qa`` and ``qb`` of one shape."""
    cdef int8_t[::1] t = _table("lut2_int8", table, 65536)
    a, b = _codes("lut2_int8", qa), _codes("lut2_int8", qb)
    if a.shape != b.shape:
        raise ValueError(f"lut2_int8: shapes {a.shape} and {b.shape} differ")
    out = np.empty(a.shape, np.int8)
    cdef size_t n = a.size, i
    if n == 0:
        return out
    cdef const uint8_t *pa = <const uint8_t *> cnp.PyArray_DATA(a)
    cdef const uint8_t *pb = <const uint8_t *> cnp.PyArray_DATA(b)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef const int8_t *tp = &t[0]
    with nogil:
        for i in range(n):
            d[i] = tp[(<size_t> (pa[i] ^ 0x80) << 8) | (pb[i] ^ 0x80)]
    return out


def lut2_outer_int8(table, q, r, r_first=False):
    """``table[q + 128, r + 128]`` (``table[r + 128, q + 128]`` with ``r_first``) where ``r`` holds one
    code per block of ``q.size // r.size`` consecutive elements of ``q``: an operand broadcast along
    the trailing dims (a [1, C, 1, 1] scale times a [1, C, H, W] map); shape of ``q``."""
    cdef int8_t[::1] t = _table("lut2_outer_int8", table, 65536)
    a, b = _codes("lut2_outer_int8", q), _codes("lut2_outer_int8", r)
    out = np.empty(a.shape, np.int8)
    cdef size_t n = a.size, outer = b.size, inner, o, i
    if n == 0:
        return out
    if outer == 0 or n % outer:
        raise ValueError(f"lut2_outer_int8: {outer} row codes do not divide {n} elements")
    inner = n // outer
    cdef const uint8_t *pa = <const uint8_t *> cnp.PyArray_DATA(a)
    cdef const uint8_t *pb = <const uint8_t *> cnp.PyArray_DATA(b)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef const int8_t *tp = &t[0]
    cdef const int8_t *row
    cdef size_t col
    cdef bint swap = bool(r_first)
    with nogil:
        for o in range(outer):
            if swap:              # a row of the table: table[r][q]
                row = tp + (<size_t> (pb[o] ^ 0x80) << 8)
                for i in range(o * inner, (o + 1) * inner):
                    d[i] = row[pa[i] ^ 0x80]
            else:                 # a column: table[q][r]
                col = pb[o] ^ 0x80
                for i in range(o * inner, (o + 1) * inner):
                    d[i] = tp[(<size_t> (pa[i] ^ 0x80) << 8) | col]
    return out


def hardswish_f32(x):
    """``x * clamp(x + 3, 0, 6) / 6`` of a float32 array, in a new C-contiguous array."""
    src, out = _floats("hardswish_f32", x, np.float32)
    cdef size_t n = src.size, i
    if n == 0:
        return out
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(out)
    cdef float v, t
    with nogil:
        for i in range(n):
            v = s[i]
            t = v + <float> 3.0
            if t < <float> 0.0:         # NaN compares false and stays NaN, as in np.clip
                t = 0.0
            if t > <float> 6.0:
                t = 6.0
            t = v * t
            d[i] = t / <float> 6.0
    return out


def quantize_f32(x, float inv, float zero, int qmin, int qmax):
    """int8 codes of a float32 array: ``x * inv``, ``+ zero`` when ``zero`` is not 0, clamped to
    [qmin, qmax] (NaN stays NaN), ``+ copysign(0.5, v)``, truncated; NaN gives ``qmax``."""
    if not -128 <= qmin <= qmax <= 127:
        raise ValueError(f"quantize_f32: code range [{qmin}, {qmax}] is not within int8")
    src, out = _floats("quantize_f32", x, np.int8)
    cdef size_t n = src.size, i
    if n == 0:
        return out
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef float lo = <float> qmin, hi = <float> qmax, v
    cdef bint add_zero = zero != 0
    cdef int8_t nan_code = <int8_t> qmax
    with nogil:
        for i in range(n):
            v = s[i] * inv
            if add_zero:
                v = v + zero
            if v < lo:
                v = lo
            if v > hi:
                v = hi
            if v != v:                # minps/maxps: NaN becomes the upper bound
                d[i] = nan_code
            else:
                d[i] = <int8_t> truncf(v + copysignf(<float> 0.5, v))
    return out
