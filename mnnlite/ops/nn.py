"""Compute ops of the network family: convolution, deconvolution, pooling, inner product, matrix
products, resize (Interp) and softmax, with MNN 3.6.1's CPU semantics.

Each rule cites the MNN source it comes from (paths under MNN's ``source/``).  Convolutions and matrix
products run on ``mnnlite.kernels`` when ``call.impl == "fast"`` and on the numpy references in
``mnnlite.ref`` otherwise; everything else is numpy, which is both the reference and the fast path.
The planners' ``impl="mnn"`` picks, where one exists, a kernel that rounds like MNN's x86 CPU backend
(``mnnlite.kernels.mnn_exact``, conv algorithm "winograd_mnn").
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..limits import check_alloc
from ..format.tables import DataFormat, OpType
from .registry import register, register_plan
from .weights import conv_weights

NHWC = DataFormat.NHWC
_CAFFE, _VALID, _SAME = 0, 1, 2            # PadMode / PoolPadType
_MAXPOOL, _AVEPOOL = 0, 1                  # PoolType
_DEFAULT, _INCLUDE, _EXCLUDE = 0, 1, 2     # AvgPoolCountType
_DECONV = (OpType.Deconvolution, OpType.DeconvolutionDepthwise)
_F32 = np.float32


# ------------------------------------------------------------------------------------------ helpers

def to_nchw(x: np.ndarray, fmt) -> np.ndarray:
    """Channel-second view of an image tensor (ops that MNN runs on NC4HW4 see NHWC data this way)."""
    return np.moveaxis(x, -1, 1) if fmt == NHWC and x.ndim >= 3 else x


def from_nchw(y: np.ndarray, fmt) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(y, 1, -1)) if fmt == NHWC and y.ndim >= 3 else y


def channel_axis(fmt, ndim: int) -> int:
    return ndim - 1 if fmt == NHWC else 1


def _image(call, index: int = 0) -> np.ndarray:
    x = to_nchw(call.inputs[index], call.formats[index])
    if x.ndim != 4:
        raise ShapeError(f"op {call.op.name!r} ({OpType(call.op.type).name}): expected a 4-D input, "
                         f"got shape {call.inputs[index].shape}")
    return x


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    return abs(a) // b * (1 if a >= 0 else -1)


def _up_div(a: int, b: int) -> int:
    """MNN's UP_DIV(a, b) = (a + b - 1) / b in C."""
    return _cdiv(a + b - 1, b)


def _fit(x: np.ndarray, axis: int, before: int, size: int, mode: str = "constant") -> np.ndarray:
    """x along ``axis`` padded (or cropped, when negative) by ``before`` in front so that it then holds
    exactly ``size`` entries: entry i is original entry i - before."""
    n = x.shape[axis]
    after = size - n - before
    if before < 0:
        x = x.take(np.arange(-before, n), axis=axis)
        before = 0
    if after < 0:
        x = x.take(np.arange(0, x.shape[axis] + after), axis=axis)
        after = 0
    if before or after:
        width = [(0, 0)] * x.ndim
        width[axis] = (before, after)
        x = np.pad(x, width, mode=mode)
    return x


def _span(x: np.ndarray, axis: int, lead: int, size: int):
    """(x, lead, trail): the pads that make x span exactly ``size`` positions from -lead along ``axis``,
    both >= 0 (x is cropped where MNN's pads are negative or its output stops short of the input end)."""
    trail = size - x.shape[axis] - lead
    if lead < 0 or trail < 0:
        x = _fit(x, axis, min(lead, 0), x.shape[axis] + min(lead, 0) + min(trail, 0))
    return x, max(lead, 0), max(trail, 0)


def _conv_kernels(impl: str):
    if impl == "fast":
        from ..kernels.conv import conv2d, deconv2d
        return conv2d, deconv2d
    from ..ref.conv import conv2d_ref, deconv2d_ref
    return conv2d_ref, deconv2d_ref


def _matmul_kernel(impl: str):
    if impl == "fast":
        from ..kernels.matmul import matmul
        return matmul
    from ..ref.matmul import matmul_ref
    return matmul_ref


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


# ------------------------------------------------------------------------------------- convolution

def _activation(common) -> int:
    """Fused activation of Convolution2DCommon: 1 relu, 2 relu6 (0..6)."""
    return 2 if common.relu6 else 1 if common.relu else 0


