"""MNN's CPU-backend preparation of a graph: constant folding and geometry lowering to commands.

MNN's runtime does not execute the ops of the file: after "geometry lowering", data-movement ops
(ConvertTensor, Reshape, Concat, Slice, Permute, ...) no longer run; their outputs are *virtual* views,
and a ``Raster`` command named ``<consumer>_raster_<k>`` materialises a view right before the first op
that needs its memory.  ``lower`` reproduces that schedule on our graph (from the tensor shapes seen in
one forward).  The rules come from MNN 3.6.1's geometry code (``source/geometry``,
``GeometryComputerUtils.cpp``, ``Pipeline.cpp``) and are checked against the commands the official
runtime executes (tests/quant/test_pipeline_tracking.py, tests/int8_runtime/test_int8_plan_vs_mnn.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..format.tables import DataFormat, OpType
from ..layout import op_output_format

NCHW, NHWC, NC4HW4 = int(DataFormat.NCHW), int(DataFormat.NHWC), int(DataFormat.NC4HW4)

# --------------------------------------------------------------------------------------------------
# Op families after MNN's geometry lowering
# --------------------------------------------------------------------------------------------------
# Pure data movement: the output is a view (regions) over these inputs; no command runs for the op.
_VIEW_ALL_INPUTS = {OpType.Concat, OpType.Pack, OpType.QuantizedConcat}
_VIEW_FIRST_INPUT = {
    OpType.ConvertTensor, OpType.Reshape, OpType.QuantizedReshape, OpType.Flatten, OpType.Squeeze,
    OpType.Unsqueeze, OpType.ExpandDims, OpType.Identity, OpType.Permute, OpType.Transpose,
    OpType.Slice, OpType.SliceTf, OpType.StridedSlice, OpType.Unpack, OpType.Tile, OpType.BroadcastTo,
    OpType.DepthToSpace, OpType.SpaceToDepth, OpType.Crop, OpType.Padding, OpType.Reverse,
    OpType.ReverseSequence,
}
VIEW_OPS = frozenset(_VIEW_ALL_INPUTS | _VIEW_FIRST_INPUT)

# OpCommonUtils::opNeedContent: inputs whose data an op never reads (only their shape).
_NO_CONTENT_ALL = {OpType.ZerosLike, OpType.ZeroGrad, OpType.Shape, OpType.Rank, OpType.Const, OpType.Size,
                   OpType.PriorBox}
_NO_CONTENT_INPUT1 = {OpType.Interp, OpType.Crop, OpType.Reshape, OpType.Reduction, OpType.Resize}

# SizeComputer::needInputContent: inputs read at shape-computation time (they become constants).
_SHAPE_INPUTS = {
    OpType.BatchToSpaceND: (1, 2), OpType.BroadcastTo: (1,), OpType.Col2Im: (1,),
    OpType.CosineSimilarity: (2,), OpType.CropAndResize: (3,), OpType.ExpandDims: (1,), OpType.Fill: (0,),
    OpType.GatherV2: (2,), OpType.GridSample: (2,), OpType.Interp: (1,), OpType.Interp3D: (1,),
    OpType.LinSpace: (2,), OpType.NonMaxSuppressionV2: (2, 3), OpType.OneHot: (1,), OpType.Padding: (1,),
    OpType.RandomUniform: (0,), OpType.RandomNormal: (0,), OpType.Range: (0, 1, 2), OpType.Reduction: (1,),
    OpType.Reshape: (1,), OpType.QuantizedReshape: (1,), OpType.ScatterNd: (2,), OpType.Segment: (1,),
    OpType.SetDiff1D: (0, 1), OpType.Slice: (1,), OpType.SliceTf: (1, 2), OpType.SpaceToBatchND: (1, 2),
    OpType.Tile: (1,), OpType.TopKV2: (1, 2), OpType.Transpose: (1,), OpType.Unique: (0,),
    OpType.Where: (0,), OpType.CumSum: (1,),
}


def op_needs_content(op, index: int) -> bool:
    """MNN's ``OpCommonUtils::opNeedContent``."""
    if op.type in _NO_CONTENT_ALL:
        return False
    if op.type in _NO_CONTENT_INPUT1 and index == 1:
        return False
    if op.type == OpType.GridSample and index == 2:
        return False
    return True


def shape_inputs(op) -> tuple[int, ...]:
    """MNN's ``SizeComputer::needInputContent``: inputs whose values decide output shapes."""
    n = len(ints(op.inputIndexes))
    if op.type == OpType.Deconvolution and op.main is not None and op.main.common is not None \
            and op.main.common.hasOutputShape:
        return (n - 1,)
    if n > 1 and op.type in (OpType.Squeeze, OpType.Unsqueeze, OpType.ReverseSequence, OpType.Reverse):
        return (1,)
    if op.type == OpType.StridedSlice and op.main is not None and type(op.main).__name__ == "StridedSliceParam":
        if op.main.fromType == 0:
            return () if n == 5 else (1, 2, 3)
        return (1, 2, 3, 4)
    return _SHAPE_INPUTS.get(op.type, ())


def ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


# --------------------------------------------------------------------------------------------------
# The lowered schedule
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One command MNN executes (what its debug callbacks report)."""

    name: str                   # op name, or "<op>_raster_<k>" for commands geometry made up
    type: str                   # "Raster", "Convolution", "While", ...
    inputs: tuple[int, ...]     # tensor indexes; negative = temporaries (MNN index -1)
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TensorFacts:
    """What one forward tells about a tensor: its logical (NCHW-order) shape and element type."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


class Lowering:
    """Replays MNN's geometry pass over the main graph (ops in execution order)."""

    def __init__(self, graph, facts: dict[int, TensorFacts]):
        self.graph = graph
        self.facts = facts
        self.formats: dict[int, int] = {}
        self.views: dict[int, list[int]] = {}      # virtual tensor -> region origins (while not materialised)
        self.was_view: set[int] = set()            # MNN keeps memoryType VIRTUAL after a raster is made
        self.reordered: set[int] = set()           # views whose regions pass through a transpose
        self.unfused: dict[int, int] = {}          # packing view -> reshaped-transpose view it cannot fuse
        self.temps = 0
        self.steps: list[Step] = []
        self.outputs = set(graph.outputs)
        self.constant_ops = _constant_ops(graph)
        self.constant_tensors = {t for op in graph.ops if id(op) in self.constant_ops
                                 for t in ints(op.outputIndexes)}

    # -- tensor facts --------------------------------------------------------------------------------
    def _fmt(self, t: int) -> int:
        return self.formats.get(t, NCHW)

    def _size(self, t: int) -> int:
        fact = self.facts.get(t)
        return fact.size if fact is not None else 0

    def _rank(self, t: int) -> int:
        fact = self.facts.get(t)
        return len(fact.shape) if fact is not None else 0

    def _temp(self, fmt: int) -> int:
        self.temps += 1
        self.formats[-self.temps] = fmt
        return -self.temps

    # -- formats (SizeComputer) ------------------------------------------------------------------------
    def _set_formats(self, op) -> None:
        ins = ints(op.inputIndexes)
        fmt = op_output_format(op, [self._fmt(t) for t in ins], [self._rank(t) for t in ins])
        for t in ints(op.outputIndexes):
            self.formats[t] = fmt

    # -- commands ------------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        for op in self.graph.ops:
            self._set_formats(op)
            if op.type in (OpType.Input, OpType.Const, OpType.TrainableParam) or id(op) in self.constant_ops:
                continue
            buffer: list[tuple[str | None, str, list[int], list[int]]] = []
            if op.type in VIEW_OPS:
                self._view(op)
            else:
                for name, kind, ins, outs in self._commands(op):
                    self._materialise_inputs(op, kind, ins, buffer)
                    buffer.append((name, kind, ins, outs))
            for t in ints(op.outputIndexes):
                if t in self.outputs and t in self.views:
                    self._materialise(t, buffer)
            for k, (name, kind, ins, outs) in enumerate(buffer):
                self.steps.append(Step(name if name is not None else f"{op.name}_raster_{k}", kind,
                                       tuple(ins), tuple(outs)))
        return self.steps

    def _view(self, op) -> None:
        ins = ints(op.inputIndexes)
        sources = ins if op.type in _VIEW_ALL_INPUTS else ins[:1]
        sources = [t for t in sources if self._size(t) > 0 or t not in self.facts]
        reordered = op.type in (OpType.Permute, OpType.Transpose) or any(t in self.reordered for t in sources)
        # MNN's region fusion fails on a packing conversion (NC4HW4) of a reshaped transpose: the reshaped
        # view gets a Raster of its own first (seen on ppocr_rec's attention: Reshape494, Reshape631)
        unfused = (op.type == OpType.ConvertTensor and op.main is not None and int(op.main.dest) == NC4HW4
                   and sources and sources[0] in self.views and sources[0] in self.reordered
                   and self._reshaped(sources[0]))
        for t in ints(op.outputIndexes):
            self.views[t] = list(sources)
            self.was_view.add(t)
            if reordered:
                self.reordered.add(t)
            if unfused:
                self.unfused[t] = sources[0]

    def _reshaped(self, t: int) -> bool:
        op = self.graph.producer.get(t)
        return op is not None and op.type in (OpType.Reshape, OpType.Flatten, OpType.Squeeze, OpType.Unsqueeze)

    def _commands(self, op):
        """The commands of one compute op: (name or None, type, inputs, outputs)."""
        ins, outs = ints(op.inputIndexes), ints(op.outputIndexes)
        kind = OpType(op.type).name
        if op.type == OpType.BinaryOp and len(ins) == 2:
            return self._binary(op, ins, outs)
        if op.type == OpType.Select and len(ins) == 3:
            out_size = self._size(outs[0])
            sizes = [self._size(ins[0]), self._size(ins[1]), self._size(ins[1])]  # sic: MNN reads input1 twice
            new = [self._broadcast(t, outs[0]) if s != out_size else t for t, s in zip(ins, sizes)]
            return [(op.name, kind, new, outs)]
        if op.type == OpType.Pooling3D and op.main is not None and op.main.isGlobal:
            return [(None, "Pooling", ins[:1], outs[:1])]
        if op.type in (OpType.MatMul, OpType.BatchMatMul):
            return [(op.name, "While", ins, outs)]
        if op.type in (OpType.Sigmoid, OpType.TanH):
            return [(op.name, "UnaryOp", ins, outs)]
        if op.type in (OpType.Interp, OpType.Resize):
            return [(op.name, "Interp", ins[:1], outs)]
        return [(op.name, kind, ins, outs)]

    def _binary(self, op, ins, outs):
        a, b = ins
        out = outs[0]
        la, lb, lo = self._size(a), self._size(b), self._size(out)
        if la == 1 or lb == 1:
            return [(op.name, "BinaryOp", [a, b], outs)]
        fo = self._fmt(out)
        nc4 = fo == NC4HW4

        def needs(t, size):
            return size != lo or self._fmt(t) != fo or (self._rank(out) != self._rank(t) and nc4)

        ba, bb = needs(a, la), needs(b, lb)
        activation = getattr(op.main, "activationType", 0) or 0
        is_float = self.facts.get(a) is None or self.facts[a].dtype.kind == "f"
        if (ba != bb) and self._fmt(a) == fo and self._fmt(b) == fo and not nc4 and is_float and activation == 0:
            return [(op.name, "While", [a, b], outs)]  # MNN_BINARY_LOOP_OPT: a loop reads the broadcast view
        if ba:
            a = self._broadcast(a, out)
        if bb:
            b = self._broadcast(b, out)
        return [(op.name, "BinaryOp", [a, b], outs)]

    def _broadcast(self, t: int, like: int) -> int:
        temp = self._temp(self._fmt(like))
        self.views[temp] = [t]
        self.was_view.add(temp)
        return temp

    def _materialise_inputs(self, op, kind, ins, buffer) -> None:
        for i, t in enumerate(ins):
            if kind != "While" and t >= 0 and not op_needs_content(op, i):
                continue
            if t in self.views:
                self._materialise(t, buffer)

    def _materialise(self, t: int, buffer) -> None:
        """A Raster writing view ``t`` from the real tensors under it (regions fuse, but for ``unfused``)."""
        origins: list[int] = []
        self._origins(t, self.views.pop(t), buffer, origins)
        buffer.append((None, "Raster", origins, [t]))

    def _origins(self, view: int, sources: list[int], buffer, origins: list[int]) -> None:
        for src in sources:
            if src in self.views and self.unfused.get(view) == src:
                self._materialise(src, buffer)          # its own Raster first; then it is a real tensor
            if src in self.views:
                self._origins(src, self.views[src], buffer, origins)
            elif src not in origins:
                origins.append(src)


