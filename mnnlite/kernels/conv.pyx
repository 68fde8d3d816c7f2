# distutils: sources = csrc/conv.c csrc/winograd.c csrc/gemm.c csrc/parallel.c
"""Float32 NCHW conv2d and deconv2d (ONNX Conv / ConvTranspose) over csrc/conv.c.

conv2d and deconv2d are one-shot calls; Conv2d prepares the weights once (packed GEMM panels, the
Winograd transform) for a runtime that calls the same layer many times.  Everything here validates
and raises ValueError; the C core trusts.  References: mnnlite.ref.conv.conv2d_ref, deconv2d_ref.
"""
import numpy as np

cimport numpy as cnp

from mnnlite.kernels._select import isa_mask, num_threads
include "parallel_pool.pxi"

cnp.import_array()

from libc.limits cimport INT_MAX

cdef extern from "conv.h":
    ctypedef struct mnnlite_conv_params:
        int n, c, h, w, o, kh, kw, sy, sx, dy, dx, pt, pl, pb, pr, groups, act, oh, ow
    ctypedef struct mnnlite_conv_plan:
        pass
    int mnnlite_conv_algo_supported(const mnnlite_conv_params *p, int algo)
    mnnlite_conv_plan *mnnlite_conv_plan_new(int isa, const mnnlite_conv_params *p, const float *w, int algo) nogil
    void mnnlite_conv_plan_free(mnnlite_conv_plan *plan) nogil
    int mnnlite_conv_plan_prepare(mnnlite_conv_plan *plan, int algo, const mnnlite_conv_params *p) nogil
    int mnnlite_conv_plan_run(const mnnlite_conv_plan *plan, int nthreads, int algo,
                              const mnnlite_conv_params *p, const float *x, const float *bias, float *y) nogil
    int mnnlite_conv2d(int isa, int nthreads, int algo, const mnnlite_conv_params *p, const float *x,
                       const float *w, const float *bias, float *y) nogil
    int mnnlite_deconv2d(int isa, int nthreads, const mnnlite_conv_params *p, const float *x,
                         const float *w, const float *bias, float *y) nogil

cdef extern from "winograd.h":
    int mnnlite_winograd_mnn_unit(const mnnlite_conv_params *p)


def winograd_mnn_unit(int c, int o, int oh, int ow):
    """The Winograd unit MNN 3.6.1's x86 CPU backend picks for a 3x3 stride-1 dense conv with this
    output size (ConvolutionPackWinograd::bestWinogradUnit, one thread): 2, 4, 6, or 0 where it runs the
    dense tiled GEMM (DenseConvolutionTiledExecutor) instead."""
    cdef mnnlite_conv_params p
    p.c, p.o, p.oh, p.ow = c, o, oh, ow
    return mnnlite_winograd_mnn_unit(&p)


ACTIVATIONS = {0: "none", 1: "relu", 2: "relu6"}
ALGORITHMS = {"auto": 0, "gemm": 1, "winograd": 2, "depthwise": 3, "winograd_mnn": 4}


def _check_array(name, a, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        found = type(a).__name__ if not isinstance(a, np.ndarray) else f"{a.dtype}, contiguous={a.flags.c_contiguous}"
        raise ValueError(f"{name}: expected a C-contiguous float32 array, got {found}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")


def _check_ints(name, values, count, least):
    values = tuple(values)
    if len(values) != count or any(not isinstance(v, (int, np.integer)) or v < least for v in values):
        raise ValueError(f"{name}: expected {count} ints >= {least}, got {values!r}")
    return tuple(int(v) for v in values)


cdef class _Layer:
    """Validated attributes of one conv or deconv: the C parameter block minus the input size."""
    cdef mnnlite_conv_params p
    cdef object w, bias

    def __init__(self, w, bias, int out_channels, stride, pad, dilation, groups, act):
        _check_array("w", w, 4)
        if bias is not None:
            _check_array("bias", bias, 1)
            if bias.shape[0] != out_channels:
                raise ValueError(f"bias: expected {out_channels} values (one per output channel), got {bias.shape[0]}")
        if not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"groups: expected an int >= 1, got {groups!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act: expected one of {ACTIVATIONS}, got {act!r}")
        self.w, self.bias = w, bias
        self.p.o, self.p.kh, self.p.kw = out_channels, w.shape[2], w.shape[3]
        self.p.sy, self.p.sx = _check_ints("stride", stride, 2, 1)
        self.p.pt, self.p.pl, self.p.pb, self.p.pr = _check_ints("pad", pad, 4, 0)
        self.p.dy, self.p.dx = _check_ints("dilation", dilation, 2, 1)
        self.p.groups, self.p.act = groups, act

    cdef set_input(self, x, int channels, str op):
        # the C-level checks first: a layer is called once per op and run, on small tensors too
        if not (cnp.PyArray_Check(x) and cnp.PyArray_TYPE(<cnp.ndarray> x) == cnp.NPY_FLOAT32
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> x) and cnp.PyArray_NDIM(<cnp.ndarray> x) == 4):
            _check_array("x", x, 4)
        cdef cnp.npy_intp *d = cnp.PyArray_DIMS(<cnp.ndarray> x)
        if d[1] != channels:
            raise ValueError(f"{op}: x has {x.shape[1]} channels, the weights {self.w.shape} expect {channels}")
        if d[0] > INT_MAX or d[2] > INT_MAX or d[3] > INT_MAX:
            raise OverflowError(f"{op}: input shape {x.shape} exceeds the kernel's int dimensions")
        self.p.n, self.p.c, self.p.h, self.p.w = d[0], d[1], d[2], d[3]

    cdef const float *bias_ptr(self):
        if self.bias is None or self.bias.shape[0] == 0:
            return NULL
        return <const float *> cnp.PyArray_DATA(<cnp.ndarray> self.bias)   # C-contiguous float32 (checked)


