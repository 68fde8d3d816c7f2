"""Normalizations with MNN 3.6.1's semantics: LayerNorm (incl. RMSNorm and grouped), GroupNorm,
InstanceNorm.  Comments cite the MNN source (under ``source/``) each rule comes from."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..format.tables import DataFormat, OpType
from ..kernels import table as kernel_table
from .geometry import from_nchw, to_nchw
from .pool import pool2d
from .registry import register, register_plan

_F32 = np.float32


def _name(call) -> str:
    return f"op {call.op.name!r} ({OpType(call.op.type).name})"


def normalize_rows(x2: np.ndarray, eps: float, rms: bool, gamma=None, beta=None) -> np.ndarray:
    """compute/CommonOptFunction.cpp MNNNorm on each row of a 2-D float32 array:
    (x - mean) / sqrt(mean((x - mean)^2) + eps) [* gamma + beta]; RMS skips the mean."""
    mean = _F32(0) if rms else x2.mean(axis=1, keepdims=True, dtype=_F32)
    d = x2 - mean
    var = (d * d).mean(axis=1, keepdims=True, dtype=_F32)
    y = d * (_F32(1) / np.sqrt(var + _F32(eps)))
    if gamma is not None and beta is not None:
        y = y * gamma + beta
    return y.astype(_F32, copy=False)


def _layer_norm_order(axes: list[int], rank: int) -> list[int] | None:
    """geometry/GeometryLayernorm.cpp: the permutation that moves the normalized axes last, or None
    when MNN normalizes the trailing len(axes) dims as they are."""
    if (axes[0] < 0 and axes[-1] == -1) or (axes[-1] > 0 and axes[-1] == rank - 1) or (axes[0] == 0 and rank == 1):
        return None
    last = [(a + rank) % rank for a in axes]
    order = [d for d in range(rank) if d < last[0] or d > last[-1]] + last
    return order


def _gamma_beta(p, inner: int, call):
    """CPULayerNorm.cpp: gamma and beta are applied only when both are present."""
    if p.gamma is None or p.beta is None or len(p.gamma) == 0:
        return None, None
    gamma, beta = np.asarray(p.gamma, _F32), np.asarray(p.beta, _F32)
    if gamma.size != inner or beta.size != inner:
        raise ShapeError(f"{_name(call)}: gamma/beta have {gamma.size}/{beta.size} values, the "
                         f"normalized slice has {inner}")
    return gamma, beta


def _packed_layer_norm(call):
    """LayerNorm whose op format is NC4HW4 (CPULayerNorm.cpp mNeedUnpackC4): normalize over the
    channel axis of [batch, channel]; with two inputs, output 0 is their sum and output 1 its norm."""
    p, x = call.params, call.inputs[0].astype(_F32, copy=False)
    if x.ndim < 2 or int(np.prod(x.shape[2:])) != 1:
        raise ShapeError(f"{_name(call)}: packed LayerNorm expects [batch, channel(, 1, 1)], got {x.shape}")
    x2 = x.reshape(x.shape[0], x.shape[1])
    if len(call.inputs) > 1:
        x2 = x2 + call.inputs[1].astype(_F32).reshape(x2.shape)
    gamma, beta = _gamma_beta(p, x2.shape[1], call)
    y = normalize_rows(x2, p.epsilon, bool(p.useRMSNorm), gamma, beta).reshape(x.shape)
    return [x2.reshape(x.shape), y] if len(call.inputs) > 1 else [y]


@register(OpType.LayerNorm)
def layer_norm(call, norm=normalize_rows):
    """CPULayerNorm.cpp: with ``group`` > 1, [N, rest] splits into N*group rows; otherwise the last
    len(axis) dims (after GeometryLayernorm's permutation) form one row.  No axis list normalizes
    single elements (the output is beta).  ``norm`` normalizes the rows (normalize_rows' signature)."""
    p = call.params
    if call.op.defaultDimentionFormat == DataFormat.NC4HW4:
        return _packed_layer_norm(call)
    x = call.inputs[0].astype(_F32, copy=False)
    rank = x.ndim
    axes = [int(a) for a in p.axis] if p.axis is not None else []
    order = _layer_norm_order(axes, rank) if axes and p.group <= 1 else None
    if order is not None and sorted(order) != list(range(rank)):
        raise ShapeError(f"{_name(call)}: axes {axes} are not a contiguous run of a rank-{rank} input")
    xt = x.transpose(order) if order is not None else x
    if p.group > 1:
        rows = x.shape[0] * p.group
    else:
        rows = int(np.prod(xt.shape[:rank - len(axes)]))
    x2 = xt.reshape(rows, -1) if xt.size else xt.reshape(rows, 0)
    gamma, beta = _gamma_beta(p, x2.shape[1], call)
    y = norm(x2, p.epsilon, bool(p.useRMSNorm), gamma, beta).reshape(xt.shape)
    if order is not None:
        y = y.transpose(np.argsort(order))
    return [np.ascontiguousarray(y)]


@register_plan(OpType.LayerNorm)
def plan_layer_norm(op, impl: str):
    """The rows of a LayerNorm through kernel "norm_rows" (impl="mnn": MNN's x86 MNNNorm, its summation
    order and (x - mean) * gamma * (1 / sqrt(var + eps)))."""
    norm = kernel_table.form("norm_rows", impl)

    def run(call):
        return layer_norm(call, norm=norm)
    return run


@register(OpType.GroupNorm)
def group_norm(call):
    """GroupNorm (a GPU op in MNN: backend/opencl/execution/buffer/GroupNormBufExecution.cpp,
    tools/converter/.../FuseGroupNorm.cpp): optional input 1 [N, C] is added per channel first; each
    of ``group`` channel groups is normalized over its channels and plane, then gamma/beta per
    channel, then x * sigmoid(x) when ``bSwish``."""
    p = call.params
    x = to_nchw(call.inputs[0], call.formats[0]).astype(_F32, copy=False)
    n, c = x.shape[:2]
    if len(call.inputs) > 1:
        x = x + call.inputs[1].astype(_F32).reshape((n, c) + (1,) * (x.ndim - 2))
    group = max(p.group, 1)
    if c % group:
        raise ShapeError(f"{_name(call)}: {c} channels do not split into {group} groups")
    y = normalize_rows(x.reshape(n * group, -1), p.epsilon, False).reshape(x.shape)
    if p.gamma is not None and p.beta is not None:
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = y * np.asarray(p.gamma, _F32).reshape(shape) + np.asarray(p.beta, _F32).reshape(shape)
    if p.bSwish:
        y = y / (_F32(1) + np.exp(-y))
    return [from_nchw(y.astype(_F32, copy=False), call.formats[0])]


@register(OpType.InstanceNorm)
def instance_norm(call):
    """backend/cpu/CPUInstanceNorm.cpp: inputs x, mean, variance (per batch and channel); the
    BatchNorm table gives scale (slopeData), bias (biasData) and epsilon:
    y = x * scale / sqrt(var + eps) + bias - scale * mean / sqrt(var + eps)."""
    p = call.params
    x = to_nchw(call.inputs[0], call.formats[0]).astype(_F32, copy=False)
    n, c = x.shape[:2]
    stat_shape = (n, c) + (1,) * (x.ndim - 2)
    mean = call.inputs[1].astype(_F32).reshape(stat_shape)
    inv = _F32(1) / np.sqrt(call.inputs[2].astype(_F32).reshape(stat_shape) + _F32(p.epsilon))
    chan = (1, c) + (1,) * (x.ndim - 2)
    scale = np.asarray(p.slopeData, _F32).reshape(chan) if p.slopeData is not None else np.zeros(chan, _F32)
    bias = np.asarray(p.biasData, _F32).reshape(chan) if p.biasData is not None else np.zeros(chan, _F32)
    gamma = scale * inv
    y = x * gamma + (bias - mean * gamma)
    return [from_nchw(y.astype(_F32, copy=False), call.formats[0])]


@register(OpType.LRN)
def lrn(call):
    """geometry/GeometryLRN.cpp: y = x * (alpha * avg(x^2) + bias)^-beta, the average over a window of
    ``localSize`` channels (regionType 0) or localSize x localSize pixels (1), zero padded by
    localSize / 2 in front (an even window reaches one further back than forward), divided by the
    full window size."""
    p = call.params
    x = to_nchw(call.inputs[0], call.formats[0]).astype(_F32, copy=False)
    if x.ndim != 4:
        raise ShapeError(f"{_name(call)}: expected a 4-D input, got {x.shape}")
    size, pad = p.localSize, p.localSize // 2
    sq = x * x
    n, c, h, w = x.shape
    # an average pool whose INCLUDE_PADDING divisor is the whole window (kind 1 = AVEPOOL)
    if p.regionType == 0:    # channels as the pooled axis
        avg = pool2d(sq.reshape(n, 1, c, h * w), 1, (size, 1), (1, 1), (pad, 0), (c, h * w), 1).reshape(x.shape)
    else:
        avg = pool2d(sq, 1, (size, size), (1, 1), (pad, pad), (h, w), 1)
    y = x * np.power(avg * _F32(p.alpha) + _F32(p.bias), _F32(-p.beta))
    return [from_nchw(y.astype(_F32, copy=False), call.formats[0])]