def _constant_ops(graph) -> set[int]:
    """Ids of the ops MNN computes at resize time (GeometryComputerUtils::buildConstantTensors)."""
    constant: set[int] = set()
    const_tensors: set[int] = set()
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam):
            const_tensors.update(ints(op.outputIndexes))
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam, OpType.Input):
            continue
        ins = ints(op.inputIndexes)
        if all(t in const_tensors or not op_needs_content(op, i) for i, t in enumerate(ins)):
            constant.add(id(op))
            const_tensors.update(ints(op.outputIndexes))
    forced = False
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam, OpType.Input):
            continue
        if op.type == OpType.Where and type(op.main).__name__ != "Extra":
            continue   # MNN: "for compability old model"
        ins = ints(op.inputIndexes)
        for i in shape_inputs(op):
            if i < len(ins) and ins[i] not in const_tensors:
                const_tensors.add(ins[i])
                forced = True
    while forced:
        forced = False
        for op in graph.ops:
            if id(op) in constant or op.type in (OpType.Const, OpType.TrainableParam, OpType.Input):
                continue
            if any(t in const_tensors for t in ints(op.outputIndexes)):
                constant.add(id(op))
                const_tensors.update(ints(op.outputIndexes))
                const_tensors.update(ints(op.inputIndexes))
                forced = True
    return constant


def lower(graph, facts: dict[int, TensorFacts]) -> list[Step]:
    """The commands MNN's runtime executes for ``graph`` with these tensor shapes, in order."""
    return Lowering(graph, facts).run()

