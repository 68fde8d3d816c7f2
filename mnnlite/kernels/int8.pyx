# distutils: sources = csrc/int8_conv.c csrc/int8_gemm_x86.c csrc/int8_depthwise.c csrc/int8_pool.c csrc/cpu_features.c csrc/parallel.c
"""Int8 NCHW convolution, depthwise convolution and pooling over csrc/int8_*.c, bit-exact with MNN.

Same signatures as the references in mnnlite.ref.int8 (conv2d_int8_ref, depthwise_int8_ref,
maxpool_int8_ref, avgpool_int8_ref); tests/int8/test_kernels.py checks every SIMD path against them.
The functions validate and raise ValueError/TypeError; the C core trusts.
"""
import numpy as np

from mnnlite.kernels._select import isa_mask, num_threads
include "parallel_pool.pxi"
from mnnlite.ref.int8 import X86_OFFSET, conv_output_size

from libc.stdint cimport int8_t

cimport numpy as cnp

cnp.import_array()


cdef extern from "int8_conv.h":
    ctypedef struct mnnlite_conv_geom:
        int n, c, h, w, o, kh, kw, sy, sx, dy, dx, pt, pl, oh, ow, groups
    ctypedef struct mnnlite_int8_quant:
        float s_in, s_out
        int z_in, z_out, lo, hi, offset
    ctypedef struct mnnlite_int8_conv_plan:
        pass
    mnnlite_int8_conv_plan *mnnlite_int8_conv_plan_new(const int8_t *w, const float *alpha, const float *bias,
                                                       const mnnlite_conv_geom *g, const mnnlite_int8_quant *q,
                                                       int isa) nogil
    int mnnlite_int8_conv_plan_run(const mnnlite_int8_conv_plan *plan, const int8_t *x,
                                   const mnnlite_conv_geom *g, int8_t *y, int nthreads) nogil
    void mnnlite_int8_conv_plan_free(mnnlite_int8_conv_plan *plan) nogil
    const char *mnnlite_int8_conv_plan_path(const mnnlite_int8_conv_plan *plan)
    int mnnlite_depthwise_int8(const int8_t *x, const int8_t *w, const float *alpha, const float *bias,
                               const mnnlite_conv_geom *g, const mnnlite_int8_quant *q, int8_t *y,
                               int isa, int nthreads) nogil
    int mnnlite_maxpool_int8(const int8_t *x, const mnnlite_conv_geom *g, int8_t *y, int x86_max_bug) nogil
    int mnnlite_avgpool_int8(const int8_t *x, const mnnlite_conv_geom *g, int8_t *y, int offset) nogil
    const char *mnnlite_int8_path(int isa)


def path():
    """The dense GEMM path the current CPU limit selects: "vnni", "avx512", "avx2" or "scalar"."""
    return mnnlite_int8_path(isa_mask()).decode()


# ------------------------------------------------------------------------------------------ checks

def _codes(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != np.int8:
        found = a.dtype if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name}: expected an int8 numpy array of codes, got {found}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _per_channel(name, a, count):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.shape != (count,):
        raise ValueError(f"{name}: expected {count} float32 values (one per output channel), got shape {a.shape}")
    return a


def _ints(name, v, count, least):
    values = (v,) * count if isinstance(v, (int, np.integer)) else tuple(v)
    if len(values) != count or any(not isinstance(x, (int, np.integer)) or x < least for x in values):
        raise ValueError(f"{name}: expected an int or {count} ints >= {least}, got {v!r}")
    return tuple(int(x) for x in values)


def _code_value(name, v):
    if not isinstance(v, (int, np.integer)) or not -128 <= v <= 127:
        raise ValueError(f"{name}: expected an int8 code in [-128, 127], got {v!r}")
    return int(v)


def _scale(name, v):
    v = float(v)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a positive finite scale, got {v!r}")
    return v


cdef _set_layer(mnnlite_conv_geom *g, int c, int o, int kh, int kw, stride, pad, dilation, int groups):
    """Kernel, stride, dilation, padding; returns the bottom/right padding (the C side derives it)."""
    g.c, g.o, g.kh, g.kw, g.groups = c, o, kh, kw, groups
    g.sy, g.sx = _ints("stride", stride, 2, 1)
    g.dy, g.dx = _ints("dilation", dilation, 2, 1)
    pt, pl, pb, pr = _ints("pad", pad, 4, 0)
    g.pt, g.pl = pt, pl
    return pb, pr


