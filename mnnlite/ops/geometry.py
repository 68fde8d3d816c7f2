"""Layout and window geometry shared by the float ops and the int8 kernels, with MNN 3.6.1's rules.

Output sizes and leading pads of convolutions, deconvolutions and pools (each cites the MNN source it
comes from, paths under MNN's ``source/``), the NCHW view of an image tensor, and C integer division.
``mnnlite.int8`` computes its geometry with these functions, so a float and an int8 node of the same
shape agree on every size and pad.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..format.tables import DataFormat, OpType

NHWC = DataFormat.NHWC
_CAFFE, _VALID, _SAME = 0, 1, 2            # PadMode / PoolPadType
_MAXPOOL, _AVEPOOL = 0, 1                  # PoolType
_DEFAULT, _INCLUDE, _EXCLUDE = 0, 1, 2     # AvgPoolCountType
_F32 = np.float32


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


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=_F32)


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


def _pool_pad(pad_type: int, explicit: int, n_in: int, n_out: int, k: int, s: int) -> int:
    """Leading pad: backend/cpu/CPUPool.cpp onResize (SAME: half the positive need, floor)."""
    if pad_type == _SAME:
        need = (n_out - 1) * s + k - n_in
        return need // 2 if need > 0 else 0
    return 0 if pad_type == _VALID else explicit


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


def _pool3d_size(pad_type: int, n_in: int, k: int, s: int, pad: int) -> int:
    """shape/ShapePool3D.cpp."""
    if pad_type == _SAME:
        return _up_div(n_in, s)
    if pad_type == _VALID:
        return _cdiv(n_in - k, s) + 1
    return _cdiv(n_in + 2 * pad - k, s) + 1
