"""Pooling (2-D and 3-D) with MNN 3.6.1's CPU semantics (paths under MNN's ``source/``)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..limits import check_alloc
from ..format.tables import AvgPoolCountType, OpType, PoolPadType, PoolType
from ..kernels import eltwise, table as kernel_table
from .geometry import (NHWC, fit_axis, from_nchw, image_nchw, pool3d_output_size, pool_output_size, pool_pad,
                       to_nchw)
from .registry import register, register_plan

_F32 = np.float32


def window_taps(x: np.ndarray, k, s, pad, out, mode: str):
    """The window taps (i, j) in row-major order, each an [N, C, OH, OW] view: tap (i, j) of window
    (oy, ox) is x[oy*sy - pt + i, ox*sx - pl + j] (padded by ``mode``), so a pool is kh*kw whole-array
    operations."""
    (kh, kw), (sy, sx), (pt, pl), (oh, ow) = k, s, pad, out
    x = fit_axis(fit_axis(x, 2, pt, (oh - 1) * sy + kh, mode), 3, pl, (ow - 1) * sx + kw, mode)
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
    if kind == PoolType.MAXPOOL:
        taps = window_taps(x, k, s, pad, out, "edge")
        y = next(taps).copy()
        for tap in taps:
            np.maximum(y, tap, out=y)
        return y
    taps = window_taps(x.astype(_F32, copy=False), k, s, pad, out, "constant")
    sums = next(taps).copy()
    for tap in taps:               # CPUPool.hpp poolingAvgPad: one running sum, rows then columns
        sums += tap
    return (sums * _avg_scales(x.shape[2:], k, s, pad, out, count_type)).astype(_F32, copy=False)


def _avg_scales(plane, k, s, pad, out, count_type: int) -> np.ndarray:
    """1/count per output position (float32; 0 where the window holds no input cell)."""
    include = count_type == AvgPoolCountType.INCLUDE_PADDING
    rows = _avg_count(plane[0], k[0], s[0], pad[0], out[0], include)
    cols = _avg_count(plane[1], k[1], s[1], pad[1], out[1], include)
    count = (rows[:, None] * cols[None, :]).astype(_F32)
    return np.divide(_F32(1), count, out=np.zeros_like(count), where=count > 0)


def _pool_plan(call, h: int, w: int):
    """(kernel, stride, lead pad, out size, count type) of a Pool table (CPUPool.cpp onResize)."""
    p = call.params
    if p.isGlobal:
        return (h, w), (h, w), (0, 0), (1, 1), AvgPoolCountType.INCLUDE_PADDING
    if p.strideX <= 0 or p.strideY <= 0 or p.kernelX <= 0 or p.kernelY <= 0:
        raise ShapeError(f"op {call.op.name!r} (Pooling): kernel {p.kernelY}x{p.kernelX} stride "
                         f"{p.strideY}x{p.strideX} must be positive")
    if p.padType in (PoolPadType.VALID, PoolPadType.SAME) and (p.padX or p.padY):
        raise ShapeError(f"op {call.op.name!r} (Pooling): VALID/SAME pooling with explicit padX/padY")
    oh, ow = pool_output_size(p, h, w)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"op {call.op.name!r} (Pooling): input {h}x{w} gives an empty output {oh}x{ow}")
    check_alloc(f"op {call.op.name!r} (Pooling)", "output", (*call.inputs[0].shape[:2], oh, ow))
    k, s, pad_type = (p.kernelY, p.kernelX), (p.strideY, p.strideX), p.padType
    pad = (pool_pad(pad_type, p.padY, h, oh, k[0], s[0]), pool_pad(pad_type, p.padX, w, ow, k[1], s[1]))
    if p.pads is not None and pad_type == PoolPadType.CAFFE:
        if len(p.pads) == 4:
            pad = (int(p.pads[0]), int(p.pads[1]))
        pad_type = PoolPadType.VALID            # CPUPool.cpp: explicit pads then count as VALID (rule below)
    count = p.countType
    if count == AvgPoolCountType.DEFAULT:            # CPUPool.hpp poolingAvgPad
        count = AvgPoolCountType.INCLUDE_PADDING if pad_type == PoolPadType.CAFFE else AvgPoolCountType.EXCLUDE_PADDING
    return k, s, pad, (oh, ow), count


@register(OpType.Pooling)
def pooling(call):
    if call.op.outputIndexes is not None and len(call.op.outputIndexes) > 1:
        raise UnsupportedOpError(f"op {call.op.name!r} (Pooling): the max-index output is not supported")
    x = image_nchw(call)
    k, s, pad, out, count = _pool_plan(call, *x.shape[2:])
    y = pool2d(x, call.params.type, k, s, pad, out, count)
    return [from_nchw(np.ascontiguousarray(y), call.formats[0])]


def max_pool2d(x, k, s, pad, out) -> np.ndarray:
    """The reference form of kernel "max_pool2d": ``pool2d``'s max pool."""
    return pool2d(x, PoolType.MAXPOOL, k, s, pad, out, AvgPoolCountType.INCLUDE_PADDING)


