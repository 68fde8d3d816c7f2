"""Interp (resize) with MNN 3.6.1's CPU semantics (paths under MNN's ``source/``)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..limits import check_alloc
from ..format.tables import CoordinateTransformationMode, OpType
from ..kernels import table as kernel_table
from .geometry import NHWC, from_nchw, image_nchw
from .registry import register, register_plan

_F32 = np.float32

CTM = CoordinateTransformationMode
# Interp.resizeType (an int in the schema; backend/cpu/CPUInterp.cpp, CPUResize.hpp)
NEAREST, BILINEAR, CUBIC, NEAREST_ROUND = 1, 2, 3, 4


def interp_sizes(call):
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


def coord_transform(p, n_in: int, n_out: int, given):
    """(scale, offset) with src = dst * scale + offset: geometry/ConvertUtils.hpp _ConverterInterp.
    ``given`` is 1/scale of a float scales input (the scale is then not recomputed from sizes)."""
    ctm = p.ctm
    if ctm == CTM.NotSet:     # old models: half-pixel except for nearest-floor, else align corners
        ctm = CTM.HalfPixels if p.halfPixelCenters and p.resizeType != NEAREST else CTM.AlignCorners if p.alignCorners else CTM.Asymmetric
    if ctm == CTM.TensorflowCropAndResize:
        raise UnsupportedOpError("Interp: coordinate mode tf_crop_and_resize is not supported by MNN")
    if ctm == CTM.AlignCorners:
        return (_F32(0) if n_out == 1 else _F32(n_in - 1) / _F32(n_out - 1)), _F32(0)
    scale = given if given is not None else _F32(n_in) / _F32(n_out)
    if ctm == CTM.HalfPixels or (ctm == CTM.PytorchHalfPixels and n_out > 1):
        return scale, _F32(0.5) * scale - _F32(0.5)
    if ctm == CTM.PytorchHalfPixels:
        return (scale if given is not None else _F32(0)), _F32(0)
    if ctm == CTM.TensorflowHalfPixels:
        return scale, _F32(0.5) * scale
    return scale, _F32(0)


def source_positions(n_out: int, scale, offset) -> np.ndarray:
    return np.arange(n_out, dtype=_F32) * _F32(scale) + _F32(offset)


def nearest_index(n_in: int, src: np.ndarray, rounding: bool) -> np.ndarray:
    """CPUResize.hpp: floor(src), or floorf(src + 0.499f) for resizeType 4; clamped."""
    return np.clip(np.floor(src + _F32(0.499)) if rounding else np.floor(src), 0, n_in - 1).astype(np.intp)


def bilinear_axis(n_in: int, src: np.ndarray):
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


def nearest_ref(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The reference form of kernel "resize_nearest": rows then columns of an NCHW array gathered."""
    return x[:, :, rows][:, :, :, cols]


def bilinear_ref(x: np.ndarray, y0, y1, fy, x0, x1, fx) -> np.ndarray:
    """The reference form of kernel "resize_bilinear" (CPUInterp.cpp CPUBilinearSampleC4 then
    CPUBilinearLineC4): each row blended along x, then the two rows along y, in float32."""
    top = x[:, :, y0][..., x1] * fx + x[:, :, y0][..., x0] * (_F32(1) - fx)
    bottom = x[:, :, y1][..., x1] * fx + x[:, :, y1][..., x0] * (_F32(1) - fx)
    return top * (_F32(1) - fy)[:, None] + bottom * fy[:, None]


def _resize_plan(x_shape, kind: int, hs, ws, out, impl: str):
    """(kernel, its arguments after x) of a resize of an NCHW input of ``x_shape``: what depends on the
    shapes only, computed once per shape by ``plan_interp``."""
    (h_scale, h_off), (w_scale, w_off), (oh, ow) = hs, ws, out
    h, w = x_shape[2:]
    ys, xs = source_positions(oh, h_scale, h_off), source_positions(ow, w_scale, w_off)
    if kind in (NEAREST, NEAREST_ROUND):
        return kernel_table.form("resize_nearest", impl), (
            nearest_index(h, ys, kind == NEAREST_ROUND), nearest_index(w, xs, kind == NEAREST_ROUND))
    if kind == BILINEAR:
        return kernel_table.form("resize_bilinear", impl), (*bilinear_axis(h, ys), *bilinear_axis(w, xs))
    if kind == CUBIC:
        return _cubic, (_cubic_axis(h, ys), _cubic_axis(w, xs))
    raise UnsupportedOpError(f"Interp: resizeType {kind} is not one of 1 (nearest), 2 (bilinear), "
                             f"3 (cubic), 4 (nearest, round)")


def _cubic(x, rows, cols):
    (ypos, wy), (xpos, wx) = rows, cols
    taps = np.einsum("ncyxk,xk->ncyx", x[:, :, :, xpos], wx)          # horizontal taps first
    return np.einsum("ncyxk,yk->ncyx", taps[:, :, ypos].transpose(0, 1, 2, 4, 3), wy)


def _resize(x: np.ndarray, kind: int, hs, ws, out, impl: str) -> np.ndarray:
    kernel, args = _resize_plan(x.shape, kind, hs, ws, out, impl)
    return kernel(x, *args)


def _interp_plan(call, x: np.ndarray):
    """(kernel, its arguments after x) of a 4-D Interp on ``x`` (NCHW, the float input)."""
    p = call.params
    oh, ow, scales = interp_sizes(call)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Interp): empty output size {oh}x{ow}")
    check_alloc(f"op {call.op.name!r} (Interp)", "output", (*x.shape[:2], oh, ow), 4, extra=4 * x.size)
    # GeometryImageOp.cpp: a float scales input fixes scale = 1/scales[2], 1/scales[3].
    given = (None, None) if scales is None else (_F32(1) / scales[2], _F32(1) / scales[3])
    hs = coord_transform(p, x.shape[2], oh, given[0])
    ws = coord_transform(p, x.shape[3], ow, given[1])
    return _resize_plan(x.shape, p.resizeType, hs, ws, (oh, ow), call.impl)


def _run_interp(call, plan_of):
    if call.inputs[0].ndim == 3 and call.formats[0] != NHWC:
        return _interp_1d(call)
    x = image_nchw(call).astype(_F32, copy=False)
    kernel, args = plan_of(call, x)
    return [from_nchw(np.ascontiguousarray(kernel(x, *args), dtype=_F32), call.formats[0])]


@register(OpType.Interp)
def interp(call):
    return _run_interp(call, _interp_plan)


@register_plan(OpType.Interp)
def plan_interp(op, impl: str):
    """One Interp node: its output size, source rows and columns and weights computed once per input
    shape, layout and size input (``_interp_plan``)."""
    plans = {}

    def plan_of(call, x):
        sizes = call.inputs[1] if len(call.inputs) > 1 else None
        key = (x.shape, call.formats[0], call.impl) if sizes is None else \
            (x.shape, call.formats[0], call.impl, sizes.dtype.str, sizes.shape, sizes.tobytes())
        plan = plans.get(key)
        if plan is None:
            plan = plans[key] = _interp_plan(call, x)
        return plan

    return lambda call: _run_interp(call, plan_of)


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
    hs = coord_transform(p, length, out, given)
    y = _resize(x[..., None], p.resizeType, hs, (_F32(1), _F32(0)), (out, 1), call.impl)
    return [np.ascontiguousarray(y[..., 0], dtype=_F32)]
