"""Data-movement ops: copy elements of their inputs to new positions, no arithmetic.

ConvertTensor, Concat, Slice, SliceTf, StridedSlice, Permute, Transpose, Padding, Tile, BroadcastTo,
Pack, Unpack, Gather, GatherV2, GatherND, DepthToSpace, SpaceToDepth, Reverse and Raster.  Semantics
follow MNN 3.6.1's shape functions (``source/shape``) and geometry (``source/geometry``); each kernel
is the numpy reference (these ops have no separate fast path).  Axes count in the tensor's own layout:
an NC4HW4 tensor is held as NCHW, so its axis 1 is the channel (registry contract).
"""
from __future__ import annotations

import numpy as np

from ..format.tables import DataFormat, OpType
from .const import numpy_dtype
from .registry import OpCall, register
from .shape import NCHW, NHWC, fail, ints, norm_axis, param, to_layout


@register(OpType.ConvertTensor)
def convert_tensor(call: OpCall):
    """Layout change to ``TensorConvertInfo.dest``; the source is the input's real layout, as in
    ConvertUtils::compute (NCHW <-> NC4HW4 moves no logical element)."""
    dest = DataFormat(param(call, "dest", NCHW))
    call.out_formats = [dest]
    return [np.ascontiguousarray(to_layout(call.inputs[0], call.formats[0], dest))]


@register(OpType.Concat)
def concat(call: OpCall):
    """ShapeConcat.cpp: ``Axis.axis`` in the first input's rank; other dims must agree."""
    xs = call.inputs
    axis = norm_axis(call, param(call, "axis", 0), xs[0].ndim)
    outside = lambda shape: shape[:axis] + shape[axis + 1:]  # noqa: E731
    for i, x in enumerate(xs):
        if x.ndim != xs[0].ndim or outside(x.shape) != outside(xs[0].shape):
            raise fail(call, f"input {call.input_names[i]!r} has shape {x.shape}, which does not match "
                             f"{xs[0].shape} outside axis {axis}")
    dtype = np.result_type(*xs)
    return [np.concatenate([x.astype(dtype, copy=False) for x in xs], axis=axis)]