def _conv_size(common, n_in: int, k: int, s: int, d: int, axis: int) -> int:
    """Output length along H (axis 0) or W (axis 1): shape/ShapeConvolution.cpp."""
    ek = d * (k - 1) + 1
    if common.padMode == _SAME:
        return -(-n_in // s)
    if common.padMode == _VALID:
        return -(-(n_in - ek + 1) // s)
    if common.pads is not None:
        total = n_in + int(common.pads[axis]) + int(common.pads[axis + 2])
        return 0 if total < ek else (total - ek) // s + 1
    pad = common.padY if axis == 0 else common.padX
    return _cdiv(n_in + 2 * pad - ek, s) + 1


def _conv_pad(common, n_in: int, n_out: int, k: int, s: int, d: int, axis: int) -> int:
    """Leading pad along H/W: core/ConvolutionCommon.cpp convolutionPad (SAME splits the need, the
    remainder goes to the end; any other mode reads padX/padY or pads[top, left])."""
    if common.padMode == _SAME:
        return _cdiv((n_out - 1) * s + d * (k - 1) + 1 - n_in, 2)
    if common.pads is not None and len(common.pads) >= 2:
        return int(common.pads[axis])
    return common.padY if axis == 0 else common.padX


def _deconv_size(common, n_in: int, k: int, s: int, d: int, axis: int) -> int:
    """shape/ShapeDeconvolution.cpp (without an output-shape input)."""
    if common.padMode == _SAME:
        return n_in * s
    full = (n_in - 1) * s + d * (k - 1) + 1
    if common.pads is not None:
        size = full - int(common.pads[axis]) - int(common.pads[axis + 2])
    else:
        size = full - 2 * (common.padY if axis == 0 else common.padX)
    if common.outPads is not None:
        size += int(common.outPads[axis])
    return size


def _deconv_pad(common, n_in: int, n_out: int, k: int, s: int, axis: int) -> int:
    """core/ConvolutionCommon.cpp convolutionTransposePad (SAME ignores dilation there)."""
    if common.padMode == _SAME:
        return _cdiv((n_in - 1) * s + k - n_out, 2)
    if common.pads is not None and len(common.pads) >= 2:
        return int(common.pads[axis])
    return common.padY if axis == 0 else common.padX


def _weights(call, deconv: bool):
    """Weights from the op, or from inputs 1 (and 2: bias) for convolutions fed at run time."""
    extra = call.inputs[1:]
    if deconv and call.params.common.hasOutputShape:
        extra = extra[:-1]
    if not extra:
        return conv_weights(call.op)
    w = _f32(extra[0])
    out_c = w.shape[1] * max(call.params.common.group, 1) if deconv else w.shape[0]
    b = _f32(extra[1]).reshape(-1) if len(extra) > 1 else np.zeros(out_c, _F32)
    return w, b


def _groups(call, x, w, deconv: bool) -> int:
    c = x.shape[1]
    if deconv:
        groups = c if call.op.type == OpType.DeconvolutionDepthwise else max(call.params.common.group, 1)
        ok = w.shape[0] == c and c % groups == 0
    else:
        groups = c // w.shape[1] if w.shape[1] and c % w.shape[1] == 0 else 0
        ok = groups > 0 and w.shape[0] % groups == 0
    if not ok:
        raise ShapeError(f"op {call.op.name!r} ({OpType(call.op.type).name}): input has {c} channels, "
                         f"weights are {tuple(w.shape)}")
    return groups


def _check_sizes(call, x: np.ndarray, out, kernel=(1, 1)) -> None:
    """Before a kernel allocates: the output [N, O, OH, OW] and the worst-case im2col scratch
    (C*KH*KW per output position) within the memory budget (``mnnlite.limits``)."""
    n, c = x.shape[0], x.shape[1]
    common = getattr(call.params, "common", None)
    o = max(int(getattr(common, "outputCount", 0) or 0), c)
    depthwise = call.op.type in (OpType.ConvolutionDepthwise, OpType.DeconvolutionDepthwise)
    per_group = 1 if depthwise else max(c // max(int(getattr(common, "group", 1) or 1), 1), 1)
    scratch = 4 * per_group * int(kernel[0]) * int(kernel[1]) * int(out[0]) * int(out[1])
    check_alloc(f"op {call.op.name!r} ({OpType(call.op.type).name})", "output",
                (n, o, int(out[0]), int(out[1])), 4, extra=scratch)


def _conv_geometry(call, x: np.ndarray, kernel) -> tuple:
    """(x cropped where MNN's pads are negative, stride, pad (top, left, bottom, right), dilation) that
    give conv2d MNN's output size (ShapeConvolution.cpp) and its first tap (convolutionPad)."""
    common = call.params.common
    (kh, kw), (sy, sx), (dy, dx) = kernel, (common.strideY, common.strideX), (common.dilateY, common.dilateX)
    h, wd = x.shape[2:]
    oh, ow = _conv_size(common, h, kh, sy, dy, 0), _conv_size(common, wd, kw, sx, dx, 1)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Convolution): input {h}x{wd} gives an empty output {oh}x{ow}")
    _check_sizes(call, x, (oh, ow), kernel)
    pt, pl = _conv_pad(common, h, oh, kh, sy, dy, 0), _conv_pad(common, wd, ow, kw, sx, dx, 1)
    x, pt, pb = _span(x, 2, pt, (oh - 1) * sy + dy * (kh - 1) + 1)
    x, pl, pr = _span(x, 3, pl, (ow - 1) * sx + dx * (kw - 1) + 1)
    return x, (sy, sx), (pt, pl, pb, pr), (dy, dx)


# The conv algorithm the runtime asks for.  Not "winograd_mnn": given MNN's own input tensors it is
# bit-exact with MNN on ppocr_det's 3x3 convs, but inside a whole network the inputs already differ
# from MNN's in the last bits (other ops round differently), F(6x6, 3x3)'s rounding noise (2e-4 to
# 4e-4 of a conv's output, from float64) is then uncorrelated between the two runs, and ppocr_det's
# output stays 5e-4 .. 2e-3 from MNN's with either algorithm (the more accurate F(4x4, 3x3) of
# "auto" is also the faster one here).  impl="mnn" (_mnn_conv_layer) uses it, with every other op
# rounding like MNN too: ppocr_det then gives MNN's bits.
CONV_ALGO = "auto"


@register(OpType.Convolution, OpType.ConvolutionDepthwise)
def convolution(call):
    x = _image(call)
    w, b = _weights(call, deconv=False)
    groups = _groups(call, x, w, deconv=False)
    x, stride, pad, dilation = _conv_geometry(call, x, w.shape[2:])
    act = _activation(call.params.common)
    if call.impl == "fast":
        from ..kernels.conv import conv2d
        y = conv2d(_f32(x), w, b, stride, pad, dilation, groups, act, algo=CONV_ALGO)
        return [from_nchw(y, call.formats[0])]
    from ..ref.conv import conv2d_ref
    return [from_nchw(conv2d_ref(_f32(x), w, b, stride, pad, dilation, groups, act), call.formats[0])]


@register_plan(OpType.Convolution, OpType.ConvolutionDepthwise)
def plan_convolution(op, impl: str):
    """One conv node: its weights decoded, packed and transformed once (one ``Conv2d`` per padding
    seen), instead of on every call.  Weights fed at run time and NHWC inputs take ``convolution``."""
    if impl not in ("fast", "mnn"):
        return convolution
    from ..kernels.conv import Conv2d
    make_layer = _mnn_conv_layer if impl == "mnn" else Conv2d
    layers = {}      # pad -> Conv2d (stride and dilation are the node's)
    by_shape = {}    # input shape -> (Conv2d, kernel size if the input must be cropped first)

    def prepare(call, x):
        w, b = conv_weights(call.op)
        groups = _groups(call, x, w, deconv=False)
        cropped, stride, pad, dilation = _conv_geometry(call, x, w.shape[2:])
        layer = layers.get(pad)
        if layer is None:
            layer = layers[pad] = make_layer(w, b, stride, pad, dilation, groups,
                                             _activation(call.params.common), algo=CONV_ALGO)
        return layer, (w.shape[2:] if cropped.shape != x.shape else None)

    def run(call):
        inputs = call.inputs
        x = inputs[0]
        if len(inputs) == 1 and x.ndim == 4 and call.formats[0] != NHWC:     # the planned case first
            entry = by_shape.get(x.shape)
            if entry is None:
                entry = by_shape[x.shape] = prepare(call, x)
            layer, crop = entry
            if crop is not None:
                x = _conv_geometry(call, x, crop)[0]
            return [layer(_f32(x))]
        if len(inputs) > 1 and impl == "mnn" and x.ndim == 4 and call.formats[0] != NHWC:
            return _mnn_multi_input_conv(call)
        return convolution(call)

    return run


def _mnn_conv_layer(w, b, stride, pad, dilation, groups, act, algo):
    """The conv as MNN's CPU backend computes it (ConvolutionFloatFactory.cpp): 3x3 stride-1 dense
    convs by Winograd ("winograd_mnn"; MNN picks Winograd for them when it is cheaper, which holds for
    the zoo's), other dense convs by im2col + MNNPackedMatMul (mnn_exact.conv2d; 1x1 ones through
    Convolution1x1Strassen's Strassen split when it pays), depthwise ones by the fast kernel (measured
    bit-exact with MNN's ConvolutionDepthwise3x3 / ConvolutionDepthwise)."""
    from ..kernels.conv import Conv2d
    if groups == 1 and w.shape[2:] == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1):
        return _MnnWinogradOrDense(Conv2d(w, b, stride, pad, dilation, groups, act, algo="winograd_mnn"),
                                   _MnnDenseConv(_f32(w), None if b is None else _f32(b), stride, pad, dilation,
                                                 act), w.shape[1], w.shape[0], pad)
    if groups != 1:
        return Conv2d(w, b, stride, pad, dilation, groups, act, algo=algo)
    return _MnnDenseConv(_f32(w), None if b is None else _f32(b), stride, pad, dilation, act)


class _MnnWinogradOrDense:
    """A 3x3 stride-1 dense conv as MNN runs it (ConvolutionFloatFactory.cpp _createUnit): Winograd
    where bestWinogradUnit finds a unit for the output size, else DenseConvolutionTiledExecutor
    (MTCNN P-Net's 3 -> 10 first conv on 46x46: no unit pays, MNN runs the tiled GEMM)."""

    def __init__(self, winograd, dense, c, o, pad):
        from ..kernels.conv import winograd_mnn_unit
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
        from ..kernels import mnn_exact
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


def _mnn_multi_input_conv(call):
    """impl="mnn", weights (and bias) fed as inputs, as in MNN's EMA simulation (NN.cpp's ``_Conv(weight,
    bias, x)``): MNN never uses Winograd or Strassen here.  A dense conv runs
    ConvolutionTiledExecutorMultiInput (DenseConvolutionTiledExecutor.cpp: weights swapped to [o][k][ic],
    then DenseConvolutionTiledImpl, im2col + MNNPackedMatMul = mnn_exact.conv2d), a depthwise one
    CPUConvolutionDepthwise::MultiInputFloatExecution (the generic depthwise kernel; the fast kernel gives
    its bits)."""
    w, b = _weights(call, deconv=False)
    x = call.inputs[0]
    groups = _groups(call, x, w, deconv=False)
    x, stride, pad, dilation = _conv_geometry(call, x, w.shape[2:])
    act = _activation(call.params.common)
    if groups == 1:
        y = tiled_conv_batch(_f32(x), _f32(w), None if b is None else _f32(b), stride, pad, dilation, act)
    else:
        from ..kernels.conv import conv2d
        y = conv2d(_f32(x), w, b, stride, pad, dilation, groups, act, algo=CONV_ALGO)
    return [from_nchw(y, call.formats[0])]


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
    from ..kernels import mnn_exact as me

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
    from ..kernels.threads import get_num_threads

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


def _output_shape(call, h: int, w: int, kh: int, kw: int):
    """Deconvolution output size; an output-shape input holds [?, H, W, ?] (ShapeDeconvolution.cpp)."""
    common = call.params.common
    sy, sx, dy, dx = common.strideY, common.strideX, common.dilateY, common.dilateX
    if common.hasOutputShape:
        shape = np.asarray(call.inputs[-1]).reshape(-1)
        if int(shape[1]) > 0 and int(shape[2]) > 0:
            return int(shape[1]), int(shape[2])
    return _deconv_size(common, h, kh, sy, dy, 0), _deconv_size(common, w, kw, sx, dx, 1)


@register(OpType.Deconvolution, OpType.DeconvolutionDepthwise)
def deconvolution(call):
    common = call.params.common
    x = _image(call)
    w, b = _weights(call, deconv=True)
    groups = _groups(call, x, w, deconv=True)
    (kh, kw), (sy, sx), (dy, dx) = w.shape[2:], (common.strideY, common.strideX), (common.dilateY, common.dilateX)
    h, wd = x.shape[2:]
    oh, ow = _output_shape(call, h, wd, kh, kw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Deconvolution): input {h}x{wd} gives an empty output {oh}x{ow}")
    _check_sizes(call, x, (oh, ow))
    pt, pl = _deconv_pad(common, h, oh, kh, sy, 0), _deconv_pad(common, wd, ow, kw, sx, 1)
    _, deconv2d = _conv_kernels(call.impl)
    act = _activation(common)
    if pt >= 0 and pl >= 0:
        y = deconv2d(_f32(x), w, b, (sy, sx), (pt, pl, 0, 0), (dy, dx), groups, output_size=(oh, ow), act=act)
    else:   # a negative lead pad (SAME with stride > kernel): shift the bias-free result, then add bias
        lead_h, lead_w = max(-pt, 0), max(-pl, 0)
        core = deconv2d(_f32(x), w, None, (sy, sx), (max(pt, 0), max(pl, 0), 0, 0), (dy, dx), groups,
                        output_size=(max(oh - lead_h, 1), max(ow - lead_w, 1)), act=0)
        y = _fit(_fit(core, 2, lead_h, oh), 3, lead_w, ow) + b.reshape(1, -1, 1, 1)
        y = np.clip(y, 0, 6 if act == 2 else None) if act else y
    return [from_nchw(_f32(y), call.formats[0])]


# ----------------------------------------------------------------------------------------- pooling

def _pool_pad(pad_type: int, explicit: int, n_in: int, n_out: int, k: int, s: int) -> int:
    """Leading pad: backend/cpu/CPUPool.cpp onResize (SAME: half the positive need, floor)."""
    if pad_type == _SAME:
        need = (n_out - 1) * s + k - n_in
        return need // 2 if need > 0 else 0
    return 0 if pad_type == _VALID else explicit


def _taps(x: np.ndarray, k, s, pad, out, mode: str):
    """The window taps (i, j) in row-major order, each an [N, C, OH, OW] view: tap (i, j) of window
    (oy, ox) is x[oy*sy - pt + i, ox*sx - pl + j] (padded by ``mode``), so a pool is kh*kw whole-array
    operations."""
    (kh, kw), (sy, sx), (pt, pl), (oh, ow) = k, s, pad, out
    x = _fit(_fit(x, 2, pt, (oh - 1) * sy + kh, mode), 3, pl, (ow - 1) * sx + kw, mode)
    for i in range(kh):
        for j in range(kw):
            yield x[:, :, i:i + (oh - 1) * sy + 1:sy, j:j + (ow - 1) * sx + 1:sx]


def _avg_count(n_in: int, k: int, s: int, pad: int, n_out: int, include: bool) -> np.ndarray:
    """Divisor per output position along one axis (CPUPool.hpp poolingAvgPad): INCLUDE counts the
    window up to in + pad (the *leading* pad, also at the end); EXCLUDE counts input cells only."""
    start = np.arange(n_out) * s - pad
    if include:
        return np.minimum(start + k, n_in + pad) - start
    return np.minimum(k, n_in - start) - np.maximum(0, -start)


def pool2d(x: np.ndarray, kind: int, k, s, pad, out, count_type: int) -> np.ndarray:
    """MNN's pooling kernels (backend/cpu/CPUPool.hpp) on NCHW float data.

    Max: out-of-range taps replicate the edge row/column.  Average: sum of the in-range taps times
    1/count (count from ``_avg_count``), 0 where count <= 0.  ``count_type`` is INCLUDE or EXCLUDE."""
    if kind == _MAXPOOL:
        taps = _taps(x, k, s, pad, out, "edge")
        y = next(taps).copy()
        for tap in taps:
            np.maximum(y, tap, out=y)
        return y
    taps = _taps(x.astype(_F32, copy=False), k, s, pad, out, "constant")
    sums = next(taps).copy()
    for tap in taps:               # CPUPool.hpp poolingAvgPad: one running sum, rows then columns
        sums += tap
    include = count_type == _INCLUDE
    rows = _avg_count(x.shape[2], k[0], s[0], pad[0], out[0], include)
    cols = _avg_count(x.shape[3], k[1], s[1], pad[1], out[1], include)
    count = (rows[:, None] * cols[None, :]).astype(_F32)
    inv = np.divide(_F32(1), count, out=np.zeros_like(count), where=count > 0)
    return (sums * inv).astype(_F32, copy=False)


def _pool_size(p, h: int, w: int):
    """Output size: shape/ShapePool.cpp (kernel clamped to the padded input there only)."""
    if p.pads is not None and len(p.pads) == 2:
        h, w = h + int(p.pads[0]) + int(p.pads[1]), w
    elif p.pads is not None and len(p.pads) == 4:
        h, w = h + int(p.pads[0]) + int(p.pads[2]), w + int(p.pads[1]) + int(p.pads[3])
    elif p.pads is None:
        h, w = h + 2 * p.padY, w + 2 * p.padX
    kh, kw = min(p.kernelY, h), min(p.kernelX, w)
    sy, sx = p.strideY, p.strideX
    if p.padType == _SAME:
        return -(-h // sy), -(-w // sx)
    if p.padType == _VALID:
        return -(-(h - kh + 1) // sy), -(-(w - kw + 1) // sx)
    if p.ceilModel:
        return _up_div(h - kh, sy) + 1, _up_div(w - kw, sx) + 1
    return _cdiv(h - kh, sy) + 1, _cdiv(w - kw, sx) + 1


def _pool_plan(call, h: int, w: int):
    """(kernel, stride, lead pad, out size, count type) of a Pool table (CPUPool.cpp onResize)."""
    p = call.params
    if p.isGlobal:
        return (h, w), (h, w), (0, 0), (1, 1), _INCLUDE
    if p.strideX <= 0 or p.strideY <= 0 or p.kernelX <= 0 or p.kernelY <= 0:
        raise ShapeError(f"op {call.op.name!r} (Pooling): kernel {p.kernelY}x{p.kernelX} stride "
                         f"{p.strideY}x{p.strideX} must be positive")
    if p.padType in (_VALID, _SAME) and (p.padX or p.padY):
        raise ShapeError(f"op {call.op.name!r} (Pooling): VALID/SAME pooling with explicit padX/padY")
    oh, ow = _pool_size(p, h, w)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Pooling): input {h}x{w} gives an empty output {oh}x{ow}")
    check_alloc(f"op {call.op.name!r} (Pooling)", "output", (*call.inputs[0].shape[:2], oh, ow))
    k, s, pad_type = (p.kernelY, p.kernelX), (p.strideY, p.strideX), p.padType
    pad = (_pool_pad(pad_type, p.padY, h, oh, k[0], s[0]), _pool_pad(pad_type, p.padX, w, ow, k[1], s[1]))
    if p.pads is not None and pad_type == _CAFFE:
        if len(p.pads) == 4:
            pad = (int(p.pads[0]), int(p.pads[1]))
        pad_type = _VALID            # CPUPool.cpp: explicit pads then count as VALID (rule below)
    count = p.countType
    if count == _DEFAULT:            # CPUPool.hpp poolingAvgPad
        count = _INCLUDE if pad_type == _CAFFE else _EXCLUDE
    return k, s, pad, (oh, ow), count


@register(OpType.Pooling)
def pooling(call):
    if call.op.outputIndexes is not None and len(call.op.outputIndexes) > 1:
        raise UnsupportedOpError(f"op {call.op.name!r} (Pooling): the max-index output is not supported")
    x = _image(call)
    k, s, pad, out, count = _pool_plan(call, *x.shape[2:])
    y = pool2d(x, call.params.type, k, s, pad, out, count)
    return [from_nchw(np.ascontiguousarray(y), call.formats[0])]


@register_plan(OpType.Pooling, OpType.Pooling3D)
def plan_pooling(op, impl: str):
    """impl="mnn": a global average pool as MNN's CPUPool computes it (GeometryPooling3D.cpp makes a
    Pool3D global pool a 2-D one); every other pool takes the generic kernel."""
    generic = pooling if op.type == OpType.Pooling else pooling3d
    p = op.main
    if impl == "fast" and op.type == OpType.Pooling3D and p is not None and p.isGlobal and p.type == _AVEPOOL:
        return _global_mean_pool3d
    if impl == "mnn" and op.type == OpType.Pooling and p is not None and not p.isGlobal and p.type == _AVEPOOL:
        return _mnn_avg_pool
    if impl != "mnn" or p is None or not p.isGlobal or p.type != _AVEPOOL:
        return generic
    from ..kernels import mnn_exact

    def run(call):
        x = call.inputs[0]
        if x.dtype != _F32 or x.ndim < 3 or call.formats[0] == NHWC or len(call.op.outputIndexes) > 1:
            return generic(call)
        return [mnn_exact.global_avg_pool(x)]

    return run


def _global_mean_pool3d(call):
    """pooling3d's global average of a float32 NCHW-like tensor without numpy's mean() wrapper and
    pooling3d's copies (the SE blocks of small models run many of them on tiny tensors): the two
    calls numpy's _methods._mean makes for ``x.mean(axes, keepdims=True, dtype=float32)``, so the
    same bits."""
    x = call.inputs[0]
    if x.dtype != _F32 or x.ndim < 3 or x.size == 0 or call.formats[0] == NHWC:
        return pooling3d(call)
    y = np.add.reduce(x, tuple(range(2, x.ndim)), _F32, None, True)
    np.true_divide(y, np.intp(math.prod(x.shape[2:])), out=y, casting="unsafe", subok=False)
    return [y]


def _mnn_avg_pool(call):
    """impl="mnn", a 2-D average pool as CPUPool.hpp's poolingAvg computes it: windows that touch the
    padding (poolingAvgPad) sum their taps, then multiply by 1/count (pool2d); windows inside the input
    (its "mid rect") keep a running sum of each tap times 1.0f/(kh*kw), in row order."""
    if len(call.op.outputIndexes) > 1 or call.inputs[0].dtype != _F32:
        return pooling(call)
    x = _image(call)
    k, s, pad, out, count = _pool_plan(call, *x.shape[2:])
    y = pool2d(x, _AVEPOOL, k, s, pad, out, count)
    inside = []
    for n_in, kk, ss, pp, n_out in zip(x.shape[2:], k, s, pad, out):
        idx = [o for o in range(n_out) if o * ss - pp >= 0 and o * ss - pp + kk <= n_in]
        inside.append((idx[0], idx[-1] + 1) if idx else None)
    if inside[0] is not None and inside[1] is not None:
        (r0, r1), (c0, c1) = inside
        sub = x[:, :, r0 * s[0] - pad[0]:, c0 * s[1] - pad[1]:]
        inv = _F32(1) / _F32(k[0] * k[1])
        acc = None
        for tap in _taps(sub, k, s, (0, 0), (r1 - r0, c1 - c0), "constant"):
            term = tap * inv
            acc = term if acc is None else acc + term
        y = np.array(y, _F32, copy=True)
        y[:, :, r0:r1, c0:c1] = acc
    return [from_nchw(np.ascontiguousarray(y), call.formats[0])]


def _pool3d_size(pad_type: int, n_in: int, k: int, s: int, pad: int) -> int:
    """shape/ShapePool3D.cpp."""
    if pad_type == _SAME:
        return _up_div(n_in, s)
    if pad_type == _VALID:
        return _cdiv(n_in - k, s) + 1
    return _cdiv(n_in + 2 * pad - k, s) + 1


@register(OpType.Pooling3D)
def pooling3d(call):
    p = call.params
    x = to_nchw(call.inputs[0], call.formats[0])
    if p.isGlobal:               # geometry/GeometryPooling3D.cpp: a global pool over every spatial axis
        axes = tuple(range(2, x.ndim))
        y = x.max(axes, keepdims=True) if p.type == _MAXPOOL else x.mean(axes, keepdims=True, dtype=_F32)
        return [from_nchw(np.ascontiguousarray(y.astype(x.dtype)), call.formats[0])]
    if x.ndim != 5:
        raise ShapeError(f"op {call.op.name!r} (Pooling3D): expected a 5-D input, got {x.shape}")
    (kd, kh, kw), (sd, sh, sw) = [int(v) for v in p.kernels], [int(v) for v in p.strides]
    pd, ph, pw = [int(v) for v in p.pads] if p.pads is not None else (0, 0, 0)
    n, c, d, h, w = x.shape
    od, oh, ow = (_pool3d_size(p.padType, n_in, k, s, pad) for n_in, k, s, pad in
                  ((d, kd, sd, pd), (h, kh, sh, ph), (w, kw, sw, pw)))
    # GeometryPooling3D.cpp: an H/W pool per depth slice (default count rule), then a depth pool
    # (EXCLUDE_PADDING for average) over [N, C, D, OH*OW].
    plane = x.transpose(0, 2, 1, 3, 4).reshape(n * d, c, h, w)
    hw_count = _INCLUDE if p.padType == _CAFFE else _EXCLUDE
    pads = (_pool_pad(p.padType, ph, h, oh, kh, sh), _pool_pad(p.padType, pw, w, ow, kw, sw))
    plane = pool2d(plane, p.type, (kh, kw), (sh, sw), pads, (oh, ow), hw_count)
    depth = plane.reshape(n, d, c, oh * ow).transpose(0, 2, 1, 3)
    pad_d = _pool_pad(p.padType, pd, d, od, kd, sd)
    y = pool2d(depth, p.type, (kd, 1), (sd, 1), (pad_d, 0), (od, oh * ow), _EXCLUDE)
    return [from_nchw(np.ascontiguousarray(y.reshape(n, c, od, oh, ow)), call.formats[0])]


# --------------------------------------------------------------------------------- matrix products

@register(OpType.InnerProduct)
def inner_product(call):
    """geometry/GeometryInnerProduct.cpp: y[b] = x[b].flatten() @ W^T + bias (``transpose`` unused)."""
    x = call.inputs[0]
    w, b = conv_weights(call.op)
    flat = _f32(x.reshape(x.shape[0], -1))
    if flat.shape[1] != w.shape[1]:
        raise ShapeError(f"op {call.op.name!r} (InnerProduct): input {x.shape} has {flat.shape[1]} values per "
                         f"row, weights expect {w.shape[1]}")
    return [_matmul_kernel(call.impl)(flat, w, False, True, b)]


@register(OpType.MatMul, OpType.BatchMatMul)
def matmul(call):
    """np.matmul semantics with broadcast batch axes and 1-D operands (shape/ShapeMatMul.cpp,
    geometry/GeometryBatchMatMul.cpp); an optional third input is a bias over the last axis."""
    p = call.params
    if call.op.type == OpType.MatMul:
        ta, tb = (bool(p.transposeA), bool(p.transposeB)) if p is not None else (False, False)
    else:
        ta, tb = (bool(p.adjX), bool(p.adjY)) if p is not None else (False, False)
    if len(call.inputs) < 2:
        raise UnsupportedOpError(f"op {call.op.name!r} ({OpType(call.op.type).name}): needs two inputs")
    a, b = _f32(call.inputs[0]), _f32(call.inputs[1])
    bias = _f32(call.inputs[2]).reshape(-1) if len(call.inputs) > 2 else None
    kernel = _matmul_kernel(call.impl)
    try:
        y = kernel(a, b, ta, tb, None)
    except ValueError as exc:
        raise ShapeError(f"op {call.op.name!r} ({OpType(call.op.type).name}): {exc}") from None
    return [y + bias if bias is not None else y]


# ---------------------------------------------------------------------------------------- softmax

@register(OpType.Softmax)
def softmax(call):
    """backend/cpu/CPUSoftmax.cpp: exp(x - max) / sum over ``axis`` of the stored dims."""
    x = call.inputs[0].astype(_F32, copy=False)
    axis = call.params.axis if call.params is not None else 0
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True, dtype=_F32)).astype(_F32, copy=False)]