cdef _conv_layer(w, bias, stride, pad, dilation, groups, act, algo):
    if not isinstance(w, np.ndarray) or w.ndim != 4:
        _check_array("w", w, 4)
    layer = _Layer(w, bias, w.shape[0], stride, pad, dilation, groups, act)
    if w.shape[0] % groups:
        raise ValueError(f"conv2d: w has {w.shape[0]} output channels, not divisible by groups={groups}")
    layer.p.c = w.shape[1] * groups
    if algo not in ALGORITHMS or not mnnlite_conv_algo_supported(&layer.p, ALGORITHMS[algo]):
        raise ValueError(f"conv2d: algo {algo!r} cannot run kernel {w.shape[2]}x{w.shape[3]}, stride "
                         f"{stride}, dilation {dilation}, groups {groups}; choose from {list(ALGORITHMS)}")
    return layer


cdef _conv_output(_Layer layer, x):
    layer.set_input(x, layer.w.shape[1] * layer.p.groups, "conv2d")
    p = &layer.p
    p.oh = (p.h + p.pt + p.pb - p.dy * (p.kh - 1) - 1) // p.sy + 1
    p.ow = (p.w + p.pl + p.pr - p.dx * (p.kw - 1) - 1) // p.sx + 1
    if p.oh < 1 or p.ow < 1:
        raise ValueError(f"conv2d: kernel {p.kh}x{p.kw} (dilation {p.dy},{p.dx}) does not fit input "
                         f"{p.h}x{p.w} with pad {(p.pt, p.pl, p.pb, p.pr)}")
    return np.empty((p.n, p.o, p.oh, p.ow), dtype=np.float32)


cdef _check_rc(int rc, str op):
    if rc == -2:
        raise ValueError(f"{op}: this Conv2d was prepared for another algorithm")
    if rc != 0:
        raise MemoryError(f"{op}: out of memory for the kernel's workspace")


def conv2d(x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1, act=0, *,
           algo="auto"):
    """y = act(conv(x, w) + bias) for x [N,C,H,W], w [O,C/groups,KH,KW], pad (top, left, bottom, right).

    act: 0 none, 1 relu, 2 relu6.  algo "auto" picks depthwise (groups == C == O), Winograd F(4x4,3x3)
    (3x3, stride 1, dilation 1, groups 1, C and O >= 16, output >= 8x8 and, as this one call also
    transforms the weights, >= 256 output pixels) or im2col + packed GEMM; naming one of "gemm",
    "winograd", "depthwise" forces it.  "winograd_mnn" (3x3, stride 1, dilation 1, groups 1) computes
    what MNN 3.6.1's x86 CPU backend computes, rounding included: F(2x2), F(4x4) or F(6x6, 3x3) with
    MNN's transforms where MNN picks that unit for the output size, the GEMM where it picks none.
    A runtime calling the same layer again should use Conv2d.
    """
    cdef _Layer layer = _conv_layer(w, bias, stride, pad, dilation, groups, act, algo)
    y = _conv_output(layer, x)
    if y.size == 0 or x.size == 0:
        return _fill_bias(y, bias, act)
    cdef const float[::1] xv = x.reshape(-1), wv = w.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef int isa = isa_mask(), nthreads = num_threads(), code = ALGORITHMS[algo], rc
    cdef const float *bp = layer.bias_ptr()
    with nogil:
        rc = mnnlite_conv2d(isa, nthreads, code, &layer.p, &xv[0], &wv[0], bp, &yv[0])
    _check_rc(rc, "conv2d")
    return y


