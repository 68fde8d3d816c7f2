# distutils: sources = csrc/mnn_exact.c
# distutils: depends = csrc/mnn_exact_gemm.inc csrc/mnn_exact.h
"""Float kernels that round like MNN's x86 CPU backend (AVX2 + FMA build, 1 thread), over
csrc/mnn_exact.c: the runtime's impl="mnn".  Math references: mnnlite.ref (conv2d_ref, sigmoid,
average pooling) and the numpy kernels in mnnlite.ops (LayerNorm, Softmax); these differ from them only
in the last bits, and equal MNN's bits exactly.
"""
import numpy as np

from mnnlite.kernels._select import isa_mask

cdef extern from "mnn_exact.h":
    void mnnx_packed_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                            int K, int E, int O, float lo, float hi) nogil
    int mnnx_strassen_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                             int K, int E, int O, int max_depth, float lo, float hi) nogil
    void mnnx_sigmoid(int isa, const float *x, float *y, size_t n, size_t n8) nogil
    void mnnx_global_avg(const float *x, float *y, int channels, int hw) nogil
    void mnnx_softmax_rows(int isa, const float *x, float *y, size_t rows, size_t C) nogil
    void mnnx_exp(int isa, const float *x, float *y, size_t n) nogil
    int mnnx_libm_unary(int op, const float *x, float *y, size_t n) nogil
    void mnnx_norm(const float *src, float *dst, const float *gamma, const float *beta, float eps,
                   size_t size, int rms) nogil

_FLT_MAX = float(np.finfo(np.float32).max)
_CLAMP = {0: (-_FLT_MAX, _FLT_MAX), 1: (0.0, _FLT_MAX), 2: (0.0, 6.0)}   # act: none, relu, relu6


def _c32(name, a, ndim):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _matmul_args(a, w, bias, act):
    """Checked float32 operands of a product y = act(bias + w a): (a, w, bias, clamp low, clamp high)."""
    a, w = _c32("a", a, 2), _c32("w", w, 2)
    if w.shape[1] != a.shape[0]:
        raise ValueError(f"w has {w.shape[1]} columns, a has {a.shape[0]} rows")
    if act not in _CLAMP:
        raise ValueError(f"act must be 0, 1 or 2, got {act!r}")
    lo, hi = _CLAMP[act]
    b = np.zeros(w.shape[0], np.float32) if bias is None else _c32("bias", bias, 1)
    if b.shape[0] != w.shape[0]:
        raise ValueError(f"bias has {b.shape[0]} values for {w.shape[0]} outputs")
    return a, w, b, lo, hi


def packed_matmul(a, w, bias=None, act=0):
    """y[o, e] = act(bias[o] + sum_k w[o, k] a[k, e]) in MNNPackedMatMul's order (a: K x E, w: O x K)."""
    a, w, b, lo, hi = _matmul_args(a, w, bias, act)
    cdef int K = a.shape[0], E = a.shape[1], O = w.shape[0]
    y = np.empty((O, E), np.float32)
    cdef const float[:, ::1] av = a
    cdef const float[:, ::1] wv = w
    cdef const float[::1] bv = b
    cdef float[:, ::1] yv = y
    cdef int isa = isa_mask()
    cdef float flo = lo, fhi = hi
    if K > 0 and E > 0 and O > 0:
        with nogil:
            mnnx_packed_matmul(isa, &av[0, 0], &wv[0, 0], &bv[0], &yv[0, 0], K, E, O, flo, fhi)
    elif O > 0 and E > 0:
        y[...] = np.clip(b[:, None], lo, hi)
    return y


