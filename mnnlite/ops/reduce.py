"""Reductions with MNN 3.6.1's CPU semantics: Reduction, ArgMax/ArgMin, TopKV2, CumSum/CumProd.

Axes index the tensor's stored dims, which are the dims of our logical arrays (NC4HW4 as NCHW).
Comments cite the MNN source (under ``source/``) each rule comes from.
"""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..format.tables import DataFormat, OpType
from ..format.tables import ReductionType as R
from .registry import register

_F32, _I32 = np.float32, np.int32
_FLT_MAX = float(np.finfo(_F32).max)


def _name(call) -> str:
    return f"op {call.op.name!r} ({OpType(call.op.type).name})"


# -------------------------------------------------------------------------------------- Reduction

def _reduce_one(x: np.ndarray, op: int, axis: tuple, integer: bool) -> np.ndarray:
    """One reduction step over ``axis`` (kept as size 1), backend/cpu/CPUReduction.cpp."""
    if op == R.SUM:
        return x.sum(axis, keepdims=True, dtype=x.dtype)
    if op == R.MEAN:
        n = int(np.prod([x.shape[a] for a in axis]))
        s = x.sum(axis, keepdims=True, dtype=np.int64 if integer else _F32)
        return (np.trunc(s / n) if integer else s / _F32(n)).astype(x.dtype)   # int: C division
    if op == R.MAXIMUM:
        return x.max(axis, keepdims=True)
    if op == R.MINIMUM:
        return x.min(axis, keepdims=True)
    if op == R.PROD:
        return x.prod(axis, keepdims=True, dtype=x.dtype)
    if op == R.ANY:                     # integer only: any element > 0 (a negative value is "false")
        return (x > 0).any(axis, keepdims=True).astype(x.dtype)
    if op == R.ALL:                     # integer only: no element == 0
        return (x != 0).all(axis, keepdims=True).astype(x.dtype)
    if op == R.ASUM:                    # no CPU kernel in MNN; the plain definitions
        return np.abs(x).sum(axis, keepdims=True, dtype=x.dtype)
    if op == R.SUMSQ:
        return (x * x).sum(axis, keepdims=True, dtype=x.dtype)
    raise UnsupportedOpError(f"Reduction: unknown ReductionType {op}")


def _axis_groups(axes: list[int], shape) -> list[tuple]:
    """geometry/GeometryReduce.cpp _computeReduceDims: sorted axes merged into runs of adjacent
    axes, each run reduced in turn (runs of total length 1 are skipped)."""
    groups, run = [], []
    for a in sorted(set(axes)):
        if run and a != run[-1] + 1:
            groups.append(tuple(run))
            run = []
        run.append(a)
    if run:
        groups.append(tuple(run))
    return [g for g in groups if int(np.prod([shape[a] for a in g])) != 1]


def _reduce_axes(call, x: np.ndarray) -> list[int] | None:
    """The reduced axes (None = all), from ``dim`` or input 1 (shape/ShapeReduction.cpp)."""
    p = call.params
    if p.dim is not None:
        raw = [int(v) for v in p.dim]
    elif len(call.inputs) > 1:
        raw = [int(v) for v in np.asarray(call.inputs[1]).reshape(-1)]
    else:
        return None
    axes = [a + x.ndim if a < 0 else a for a in raw]
    if any(not 0 <= a < x.ndim for a in axes):
        raise ShapeError(f"{_name(call)}: axes {raw} out of range for input {x.shape}")
    return axes


