"""Op parameters that make no sense, refused before a kernel sees them (when the runtime builds a graph).

These are the rules MNN's own shape and execution code enforces or assumes (a division by the stride,
an enum used as a table index, channels split into groups); a damaged or hostile file breaking them
gets one line naming the op and the field instead of a division by zero, a silent wrong answer or an
allocation sized by garbage.  ``info`` does not call this: it describes what the file says.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import FormatError
from .tables import OpType

T = OpType
CONV_TYPES = (T.Convolution, T.ConvolutionDepthwise, T.Deconvolution, T.DeconvolutionDepthwise,
              T.ConvInt8, T.DepthwiseConvInt8)
DEPTHWISE = (T.ConvolutionDepthwise, T.DeconvolutionDepthwise, T.DepthwiseConvInt8)
# ops whose kernels read their parameter table unconditionally (MNN dereferences it too)
NEEDS_PARAMS = CONV_TYPES + (T.Pooling, T.Pooling3D, T.Interp, T.ConvertTensor, T.Scale, T.BatchNorm,
                             T.Permute, T.StridedSlice, T.Reduction, T.Cast, T.LayerNorm, T.While, T.If,
                             T.UnaryOp, T.BinaryOp)
PAD_MODES = range(3)            # PadMode / PoolPadType: CAFFE, VALID, SAME
RESIZE_TYPES = range(1, 5)      # Interp.resizeType: nearest, bilinear, cubic, nearest-round
MAX_WINDOW = 1 << 16            # kernel, stride, dilation: beyond any real model (and any real input)
MAX_DIM = 1 << 24               # pads, output sizes, scales


def _name(op) -> str:
    try:
        return OpType(op.type).name
    except ValueError:
        return f"type {op.type}"


def check_op(op, where: str) -> None:
    """Raise FormatError when ``op``'s parameters break a structural rule."""
    def bad(message: str) -> FormatError:
        return FormatError(f"{where}: op {op.name!r} ({_name(op)}): {message}")

    p = op.main
    if op.type in NEEDS_PARAMS and p is None:
        raise bad("has no parameter table, which this op type needs")
    if op.type in CONV_TYPES:
        _check_conv(op, p, bad)
    elif op.type == T.Pooling:
        _check_pool(p, bad)
    elif op.type == T.Interp:
        _check_interp(p, bad)


def _positive(bad, label: str, *values) -> None:
    for v in values:
        if int(v) < 1:
            raise bad(f"{label} must be >= 1, got {int(v)}")
        if int(v) > MAX_WINDOW:
            raise bad(f"{label} {int(v)} is larger than {MAX_WINDOW}")


def _check_conv(op, p, bad) -> None:
    c = getattr(p, "common", None)
    if c is None:
        raise bad("Convolution2D has no common parameters (kernel, stride, pads)")
    _positive(bad, "stride", c.strideX, c.strideY)
    _positive(bad, "dilation", c.dilateX, c.dilateY)
    _positive(bad, "kernel size", c.kernelX, c.kernelY)
    if c.padMode not in PAD_MODES:
        raise bad(f"padMode {c.padMode} is not 0 (CAFFE), 1 (VALID) or 2 (SAME)")
    for label, pads in (("pads", c.pads), ("outPads", c.outPads)):
        if pads is not None and pads.size and int(np.max(np.abs(pads.astype(np.int64)))) > MAX_DIM:
            raise bad(f"{label} {pads.tolist()} are larger than {MAX_DIM}")
    if max(abs(int(c.padX)), abs(int(c.padY))) > MAX_DIM:
        raise bad(f"pad {c.padY}x{c.padX} is larger than {MAX_DIM}")
    if c.group < 1:
        kind = "depthwise " if op.type in DEPTHWISE else ""
        raise bad(f"{kind}group must be >= 1, got {c.group}")
    if op.type not in DEPTHWISE and c.group > 1:
        for label, count in (("input", c.inputCount), ("output", c.outputCount)):
            if count > 0 and count % c.group:
                raise bad(f"group {c.group} does not divide the {count} {label} channels")


def _check_pool(p, bad) -> None:
    if p.padType not in PAD_MODES:
        raise bad(f"padType {p.padType} is not 0 (CAFFE), 1 (VALID) or 2 (SAME)")
    if p.type not in (0, 1):
        raise bad(f"pool type {p.type} is not 0 (max) or 1 (average)")
    if p.padX < 0 or p.padY < 0 or (p.pads is not None and p.pads.size and int(p.pads.min()) < 0):
        pads = p.pads.tolist() if p.pads is not None and p.pads.size else [p.padY, p.padX]
        raise bad(f"pads {pads} are negative; pooling pads must be >= 0")
    if max([p.padX, p.padY] + ([] if p.pads is None or not p.pads.size else [int(p.pads.max())])) > MAX_DIM:
        raise bad(f"pads are larger than {MAX_DIM}")
    if not p.isGlobal:
        _positive(bad, "stride", p.strideX, p.strideY)
        _positive(bad, "kernel size", p.kernelX, p.kernelY)


def _check_interp(p, bad) -> None:
    if p.resizeType not in RESIZE_TYPES:
        raise bad(f"resizeType {p.resizeType} is not 1 (nearest), 2 (bilinear), 3 (cubic) or 4 "
                  f"(nearest, rounded)")
    for label in ("heightScale", "widthScale"):
        value = float(getattr(p, label))
        if not math.isfinite(value) or value < 0 or value > MAX_DIM:
            raise bad(f"{label} {value} is not a finite scale in [0, {MAX_DIM}]")
    for label in ("outputHeight", "outputWidth"):
        value = int(getattr(p, label))
        if value < 0 or value > MAX_DIM:
            raise bad(f"{label} {value} is not in [0, {MAX_DIM}]")