@register_plan(OpType.Softmax)
def plan_softmax(op, impl: str):
    """impl="mnn": CPUSoftmax's x86 rounding: rows made contiguous (the axis moved innermost, as MNN
    transposes) through mnn_exact.softmax_rows, or, when the inner size exceeds 8 with fewer than 8
    channels, MNN's strided branch (_mnn_softmax_strided)."""
    if impl != "mnn":
        return softmax
    from ..kernels import mnn_exact

    def run(call):
        x = call.inputs[0]
        if x.dtype != _F32 or x.ndim == 0:
            return softmax(call)
        axis = call.params.axis if call.params is not None else 0
        axis = axis + x.ndim if axis < 0 else axis
        if not 0 <= axis < x.ndim:
            return softmax(call)
        channel, inside = x.shape[axis], int(np.prod(x.shape[axis + 1:]))
        if inside > 8 and channel < 8:
            return [_mnn_softmax_strided(x, axis, channel, inside, mnn_exact)]
        xt = np.moveaxis(x, axis, -1)
        y = mnn_exact.softmax_rows(xt.reshape(-1, channel)).reshape(xt.shape)
        return [np.ascontiguousarray(np.moveaxis(y, -1, axis))]
    return run


def _mnn_softmax_strided(x, axis, channel, inside, mnn_exact):
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