@register(OpType.Reduction)
def reduction(call):
    p, x = call.params, call.inputs[0]
    op = int(p.operation)
    integer = np.issubdtype(x.dtype, np.integer)
    if not integer and op in (R.ANY, R.ALL):
        raise UnsupportedOpError(f"{_name(call)}: ANY/ALL need an int32 input (MNN has no float kernel)")
    x = x.astype(_I32 if integer else _F32, copy=False)
    axes = _reduce_axes(call, x)
    if x.size == 0:                   # GeometryReduce.cpp: prod([]) = 1, everything else 0
        shape = _out_shape(x.shape, axes, p.keepDims)
        return [np.full(shape, 1 if op == R.PROD else 0, x.dtype)]
    groups = [tuple(range(x.ndim))] if not axes else _axis_groups(axes, x.shape)
    if op in (R.ASUM, R.SUMSQ):           # not MNN kernels: one step, so squares are not squared again
        groups = [tuple(sorted(set(axes)))] if axes else groups
    y = x
    for group in groups:
        y = _reduce_one(y, op, group, integer)
    return [y.reshape(_out_shape(x.shape, axes, p.keepDims))]


def _out_shape(shape, axes, keep: bool) -> tuple:
    if axes is None:
        return (1,) * len(shape) if keep else ()
    return tuple(1 if i in axes else n for i, n in enumerate(shape) if keep or i not in axes)


# ---------------------------------------------------------------------------------- ArgMax/ArgMin

@register(OpType.ArgMax, OpType.ArgMin)
def argmax(call):
    """backend/cpu/CPUArgMax.cpp (non-NC4HW4 inputs): int32 index of the first strict maximum
    (minimum) along ``axis``, which is removed; NaN never wins and a slice with nothing above -FLT_MAX
    (below FLT_MAX) gives 0.  ``topK`` and ``outMaxVal`` only act on the legacy Caffe NC4HW4 path."""
    if call.formats[0] == DataFormat.NC4HW4:
        raise UnsupportedOpError(f"{_name(call)}: the legacy Caffe (NC4HW4) ArgMax is not supported")
    x = call.inputs[0]
    if x.dtype == _I32:               # MNN reads the buffer as float
        x = x.view(_F32)
    x = x.astype(_F32, copy=False)
    axis = call.params.axis if call.params is not None else 0
    axis = axis + x.ndim if axis < 0 else axis
    if call.op.type == OpType.ArgMax:
        v = np.where(np.isnan(x), -np.inf, x)
        idx, best = v.argmax(axis), v.max(axis)
        found = best > -_FLT_MAX
    else:
        v = np.where(np.isnan(x), np.inf, x)
        idx, best = v.argmin(axis), v.min(axis)
        found = best < _FLT_MAX
    return [np.where(found, idx, 0).astype(_I32)]


# ------------------------------------------------------------------------------------------ TopKV2

