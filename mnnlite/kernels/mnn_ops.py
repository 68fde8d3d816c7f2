"""Forms of the float kernels that round like MNN 3.6.1's x86 CPU backend (the ``mnn`` column of
``mnnlite.kernels.table``), built on the C kernels of ``mnnlite.kernels.mnn_exact``.  Each names the MNN
executor it follows (paths under MNN's ``source/backend/cpu/``); the ops in ``mnnlite.ops`` stay the spec.
"""
from __future__ import annotations

import numpy as np

from ..format.tables import PoolType
from . import mnn_exact
from .conv import Conv2d, conv2d, winograd_mnn_unit
from .threads import get_num_threads

_F32 = np.float32


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


def conv_layer(w, b, stride, pad, dilation, groups, act):
    """The conv as MNN's CPU backend computes it (ConvolutionFloatFactory.cpp): 3x3 stride-1 dense
    convs by Winograd ("winograd_mnn") where MNN finds a unit that pays for the output size, other
    dense convs by im2col + MNNPackedMatMul (mnn_exact.conv2d; 1x1 ones through
    Convolution1x1Strassen's Strassen split when it pays), depthwise ones by the fast kernel (measured
    bit-exact with MNN's ConvolutionDepthwise3x3 / ConvolutionDepthwise)."""
    if groups == 1 and w.shape[2:] == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1):
        return _MnnWinogradOrDense(Conv2d(w, b, stride, pad, dilation, groups, act, algo="winograd_mnn"),
                                   _MnnDenseConv(_f32(w), None if b is None else _f32(b), stride, pad, dilation, act),
                                   w.shape[1], w.shape[0], pad)
    if groups != 1:
        return Conv2d(w, b, stride, pad, dilation, groups, act)
    return _MnnDenseConv(_f32(w), None if b is None else _f32(b), stride, pad, dilation, act)


class _MnnWinogradOrDense:
    """A 3x3 stride-1 dense conv as MNN runs it (ConvolutionFloatFactory.cpp _createUnit): Winograd
    where bestWinogradUnit finds a unit for the output size, else DenseConvolutionTiledExecutor
    (MTCNN P-Net's 3 -> 10 first conv on 46x46: no unit pays, MNN runs the tiled GEMM)."""

    def __init__(self, winograd, dense, c, o, pad):
        self.winograd, self.dense, self.unit = winograd, dense, winograd_mnn_unit
        self.c, self.o, self.pad = c, o, pad

    def __call__(self, x):
        pt, pl, pb, pr = self.pad
        oh, ow = x.shape[2] + pt + pb - 2, x.shape[3] + pl + pr - 2
        return (self.winograd if self.unit(self.c, self.o, oh, ow) else self.dense)(x)