# ---------------------------------------------------------------------------------- Interp (resize)

_NOTSET, _ALIGN, _HALF, _PT_HALF, _ASYM, _TF_HALF, _TF_CROP = range(7)   # CoordinateTransformationMode


def _interp_sizes(call):
    """(out_h, out_w, float scales or None) per shape/ShapeInterp.cpp, in the input's stored order."""
    p, x, fmt = call.params, call.inputs[0], call.formats[0]
    hi, wi = (1, 2) if fmt == NHWC else (2, 3)
    h, w = x.shape[hi], x.shape[wi]
    if len(call.inputs) > 1:
        shape = np.asarray(call.inputs[1]).reshape(-1)
        if shape.size == x.ndim:                       # ONNX Resize: sizes (int) or scales (float)
            if np.issubdtype(shape.dtype, np.integer):
                out = [int(v) for v in shape]
            else:
                out = [_scaled(call, n, s) for s, n in zip(shape, x.shape)]
            if out[0] != x.shape[0] or out[1 if fmt != NHWC else 3] != x.shape[1 if fmt != NHWC else 3]:
                raise UnsupportedOpError(f"op {call.op.name!r} (Interp): resizing batch or channels "
                                         f"{x.shape} -> {out} is not supported")
            scales = shape.astype(_F32) if not np.issubdtype(shape.dtype, np.integer) else None
            return out[hi], out[wi], scales
        if shape.size != 2:
            raise ShapeError(f"op {call.op.name!r} (Interp): size input has {shape.size} values, expected 2 "
                             f"or {x.ndim}")
        return int(shape[0]), int(shape[1]), None      # TensorFlow: [height, width]
    if p.outputWidth == 0 or p.outputHeight == 0:
        return _scaled(call, h, p.heightScale), _scaled(call, w, p.widthScale), None
    return p.outputHeight, p.outputWidth, None