def _sift_down(a: list, hole: int, n: int, value, worse):
    """libstdc++ __adjust_heap followed by __push_heap, on a heap ordered by ``worse(parent, child)``."""
    top, child = hole, hole
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if worse(a[child], a[child - 1]):
            child -= 1
        a[hole] = a[child]
        hole = child
    if n % 2 == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        a[hole] = a[child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and worse(a[parent], value):
        a[hole] = a[parent]
        hole = parent
        parent = (hole - 1) // 2
    a[hole] = value


def _partial_sort(row: np.ndarray, k: int, largest: bool) -> list:
    """(value, index) of std::partial_sort(begin, begin + k, end, comp) as libstdc++ runs it
    (heap select, then sort_heap): the exact tie order of backend/cpu/CPUTopKV2.cpp findTopK."""
    comp = (lambda p, q: p[0] > q[0]) if largest else (lambda p, q: p[0] < q[0])
    a = [(v, i) for i, v in enumerate(row.tolist())]
    for parent in range((k - 2) // 2, -1, -1):                # make_heap
        _sift_down(a, parent, k, a[parent], comp)
    for i in range(k, len(a)):                                # heap select
        if comp(a[i], a[0]):
            value, a[i] = a[i], a[0]
            _sift_down(a, 0, k, value, comp)
    for last in range(k - 1, 0, -1):                          # sort_heap
        value, a[last] = a[last], a[0]
        _sift_down(a, 0, last, value, comp)
    return a[:k]


def _topk_rows(x2: np.ndarray, k: int, largest: bool):
    """Values and int32 indices of the top k of each row of a 2-D array."""
    if k == 1 and largest:           # CPUTopKV2.cpp: MNNVectorTop1*, first strict maximum from x[0]
        v = np.where(np.isnan(x2), -np.inf, x2) if x2.dtype.kind == "f" else x2
        idx = v.argmax(axis=1)
        idx = np.where(np.isnan(x2[:, 0]), 0, idx) if x2.dtype.kind == "f" else idx
        return np.take_along_axis(x2, idx[:, None], 1), idx[:, None].astype(_I32)
    key = -x2 if largest else x2
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    values = np.take_along_axis(x2, order, 1)
    # Rows with repeated values (or NaN) take libstdc++'s heap order instead of the stable one.
    for r in np.flatnonzero(_has_ties(x2)):
        pairs = _partial_sort(x2[r], k, largest)
        values[r] = [p[0] for p in pairs]
        order[r] = [p[1] for p in pairs]
    return values, order.astype(_I32)


def _has_ties(x2: np.ndarray) -> np.ndarray:
    s = np.sort(x2, axis=1)
    ties = (s[:, 1:] == s[:, :-1]).any(axis=1) if x2.shape[1] > 1 else np.zeros(len(x2), bool)
    return ties | (np.isnan(x2).any(axis=1) if x2.dtype.kind == "f" else False)


@register(OpType.TopKV2)
def topk(call):
    """Inputs x, k[, axis]; outputs the k values and int32 indices along ``axis`` (default last),
    sorted (geometry/GeometryTopK.cpp moves the axis last, backend/cpu/CPUTopKV2.cpp sorts it)."""
    x = call.inputs[0]
    k = int(np.asarray(call.inputs[1]).reshape(-1)[0])
    axis = int(np.asarray(call.inputs[2]).reshape(-1)[0]) if len(call.inputs) > 2 else -1
    axis = axis + x.ndim if axis < 0 else axis
    largest = call.params.largest if call.params is not None else True
    if not 0 <= axis < x.ndim or not 0 < k <= x.shape[axis]:
        raise ShapeError(f"{_name(call)}: k={k} axis={axis} do not fit input {x.shape}")
    moved = np.moveaxis(x, axis, -1)
    values, index = _topk_rows(moved.reshape(-1, moved.shape[-1]), k, largest)
    shape = moved.shape[:-1] + (k,)
    return [np.ascontiguousarray(np.moveaxis(values.reshape(shape), -1, axis)),
            np.ascontiguousarray(np.moveaxis(index.reshape(shape), -1, axis))]


# ------------------------------------------------------------------------------ CumSum / CumProd

@register(OpType.CumSum, OpType.CumProd)
def cumulative(call):
    """geometry/GeometryCumSum.cpp: a running ADD (CumSum: axis from input 1, ``exclusive`` and
    ``reverse`` from the CumSum table) or MUL (CumProd: axis from the Axis table), sequential."""
    x = call.inputs[0]
    p = call.params
    if call.op.type == OpType.CumSum:
        axis = int(np.asarray(call.inputs[1]).reshape(-1)[0])
        exclusive = bool(p.exclusive) if p is not None else False
        reverse = bool(p.reverse) if p is not None else False
        fn, identity = np.cumsum, 0
    else:
        axis, exclusive, reverse = (p.axis if p is not None else 0), False, False
        fn, identity = np.cumprod, 1
    axis = (axis + x.ndim) % x.ndim
    y = np.flip(x, axis) if reverse else x
    y = fn(y, axis=axis, dtype=x.dtype)
    if exclusive:                    # out[i] = out[i-1] + x[i-1], out[0] = 0
        first = np.full_like(y.take([0], axis=axis), identity)
        y = np.concatenate([first, y.take(np.arange(y.shape[axis] - 1), axis=axis)], axis=axis)
    return [np.ascontiguousarray(np.flip(y, axis) if reverse else y)]