def strassen_matmul(a, w, bias=None, act=0, max_depth=5):
    """packed_matmul's product as Convolution1x1Strassen computes it with one thread: MNN's
    StrassenMatrixComputor (recursion depth at most ``max_depth``), which splits large products into
    Strassen blocks; where it does not split, the bits are packed_matmul's."""
    a, w, b, lo, hi = _matmul_args(a, w, bias, act)
    cdef int K = a.shape[0], E = a.shape[1], O = w.shape[0]
    if K == 0 or E == 0 or O == 0:
        return packed_matmul(a, w, b, act)
    y = np.empty((O, E), np.float32)
    cdef const float[:, ::1] av = a
    cdef const float[:, ::1] wv = w
    cdef const float[::1] bv = b
    cdef float[:, ::1] yv = y
    cdef int isa = isa_mask(), depth = max_depth, rc
    cdef float flo = lo, fhi = hi
    with nogil:
        rc = mnnx_strassen_matmul(isa, &av[0, 0], &wv[0, 0], &bv[0], &yv[0, 0], K, E, O, depth, flo, fhi)
    if rc != 0:
        raise MemoryError("strassen_matmul: out of memory")
    return y


def im2col(x, kernel, stride, pad, dilation):
    """(C, H, W) -> (kh * kw * C, OH * OW), rows ordered (ky, kx, c): MNN's tiled-conv reduction order
    (ConvolutionTiledExecutor::initWeight swaps the weights to [o][k][ic])."""
    (kh, kw), (sy, sx), (pt, pl, pb, pr), (dy, dx) = kernel, stride, pad, dilation
    x = np.pad(x, ((0, 0), (pt, pb), (pl, pr)))
    c, h, w = x.shape
    oh, ow = (h - dy * (kh - 1) - 1) // sy + 1, (w - dx * (kw - 1) - 1) // sx + 1
    rows = [x[:, ky * dy: ky * dy + (oh - 1) * sy + 1: sy, kx * dx: kx * dx + (ow - 1) * sx + 1: sx]
            for ky in range(kh) for kx in range(kw)]
    return np.ascontiguousarray(np.stack(rows).reshape(kh * kw * c, oh * ow)), (oh, ow)


def conv2d(x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), act=0, strassen=True):
    """Dense (groups 1) NCHW conv as MNN's DenseConvolutionTiledExecutor / Convolution1x1Strassen
    computes it with one thread: im2col in (ky, kx, c) order, the batch's planes side by side (MNN
    tiles N * OH * OW as one plane), then packed_matmul; a 1x1 stride-1 unpadded conv (MNN's
    Convolution1x1Strassen) through strassen_matmul unless ``strassen`` is False (weights fed as
    inputs: ConvolutionTiledExecutorMultiInput, always tiled).  ``pad`` is (top, left, bottom, right)."""
    x, w = _c32("x", x, 4), _c32("w", w, 4)
    o, c, kh, kw = w.shape
    if x.shape[1] != c:
        raise ValueError(f"x has {x.shape[1]} channels, w expects {c}")
    wk = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o, kh * kw * c))
    cols = []
    for img in x:
        if (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pad):
            a, (oh, ow) = img.reshape(c, -1), img.shape[1:]
        else:
            a, (oh, ow) = im2col(img, (kh, kw), stride, pad, dilation)
        cols.append(a)
    a = cols[0] if len(cols) == 1 else np.concatenate(cols, axis=1)
    if strassen and (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pad):
        y = _strassen_1x1(a, wk, bias, act)
    else:
        y = packed_matmul(a, wk, bias, act)
    y = y.reshape(o, x.shape[0], oh, ow)
    return np.ascontiguousarray(y.transpose(1, 0, 2, 3))