def _scaled(call, n: int, scale) -> int:
    """int(n * scale) in float32 as ShapeInterp.cpp computes it; a scale that is not finite or gives
    more than 2**31 is refused (MNN's int cast would be undefined)."""
    with np.errstate(all="ignore"):
        value = _F32(n) * _F32(scale)
    if not np.isfinite(value) or abs(float(value)) >= 2 ** 31:
        raise ShapeError(f"op {call.op.name!r} (Interp): scale {float(scale)} of a dim of {n} gives "
                         f"{float(value)}, not a size")
    return int(value)


def _coord_transform(p, n_in: int, n_out: int, given):
    """(scale, offset) with src = dst * scale + offset: geometry/ConvertUtils.hpp _ConverterInterp.
    ``given`` is 1/scale of a float scales input (the scale is then not recomputed from sizes)."""
    ctm = p.ctm
    if ctm == _NOTSET:     # old models: half-pixel except for nearest-floor, else align corners
        ctm = _HALF if p.halfPixelCenters and p.resizeType != 1 else _ALIGN if p.alignCorners else _ASYM
    if ctm == _TF_CROP:
        raise UnsupportedOpError("Interp: coordinate mode tf_crop_and_resize is not supported by MNN")
    if ctm == _ALIGN:
        return (_F32(0) if n_out == 1 else _F32(n_in - 1) / _F32(n_out - 1)), _F32(0)
    scale = given if given is not None else _F32(n_in) / _F32(n_out)
    if ctm == _HALF or (ctm == _PT_HALF and n_out > 1):
        return scale, _F32(0.5) * scale - _F32(0.5)
    if ctm == _PT_HALF:
        return (scale if given is not None else _F32(0)), _F32(0)
    if ctm == _TF_HALF:
        return scale, _F32(0.5) * scale
    return scale, _F32(0)