cdef _set_input(mnnlite_conv_geom *g, x, int pb, int pr, str op):
    if x.shape[1] != g.c:
        raise ValueError(f"{op}: xq has {x.shape[1]} channels, the layer expects {g.c}")
    g.n, _, g.h, g.w = x.shape
    g.oh = conv_output_size(g.h, g.kh, g.sy, g.pt, pb, g.dy)
    g.ow = conv_output_size(g.w, g.kw, g.sx, g.pl, pr, g.dx)
    if g.oh < 1 or g.ow < 1:
        raise ValueError(f"{op}: input {g.h}x{g.w} with kernel {g.kh}x{g.kw}, pad {(g.pt, g.pl, pb, pr)}, "
                         f"dilation {(g.dy, g.dx)} gives an empty output ({g.oh}x{g.ow})")


cdef mnnlite_int8_quant _quant(s_in, z_in, s_out, z_out, out_min, out_max, relu, offset) except *:
    cdef mnnlite_int8_quant q
    q.s_in, q.s_out = _scale("s_in", s_in), _scale("s_out", s_out)
    q.z_in, q.z_out = _code_value("z_in", z_in), _code_value("z_out", z_out)
    q.lo = q.z_out if relu else _code_value("out_min", out_min)
    q.hi = _code_value("out_max", out_max)
    if q.lo > q.hi:
        raise ValueError(f"output range: lower bound {q.lo} (relu={bool(relu)}) exceeds out_max {q.hi}")
    if offset not in (0, 128):
        raise ValueError(f"offset: expected 128 (MNN x86) or 0 (ARM), got {offset!r}")
    q.offset = offset
    return q


# ------------------------------------------------------------------------------------------ kernels

cdef class Conv2dInt8:
    """A dense int8 conv (MNN's ConvInt8 / docs/mnn-quantization.md §13.2) with its weights prepared once.

    wq [O, C/groups, KH, KW] int8, alpha/bias float32[O]; calling it with xq [N, C, H, W] int8 returns
    int8 [N, O, OH, OW].  pad = (top, left, bottom, right).  The SIMD path is fixed at construction
    (``path``); calls use mnnlite.kernels.threads' thread count.
    """
    cdef mnnlite_int8_conv_plan *plan
    cdef mnnlite_conv_geom g
    cdef int pb, pr
    cdef readonly str path

    def __cinit__(self):
        self.plan = NULL

    def __init__(self, wq, alpha, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127, stride=1,
                 pad=(0, 0, 0, 0), dilation=1, groups=1, relu=False, offset=X86_OFFSET):
        wq = _codes("wq", wq, 4)
        o = wq.shape[0]
        if not isinstance(groups, (int, np.integer)) or groups < 1 or o % groups:
            raise ValueError(f"groups: expected an int >= 1 dividing the {o} output channels, got {groups!r}")
        alpha, bias = _per_channel("alpha", alpha, o), _per_channel("bias", bias, o)
        self.pb, self.pr = _set_layer(&self.g, wq.shape[1] * groups, o, wq.shape[2], wq.shape[3], stride, pad,
                                      dilation, groups)
        cdef mnnlite_int8_quant q = _quant(s_in, z_in, s_out, z_out, out_min, out_max, relu, offset)
        cdef const int8_t[::1] wv = wq.reshape(-1)
        cdef const float[::1] av = alpha
        cdef const float[::1] bv = bias
        if wq.size == 0:
            raise ValueError(f"wq: empty weights {wq.shape}")
        self.plan = mnnlite_int8_conv_plan_new(&wv[0], &av[0], &bv[0], &self.g, &q, isa_mask())
        if self.plan == NULL:
            raise MemoryError("Conv2dInt8: out of memory packing the weights")
        self.path = mnnlite_int8_conv_plan_path(self.plan).decode()

    def __dealloc__(self):
        mnnlite_int8_conv_plan_free(self.plan)

    def __call__(self, xq):
        # the C-level checks first (a layer is called once per op and run); anything else through _codes
        if not (cnp.PyArray_Check(xq) and cnp.PyArray_TYPE(<cnp.ndarray> xq) == cnp.NPY_INT8
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> xq) and cnp.PyArray_NDIM(<cnp.ndarray> xq) == 4):
            xq = _codes("xq", xq, 4)
        cdef mnnlite_conv_geom g = self.g
        _set_input(&g, xq, self.pb, self.pr, "Conv2dInt8")
        y = np.empty((g.n, g.o, g.oh, g.ow), np.int8)
        if y.size == 0:
            return y
        # xq: C-contiguous int8 (checked above), y: a fresh array
        cdef const int8_t *xp = <const int8_t *> cnp.PyArray_DATA(<cnp.ndarray> xq)
        cdef int8_t *yp = <int8_t *> cnp.PyArray_DATA(<cnp.ndarray> y)
        cdef int threads = num_threads(), rc
        with nogil:
            rc = mnnlite_int8_conv_plan_run(self.plan, xp, &g, yp, threads)
        if rc != 0:
            raise MemoryError("Conv2dInt8: out of memory for the repacked input / panels")
        return y