def avg_pool2d(x, k, s, pad, out, count_type: int) -> np.ndarray:
    """The reference form of kernel "avg_pool2d" (mnnlite.kernels.table): ``pool2d``'s average pool."""
    return pool2d(x, PoolType.AVEPOOL, k, s, pad, out, count_type)


def avg_pool2d_fast(x, k, s, pad, out, count_type: int) -> np.ndarray:
    """The compiled form of kernel "avg_pool2d": ``pool2d``'s sums and scales in one pass (same bits)."""
    return eltwise.avg_pool_f32(x, k, s, pad, out, _avg_scales(x.shape[2:], k, s, pad, out, count_type))


def global_avg_pool2d_fast(x) -> np.ndarray:
    """The compiled form of kernel "global_avg_pool2d" (``global_avg_pool2d``'s bits)."""
    h, w = x.shape[2:]
    return avg_pool2d_fast(x, (h, w), (h, w), (0, 0), (1, 1), AvgPoolCountType.INCLUDE_PADDING)


def global_avg_pool2d(x) -> np.ndarray:
    """The reference form of kernel "global_avg_pool2d": Pooling's global average of an NCHW tensor, the
    window the whole plane (``_pool_plan``'s global case)."""
    h, w = x.shape[2:]
    return pool2d(x, PoolType.AVEPOOL, (h, w), (h, w), (0, 0), (1, 1), AvgPoolCountType.INCLUDE_PADDING)


def global_mean(x) -> np.ndarray:
    """The reference form of kernel "global_mean": Pooling3D's global average (``pooling3d``) of a float32
    NCHW-like tensor."""
    return x.mean(tuple(range(2, x.ndim)), keepdims=True, dtype=_F32)


def global_mean_fast(x) -> np.ndarray:
    """``global_mean`` without numpy's mean() wrapper (the SE blocks of small models run many of them on
    tiny tensors): the two calls numpy's _methods._mean makes for it, so the same bits."""
    y = np.add.reduce(x, tuple(range(2, x.ndim)), _F32, None, True)
    np.true_divide(y, np.intp(math.prod(x.shape[2:])), out=y, casting="unsafe", subok=False)
    return y


