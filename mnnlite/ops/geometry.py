"""Layout and window geometry shared by the float ops and the int8 kernels, with MNN 3.6.1's rules.

Output sizes and leading pads of convolutions, deconvolutions and pools (each cites the MNN source it
comes from, paths under MNN's ``source/``), the NCHW view of an image tensor, and C integer division.
``mnnlite.int8`` computes its geometry with these functions, so a float and an int8 node of the same
shape agree on every size and pad.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..format.tables import DataFormat, OpType, PadMode, PoolPadType

NHWC = DataFormat.NHWC
_F32 = np.float32


def to_nchw(x: np.ndarray, fmt) -> np.ndarray:
    """Channel-second view of an image tensor (ops that MNN runs on NC4HW4 see NHWC data this way)."""
    return np.moveaxis(x, -1, 1) if fmt == NHWC and x.ndim >= 3 else x


def from_nchw(y: np.ndarray, fmt) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(y, 1, -1)) if fmt == NHWC and y.ndim >= 3 else y


def channel_axis(fmt, ndim: int) -> int:
    return ndim - 1 if fmt == NHWC else 1


def image_nchw(call, index: int = 0) -> np.ndarray:
    x = to_nchw(call.inputs[index], call.formats[index])
    if x.ndim != 4:
        raise ShapeError(f"op {call.op.name!r} ({OpType(call.op.type).name}): expected a 4-D input, "
                         f"got shape {call.inputs[index].shape}")
    return x


def c_div(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    return abs(a) // b * (1 if a >= 0 else -1)


def up_div(a: int, b: int) -> int:
    """MNN's UP_DIV(a, b) = (a + b - 1) / b in C."""
    return c_div(a + b - 1, b)


def fit_axis(x: np.ndarray, axis: int, before: int, size: int, mode: str = "constant") -> np.ndarray:
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


def span_axis(x: np.ndarray, axis: int, lead: int, size: int):
    """(x, lead, trail): the pads that make x span exactly ``size`` positions from -lead along ``axis``,
    both >= 0 (x is cropped where MNN's pads are negative or its output stops short of the input end)."""
    trail = size - x.shape[axis] - lead
    if lead < 0 or trail < 0:
        x = fit_axis(x, axis, min(lead, 0), x.shape[axis] + min(lead, 0) + min(trail, 0))
    return x, max(lead, 0), max(trail, 0)


def f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


def conv_output_size(common, n_in: int, k: int, s: int, d: int, axis: int) -> int:
    """Output length along H (axis 0) or W (axis 1): shape/ShapeConvolution.cpp."""
    ek = d * (k - 1) + 1
    if common.padMode == PadMode.SAME:
        return -(-n_in // s)
    if common.padMode == PadMode.VALID:
        return -(-(n_in - ek + 1) // s)
    if common.pads is not None:
        total = n_in + int(common.pads[axis]) + int(common.pads[axis + 2])
        return 0 if total < ek else (total - ek) // s + 1
    pad = common.padY if axis == 0 else common.padX
    return c_div(n_in + 2 * pad - ek, s) + 1


def conv_pad(common, n_in: int, n_out: int, k: int, s: int, d: int, axis: int) -> int:
    """Leading pad along H/W: core/ConvolutionCommon.cpp convolutionPad (SAME splits the need, the
    remainder goes to the end; any other mode reads padX/padY or pads[top, left])."""
    if common.padMode == PadMode.SAME:
        return c_div((n_out - 1) * s + d * (k - 1) + 1 - n_in, 2)
    if common.pads is not None and len(common.pads) >= 2:
        return int(common.pads[axis])
    return common.padY if axis == 0 else common.padX


def conv_window(common, h: int, w: int, kh: int, kw: int) -> tuple:
    """(stride, pads (top, left, bottom, right), dilation, (out_h, out_w)) of a convolution with a kh x kw
    kernel over an h x w input: MNN's output size (ShapeConvolution.cpp) and first tap (convolutionPad).
    A bottom/right pad is negative where the windows stop short of the input's end."""
    (sy, sx), (dy, dx) = (common.strideY, common.strideX), (common.dilateY, common.dilateX)
    oh, ow = conv_output_size(common, h, kh, sy, dy, 0), conv_output_size(common, w, kw, sx, dx, 1)
    pt, pl = conv_pad(common, h, oh, kh, sy, dy, 0), conv_pad(common, w, ow, kw, sx, dx, 1)
    pb = (oh - 1) * sy + dy * (kh - 1) + 1 - h - pt
    pr = (ow - 1) * sx + dx * (kw - 1) + 1 - w - pl
    return (sy, sx), (pt, pl, pb, pr), (dy, dx), (oh, ow)


def deconv_output_size(common, n_in: int, k: int, s: int, d: int, axis: int) -> int:
    """shape/ShapeDeconvolution.cpp (without an output-shape input)."""
    if common.padMode == PadMode.SAME:
        return n_in * s
    full = (n_in - 1) * s + d * (k - 1) + 1
    if common.pads is not None:
        size = full - int(common.pads[axis]) - int(common.pads[axis + 2])
    else:
        size = full - 2 * (common.padY if axis == 0 else common.padX)
    if common.outPads is not None:
        size += int(common.outPads[axis])
    return size


def deconv_pad(common, n_in: int, n_out: int, k: int, s: int, axis: int) -> int:
    """core/ConvolutionCommon.cpp convolutionTransposePad (SAME ignores dilation there)."""
    if common.padMode == PadMode.SAME:
        return c_div((n_in - 1) * s + k - n_out, 2)
    if common.pads is not None and len(common.pads) >= 2:
        return int(common.pads[axis])
    return common.padY if axis == 0 else common.padX


def pool_pad(pad_type: int, explicit: int, n_in: int, n_out: int, k: int, s: int) -> int:
    """Leading pad: backend/cpu/CPUPool.cpp onResize (SAME: half the positive need, floor)."""
    if pad_type == PoolPadType.SAME:
        need = (n_out - 1) * s + k - n_in
        return need // 2 if need > 0 else 0
    return 0 if pad_type == PoolPadType.VALID else explicit


def pool_output_size(p, h: int, w: int):
    """Output size: shape/ShapePool.cpp (kernel clamped to the padded input there only)."""
    if p.pads is not None and len(p.pads) == 2:
        h, w = h + int(p.pads[0]) + int(p.pads[1]), w
    elif p.pads is not None and len(p.pads) == 4:
        h, w = h + int(p.pads[0]) + int(p.pads[2]), w + int(p.pads[1]) + int(p.pads[3])
    elif p.pads is None:
        h, w = h + 2 * p.padY, w + 2 * p.padX
    kh, kw = min(p.kernelY, h), min(p.kernelX, w)
    sy, sx = p.strideY, p.strideX
    if p.padType == PoolPadType.SAME:
        return -(-h // sy), -(-w // sx)
    if p.padType == PoolPadType.VALID:
        return -(-(h - kh + 1) // sy), -(-(w - kw + 1) // sx)
    if p.ceilModel:
        return up_div(h - kh, sy) + 1, up_div(w - kw, sx) + 1
    return c_div(h - kh, sy) + 1, c_div(w - kw, sx) + 1


def pool3d_output_size(pad_type: int, n_in: int, k: int, s: int, pad: int) -> int:
    """shape/ShapePool3D.cpp."""
    if pad_type == PoolPadType.SAME:
        return up_div(n_in, s)
    if pad_type == PoolPadType.VALID:
        return c_div(n_in - k, s) + 1
    return c_div(n_in + 2 * pad - k, s) + 1
