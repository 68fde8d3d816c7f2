"""Shape ops: compute a shape, or give a tensor a new shape without reordering its elements.

Shape, Rank, Size, Reshape, Flatten, Squeeze, Unsqueeze, ExpandDims, Fill, Range, ZerosLike, Identity,
Dropout.  Each follows the shape function of MNN 3.6.1 (``source/shape/Shape*.cpp``) and, for the data,
the matching ``source/geometry/Geometry*.cpp``.  Also home of the small helpers every op module of this
family uses (``fail``, ``ints``, ``norm_axis``) and of the layout rule (``to_layout``).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ShapeError
from ..format.tables import DataFormat, OpType
from .registry import OpCall, register

NCHW, NHWC, NC4HW4 = DataFormat.NCHW, DataFormat.NHWC, DataFormat.NC4HW4


# ------------------------------------------------------------------------------------------- helpers

def fail(call: OpCall, message: str) -> ShapeError:
    """A ShapeError naming the op, its type and its first output tensor."""
    out = f", tensor {call.output_names[0]!r}" if call.output_names else ""
    return ShapeError(f"op {call.op.name!r} ({OpType(call.op.type).name}{out}): {message}")


def ints(arr) -> list[int]:
    """The values of a (shape-like) tensor as Python ints."""
    return [int(v) for v in np.asarray(arr).reshape(-1).tolist()]     # tolist: no numpy scalars


def norm_axis(call: OpCall, axis: int, rank: int) -> int:
    """A possibly negative axis as an index in [0, rank)."""
    if not -rank <= axis < max(rank, 1):
        raise fail(call, f"axis {axis} is out of range for a tensor of rank {rank}")
    return axis + rank if axis < 0 else axis


def is_caffe(fmt) -> bool:
    """NC4HW4 is NCHW with packed channels: the same logical tensor (registry contract)."""
    return fmt in (NCHW, NC4HW4)


def to_layout(arr: np.ndarray, src, dst) -> np.ndarray:
    """Reorder a tensor between NCHW-like and NHWC orders (MNN ConvertUtils.cpp / ShapeTensorConvert.cpp).

    Channel is axis 1 in NCHW and the last axis in NHWC; tensors of rank <= 2 are left as they are
    (ConvertUtils::compute: "2 == input->dimensions()" needs no treatment).
    """
    if is_caffe(src) == is_caffe(dst) or arr.ndim <= 2:
        return arr
    if is_caffe(src):
        return np.moveaxis(arr, 1, -1)
    return np.moveaxis(arr, -1, 1)


def param(call: OpCall, field: str, default=None):
    """A field of the op's parameter table, or ``default`` when the table or field is absent."""
    p = call.op.main
    value = getattr(p, field, None) if p is not None else None
    return default if value is None else value


# ------------------------------------------------------------------------------------ shape queries

@register(OpType.Shape)
def shape_(call: OpCall):
    """int32 shape; an NC4HW4 input read by an op whose default format is NHWC reports NHWC order
    (GeometryShape.cpp, "For compability"); ShapeParam start/end clip it (ShapeShape.cpp)."""
    x, fmt = call.inputs[0], call.formats[0]
    out_fmt = DataFormat(call.op.defaultDimentionFormat)
    dims = list(x.shape)
    if fmt == NC4HW4 and out_fmt == NHWC and x.ndim == 4:
        dims = [dims[0], dims[2], dims[3], dims[1]]
    start, end = 0, len(dims)
    p = call.op.main
    if p is not None and getattr(p, "hasStart", False):
        start = p.start + len(dims) if p.start < 0 else p.start
    if p is not None and getattr(p, "hasEnd", False):
        end = p.end + len(dims) if p.end < 0 else p.end
    start = max(0, min(start, len(dims)))
    end = max(start, min(end, len(dims)))
    call.out_formats = [out_fmt]
    return [np.array(dims[start:end], np.int32)]


