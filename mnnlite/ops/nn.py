"""Matrix products (InnerProduct, MatMul, BatchMatMul) and softmax with MNN 3.6.1's CPU semantics.

Each rule cites the MNN source it comes from (paths under MNN's ``source/``).  The convolutions live in
``conv``, the pools in ``pool``, Interp in ``resize``, their shared geometry in ``geometry``.  The
planners' ``impl="mnn"`` picks, where one exists, a form that rounds like MNN's x86 CPU backend
(``mnnlite.kernels.mnn_ops``).
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..format.tables import OpType
from .geometry import _F32, f32
from .registry import register, register_plan
from .weights import conv_weights


def _matmul_kernel(impl: str):
    if impl == "fast":
        from ..kernels.matmul import matmul
        return matmul
    from ..ref.matmul import matmul_ref
    return matmul_ref


# --------------------------------------------------------------------------------- matrix products

@register(OpType.InnerProduct)
def inner_product(call):
    """geometry/GeometryInnerProduct.cpp: y[b] = x[b].flatten() @ W^T + bias (``transpose`` unused)."""
    x = call.inputs[0]
    w, b = conv_weights(call.op)
    flat = f32(x.reshape(x.shape[0], -1))
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
    a, b = f32(call.inputs[0]), f32(call.inputs[1])
    bias = f32(call.inputs[2]).reshape(-1) if len(call.inputs) > 2 else None
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
    from ..kernels.mnn_ops import _mnn_softmax_strided

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