def _source(n_out: int, scale, offset) -> np.ndarray:
    return np.arange(n_out, dtype=_F32) * _F32(scale) + _F32(offset)


def _nearest(n_in: int, src: np.ndarray, rounding: bool) -> np.ndarray:
    """CPUResize.hpp: floor(src), or floorf(src + 0.499f) for resizeType 4; clamped."""
    return np.clip(np.floor(src + _F32(0.499)) if rounding else np.floor(src), 0, n_in - 1).astype(np.intp)


def _bilinear_axis(n_in: int, src: np.ndarray):
    """CPUInterp.cpp onResize: floor position, its right neighbour (both clamped), the fraction."""
    x1 = np.floor(src)
    frac = (src - x1).astype(_F32)
    x1 = x1.astype(np.int64)
    return np.clip(x1, 0, n_in - 1), np.clip(x1 + 1, 0, n_in - 1), frac


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """compute/ResizeFunction.cpp CubicInterpolation2: Keys kernel with A = -0.75 (cubicCoeffA unused)."""
    t = t.astype(np.float64)
    ta, td, tc = 1.0 + t, 2.0 - t, 1.0 - t
    a0 = 3.0 - 6.0 * ta + 3.75 * ta * ta - 0.75 * ta ** 3
    b0 = 1.0 - 2.25 * t * t + 1.25 * t ** 3
    c0 = 1.0 - 2.25 * tc * tc + 1.25 * tc ** 3
    d0 = 3.0 - 6.0 * td + 3.75 * td * td - 0.75 * td ** 3
    return np.stack([a0, b0, c0, d0], axis=-1).astype(_F32)