def _strassen_1x1(a, w, bias, act):
    """Convolution1x1Strassen::onResize with one thread: E = N * H * W columns in one product when
    E > 24 * 8 and E > ceil(O / 8); otherwise the output channels are split (into one part), and the
    product has min(8 * ceil(O / 8), 4 * ceil(O / 4)) rows, the weights padded with zero rows."""
    o, e = w.shape[0], a.shape[1]
    oc8 = -(-o // 8)
    if e > 24 * 8 and e > oc8:
        return strassen_matmul(a, w, bias, act)
    h = min(oc8 * 8, -(-o // 4) * 4)
    if h == o:
        return strassen_matmul(a, w, bias, act)
    wp = np.zeros((h, w.shape[1]), np.float32)
    wp[:o] = w
    bp = np.zeros(h, np.float32)
    if bias is not None:
        bp[:o] = bias
    return strassen_matmul(a, wp, bp, act)[:o]


def sigmoid(x, all_simd=False):
    """MNNSigmoid on the flat array: the first len // 8 * 8 values through MNNExp's AVX2 path, the rest
    through its scalar tail; ``all_simd`` for a packed (NC4HW4) tensor, whose MNN size is a multiple of 8."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    cdef const float[::1] xv = x.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef size_t n = x.size, n8 = (x.size + 7) // 8 if all_simd else x.size // 8
    cdef int isa = isa_mask()
    if n:
        with nogil:
            mnnx_sigmoid(isa, &xv[0], &yv[0], n, n8)
    return y


def global_avg_pool(x):
    """(N, C, *spatial) -> (N, C, 1, ...): CPUPool's global average (a running sum of x * (1 / count))."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim < 3:
        raise ValueError(f"x must have spatial axes, got shape {x.shape}")
    n, c = x.shape[:2]
    hw = int(np.prod(x.shape[2:]))
    y = np.empty((n, c), np.float32)
    cdef const float[:, ::1] xv = x.reshape(n * c, hw)
    cdef float[::1] yv = y.reshape(-1)
    cdef int rows = n * c, count = hw
    if rows and count:
        with nogil:
            mnnx_global_avg(&xv[0, 0], &yv[0], rows, count)
    return y.reshape((n, c) + (1,) * (x.ndim - 2))


def norm_rows(x2, eps, rms=False, gamma=None, beta=None):
    """MNNNorm (x86 AVX2) on each row of a 2-D array: LayerNorm as CPULayerNorm computes it."""
    x2 = _c32("x", x2, 2)
    cdef Py_ssize_t rows = x2.shape[0], size = x2.shape[1], r
    y = np.empty_like(x2)
    if rows == 0 or size == 0:
        return y
    use = gamma is not None and beta is not None
    g = _c32("gamma", gamma, 1) if use else np.zeros(1, np.float32)
    b = _c32("beta", beta, 1) if use else np.zeros(1, np.float32)
    if use and (g.shape[0] != size or b.shape[0] != size):
        raise ValueError(f"gamma/beta have {g.shape[0]}/{b.shape[0]} values for rows of {size}")
    cdef const float[:, ::1] xv = x2
    cdef float[:, ::1] yv = y
    cdef const float[::1] gv = g
    cdef const float[::1] bv = b
    cdef float e = eps
    cdef int r_ms = 1 if rms else 0, has = 1 if use else 0
    with nogil:
        for r in range(rows):
            mnnx_norm(&xv[r, 0], &yv[r, 0], &gv[0] if has else NULL, &bv[0] if has else NULL, e, size, r_ms)
    return y


def softmax_rows(x2):
    """Softmax of each row of a 2-D array as MNN's x86 CPUSoftmax computes it (_AVX_MNNSoftmax)."""
    x2 = _c32("x", x2, 2)
    y = np.empty_like(x2)
    cdef const float[:, ::1] xv = x2
    cdef float[:, ::1] yv = y
    cdef size_t rows = x2.shape[0], c = x2.shape[1]
    cdef int isa = isa_mask()
    if rows and c:
        with nogil:
            mnnx_softmax_rows(isa, &xv[0, 0], &yv[0, 0], rows, c)
    return y


def libm_unary(op, x):
    """UnaryOp ``op`` (a UnaryOpOperation code: ERF, SIN, COS, TAN, ATAN, LOG, LOG1P, ACOSH, SINH, ASINH,
    ATANH, COSH) as MNN's CPUUnary computes it: the C library's float function per value (not correctly
    rounded; MNN's binary and this module call the same system libm)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    cdef const float[::1] xv = x.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef size_t n = x.size
    cdef int code = op, rc = 0
    if n:
        with nogil:
            rc = mnnx_libm_unary(code, &xv[0], &yv[0], n)
    if rc:
        raise ValueError(f"UnaryOp {op} has no libm form")
    return y


def exp(x):
    """MNNExp on the flat array (x86: _AVX_MNNExpC8FMA on len // 8 * 8 values, the scalar tail after)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    cdef const float[::1] xv = x.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef size_t n = x.size
    cdef int isa = isa_mask()
    if n:
        with nogil:
            mnnx_exp(isa, &xv[0], &yv[0], n)
    return y