@register(OpType.Rank)
def rank(call: OpCall):
    call.out_formats = [DataFormat(call.op.defaultDimentionFormat)]
    return [np.array(call.inputs[0].ndim, np.int32)]


@register(OpType.Size)
def size(call: OpCall):
    call.out_formats = [DataFormat(call.op.defaultDimentionFormat)]
    return [np.array(call.inputs[0].size, np.int32)]


# ----------------------------------------------------------------------------------------- reshapes

@register(OpType.Reshape)
def reshape(call: OpCall):
    """MNN ShapeReshape.cpp + GeometryReshape.cpp.

    * target from ``Reshape.dims`` (one input) or the runtime shape tensor (two inputs);
    * 0 keeps the input's dim at that position unless the shape tensor is NHWC (a TF model);
    * -1 takes the rest;
    * NC4HW4 input with ``dimType`` NHWC: a runtime shape arrives in NHWC order and the elements are
      reordered in NHWC order (convert to NHWC, reshape, convert back).
    """
    x, fmt = call.inputs[0], call.formats[0]
    dim_type = DataFormat(param(call, "dimType", NHWC if len(call.inputs) > 1 else NCHW))
    from_tf = False
    if len(call.inputs) > 1:
        target = ints(call.inputs[1])
        from_tf = call.formats[1] == NHWC
        if fmt == NC4HW4 and dim_type == NHWC and len(target) == 4:
            target = [target[0], target[3], target[1], target[2]]
    else:
        dims = param(call, "dims")
        if dims is None:
            raise fail(call, "Reshape has neither a dims parameter nor a shape input")
        target = ints(dims)
    out_shape = resolve_reshape(call, x.shape, target, keep_zero=not from_tf)
    if fmt == NC4HW4 and dim_type == NHWC and x.ndim >= 3:
        # the output dims stay in NCHW order: reshape the NHWC data to them with the channel last
        nhwc_shape = [out_shape[0], *out_shape[2:], out_shape[1]] if len(out_shape) >= 3 else out_shape
        y = to_layout(to_layout(x, NCHW, NHWC).reshape(nhwc_shape), NHWC, NCHW)
        return [np.ascontiguousarray(y)]
    return [x.reshape(out_shape)]


def resolve_reshape(call: OpCall, in_shape, target: list[int], keep_zero: bool = True) -> list[int]:
    """Replace 0 (copy the input dim) and one -1 (the rest) in a target shape, as ShapeReshape.cpp.
    (math.prod: Python ints, and much cheaper than np.prod on a handful of dims.)"""
    total = math.prod(int(d) for d in in_shape)
    out, infer = [], -1
    for i, d in enumerate(target):
        if d == -1:
            if infer >= 0:
                raise fail(call, f"target shape {target} has more than one -1")
            infer = i
            out.append(1)
        elif d == 0 and keep_zero:
            if i >= len(in_shape):
                raise fail(call, f"target shape {target} copies dim {i} (0) of an input of rank "
                                 f"{len(in_shape)}")
            out.append(int(in_shape[i]))
        elif d < 0:
            raise fail(call, f"target shape {target} has a negative dim {d}")
        else:
            out.append(d)
    known = math.prod(out)
    if infer >= 0:
        out[infer] = total // known if known else 0
    if math.prod(out) != total:
        raise fail(call, f"cannot reshape a tensor of shape {tuple(in_shape)} ({total} elements) "
                         f"to {target}")
    return out


@register(OpType.Flatten)
def flatten(call: OpCall):
    """ShapeReshape.cpp FlattenComputer: endAxis 0 gives 2-D [outer, inner] split at ``axis``;
    otherwise dims axis..endAxis (inclusive) merge into one."""
    x = call.inputs[0]
    axis, end = param(call, "axis", 0), param(call, "endAxis", 0)
    axis = axis + x.ndim if axis < 0 else axis
    end = end + x.ndim if end < 0 else end
    if end == 0:
        return [x.reshape(math.prod(x.shape[:axis]), -1)]
    return [x.reshape(*x.shape[:axis], -1, *x.shape[end + 1:])]