def _cubic_axis(n_in: int, src: np.ndarray):
    """CPUResize.hpp CPUResizeCubicC4: base (int)src truncates toward zero while the fraction is
    src - floor(src), so sources in (-1, 0) mix the wrong neighbours, as MNN does."""
    base = np.trunc(src).astype(np.int64)
    pos = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return pos, _cubic_weights(src - np.floor(src))


def _resize(x: np.ndarray, kind: int, hs, ws, out) -> np.ndarray:
    (h_scale, h_off), (w_scale, w_off), (oh, ow) = hs, ws, out
    h, w = x.shape[2:]
    ys, xs = _source(oh, h_scale, h_off), _source(ow, w_scale, w_off)
    if kind in (1, 4):
        return x[:, :, _nearest(h, ys, kind == 4)][:, :, :, _nearest(w, xs, kind == 4)]
    if kind == 2:
        y0, y1, fy = _bilinear_axis(h, ys)
        x0, x1, fx = _bilinear_axis(w, xs)
        top = x[:, :, y0][..., x1] * fx + x[:, :, y0][..., x0] * (_F32(1) - fx)
        bottom = x[:, :, y1][..., x1] * fx + x[:, :, y1][..., x0] * (_F32(1) - fx)
        return top * (_F32(1) - fy)[:, None] + bottom * fy[:, None]
    if kind == 3:
        ypos, wy = _cubic_axis(h, ys)
        xpos, wx = _cubic_axis(w, xs)
        rows = np.einsum("ncyxk,xk->ncyx", x[:, :, :, xpos], wx)          # horizontal taps first
        return np.einsum("ncyxk,yk->ncyx", rows[:, :, ypos].transpose(0, 1, 2, 4, 3), wy)
    raise UnsupportedOpError(f"Interp: resizeType {kind} is not one of 1 (nearest), 2 (bilinear), "
                             f"3 (cubic), 4 (nearest, round)")