cdef class Conv2d:
    """A conv2d layer with its weights prepared once; call it on inputs of any spatial size.

    Same arguments as conv2d.  The SIMD path is fixed when the layer is built (the packing depends on it).
    """
    cdef _Layer layer
    cdef mnnlite_conv_plan *plan
    cdef int algo

    def __cinit__(self, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1, act=0, *,
                  algo="auto"):
        self.layer = _conv_layer(w, bias, stride, pad, dilation, groups, act, algo)
        if bias is not None:
            self.layer.bias = bias.copy()  # like the weights, fixed when the layer is built
        self.algo = ALGORITHMS[algo]
        cdef const float[::1] wv = w.reshape(-1)
        cdef int isa = isa_mask()
        # no input channels: no weights to pack (and no element 0 to point at; the debug build checks)
        cdef const float *wp = &wv[0] if wv.shape[0] else NULL
        with nogil:
            self.plan = mnnlite_conv_plan_new(isa, &self.layer.p, wp, self.algo)
        if self.plan == NULL:
            raise MemoryError("Conv2d: out of memory while packing the weights")

    def __dealloc__(self):
        mnnlite_conv_plan_free(self.plan)

    def __call__(self, x):
        y = _conv_output(self.layer, x)
        if y.size == 0 or x.size == 0:
            return _fill_bias(y, self.layer.bias, self.layer.p.act)
        # A private copy: another Python thread may call this layer while the GIL is released below.
        cdef mnnlite_conv_params p = self.layer.p
        if mnnlite_conv_plan_prepare(self.plan, self.algo, &p) != 0:   # under the GIL: not thread-safe
            raise MemoryError("Conv2d: out of memory while transforming the weights")
        # x: a C-contiguous float32 array (set_input), y: a fresh one
        cdef const float *xp = <const float *> cnp.PyArray_DATA(<cnp.ndarray> x)
        cdef float *yp = <float *> cnp.PyArray_DATA(<cnp.ndarray> y)
        cdef int nthreads = num_threads(), rc
        cdef const float *bp = self.layer.bias_ptr()
        with nogil:
            rc = mnnlite_conv_plan_run(self.plan, nthreads, self.algo, &p, xp, bp, yp)
        _check_rc(rc, "Conv2d")
        return y


def deconv2d(x, w, bias=None, stride=(1, 1), pad=(0, 0, 0, 0), dilation=(1, 1), groups=1,
             output_padding=(0, 0), output_size=None, act=0):
    """ONNX ConvTranspose for x [N,C,H,W] and w [C,O/groups,KH,KW]; pad (top, left, bottom, right).

    The output is output_size (OH, OW) when given, else
    stride*(in-1) + output_padding + dilation*(k-1) + 1 - pad_begin - pad_end per axis.
    """
    if not isinstance(w, np.ndarray) or w.ndim != 4:
        _check_array("w", w, 4)
    cdef _Layer layer = _Layer(w, bias, w.shape[1] * groups, stride, pad, dilation, groups, act)
    if w.shape[0] % groups:
        raise ValueError(f"deconv2d: w has {w.shape[0]} input channels, not divisible by groups={groups}")
    layer.set_input(x, w.shape[0], "deconv2d")
    p = &layer.p
    if output_size is None:
        op = _check_ints("output_padding", output_padding, 2, 0)
        output_size = (p.sy * (p.h - 1) + op[0] + p.dy * (p.kh - 1) + 1 - p.pt - p.pb,
                       p.sx * (p.w - 1) + op[1] + p.dx * (p.kw - 1) + 1 - p.pl - p.pr)
    p.oh, p.ow = _check_ints("deconv2d output size", output_size, 2, 1)
    y = np.empty((p.n, p.o, p.oh, p.ow), dtype=np.float32)
    if y.size == 0 or x.size == 0:
        return _fill_bias(y, bias, act)
    cdef const float[::1] xv = x.reshape(-1), wv = w.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef int isa = isa_mask(), nthreads = num_threads(), rc
    cdef const float *bp = layer.bias_ptr()
    with nogil:
        rc = mnnlite_deconv2d(isa, nthreads, &layer.p, &xv[0], &wv[0], bp, &yv[0])
    _check_rc(rc, "deconv2d")
    return y


def _fill_bias(y, bias, act):
    """The output when there is nothing to sum (no input channels, or an empty output): act(bias)."""
    if y.size:
        y[...] = 0.0 if bias is None else bias.reshape(1, -1, 1, 1)
        y = np.clip(y, 0.0, 6.0 if act == 2 else None) if act else y
    return y