def _axes_param(call: OpCall):
    dims = param(call, "squeezeDims")
    if dims is not None:
        return ints(dims)
    return ints(call.inputs[1]) if len(call.inputs) > 1 else []


@register(OpType.Squeeze)
def squeeze(call: OpCall):
    """ShapeSqueeze.cpp: the listed axes (each must be 1), or every axis of size 1 when none listed."""
    x = call.inputs[0]
    axes = {norm_axis(call, a, x.ndim) for a in _axes_param(call)}
    for a in axes:
        if x.shape[a] != 1:
            raise fail(call, f"cannot squeeze axis {a} of size {x.shape[a]} (shape {x.shape})")
    if not axes:
        axes = {i for i, d in enumerate(x.shape) if d == 1}
    return [x.reshape([d for i, d in enumerate(x.shape) if i not in axes])]


@register(OpType.Unsqueeze)
def unsqueeze(call: OpCall):
    """ShapeSqueeze.cpp UnSqueezeSizeComputer: axes index the output, which has rank + len(axes)."""
    x = call.inputs[0]
    axes = _axes_param(call)
    rank = x.ndim + len(axes)
    marked = {norm_axis(call, a, rank) for a in axes}
    dims, it = [], iter(x.shape)
    for i in range(rank):
        dims.append(1 if i in marked else next(it, 1))
    return [x.reshape(dims)]


@register(OpType.ExpandDims)
def expand_dims(call: OpCall):
    """ShapeExpandDims.cpp: axis from the second input or ExpandDims.axis; negative counts from the end."""
    x = call.inputs[0]
    axis = ints(call.inputs[1])[0] if len(call.inputs) > 1 else param(call, "axis", 0)
    axis = axis + x.ndim + 1 if axis < 0 else axis
    if not 0 <= axis <= x.ndim:
        raise fail(call, f"axis {axis} is out of range for a tensor of rank {x.ndim}")
    return [np.expand_dims(x, axis)]


# ------------------------------------------------------------------------------------- generators

@register(OpType.Fill)
def fill(call: OpCall):
    """ShapeFill.cpp: shape from input 0, value (and dtype, layout) from input 1."""
    dims, value = ints(call.inputs[0]), call.inputs[1]
    if any(d < 0 for d in dims):
        raise fail(call, f"negative dim in shape {dims}")
    call.out_formats = [call.formats[1]]
    return [np.full(dims, value.reshape(-1)[0] if value.size else 0, dtype=value.dtype)]


@register(OpType.Range)
def range_(call: OpCall):
    """ShapeRange.cpp / CPURange.cpp: int32 or float by the start's type; length
    ceil(|limit - start| / delta) computed in float; values accumulate ``val += delta``."""
    start, limit, delta = (np.asarray(a).reshape(-1)[0] for a in call.inputs[:3])
    dtype = np.float32 if np.asarray(call.inputs[0]).dtype.kind == "f" else np.int32
    if float(delta) == 0:
        raise fail(call, "delta is 0")
    s, l, d = np.float32(start), np.float32(limit), np.float32(delta)
    n = 0 if (d > 0 and l < s) or (d < 0 and l > s) else int(np.ceil(np.abs((l - s) / d)))
    steps = np.full(n, delta, dtype)
    if n:
        steps[0] = start
    return [np.add.accumulate(steps, dtype=dtype)]


@register(OpType.ZerosLike)
def zeros_like(call: OpCall):
    return [np.zeros_like(call.inputs[0])]


@register(OpType.Identity)
def identity(call: OpCall):
    """Each input to the output at the same position (GeometryReshape.cpp CopyGeometryComputer)."""
    call.out_formats = list(call.formats)
    return list(call.inputs[:max(1, len(call.output_names))])


@register(OpType.Dropout)
def dropout(call: OpCall):
    """Inference: the identity (the converter normally removes it, RemoveDropout.cpp)."""
    return [call.inputs[0]]
