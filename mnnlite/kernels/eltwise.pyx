# distutils: sources = csrc/int8_eltwise.c csrc/eltwise_f32.c csrc/cpu_features.c
"""Single-pass element-wise kernels for the runtime's hot path (GIL released).

* ``lut_int8(table, q)``: ``table[q + 128]`` for int8 codes ``q`` and a 256-entry int8 table -- the
  int8 UnaryOp (MNN's tableInt8) and the int8 BinaryOp with one scalar operand (a row of its 256 x 256
  table).  numpy's fancy indexing first widens the uint8 index to intp and is 10-20x slower.
* ``lut2_int8(table, qa, qb)``: ``table[(qa + 128) * 256 + qb + 128]`` for two int8 arrays of one
  shape: the int8 BinaryOp on equal shapes (``binary_int8``: ADD/SUB/MUL as float32 arithmetic instead,
  once it matched the table on every pair); ``lut2_outer_int8`` the same with one operand broadcast
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
from libc.stdint cimport int8_t, int16_t, int32_t, uint8_t, uint32_t
from libc.stddef cimport size_t
from libc.math cimport copysignf, expf
from libc.string cimport memcpy

from mnnlite.kernels._select import isa_mask

cdef extern from "eltwise_f32.h":
    void mnnlite_clamp_f32(const float *x, float *y, size_t n, float lo, float hi, int isa) nogil
    void mnnlite_hardswish_f32(const float *x, float *y, size_t n, int isa) nogil

cdef extern from "int8_eltwise.h":
    void mnnlite_lut256(const int8_t *table, const int8_t *q, int8_t *y, size_t n, int isa) nogil
    int mnnlite_binary_int8(int op, const int8_t *a, const int8_t *b, int8_t *y, size_t n, float sa, float za,
                            float sb, float zb, float inv, float z_out, float lo, float hi, int isa) nogil

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
    cdef size_t n = src.size
    if n == 0:
        return out
    cdef const int8_t *s = <const int8_t *> cnp.PyArray_DATA(src)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef int isa = isa_mask()
    with nogil:
        mnnlite_lut256(&t[0], s, d, n, isa)
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
    cdef int8_t column[256]
    cdef size_t col
    cdef bint swap = bool(r_first)
    cdef int isa = isa_mask()
    with nogil:
        for o in range(outer):
            if swap:              # a row of the table: table[r][q]
                row = tp + (<size_t> (pb[o] ^ 0x80) << 8)
                mnnlite_lut256(row, <const int8_t *> (pa + o * inner), d + o * inner, inner, isa)
            elif inner >= 256:    # a column: table[q][r], copied out once for a block this long
                col = pb[o] ^ 0x80
                for i in range(256):
                    column[i] = tp[(i << 8) | col]
                mnnlite_lut256(column, <const int8_t *> (pa + o * inner), d + o * inner, inner, isa)
            else:
                col = pb[o] ^ 0x80
                for i in range(o * inner, (o + 1) * inner):
                    d[i] = tp[(<size_t> (pa[i] ^ 0x80) << 8) | col]
    return out


def binary_int8(int op, qa, qb, float sa, float za, float sb, float zb, float inv, float z_out, float lo,
                float hi):
    """CPUBinaryInt8's arithmetic on two int8 arrays of one shape (op 0 ADD, 1 SUB, 2 MUL; float32 steps
    of ``mnnlite.int8.ops._binary_codes``, csrc/int8_eltwise.h); None where the CPU limit allows no AVX2 /
    AVX-512 path (the table's gather is faster there).  ``fastq.BinaryTable`` runs it for a node only once
    it matched the node's table on every pair of codes."""
    a, b = _codes("binary_int8", qa), _codes("binary_int8", qb)
    if a.shape != b.shape:
        raise ValueError(f"binary_int8: shapes {a.shape} and {b.shape} differ")
    if op < 0 or op > 2:
        raise ValueError(f"binary_int8: op {op} is not 0 (ADD), 1 (SUB) or 2 (MUL)")
    out = np.empty(a.shape, np.int8)
    cdef size_t n = a.size
    cdef const int8_t *pa = <const int8_t *> cnp.PyArray_DATA(a)
    cdef const int8_t *pb = <const int8_t *> cnp.PyArray_DATA(b)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef int isa = isa_mask(), rc
    with nogil:
        rc = mnnlite_binary_int8(op, pa, pb, d, n, sa, za, sb, zb, inv, z_out, lo, hi, isa)
    return out if rc == 0 else None


def hardswish_f32(x):
    """``x * clamp(x + 3, 0, 6) / 6`` of a float32 array, in a new C-contiguous array."""
    src, out = _floats("hardswish_f32", x, np.float32)
    cdef size_t n = src.size
    if n == 0:
        return out
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(out)
    cdef int isa = isa_mask()
    with nogil:
        mnnlite_hardswish_f32(s, d, n, isa)        # csrc/eltwise_f32.c: scalar, AVX2, AVX-512
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
    # Branch-free (selects the compiler vectorizes): NaN fails both clamps and is then replaced by
    # qmax, which the rounding below returns unchanged (minps/maxps: NaN becomes the upper bound).
    # v + -0.5 .. v + 0.5 lies in [-128.5, 127.5]: the int conversion truncates as truncf does
    # (truncf itself is a library call without SSE4.1, several times the loop's cost).
    with nogil:
        for i in range(n):
            v = s[i] * inv
            if add_zero:
                v = v + zero
            v = lo if v < lo else v
            v = hi if v > hi else v
            v = hi if v != v else v
            d[i] = <int8_t> <int> (v + copysignf(<float> 0.5, v))
    return out


def _resize_args(name, x, rows, cols):
    """(contiguous [N, C, H, W] source, its row and column index arrays as intp) after checking every
    index against the plane, so the loops below cannot read outside it (callers check the dtype)."""
    src = np.ascontiguousarray(x)
    checked = []
    for axis, idx in ((2, rows), (3, cols)):
        for i in idx:
            a = np.ascontiguousarray(i, dtype=np.intp).reshape(-1)
            if a.size and (a.min() < 0 or a.max() >= src.shape[axis]):
                raise IndexError(f"{name}: index out of range for a dim of {src.shape[axis]}")
            checked.append(a)
    return src, checked


ctypedef fused pixel:
    float
    int8_t


cdef void _gather_rows(const pixel *s, pixel *d, Py_ssize_t planes, Py_ssize_t h, Py_ssize_t w,
                       const Py_ssize_t *ri, Py_ssize_t oh, const Py_ssize_t *ci, Py_ssize_t ow) noexcept nogil:
    cdef Py_ssize_t p, i, j
    cdef const pixel *row
    for p in range(planes):
        for i in range(oh):
            row = s + (p * h + ri[i]) * w
            for j in range(ow):
                d[j] = row[ci[j]]
            d += ow


def _read_rows(r0, r1):
    """The distinct source rows a bilinear resize reads (its two row index arrays), as intp."""
    return np.ascontiguousarray(np.union1d(r0, r1), dtype=np.intp)


def resize_nearest(x, rows, cols):
    """``x[:, :, rows][:, :, :, cols]`` of a float32 or int8 NCHW array in one pass (a nearest resize)."""
    if not isinstance(x, np.ndarray) or x.dtype not in (np.float32, np.int8) or x.ndim != 4:
        raise TypeError("resize_nearest: a float32 or int8 [N, C, H, W] array is needed")
    src, (r, c) = _resize_args("resize_nearest", x, (rows,), (cols,))
    cdef Py_ssize_t planes = src.shape[0] * src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t oh = r.size, ow = c.size
    out = np.empty((src.shape[0], src.shape[1], oh, ow), src.dtype)
    if out.size == 0:
        return out
    cdef const Py_ssize_t *ri = <const Py_ssize_t *> cnp.PyArray_DATA(r)
    cdef const Py_ssize_t *ci = <const Py_ssize_t *> cnp.PyArray_DATA(c)
    cdef void *s = cnp.PyArray_DATA(src)
    cdef void *d = cnp.PyArray_DATA(out)
    cdef bint floats = src.dtype == np.float32
    with nogil:
        if floats:
            _gather_rows(<const float *> s, <float *> d, planes, h, w, ri, oh, ci, ow)
        else:
            _gather_rows(<const int8_t *> s, <int8_t *> d, planes, h, w, ri, oh, ci, ow)
    return out


def resize_bilinear_f32(x, y0, y1, fy, x0, x1, fx):
    """CPUInterp's bilinear blend of a float32 NCHW array, the operations of ``ops.resize.bilinear_ref``
    in its order and rounding: ``top = x[y0, x1] * fx + x[y0, x0] * (1 - fx)`` (``bottom`` on row y1),
    then ``top * (1 - fy) + bottom * fy``, every step a float32 operation, in one pass."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError("resize_bilinear_f32: a float32 [N, C, H, W] array is needed")
    src, (r0, r1, c0, c1) = _resize_args("resize_bilinear_f32", x, (y0, y1), (x0, x1))
    wy = np.ascontiguousarray(fy, dtype=np.float32).reshape(-1)
    wx = np.ascontiguousarray(fx, dtype=np.float32).reshape(-1)
    cdef Py_ssize_t planes = src.shape[0] * src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t oh = r0.size, ow = c0.size, p, i, j
    if r1.size != oh or wy.size != oh or c1.size != ow or wx.size != ow:
        raise ValueError("resize_bilinear_f32: the row and column arrays differ in length")
    out = np.empty((src.shape[0], src.shape[1], oh, ow), np.float32)
    if out.size == 0:
        return out
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(out)
    cdef const Py_ssize_t *a0 = <const Py_ssize_t *> cnp.PyArray_DATA(r0)
    cdef const Py_ssize_t *a1 = <const Py_ssize_t *> cnp.PyArray_DATA(r1)
    cdef const Py_ssize_t *b0 = <const Py_ssize_t *> cnp.PyArray_DATA(c0)
    cdef const Py_ssize_t *b1 = <const Py_ssize_t *> cnp.PyArray_DATA(c1)
    cdef const float *ty = <const float *> cnp.PyArray_DATA(wy)
    cdef const float *tx = <const float *> cnp.PyArray_DATA(wx)
    # Each source row's x blend is one value per output column whatever output row reads it, so the
    # rows the output reads (``_read_rows``) are blended once per plane and the y blend reads them: the
    # same float32 operations in the same order as the reference, the gathers of each row made once.
    blended = np.empty((h, ow), np.float32)
    needed = _read_rows(r0, r1)
    omx = np.float32(1) - wx
    cdef float *hb = <float *> cnp.PyArray_DATA(blended)
    cdef const Py_ssize_t *rows = <const Py_ssize_t *> cnp.PyArray_DATA(needed)
    cdef Py_ssize_t nrows = needed.size, k
    cdef const float *ux = <const float *> cnp.PyArray_DATA(omx)
    cdef const float *row
    cdef const float *top
    cdef const float *bot
    cdef float *line
    cdef float gy, gy1, t, one = 1.0
    with nogil:
        for p in range(planes):
            for k in range(nrows):
                row = s + (p * h + rows[k]) * w
                line = hb + rows[k] * ow
                for j in range(ow):
                    t = row[b1[j]] * tx[j]
                    line[j] = t + row[b0[j]] * ux[j]
            for i in range(oh):
                top = hb + a0[i] * ow
                bot = hb + a1[i] * ow
                gy = ty[i]
                gy1 = one - gy
                for j in range(ow):
                    # separate float32 products and sum (the portable build has no FMA to contract into)
                    t = top[j] * gy1
                    d[j] = t + bot[j] * gy
                d += ow
    return out


def avg_pool_f32(x, kernel, stride, pad, out, inv):
    """The average pool of ``ops.pool.pool2d`` on a float32 NCHW array, its operations in its order: per
    output, a float32 running sum of the window taps in row-major order starting from the first tap
    (taps outside the input add +0.0, as its zero padding does), times ``inv[oy, ox]`` (float32)."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError("avg_pool_f32: a float32 [N, C, H, W] array is needed")
    src = np.ascontiguousarray(x)
    cdef Py_ssize_t kh = int(kernel[0]), kw = int(kernel[1]), sy = int(stride[0]), sx = int(stride[1])
    cdef Py_ssize_t pt = int(pad[0]), pl = int(pad[1]), oh = int(out[0]), ow = int(out[1])
    scale = np.ascontiguousarray(inv, dtype=np.float32)
    if kh <= 0 or kw <= 0 or sy <= 0 or sx <= 0 or oh < 0 or ow < 0 or scale.shape != (oh, ow):
        raise ValueError(f"avg_pool_f32: kernel {kh}x{kw}, stride {sy}x{sx}, output {oh}x{ow} and "
                         f"scales {scale.shape} do not fit")
    cdef Py_ssize_t planes = src.shape[0] * src.shape[1], h = src.shape[2], w = src.shape[3]
    result = np.empty((src.shape[0], src.shape[1], oh, ow), np.float32)
    if result.size == 0:
        return result
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(result)
    cdef const float *sc = <const float *> cnp.PyArray_DATA(scale)
    cdef const float *plane
    cdef const float *row
    cdef Py_ssize_t p, oy, ox, i, j, y0, y1, x0, x1, top, left
    cdef float acc
    cdef bint padded
    # The sum runs over the window's in-range taps only, from -0.0 (-0.0 + v is v for every v, so the
    # first tap starts it as in the reference).  The reference also adds the out-of-range taps' +0.0:
    # that changes a sum only when it is -0.0 (all its taps -0.0), which becomes +0.0 -- done below.
    with nogil:
        for p in range(planes):
            plane = s + p * h * w
            for oy in range(oh):
                top = oy * sy - pt
                y0, y1 = max(top, 0), min(top + kh, h)
                for ox in range(ow):
                    left = ox * sx - pl
                    x0, x1 = max(left, 0), min(left + kw, w)
                    padded = y0 != top or y1 != top + kh or x0 != left or x1 != left + kw
                    acc = -0.0
                    for i in range(y0, y1):
                        row = plane + i * w
                        for j in range(x0, x1):
                            acc = acc + row[j]
                    if padded and acc == 0:
                        acc = 0.0
                    d[oy * ow + ox] = acc * sc[oy * ow + ox]
            d += oh * ow
    return result


def resize_bilinear_int8(x, int z_in, int z_out, y0, y1, sfy, dfy, x0, x1, sfx, dfx):
    """CPUInterp's int8 bilinear resize (MNNBilinearSampleC8 then MNNBilinearLineC8), the integer steps
    of ``int8.ops.bilinear_int8_ref``: per source row ``(int16)((q[x0] - z_in) * sfx + (q[x1] - z_in) *
    dfx)``, per output ``v = row_y0 * sfy + row_y1 * dfy``, ``(v +- 2^13) / 2^14`` (C division), wrapped
    to int8, plus ``z_out``, wrapped to int8.  The weights are the int (1 - f) * 128 and f * 128."""
    if not isinstance(x, np.ndarray) or x.dtype != np.int8 or x.ndim != 4:
        raise TypeError("resize_bilinear_int8: an int8 [N, C, H, W] array is needed")
    src, (r0, r1, c0, c1) = _resize_args("resize_bilinear_int8", x, (y0, y1), (x0, x1))
    wy0 = np.ascontiguousarray(sfy, dtype=np.int32).reshape(-1)
    wy1 = np.ascontiguousarray(dfy, dtype=np.int32).reshape(-1)
    wx0 = np.ascontiguousarray(sfx, dtype=np.int32).reshape(-1)
    wx1 = np.ascontiguousarray(dfx, dtype=np.int32).reshape(-1)
    cdef Py_ssize_t planes = src.shape[0] * src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t oh = r0.size, ow = c0.size, p, i, j, k
    if r1.size != oh or wy0.size != oh or wy1.size != oh or c1.size != ow or wx0.size != ow or wx1.size != ow:
        raise ValueError("resize_bilinear_int8: the row and column arrays differ in length")
    out = np.empty((src.shape[0], src.shape[1], oh, ow), np.int8)
    if out.size == 0:
        return out
    lines = np.empty((h, ow), np.int16)
    needed = _read_rows(r0, r1)
    cdef const int8_t *s = <const int8_t *> cnp.PyArray_DATA(src)
    cdef int8_t *d = <int8_t *> cnp.PyArray_DATA(out)
    cdef const Py_ssize_t *a0 = <const Py_ssize_t *> cnp.PyArray_DATA(r0)
    cdef const Py_ssize_t *a1 = <const Py_ssize_t *> cnp.PyArray_DATA(r1)
    cdef const Py_ssize_t *b0 = <const Py_ssize_t *> cnp.PyArray_DATA(c0)
    cdef const Py_ssize_t *b1 = <const Py_ssize_t *> cnp.PyArray_DATA(c1)
    cdef const int32_t *ty0 = <const int32_t *> cnp.PyArray_DATA(wy0)
    cdef const int32_t *ty1 = <const int32_t *> cnp.PyArray_DATA(wy1)
    cdef const int32_t *tx0 = <const int32_t *> cnp.PyArray_DATA(wx0)
    cdef const int32_t *tx1 = <const int32_t *> cnp.PyArray_DATA(wx1)
    cdef int16_t *lb = <int16_t *> cnp.PyArray_DATA(lines)
    cdef const Py_ssize_t *rows = <const Py_ssize_t *> cnp.PyArray_DATA(needed)
    cdef Py_ssize_t nrows = needed.size
    cdef const int8_t *row
    cdef const int16_t *top
    cdef const int16_t *bot
    cdef int16_t *line
    cdef int32_t val, v, gy0, gy1
    with nogil:
        for p in range(planes):
            for k in range(nrows):
                row = s + (p * h + rows[k]) * w
                line = lb + rows[k] * ow
                for j in range(ow):
                    line[j] = <int16_t> ((<int32_t> row[b0[j]] - z_in) * tx0[j]
                                         + (<int32_t> row[b1[j]] - z_in) * tx1[j])
            for i in range(oh):
                top = lb + a0[i] * ow
                bot = lb + a1[i] * ow
                gy0, gy1 = ty0[i], ty1[i]
                for j in range(ow):
                    val = <int32_t> top[j] * gy0 + <int32_t> bot[j] * gy1
                    v = -((8192 - val) >> 14) if val < 0 else (val + 8192) >> 14
                    d[j] = <int8_t> (<int32_t> (<int8_t> v) + z_out)
                d += ow
    return out


def softmax_rows_nofma(x, float ln2, float inv_ln2, float p4, float p5, float p6, float p7):
    """``mnnlite.ref.mnn_softmax.softmax_rows`` (MNN's _AVX_MNNSoftmax, every float32 operation rounded
    on its own, as MNN's int8 build runs it) in one pass per row: the same operations in the same order
    (the portable build has no FMA to contract into), the n % 8 tail through the C library's expf as
    there.  The constants are the reference's (``_EXP_P``), passed in so both use the same bits."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2:
        raise TypeError("softmax_rows_nofma: a float32 [rows, n] array is needed")
    src = np.ascontiguousarray(x)
    out = np.empty(src.shape, np.float32)
    cdef Py_ssize_t rows = src.shape[0], n = src.shape[1], body = n - n % 8, r, i
    if out.size == 0:
        return out
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(out)
    cdef const float *row
    cdef float *e
    cdef float top, neg_max, v, t, c, total, scale
    cdef int32_t k
    cdef uint32_t bits
    with nogil:
        for r in range(rows):
            row, e = s + r * n, d + r * n
            top = row[0]
            for i in range(1, n):       # numpy's max: NaN wins
                if row[i] != row[i]:
                    top = row[i]
                    break
                if row[i] > top:
                    top = row[i]
            neg_max = -top
            for i in range(body):       # _AVX_MNNExpC8 (mnn_softmax._avx_exp)
                v = row[i] + neg_max
                if v < <float> -87.0:
                    v = -87.0
                if v > <float> 87.0:
                    v = 87.0
                t = v * inv_ln2
                # rintf (cvtps_epi32, ties to even) as float arithmetic: |t| <= 126 < 2^22, so adding
                # and removing 1.5 * 2^23 rounds t to an integer in the current (nearest-even) mode;
                # rintf itself is a library call without SSE4.1
                t = t + <float> 12582912.0
                t = t - <float> 12582912.0
                k = <int32_t> t
                bits = (<uint32_t> k + 127u) << 23
                t = <float> k * ln2
                t = v - t
                t = t * <float> 0.25
                c = p7 * t
                c = c + p6
                c = c * t
                c = c + p5
                c = c * t
                c = c + p4
                c = c * t
                c = c + <float> 1.0
                c = c * t
                c = c + <float> 1.0
                c = c * c
                c = c * c
                memcpy(&v, &bits, 4)         # 2^k from its exponent bits
                e[i] = v * c + <float> 0.0
            for i in range(body, n):    # the scalar tail: expf(x - max)
                e[i] = expf(row[i] - top)
            total = e[0]
            for i in range(1, n):
                total = total + e[i]
            scale = <float> 1.0 / (total + <float> 1e-20)
            for i in range(n):
                e[i] = e[i] * scale
    return out


def dequantize_i8(q, float scale, float zero):
    """``(float(q) - zero) * scale`` of int8 codes in float32, one pass: the operations of
    ``mnnlite.int8.fastq.dequantize`` (int8 -> float32 exact, then two float32 operations)."""
    src = _codes("dequantize_i8", q)
    out = np.empty(src.shape, np.float32)
    cdef size_t n = src.size, i
    if n == 0:
        return out
    cdef const int8_t *s = <const int8_t *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(out)
    cdef float v
    with nogil:
        for i in range(n):
            v = <float> s[i] - zero
            d[i] = v * scale
    return out


def clamp_f32(x, float lo, float hi):
    """``np.minimum(np.maximum(x, lo), hi)`` of a float32 array in one pass, numpy's results bit for bit:
    its maximum(a, b) is ``a > b ? a : b`` and minimum ``a < b ? a : b`` (so ``b`` when they are equal:
    -0.0 against a bound 0.0 gives the bound), a NaN operand gives NaN."""
    src, out = _floats("clamp_f32", x, np.float32)
    cdef size_t n = src.size
    if n == 0:
        return out
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(out)
    cdef int isa = isa_mask()
    with nogil:
        mnnlite_clamp_f32(s, d, n, lo, hi, isa)      # csrc/eltwise_f32.c: scalar, AVX2, AVX-512
    return out


def max_pool_f32(x, kernel, stride, pad, out):
    """The max pool of ``ops.pool.pool2d`` on a float32 NCHW array, its results bit for bit: taps outside
    the input repeat the edge row / column, and each tap is folded in with numpy's maximum (``a > b ?
    a : b``, so the later tap on a tie; a NaN on either side wins), in row-major tap order."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        raise TypeError("max_pool_f32: a float32 [N, C, H, W] array is needed")
    src = np.ascontiguousarray(x)
    cdef Py_ssize_t kh = int(kernel[0]), kw = int(kernel[1]), sy = int(stride[0]), sx = int(stride[1])
    cdef Py_ssize_t pt = int(pad[0]), pl = int(pad[1]), oh = int(out[0]), ow = int(out[1])
    if kh <= 0 or kw <= 0 or sy <= 0 or sx <= 0 or oh < 0 or ow < 0:
        raise ValueError(f"max_pool_f32: kernel {kh}x{kw}, stride {sy}x{sx}, output {oh}x{ow} do not fit")
    cdef Py_ssize_t planes = src.shape[0] * src.shape[1], h = src.shape[2], w = src.shape[3]
    result = np.empty((src.shape[0], src.shape[1], oh, ow), np.float32)
    if result.size == 0 or h == 0 or w == 0:
        return result
    # clamped tap positions, once per call: row offsets [oy][i], columns [ox][j] (numpy.pad mode "edge")
    rows_np = np.empty((oh, kh), np.intp)
    cols_np = np.empty((ow, kw), np.intp)
    cdef Py_ssize_t[:, ::1] rows = rows_np
    cdef Py_ssize_t[:, ::1] cols = cols_np
    cdef const float *s = <const float *> cnp.PyArray_DATA(src)
    cdef float *d = <float *> cnp.PyArray_DATA(result)
    cdef const float *plane
    cdef const Py_ssize_t *rp
    cdef const Py_ssize_t *cp
    cdef Py_ssize_t p, oy, ox, i, j, t
    cdef float acc, v
    for oy in range(oh):
        for i in range(kh):
            rows[oy, i] = min(max(oy * sy - pt + i, 0), h - 1) * w
    for ox in range(ow):
        for j in range(kw):
            cols[ox, j] = min(max(ox * sx - pl + j, 0), w - 1)
    with nogil:
        for p in range(planes):
            plane = s + p * h * w
            for oy in range(oh):
                rp = &rows[oy, 0]
                for ox in range(ow):
                    cp = &cols[ox, 0]
                    # numpy's maximum folded in tap order: the later tap on a tie; the first NaN met stays
                    acc = plane[rp[0] + cp[0]]
                    for t in range(1, kh * kw):
                        if acc != acc:
                            break
                        v = plane[rp[t // kw] + cp[t % kw]]
                        acc = acc if acc > v else v
                    d[oy * ow + ox] = acc
            d += oh * ow
    return result