@register(OpType.Slice)
def slice_(call: OpCall):
    """Split along ``Slice.axis`` into consecutive pieces (ShapeSlice.cpp, GeometrySlice.cpp).

    Caffe: slicePoints are cut positions.  TF/ONNX/Torch: one value means equal parts (TF: the number of
    parts; Torch: the part size), several values are part sizes with at most one -1 (the rest); a second
    input replaces the sizes.
    """
    x = call.inputs[0]
    n_out = len(call.output_names)
    axis = norm_axis(call, param(call, "axis", 0), x.ndim)
    length = x.shape[axis]
    points = ints(call.inputs[1]) if len(call.inputs) > 1 else ints(param(call, "slicePoints", []))
    source = param(call, "sourceType", 0)
    if source == 0:  # NetSource CAFFE
        cuts = [0, *points[:n_out - 1], length]
        sizes = [b - a for a, b in zip(cuts, cuts[1:])]
    elif len(call.inputs) == 1 and len(points) <= 1:
        parts = n_out
        if source == 4 and points:          # TORCH: the value is the size of a part
            parts = length // points[0] if points[0] else 0
        elif source == 1 and points and points[0] != n_out:   # TENSORFLOW: the number of parts
            parts = points[0]
        if parts <= 0 or length % parts:
            raise fail(call, f"cannot split axis {axis} of size {length} into {parts} equal parts")
        sizes = [length // parts] * n_out
    else:
        sizes = points[:n_out]
        if sizes.count(-1) > 1:
            raise fail(call, f"split sizes {points} have more than one -1")
        if -1 in sizes:
            sizes[sizes.index(-1)] = length - sum(s for s in sizes if s != -1)
    if len(sizes) != n_out or any(s < 0 for s in sizes) or sum(sizes) > length:
        raise fail(call, f"split sizes {sizes} do not fit axis {axis} of size {length} into {n_out} outputs")
    offsets = np.cumsum([0, *sizes])
    index = [slice(None)] * x.ndim
    outs = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        index[axis] = slice(int(a), int(b))
        outs.append(x[tuple(index)])
    return outs


@register(OpType.SliceTf)
def slice_tf(call: OpCall):
    """ShapeSliceTf.cpp: begin (negative counts from the end) and size (-1 = to the end) per axis."""
    x = call.inputs[0]
    begins, sizes = ints(call.inputs[1]), ints(call.inputs[2])
    if len(begins) != x.ndim or len(sizes) != x.ndim:
        raise fail(call, f"begin {begins} and size {sizes} need one entry per dim of shape {x.shape}")
    index = []
    for b, n, d in zip(begins, sizes, x.shape):
        b = b + d if b < 0 else b
        n = d - b if n == -1 else n
        if b < 0 or b > d or n < 0 or b + n > d:
            raise fail(call, f"begin {begins} / size {sizes} are out of range for shape {x.shape}")
        index.append(slice(b, b + n))
    return [x[tuple(index)]]


# ------------------------------------------------------------------------------------ StridedSlice

def _strided_spec(call: OpCall, shape):
    """Per-dim (begin, end, stride, begin_mask, end_mask, shrink, new_axis) after MNN's ellipsis and
    fromType handling (ShapeStridedSlice.cpp, GeometryStridedSlice.cpp)."""
    rank, p = len(shape), call.op.main
    begin, end = ints(call.inputs[1]), ints(call.inputs[2])
    n = len(begin)
    masks = [getattr(p, m, 0) for m in ("beginMask", "endMask", "shrinkAxisMask", "newAxisMask")]
    bits = [tuple(bool(m >> i & 1) for m in masks) for i in range(max(n, rank))]
    if getattr(p, "fromType", 0) == 1:
        # ONNX Slice: inputs begin, end, axes, steps; a negative begin/end counts once from the end
        axes = ints(call.inputs[3]) if len(call.inputs) > 3 else list(range(n))
        steps = ints(call.inputs[4]) if len(call.inputs) > 4 else [1] * n
        b, e, s = [0] * rank, list(shape), [1] * rank
        for i in range(n):
            a = norm_axis(call, axes[i], rank)
            s[a] = steps[i]
            b[a] = begin[i] + shape[a] if begin[i] < 0 else begin[i]
            e[a] = end[i] + shape[a] if end[i] < 0 else end[i]
        return [(b[i], e[i], s[i], *bits[i]) for i in range(rank)]
    strides = ints(call.inputs[3]) if len(call.inputs) > 3 else [1] * n
    spec = [(begin[i], end[i], strides[i], *bits[i]) for i in range(n)]
    ellipsis = getattr(p, "ellipsisMask", 0)
    if ellipsis:
        if ellipsis & (ellipsis - 1):
            raise fail(call, f"ellipsisMask {ellipsis} has more than one bit set")
        pos = (ellipsis & -ellipsis).bit_length() - 1
        # the ellipsis entry stands for the rank - n + 1 dims it covers, each taken whole
        full = [(0, d, 1, False, False, False, False) for d in shape[pos:pos + rank - n + 1]]
        spec = spec[:pos] + full + spec[pos + 1:]
    return spec


def _strided_index(call: OpCall, shape) -> list:
    """A numpy basic index (ints for shrunk dims, slices, None for new axes) equal to the StridedSlice.

    Clamping as MNN: with a positive stride a begin is clipped to the dim and a negative one wraps
    (UP_DIV), an end is clipped to [-d-1, d] and then counts from the end; with a negative stride the
    begin is clipped to [-d, d-1] and the end to [-1, d] ("-1" = before element 0, not the last one).
    """
    index, dim = [], 0
    for b, e, s, begin_mask, end_mask, shrink, new in _strided_spec(call, shape):
        if new:
            index.append(None)
            continue
        if dim >= len(shape):
            raise fail(call, f"slices more dims than the input shape {tuple(shape)} has")
        d = shape[dim]
        dim += 1
        s = 1 if shrink else s
        if s == 0:
            raise fail(call, "a stride is 0")
        if s > 0:
            b = 0 if begin_mask else min(d, b)
            b = b % d if b < 0 and d else b
            e = d if end_mask else min(max(e, -d - 1), d)
            e = e + d if e < 0 else e
            count = max(0, -(-(e - b) // s))
        else:
            b = d - 1 if begin_mask else min(max(b, -d), d - 1)
            b = b + d if b < 0 else b
            e = -1 if end_mask else max(-1, min(d, e))
            count = max(0, -(-(b - e) // -s))
        if shrink:
            if not 0 <= b < d:
                raise fail(call, f"index {b} is out of range for a dim of size {d}")
            index.append(b)
            continue
        stop = b + count * s
        index.append(slice(b, stop if stop >= 0 else None, s) if count else slice(0, 0))
    return index


@register(OpType.StridedSlice)
def strided_slice(call: OpCall):
    """TF-style (fromType 0: begin/end/strides with begin/end/shrink/newAxis/ellipsis masks) and
    ONNX-style (fromType 1: begin/end/axes/steps).  fromType 0 with a fifth input writes that input
    (broadcast) into the selected region of a copy of input 0 (GeometryStridedSlice.cpp)."""
    x = call.inputs[0]
    index = tuple(_strided_index(call, x.shape))
    if getattr(call.op.main, "fromType", 0) != 0 or len(call.inputs) != 5:
        return [np.ascontiguousarray(x[index])]
    out_shape = x[index].shape
    region = tuple(i for i in index if i is not None)
    y = x.copy()
    value = call.inputs[4].astype(x.dtype, copy=False)
    if value.size == int(np.prod(out_shape)):
        value = value.reshape(out_shape)     # same element count: a plain copy (ConvertUtils::broadcastto)
    y[region] = np.broadcast_to(value, out_shape).reshape(y[region].shape)
    return [y]


# --------------------------------------------------------------------------------------- reorders

@register(OpType.Permute)
def permute(call: OpCall):
    """ShapePermute.cpp: ``Permute.dims``; absent dims reverse the axes."""
    x = call.inputs[0]
    dims = param(call, "dims")
    perm = ints(dims) if dims is not None else list(range(x.ndim))[::-1]
    return [np.ascontiguousarray(np.transpose(x, _check_perm(call, perm, x.ndim)))]


@register(OpType.Transpose)
def transpose(call: OpCall):
    """ShapeTranspose.cpp: the permutation is input 1 (each axis exactly once, no negatives)."""
    x = call.inputs[0]
    return [np.ascontiguousarray(np.transpose(x, _check_perm(call, ints(call.inputs[1]), x.ndim)))]


def _check_perm(call: OpCall, perm, rank):
    if sorted(perm) != list(range(rank)):
        raise fail(call, f"permutation {perm} is not a permutation of the {rank} axes")
    return perm


@register(OpType.Reverse)
def reverse(call: OpCall):
    """GeometryReverseSequence.cpp GeometryReverse: flip along the axis given by input 1."""
    x = call.inputs[0]
    return [np.ascontiguousarray(np.flip(x, norm_axis(call, ints(call.inputs[1])[0], x.ndim)))]


_PAD_MODES = {0: "constant", 1: "reflect", 2: "symmetric", 3: "edge"}


@register(OpType.Padding)
def padding(call: OpCall):
    """Pad (or, with negative pads, crop) each dim by (before, after) pairs from input 1
    (ShapePadding.cpp); ``PadParam.mode`` CONSTANT (value = input 2, default 0), REFLECT,
    SYMMETRIC or EDGE (GeometryCrop.cpp GeometryPad)."""
    x = call.inputs[0]
    pads = ints(call.inputs[1])
    if len(pads) < 2 * x.ndim:
        raise fail(call, f"{len(pads)} pad values for a tensor of rank {x.ndim} (need {2 * x.ndim})")
    pairs = [(pads[2 * i], pads[2 * i + 1]) for i in range(x.ndim)]
    crop = tuple(slice(max(0, -b), d - max(0, -a)) for (b, a), d in zip(pairs, x.shape))
    x = x[crop]
    pairs = [(max(0, b), max(0, a)) for b, a in pairs]
    if any(d <= 0 for d in x.shape):
        raise fail(call, f"pads {pads} leave nothing of the input")
    mode = _PAD_MODES.get(int(param(call, "mode", 0)))
    if mode is None:
        raise fail(call, f"unknown PadParam.mode {param(call, 'mode')}")
    if mode == "constant":
        value = call.inputs[2].reshape(-1)[0] if len(call.inputs) > 2 and call.inputs[2].size else 0
        return [np.pad(x, pairs, mode="constant", constant_values=value)]
    if mode == "reflect" and any(max(p) > d - 1 for p, d in zip(pairs, x.shape)):
        raise fail(call, f"reflect pads {pads} must be smaller than the dims {x.shape}")
    return [np.pad(x, pairs, mode=mode)]


@register(OpType.Tile)
def tile(call: OpCall):
    """ShapeTile.cpp: one multiple per dim."""
    x, reps = call.inputs[0], ints(call.inputs[1])
    if len(reps) != x.ndim or any(r < 0 for r in reps):
        raise fail(call, f"multiples {reps} do not fit a tensor of shape {x.shape}")
    return [np.tile(x, reps)]


@register(OpType.BroadcastTo)
def broadcast_to(call: OpCall):
    """ShapeBroadcastTo.cpp: numpy-style two-way broadcast of the input and the shape input; with a
    non-zero ``Axis.axis`` ("forward", TF select) the input aligns with the leading dims instead."""
    x, shape = call.inputs[0], ints(call.inputs[1])
    if param(call, "axis", 0):
        x = x.reshape(x.shape + (1,) * (len(shape) - x.ndim))
    try:
        out = np.broadcast_shapes(x.shape, tuple(shape))
    except ValueError:
        raise fail(call, f"cannot broadcast shape {x.shape} to {shape}") from None
    return [np.ascontiguousarray(np.broadcast_to(x, out))]


@register(OpType.Pack)
def pack(call: OpCall):
    """ShapePack.cpp: stack the inputs along a new axis ``PackParam.axis`` of the output."""
    xs = call.inputs
    axis = norm_axis(call, param(call, "axis", 0), xs[0].ndim + 1)
    if any(x.shape != xs[0].shape for x in xs):
        raise fail(call, f"inputs of different shapes: {[x.shape for x in xs]}")
    dtype = np.result_type(*xs)
    return [np.stack([x.astype(dtype, copy=False) for x in xs], axis=axis)]


@register(OpType.Unpack)
def unpack(call: OpCall):
    """ShapeUnpack.cpp / GeometrySlice.cpp: the first n slices along ``Axis.axis``, axis removed."""
    x = call.inputs[0]
    axis = norm_axis(call, param(call, "axis", 0), x.ndim)
    n = len(call.output_names)
    if n > x.shape[axis]:
        raise fail(call, f"{n} outputs from an axis of size {x.shape[axis]}")
    return [np.take(x, i, axis=axis) for i in range(n)]


# ------------------------------------------------------------------------------------------ gathers

@register(OpType.Gather, OpType.GatherV2)
def gather(call: OpCall):
    """ShapeGatherV2.cpp / GeometryGather.cpp: axis from input 2, else ``Axis.axis``, else 0 (the
    ``Gather`` table's own axis is not read by MNN).

    An index outside [0, dim) gives zeros.  That is MNN's result for constant indices (the raster regions
    skip them) and for any index when the axis is the outermost one; runtime indices on an inner axis
    make CPULoop read neighbouring rows, or past the buffer, which is not reproduced.  The ONNX converter
    adds a Mod for negative indices (OnnxGather.cpp).
    """
    params, idx = call.inputs[0], call.inputs[1]
    axis = ints(call.inputs[2])[0] if len(call.inputs) > 2 else 0
    if type(call.op.main).__name__ == "Axis":
        axis = call.op.main.axis
    axis = norm_axis(call, axis, params.ndim)
    if idx.dtype.kind not in "iu":
        raise fail(call, f"indices {call.input_names[1]!r} must be integers, got {idx.dtype}")
    valid = (idx >= 0) & (idx < params.shape[axis])
    out = np.take(params, np.where(valid, idx, 0), axis=axis)
    if not valid.all():
        mask = valid.reshape((1,) * axis + idx.shape + (1,) * (params.ndim - axis - 1))
        out = np.where(mask, out, np.zeros((), params.dtype))
    return [out]


@register(OpType.GatherND)
def gather_nd(call: OpCall):
    """ShapeGatherND.cpp: the last dim of the indices addresses the leading dims of params after
    ``Axis.axis`` batch dims.  An index tuple outside params gives zeros (CPULoop zeroes offsets
    outside the whole tensor; tuples that stay inside it by wrapping are not reproduced)."""
    params, idx = call.inputs[0], call.inputs[1].astype(np.int64)
    b = param(call, "axis", 0)
    if idx.size == 0:
        return [np.zeros((0, params.shape[-1]), params.dtype)]
    nd = idx.shape[-1]
    if nd + b > params.ndim or idx.shape[:b] != params.shape[:b]:
        raise fail(call, f"indices of shape {idx.shape} do not fit params of shape {params.shape} "
                         f"with {b} batch dims")
    batch = int(np.prod(params.shape[:b], dtype=np.int64))
    p = params.reshape(batch, *params.shape[b:])
    i = idx.reshape(batch, -1, nd)
    dims = np.array(params.shape[b:b + nd])
    valid = ((i >= 0) & (i < dims)).all(axis=-1)
    i = np.where(valid[..., None], i, 0)
    rows = p[(np.arange(batch)[:, None], *np.moveaxis(i, -1, 0))]
    rows = np.where(valid.reshape(valid.shape + (1,) * (rows.ndim - 2)), rows, np.zeros((), p.dtype))
    return [rows.reshape(*idx.shape[:-1], *params.shape[b + nd:])]


# --------------------------------------------------------------------------------- depth <-> space

def _channel_last(x, fmt):
    """View as NHWC (the order both block ops are defined in) and the way back."""
    if fmt == NHWC:
        return x, lambda y: y
    return np.moveaxis(x, 1, -1), lambda y: np.ascontiguousarray(np.moveaxis(y, -1, 1))


def _block(call: OpCall):
    bs = param(call, "blockSize", 0)
    if bs < 1 or call.inputs[0].ndim != 4:
        raise fail(call, f"needs a 4-D input and blockSize >= 1, got shape {call.inputs[0].shape}, "
                         f"blockSize {bs}")
    return bs, "CRD" if param(call, "mode", 0) == 1 else "DCR"


@register(OpType.DepthToSpace)
def depth_to_space(call: OpCall):
    """GeometryDepthToSpace.cpp: channel c of output block (hb, wb) reads input channel
    (hb*bs + wb)*C + c in DCR mode, c*bs*bs + hb*bs + wb in CRD mode."""
    bs, mode = _block(call)
    x, back = _channel_last(call.inputs[0], call.formats[0])
    n, h, w, c = x.shape
    if c % (bs * bs):
        raise fail(call, f"channels {c} are not a multiple of blockSize^2 = {bs * bs}")
    oc = c // (bs * bs)
    if mode == "DCR":
        y = x.reshape(n, h, w, bs, bs, oc)
    else:
        y = x.reshape(n, h, w, oc, bs, bs).transpose(0, 1, 2, 4, 5, 3)    # -> n, h, w, hb, wb, c
    return [back(y.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * bs, w * bs, oc))]


@register(OpType.SpaceToDepth)
def space_to_depth(call: OpCall):
    """The inverse of DepthToSpace with the same mode (the geometry swaps input and output)."""
    bs, mode = _block(call)
    x, back = _channel_last(call.inputs[0], call.formats[0])
    n, h, w, c = x.shape
    if h % bs or w % bs:
        raise fail(call, f"H {h} and W {w} must be multiples of blockSize {bs}")
    y = x.reshape(n, h // bs, bs, w // bs, bs, c).transpose(0, 1, 3, 2, 4, 5)   # n, h', w', hb, wb, c
    if mode == "CRD":
        y = y.transpose(0, 1, 2, 5, 3, 4)
    return [back(y.reshape(n, h // bs, w // bs, c * bs * bs))]


# -------------------------------------------------------------------------------------------- Raster

@register(OpType.Raster)
def raster(call: OpCall):
    """Copy 3-D boxes of elements (``Region``) from the inputs into a zeroed output.

    Region i reads input i (CPURaster.cpp resets each region's origin to the op's i-th input); element
    (a, b, c) goes from ``src.offset + a*s0 + b*s1 + c*s2`` of the input to the same formula over
    ``dst`` in the output.  Offsets address the flat logical tensor (NCHW order for NC4HW4: the CPU
    backend converts NC4HW4 through NCHW around regions).  Regions, shape, type and layout come from
    the output's TensorDescribe in static models, else from the op's Extra attributes
    (``region`` = 11 ints per input, ``shape``, ``code``/``bits``, ``format``; GeometryShape.cpp).
    """
    regions, shape, dtype, fmt = _raster_plan(call)
    out = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype)
    for x, (src, dst, size) in zip(call.inputs, regions):
        flat = x.reshape(-1)
        grid = [np.arange(n) for n in size]
        si = _offsets(src, grid)
        di = _offsets(dst, grid)
        if si.size and (si.min() < 0 or si.max() >= flat.size or di.min() < 0 or di.max() >= out.size):
            raise fail(call, f"region {src}/{dst} x {size} leaves the tensors ({flat.size} -> {out.size})")
        out[di] = flat[si]
    call.out_formats = [fmt]
    return [out.reshape(shape)]


def _offsets(view, grid):
    offset, (s0, s1, s2) = view
    a, b, c = grid
    return (offset + a[:, None, None] * s0 + b[None, :, None] * s1 + c[None, None, :] * s2).reshape(-1)


_HALIDE = {(0, 8): np.int8, (0, 32): np.int32, (1, 8): np.uint8, (2, 32): np.float32}  # (code, bits)


def _raster_plan(call: OpCall):
    x0 = call.inputs[0] if call.inputs else np.zeros(0, np.float32)
    shape, dtype = list(x0.shape), x0.dtype
    fmt = call.formats[0] if call.formats else NCHW
    describe = call.runtime.describe(call.op.outputIndexes[0]) if call.runtime is not None else None
    regions = []
    if describe is not None and describe.regions:
        for r in describe.regions:
            regions.append(((r.src.offset, tuple(ints(r.src.stride))), (r.dst.offset, tuple(ints(r.dst.stride))),
                            tuple(ints(r.size))))
    if describe is not None and describe.blob is not None:
        blob = describe.blob
        shape = ints(blob.dims) if blob.dims is not None else []
        fmt = DataFormat(blob.dataFormat)
        dtype = numpy_dtype(blob.dataType)
    extra = call.op.main
    for attr in (getattr(extra, "attr", None) or []):
        values = ints(attr.list.i) if attr.list is not None and attr.list.i is not None else []
        if attr.key == "region":
            regions = [((v[0], tuple(v[1:4])), (v[4], tuple(v[5:8])), tuple(v[8:11]))
                       for v in (values[11 * k:11 * k + 11] for k in range(len(values) // 11))]
        elif attr.key == "shape":
            shape = values
        elif attr.key == "format":
            fmt = DataFormat(attr.i)
    codes = {a.key: a.i for a in (getattr(extra, "attr", None) or []) if a.key in ("code", "bits")}
    if codes:
        dtype = _HALIDE.get((codes.get("code", 2), codes.get("bits", 32)), dtype)
    if len(regions) < len(call.inputs):
        raise fail(call, f"{len(regions)} regions for {len(call.inputs)} inputs")
    return regions[:len(call.inputs)], shape, dtype, fmt
