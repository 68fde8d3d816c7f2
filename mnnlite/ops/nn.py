"""Matrix products (InnerProduct, MatMul, BatchMatMul) and softmax with MNN 3.6.1's CPU semantics.

Each rule cites the MNN source it comes from (paths under MNN's ``source/``).  The convolutions live in
``conv``, the pools in ``pool``, Interp in ``resize``, their shared geometry in ``geometry``.  Products
and softmax run the form of their kernel (``mnnlite.kernels.table``) that ``call.impl`` names.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..format.tables import OpType
from ..kernels import table as kernel_table
from .geometry import f32
from .registry import register
from .weights import conv_weights

_F32 = np.float32


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
    return [kernel_table.form("matmul", call.impl)(flat, w, False, True, b)]


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
    kernel = kernel_table.form("matmul", call.impl)
    try:
        y = kernel(a, b, ta, tb, None)
    except ValueError as exc:
        raise ShapeError(f"op {call.op.name!r} ({OpType(call.op.type).name}): {exc}") from None
    return [y + bias if bias is not None else y]


# ---------------------------------------------------------------------------------------- softmax

def softmax_ref(x, axis: int) -> np.ndarray:
    """backend/cpu/CPUSoftmax.cpp: exp(x - max) / sum over ``axis`` of the stored dims (the reference form
    of kernel "softmax", mnnlite.kernels.table)."""
    x = x.astype(_F32, copy=False)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True, dtype=_F32)).astype(_F32, copy=False)


@register(OpType.Softmax)
def softmax(call):
    axis = call.params.axis if call.params is not None else 0
    return [kernel_table.form("softmax", call.impl)(call.inputs[0], axis)]