def conv2d_int8(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127, stride=1,
                pad=(0, 0, 0, 0), dilation=1, groups=1, relu=False, offset=X86_OFFSET):
    """One-shot dense int8 conv, same arguments as mnnlite.ref.int8.conv2d_int8_ref (see Conv2dInt8)."""
    return Conv2dInt8(wq, alpha, bias, s_in, z_in, s_out, z_out, out_min, out_max, stride, pad, dilation,
                      groups, relu, offset)(xq)


def depthwise_int8(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127, stride=1,
                   pad=(0, 0, 0, 0), dilation=1, relu=False, offset=X86_OFFSET):
    """Depthwise int8 conv (MNN's DepthwiseConvInt8 / docs/mnn-quantization.md §13.3): wq [C,1,KH,KW] int8; returns [N,C,OH,OW]."""
    xq, wq = _codes("xq", xq, 4), _codes("wq", wq, 4)
    c = xq.shape[1]
    if wq.shape[0] != c or wq.shape[1] != 1:
        raise ValueError(f"depthwise_int8: wq must be [{c}, 1, KH, KW] for {c} input channels, got {wq.shape}")
    alpha, bias = _per_channel("alpha", alpha, c), _per_channel("bias", bias, c)
    cdef mnnlite_conv_geom g
    pb, pr = _set_layer(&g, c, c, wq.shape[2], wq.shape[3], stride, pad, dilation, c)
    _set_input(&g, xq, pb, pr, "depthwise_int8")
    cdef mnnlite_int8_quant q = _quant(s_in, z_in, s_out, z_out, out_min, out_max, relu, offset)
    y = np.empty((g.n, c, g.oh, g.ow), np.int8)
    if y.size == 0:
        return y
    cdef const int8_t[::1] xv = xq.reshape(-1)
    cdef const int8_t[::1] wv = wq.reshape(-1)
    cdef const float[::1] av = alpha
    cdef const float[::1] bv = bias
    cdef int8_t[::1] yv = y.reshape(-1)
    cdef int isa = isa_mask(), threads = num_threads(), rc
    with nogil:
        rc = mnnlite_depthwise_int8(&xv[0], &wv[0], &av[0], &bv[0], &g, &q, &yv[0], isa, threads)
    if rc != 0:
        raise MemoryError("depthwise_int8: out of memory for the padded planes")
    return y


cdef _pool_geom(mnnlite_conv_geom *g, xq, kernel, stride, pad, str op):
    xq = _codes("xq", xq, 4)
    kh, kw = _ints("kernel", kernel, 2, 1)
    pb, pr = _set_layer(g, xq.shape[1], xq.shape[1], kh, kw, stride, pad, 1, 1)
    _set_input(g, xq, pb, pr, op)
    return xq


def maxpool_int8(xq, kernel, stride=1, pad=(0, 0, 0, 0), x86_max_bug=False):
    """Max of the codes over each in-bounds window.  x86_max_bug=True reproduces MNN 3.6.1 on x86,
    which compares the stored uint8 (q + 128) bytes as signed int8 (see maxpool_int8_ref)."""
    cdef mnnlite_conv_geom g
    xq = _pool_geom(&g, xq, kernel, stride, pad, "maxpool_int8")
    y = np.empty((g.n, g.c, g.oh, g.ow), np.int8)
    if y.size == 0:
        return y
    cdef const int8_t[::1] xv = xq.reshape(-1)
    cdef int8_t[::1] yv = y.reshape(-1)
    cdef int bug = bool(x86_max_bug), rc
    with nogil:
        rc = mnnlite_maxpool_int8(&xv[0], &g, &yv[0], bug)
    if rc != 0:
        raise MemoryError("maxpool_int8: out of memory")
    return y


def avgpool_int8(xq, kernel, stride=1, pad=(0, 0, 0, 0), offset=X86_OFFSET):
    """MNN's int8 average: (sum (q + offset) * floor(2^24 / n)) >> 24 - offset over in-bounds windows."""
    if offset not in (0, 128):
        raise ValueError(f"offset: expected 128 (MNN x86) or 0 (ARM), got {offset!r}")
    cdef mnnlite_conv_geom g
    xq = _pool_geom(&g, xq, kernel, stride, pad, "avgpool_int8")
    y = np.empty((g.n, g.c, g.oh, g.ow), np.int8)
    if y.size == 0:
        return y
    cdef const int8_t[::1] xv = xq.reshape(-1)
    cdef int8_t[::1] yv = y.reshape(-1)
    cdef int off = offset, rc
    with nogil:
        rc = mnnlite_avgpool_int8(&xv[0], &g, &yv[0], off)
    if rc != 0:
        raise MemoryError("avgpool_int8: out of memory")
    return y