class _MnnDenseConv:
    """``mnn_exact.conv2d(x, w, b, stride, pad, dilation, act)`` with what depends only on the node
    done once: the weights swapped to [o][ky][kx][c] rows and, for a 1x1 stride-1 unpadded conv,
    Convolution1x1Strassen's zero-padded weights (they depend on the plane size E only).  The same
    calls on the same arrays as mnn_exact.conv2d / _strassen_1x1, so the same bits; small models run
    dozens of such convs on tiny planes, where the per-call preparation cost as much as the product."""

    def __init__(self, w, b, stride, pad, dilation, act):
        self.mnn_exact, self.w, self.b = mnn_exact, w, b
        self.stride, self.pad, self.dilation, self.act = stride, pad, dilation, act
        o, c, kh, kw = w.shape
        self.wk = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o, kh * kw * c))
        self.pointwise = (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pad)
        self.by_plane = {}      # E -> (weights, bias, rows kept) of _strassen_1x1

    def __call__(self, x):
        me = self.mnn_exact
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != self.w.shape[1] or x.dtype != _F32 \
                or not x.flags.c_contiguous:
            return me.conv2d(x, self.w, self.b, self.stride, self.pad, self.dilation, self.act)
        # mnn_exact.conv2d for one image, the same calls: a = [C, H*W] view or im2col of the image
        _, c, h, wd = x.shape
        if not self.pointwise:
            a, (oh, ow) = me.im2col(x[0], self.w.shape[2:], self.stride, self.pad, self.dilation)
            y = me.packed_matmul(a, self.wk, self.b, self.act)
            return np.ascontiguousarray(y.reshape(-1, 1, oh, ow).transpose(1, 0, 2, 3))
        e = h * wd
        entry = self.by_plane.get(e)
        if entry is None:
            entry = self.by_plane[e] = self._strassen_operands(e)
        w, b, o = entry
        y = me.strassen_matmul(x.reshape(c, e), w, b, self.act)
        if o is not None:
            y = y[:o]
        return np.ascontiguousarray(y.reshape(-1, 1, h, wd).transpose(1, 0, 2, 3))

    def _strassen_operands(self, e: int):
        """mnn_exact._strassen_1x1's choice for a plane of E columns: (weights, bias, output rows to
        keep or None); a missing bias is the zeros strassen_matmul would make."""
        w = self.wk
        o = w.shape[0]
        b = np.zeros(o, _F32) if self.b is None else self.b
        oc8 = -(-o // 8)
        if e > 24 * 8 and e > oc8:
            return w, b, None
        rows = min(oc8 * 8, -(-o // 4) * 4)
        if rows == o:
            return w, b, None
        wp = np.zeros((rows, w.shape[1]), _F32)
        wp[:o] = w
        bp = np.zeros(rows, _F32)
        bp[:o] = b
        return wp, bp, o


def fed_conv2d(x, w, b, stride, pad, dilation, groups, act):
    """A conv whose weights (and bias) are fed as inputs, as in MNN's EMA simulation (NN.cpp's ``_Conv(weight,
    bias, x)``): MNN never uses Winograd or Strassen here.  A dense conv runs
    ConvolutionTiledExecutorMultiInput (DenseConvolutionTiledExecutor.cpp: weights swapped to [o][k][ic],
    then DenseConvolutionTiledImpl, im2col + MNNPackedMatMul = mnn_exact.conv2d), a depthwise one
    CPUConvolutionDepthwise::MultiInputFloatExecution (the generic depthwise kernel; the fast kernel gives
    its bits)."""
    if groups == 1:
        return tiled_conv_batch(x, _f32(w), None if b is None else _f32(b), stride, pad, dilation, act)
    return conv2d(x, w, b, stride, pad, dilation, groups, act)


TILE_COLUMNS = 24                 # MNNPackedMatMul's tile (csrc/mnn_exact.c MNN_EP)
CHUNK_BYTES = 32 << 20            # im2col columns gathered at a time by tiled_conv_batch


def tiled_conv_batch(x, w, b, stride, pad, dilation, act, chunk_bytes: int = CHUNK_BYTES):
    """``mnn_exact.conv2d(..., strassen=False)`` with memory bounded by ``chunk_bytes``, same bits.

    MNN tiles the batch's N * OH * OW output pixels as one plane; each full 24-column tile of
    MNNPackedMatMul depends only on its own columns, and the remainder columns only on E % 24
    (csrc/mnn_exact.c), so the plane is computed in column chunks that are whole tiles, the last one
    keeping the plane's remainder.  Each chunk's im2col columns are gathered from the images it spans
    and its product written straight into the NCHW output: no batch-sized im2col (3x3 convs of a
    640x640 batch of 32: gigabytes), no second copy of the output.
    """
    me = mnn_exact
    if x.ndim != 4 or x.shape[1] != w.shape[1]:
        return me.conv2d(x, w, b, stride, pad, dilation, act, strassen=False)     # its own error
    n, c, height = x.shape[:3]
    o, _, kh, kw = w.shape
    pointwise = (kh, kw) == (1, 1) and tuple(stride) == (1, 1) and not any(pad)
    wk = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(o, kh * kw * c))
    (sy, sx), (dy, dx), (pt, pl, pb, pr) = stride, dilation, pad
    oh = (x.shape[2] + pt + pb - dy * (kh - 1) - 1) // sy + 1
    ow = (x.shape[3] + pl + pr - dx * (kw - 1) - 1) // sx + 1
    plane, k = oh * ow, kh * kw * c
    total = n * plane
    out = np.empty((n, o, oh, ow), _F32)
    flat = out.reshape(n, o, plane)
    step = max(TILE_COLUMNS, chunk_bytes // (4 * max(k, 1)) // TILE_COLUMNS * TILE_COLUMNS)

    def columns(img, lo, hi):
        """im2col columns [lo, hi) of image ``img``: only the output rows they cover are gathered."""
        if pointwise:
            return x[img].reshape(c, -1)[:, lo:hi]
        r0, r1 = lo // ow, (hi - 1) // ow + 1
        top, end = r0 * sy - pt, (r1 - 1) * sy + dy * (kh - 1) + 1 - pt        # input rows read, unpadded
        src0, src1 = max(top, 0), min(end, height)
        rows = np.pad(x[img, :, src0:src1], ((0, 0), (src0 - top, end - src1), (pl, pr)))
        a, _ = me.im2col(rows, (kh, kw), stride, (0, 0, 0, 0), dilation)
        return a[:, lo - r0 * ow: hi - r0 * ow]

    def chunk(e0):
        e1 = min(total, e0 + step)
        parts = []
        for img in range(e0 // plane, (e1 - 1) // plane + 1):
            lo, hi = max(e0, img * plane) - img * plane, min(e1, (img + 1) * plane) - img * plane
            parts.append((img, lo, hi, columns(img, lo, hi)))
        a = parts[0][3] if len(parts) == 1 else np.concatenate([p[3] for p in parts], axis=1)
        y = me.packed_matmul(np.ascontiguousarray(a), wk, b, act)
        at = 0
        for img, lo, hi, _ in parts:
            flat[img, :, lo:hi] = y[:, at:at + hi - lo]
            at += hi - lo
    starts = range(0, total, step)
    threads = min(get_num_threads(), len(starts))
    if threads <= 1:
        for e0 in starts:
            chunk(e0)
    else:       # chunks are independent and write disjoint outputs: same bits on any thread count
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(chunk, starts))
    return out


def _mnn_exp(v: np.ndarray, all_simd: bool) -> np.ndarray:
    """MNNExp (CommonOptFunction.cpp) of float32 ``v``: 8 values at a time, the last n % 8 through its scalar
    tail; ``all_simd``: the tensor is NC4HW4, padded to 8, so every value takes the 8-wide path."""
    flat = v.reshape(-1)
    n = flat.size
    if all_simd and n % 8:
        flat = np.concatenate([flat, np.zeros(8 - n % 8, _F32)])
    return mnn_exact.exp(flat)[:n].reshape(v.shape)


def exp(x, all_simd: bool = False):
    """UnaryOp EXP (CPUUnary.cpp _EXP): MNNExp with offsets {1, 0, 0, 0}."""
    return _mnn_exp(np.asarray(x, _F32), all_simd)


def silu(x, all_simd: bool = False):
    """MNNSiLu (CommonOptFunction.cpp): MNNExp of -x, then x / (1 + e)."""
    x = np.asarray(x, _F32)
    e = _mnn_exp(np.negative(x, dtype=_F32), all_simd)
    return (x / (_F32(1) + e)).astype(_F32)


def tanh(x, all_simd: bool = False):
    """MNNTanh (CommonOptFunction.cpp): MNNExp with offset -2 (the exponent -2x, exact in float32), then
    (1 - e) / (1 + e); numpy's exp rounds differently from MNNExp's polynomial by an ulp or two (silero
    VAD's LSTM cell state)."""
    x = np.asarray(x, _F32)
    e = _mnn_exp(np.multiply(x, _F32(-2), dtype=_F32), all_simd)
    return ((_F32(1) - e) / (_F32(1) + e)).astype(_F32)


def avg_pool2d(x, k, s, pad, out, count_type):
    """A 2-D average pool as CPUPool.hpp's poolingAvg computes it: windows that touch the padding
    (poolingAvgPad) sum their taps, then multiply by 1/count (the reference, ``pool2d``); windows inside the
    input (its "mid rect") keep a running sum of each tap times 1.0f/(kh*kw), in row order."""
    from ..ops.pool import window_taps, pool2d

    y = pool2d(x, PoolType.AVEPOOL, k, s, pad, out, count_type)
    inside = []
    for n_in, kk, ss, pp, n_out in zip(x.shape[2:], k, s, pad, out):
        idx = [o for o in range(n_out) if o * ss - pp >= 0 and o * ss - pp + kk <= n_in]
        inside.append((idx[0], idx[-1] + 1) if idx else None)
    if inside[0] is not None and inside[1] is not None:
        (r0, r1), (c0, c1) = inside
        sub = x[:, :, r0 * s[0] - pad[0]:, c0 * s[1] - pad[1]:]
        inv = _F32(1) / _F32(k[0] * k[1])
        acc = None
        for tap in window_taps(sub, k, s, (0, 0), (r1 - r0, c1 - c0), "constant"):
            term = tap * inv
            acc = term if acc is None else acc + term
        y = np.array(y, _F32, copy=True)
        y[:, :, r0:r1, c0:c1] = acc
    return y


def softmax(x, axis: int):
    """CPUSoftmax's x86 rounding: rows made contiguous (the axis moved innermost, as MNN transposes)
    through mnn_exact.softmax_rows, or, when the inner size exceeds 8 with fewer than 8 channels, MNN's
    strided branch (``_softmax_strided``); what MNN has no float kernel for takes the reference."""
    from ..ops.nn import softmax_ref

    if x.dtype != _F32 or x.ndim == 0:
        return softmax_ref(x, axis)
    a = axis + x.ndim if axis < 0 else axis
    if not 0 <= a < x.ndim:
        return softmax_ref(x, axis)
    channel, inside = x.shape[a], int(np.prod(x.shape[a + 1:]))
    if inside > 8 and channel < 8:
        return _softmax_strided(x, channel, inside)
    xt = np.moveaxis(x, a, -1)
    y = mnn_exact.softmax_rows(xt.reshape(-1, channel)).reshape(xt.shape)
    return np.ascontiguousarray(np.moveaxis(y, -1, a))


def _softmax_strided(x, channel, inside):
    """CPUSoftmax::_softmaxCommon's branch for inside > pack > channel (float): per outer index, one
    MNNExp over the whole [channel, inside] block, the channel sum added in order, its reciprocal, then
    a multiply.  MNN writes x - max to the output and then exponentiates the *input* (its source pointer
    is the input there), so the max is never subtracted (beyond |x| 87 MNNExp saturates)."""
    x3 = np.ascontiguousarray(x, _F32).reshape(-1, channel, inside)
    e = np.stack([mnn_exact.exp(row) for row in x3.reshape(x3.shape[0], -1)]).reshape(x3.shape)
    s = e[:, 0].copy()
    for z in range(1, channel):
        s = s + e[:, z]
    return (e * (_F32(1) / s)[:, None]).reshape(x.shape)