@register(OpType.Interp)
def interp(call):
    p = call.params
    if call.inputs[0].ndim == 3 and call.formats[0] != NHWC:
        return _interp_1d(call)
    x = _image(call).astype(_F32, copy=False)
    oh, ow, scales = _interp_sizes(call)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Interp): empty output size {oh}x{ow}")
    check_alloc(f"op {call.op.name!r} (Interp)", "output", (*x.shape[:2], oh, ow), 4, extra=4 * x.size)
    # GeometryImageOp.cpp: a float scales input fixes scale = 1/scales[2], 1/scales[3].
    given = (None, None) if scales is None else (_F32(1) / scales[2], _F32(1) / scales[3])
    hs = _coord_transform(p, x.shape[2], oh, given[0])
    ws = _coord_transform(p, x.shape[3], ow, given[1])
    y = _resize(x, p.resizeType, hs, ws, (oh, ow))
    return [from_nchw(np.ascontiguousarray(y, dtype=_F32), call.formats[0])]


def _interp_1d(call):
    """A 3-D [N, C, L] input resizes L as the height of an [N, C, L, 1] image (GeometryImageOp.cpp
    treats it as 4-D; the width stays 1)."""
    p, x = call.params, call.inputs[0].astype(_F32, copy=False)
    length = x.shape[2]
    if len(call.inputs) > 1:
        shape = np.asarray(call.inputs[1]).reshape(-1)
        if shape.size != 3:
            raise ShapeError(f"op {call.op.name!r} (Interp): a 3-D input needs 3 sizes or scales, got {shape.size}")
        integer = np.issubdtype(shape.dtype, np.integer)
        out = int(shape[2]) if integer else _scaled(call, length, shape[2])
        given = None if integer else _F32(1) / _F32(shape[2])
    else:
        out = p.outputHeight or _scaled(call, length, p.heightScale)
        given = None
    if out <= 0:
        raise ShapeError(f"op {call.op.name!r} (Interp): empty output length {out}")
    hs = _coord_transform(p, length, out, given)
    y = _resize(x[..., None], p.resizeType, hs, (_F32(1), _F32(0)), (out, 1))
    return [np.ascontiguousarray(y[..., 0], dtype=_F32)]
