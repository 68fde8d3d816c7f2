"""Convolution and deconvolution with MNN 3.6.1's CPU semantics (paths under MNN's ``source/``).

The op reads its parameters and weights, computes MNN's geometry (``geometry``) and runs the form of the
conv kernel (``mnnlite.kernels.table``) that ``call.impl`` names; the planner prepares a node's weights once.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..limits import check_alloc
from ..format.tables import OpType
from ..kernels import table as kernel_table
from .geometry import (NHWC, conv_window, deconv_output_size, deconv_pad, f32, fit_axis, from_nchw, image_nchw,
                       span_axis)
from .registry import register, register_plan
from .weights import conv_weights

_F32 = np.float32


def _activation(common) -> int:
    """Fused activation of Convolution2DCommon: 1 relu, 2 relu6 (0..6)."""
    return 2 if common.relu6 else 1 if common.relu else 0


def _weights(call, deconv: bool):
    """Weights from the op, or from inputs 1 (and 2: bias) for convolutions fed at run time."""
    extra = call.inputs[1:]
    if deconv and call.params.common.hasOutputShape:
        extra = extra[:-1]
    if not extra:
        return conv_weights(call.op)
    w = f32(extra[0])
    out_c = w.shape[1] * max(call.params.common.group, 1) if deconv else w.shape[0]
    b = f32(extra[1]).reshape(-1) if len(extra) > 1 else np.zeros(out_c, _F32)
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
    (kh, kw), (h, wd) = kernel, x.shape[2:]
    (sy, sx), (pt, pl, _, _), (dy, dx), (oh, ow) = conv_window(call.params.common, h, wd, kh, kw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Convolution): input {h}x{wd} gives an empty output {oh}x{ow}")
    _check_sizes(call, x, (oh, ow), kernel)
    x, pt, pb = span_axis(x, 2, pt, (oh - 1) * sy + dy * (kh - 1) + 1)
    x, pl, pr = span_axis(x, 3, pl, (ow - 1) * sx + dx * (kw - 1) + 1)
    return x, (sy, sx), (pt, pl, pb, pr), (dy, dx)


@register(OpType.Convolution, OpType.ConvolutionDepthwise)
def convolution(call):
    x = image_nchw(call)
    w, b = _weights(call, deconv=False)
    groups = _groups(call, x, w, deconv=False)
    x, stride, pad, dilation = _conv_geometry(call, x, w.shape[2:])
    # weights fed as inputs run MNN's multi-input executors (kernel "conv2d_fed"); NHWC tensors never reach them
    fed = len(call.inputs) > 1 and call.formats[0] != NHWC
    conv2d = kernel_table.form("conv2d_fed" if fed else "conv2d", call.impl)
    y = conv2d(f32(x), w, b, stride, pad, dilation, groups, _activation(call.params.common))
    return [from_nchw(y, call.formats[0])]


@register_plan(OpType.Convolution, OpType.ConvolutionDepthwise)
def plan_convolution(op, impl: str):
    """One conv node: its weights decoded, packed and transformed once (one ``Conv2d`` per padding
    seen), instead of on every call.  Weights fed at run time and NHWC inputs take ``convolution``."""
    make_layer = kernel_table.form("conv2d_layer", impl)
    layers = {}      # pad -> Conv2d (stride and dilation are the node's)
    by_shape = {}    # input shape -> (Conv2d, kernel size if the input must be cropped first)

    def prepare(call, x):
        w, b = conv_weights(call.op)
        groups = _groups(call, x, w, deconv=False)
        cropped, stride, pad, dilation = _conv_geometry(call, x, w.shape[2:])
        layer = layers.get(pad)
        if layer is None:
            layer = layers[pad] = make_layer(w, b, stride, pad, dilation, groups, _activation(call.params.common))
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
            return [layer(f32(x))]
        return convolution(call)

    return run


def _output_shape(call, h: int, w: int, kh: int, kw: int):
    """Deconvolution output size; an output-shape input holds [?, H, W, ?] (ShapeDeconvolution.cpp)."""
    common = call.params.common
    sy, sx, dy, dx = common.strideY, common.strideX, common.dilateY, common.dilateX
    if common.hasOutputShape:
        shape = np.asarray(call.inputs[-1]).reshape(-1)
        if int(shape[1]) > 0 and int(shape[2]) > 0:
            return int(shape[1]), int(shape[2])
    return deconv_output_size(common, h, kh, sy, dy, 0), deconv_output_size(common, w, kw, sx, dx, 1)


@register(OpType.Deconvolution, OpType.DeconvolutionDepthwise)
def deconvolution(call):
    common = call.params.common
    x = image_nchw(call)
    w, b = _weights(call, deconv=True)
    groups = _groups(call, x, w, deconv=True)
    (kh, kw), (sy, sx), (dy, dx) = w.shape[2:], (common.strideY, common.strideX), (common.dilateY, common.dilateX)
    h, wd = x.shape[2:]
    oh, ow = _output_shape(call, h, wd, kh, kw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Deconvolution): input {h}x{wd} gives an empty output {oh}x{ow}")
    _check_sizes(call, x, (oh, ow))
    pt, pl = deconv_pad(common, h, oh, kh, sy, 0), deconv_pad(common, wd, ow, kw, sx, 1)
    deconv2d = kernel_table.form("deconv2d", call.impl)
    act = _activation(common)
    if pt >= 0 and pl >= 0:
        y = deconv2d(f32(x), w, b, (sy, sx), (pt, pl, 0, 0), (dy, dx), groups, output_size=(oh, ow), act=act)
    else:   # a negative lead pad (SAME with stride > kernel): shift the bias-free result, then add bias
        lead_h, lead_w = max(-pt, 0), max(-pl, 0)
        core = deconv2d(f32(x), w, None, (sy, sx), (max(pt, 0), max(pl, 0), 0, 0), (dy, dx), groups,
                        output_size=(max(oh - lead_h, 1), max(ow - lead_w, 1)), act=0)
        y = fit_axis(fit_axis(core, 2, lead_h, oh), 3, lead_w, ow) + b.reshape(1, -1, 1, 1)
        y = np.clip(y, 0, 6 if act == 2 else None) if act else y
    return [from_nchw(f32(y), call.formats[0])]