@register_plan(OpType.Pooling)
def plan_pooling(op, impl: str):
    """Max and average pools of float32 NCHW tensors through the kernels "max_pool2d", "avg_pool2d" and
    "global_avg_pool2d" (impl="mnn": CPUPool's rounding of averages), the window planned once per input
    shape; every other pool takes the generic kernel."""
    p = op.main
    if p is None or p.type not in (PoolType.AVEPOOL, PoolType.MAXPOOL):
        return pooling
    if p.isGlobal and p.type == PoolType.AVEPOOL:
        global_avg = kernel_table.form("global_avg_pool2d", impl)

        def run_global(call):
            x = call.inputs[0]
            if x.dtype != _F32 or x.ndim != 4 or call.formats[0] == NHWC or len(call.op.outputIndexes) > 1:
                return pooling(call)
            return [global_avg(x)]
        return run_global
    if p.type == PoolType.MAXPOOL:
        maxp = kernel_table.form("max_pool2d", impl)
        pool = lambda x, k, s, pad, out, count: maxp(x, k, s, pad, out)   # noqa: E731
    else:
        pool = kernel_table.form("avg_pool2d", impl)
    windows = {}        # input shape -> _pool_plan's window (its checks passed)

    def run(call):
        if len(call.op.outputIndexes) > 1 or call.inputs[0].dtype != _F32:
            return pooling(call)
        x = image_nchw(call)
        window = windows.get(x.shape)
        if window is None:
            window = windows[x.shape] = _pool_plan(call, *x.shape[2:])
        return [from_nchw(np.ascontiguousarray(pool(x, *window)), call.formats[0])]
    return run


@register_plan(OpType.Pooling3D)
def plan_pooling3d(op, impl: str):
    """A global average of a float32 tensor through kernel "global_mean" (GeometryPooling3D.cpp makes a
    Pool3D global pool a 2-D one; impl="mnn": CPUPool's rounding); every other pool is ``pooling3d``."""
    p = op.main
    if p is None or not p.isGlobal or p.type != PoolType.AVEPOOL:
        return pooling3d
    mean = kernel_table.form("global_mean", impl)

    def run(call):
        x = call.inputs[0]
        if x.dtype != _F32 or x.ndim < 3 or x.size == 0 or call.formats[0] == NHWC:
            return pooling3d(call)
        return [mean(x)]
    return run


@register(OpType.Pooling3D)
def pooling3d(call):
    p = call.params
    x = to_nchw(call.inputs[0], call.formats[0])
    if p.isGlobal:               # geometry/GeometryPooling3D.cpp: a global pool over every spatial axis
        axes = tuple(range(2, x.ndim))
        y = x.max(axes, keepdims=True) if p.type == PoolType.MAXPOOL else x.mean(axes, keepdims=True, dtype=_F32)
        return [from_nchw(np.ascontiguousarray(y.astype(x.dtype)), call.formats[0])]
    if x.ndim != 5:
        raise ShapeError(f"op {call.op.name!r} (Pooling3D): expected a 5-D input, got {x.shape}")
    (kd, kh, kw), (sd, sh, sw) = [int(v) for v in p.kernels], [int(v) for v in p.strides]
    pd, ph, pw = [int(v) for v in p.pads] if p.pads is not None else (0, 0, 0)
    n, c, d, h, w = x.shape
    od, oh, ow = (pool3d_output_size(p.padType, n_in, k, s, pad) for n_in, k, s, pad in
                  ((d, kd, sd, pd), (h, kh, sh, ph), (w, kw, sw, pw)))
    # GeometryPooling3D.cpp: an H/W pool per depth slice (default count rule), then a depth pool
    # (EXCLUDE_PADDING for average) over [N, C, D, OH*OW].
    plane = x.transpose(0, 2, 1, 3, 4).reshape(n * d, c, h, w)
    hw_count = AvgPoolCountType.INCLUDE_PADDING if p.padType == PoolPadType.CAFFE else AvgPoolCountType.EXCLUDE_PADDING
    pads = (pool_pad(p.padType, ph, h, oh, kh, sh), pool_pad(p.padType, pw, w, ow, kw, sw))
    plane = pool2d(plane, p.type, (kh, kw), (sh, sw), pads, (oh, ow), hw_count)
    depth = plane.reshape(n, d, c, oh * ow).transpose(0, 2, 1, 3)
    pad_d = pool_pad(p.padType, pd, d, od, kd, sd)
    y = pool2d(depth, p.type, (kd, 1), (sd, 1), (pad_d, 0), (od, oh * ow), AvgPoolCountType.EXCLUDE_PADDING)
    return [from_nchw(np.ascontiguousarray(y.reshape(n, c, od, oh, ow)), call.formats[0])]
