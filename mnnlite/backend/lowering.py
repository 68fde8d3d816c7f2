"""MNN's CPU-backend preparation of a graph: constant folding and geometry lowering to commands.

MNN's runtime does not execute the ops of the file (docs/mnn-quantization.md §6.1, §13.1; MNN 3.6.1
``source/geometry``, ``GeometryComputerUtils.cpp``, ``Pipeline.cpp``):

1. Constant folding: ops whose content inputs are all constant, and the producers of every input read at
   shape time, run once at resize time and are no commands (``constant_ops``;
   ``GeometryComputerUtils::buildConstantTensors``).
2. Geometry: data-movement ops (Reshape, ConvertTensor, Concat, Permute, Slice, ...) only describe their
   output as regions of their inputs ("virtual" tensors); a ``Raster`` command materialises a virtual
   tensor when a compute command (or the graph output) first needs it, reading the ultimate non-virtual
   sources of the fused chain (``GeometryComputer::Context::getRasterCacheCreateRecursive``).  Region
   fusion gives up on a packing conversion (NC4HW4) of a reshaped transpose: the reshaped view gets a
   Raster of its own first (seen on ppocr_rec's attention: Reshape494, Reshape631).  Some ops add
   temporaries: broadcast copies (``GeometryBinary``, ``GeometrySelect``), NC4HW4 copies around
   convolution/pooling/interp on other layouts (``GeometryConvUtils::computeSingle``, ``GeometryImageOp``);
   Pooling3D global becomes Pooling (``GeometryPooling3D``), Sigmoid/TanH an unnamed UnaryOp
   (``GeometryUnary``: ``makeUnary``), MatMul of a rank != 2 output a Loop (``While``,
   ``GeometryBatchMatMul``), a one-sided broadcast binary op on NCHW/NHWC float data a Loop too
   (``MNN_BINARY_LOOP_OPT``).

``Lowering`` emits the commands of every op that runs, in execution order, as one list per op (its
"execute buffer"); ``mnnlite.quant.tracking`` (what MNN's quantizer observes) and ``mnnlite.backend.decide``
(which commands MNN runs in int8, for ``mnnlite.int8.plan``) both read it.  The rules are checked against
the commands the official runtime executes (tests/quant/test_pipeline_tracking.py,
tests/int8/test_plan_vs_mnn.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.tables import DataFormat, OpType, UnaryOpOperation
from ..layout import op_output_format
from .rules import (FULL_REF_OPS, NC4HW4, NC4HW4_ONLY, NCHW, RESHAPING_OPS, TRANSPOSING_OPS, VIEW_OPS, ints,
                    need_content, region_inputs, shape_inputs, skips_forced_constants)

_SOURCE_OPS = (OpType.Input, OpType.Const, OpType.TrainableParam)


@dataclass(frozen=True)
class TensorFacts:
    """What one forward tells about a tensor: its logical (NCHW-order) shape and element type."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass(eq=False)
class TensorInfo:
    """A tensor as the lowering sees it: a graph tensor (int index) or a temporary (str id)."""

    name: str
    shape: tuple | None = None                     # None: not seen in the forward
    is_float: bool = True
    layout: DataFormat = NCHW
    attr: object = None                            # quant attribute (``decide.QuantAttr``)
    const: bool = False
    virtual: bool = False                          # MNN keeps memoryType VIRTUAL after a raster is made
    sources: list = field(default_factory=list)    # region origins (with multiplicity) when virtual
    full_ref: bool = False                         # regions copied from a virtual input (makeFullRef)
    reordered: bool = False                        # its regions pass through a transpose
    unfused: object = None                         # a source view region fusion materialises first
    materialized: bool = False
    int8: bool = False                             # applyQuant: holds int8 codes at run time (``decide``)

    @property
    def size(self) -> int:
        """Elements (0 when unknown)."""
        if self.shape is None:
            return 0
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def rank(self) -> int:
        return len(self.shape) if self.shape is not None else 0


@dataclass(eq=False)
class Command:
    type: str                  # MNN op type of the command ("Convolution", "Raster", "FloatToInt8", ...)
    op: object                 # the file's op whose execute buffer holds the command
    inputs: list
    outputs: list
    named: bool = False        # carries the op's name (else "<op>_raster_<k>", OperatorInfo's naming)
    params: object = None      # parameter table for the int8 support check
    int8: bool = False         # set by ``decide``
    name: str = ""
    # The kernel the backend then creates: CPUBinaryCreator takes CPUBinaryInt8 only when both inputs
    # and the output hold int8 (getDataType: a quant attribute with applyQuant set, i.e. produced by an
    # int8 command or a cast); a BinaryOp decided int8 on int32 inputs that no int8 command wrote (token
    # ids, integer constants) runs its integer kernel on the true values (MiniLM's Gather indices).
    int8_kernel: bool = True


@dataclass
class PoolParams:
    """Parameters of the Pooling command a global Pooling3D becomes."""

    type: int


@dataclass
class UnaryParams:
    """Parameters of the UnaryOp command a Sigmoid/TanH becomes (no int8 table)."""

    opType: int
    tableInt8: object = None


# ------------------------------------------------------------------------------------------ constants

# GeometryGather.cpp: a gather with fewer constant indices than this becomes regions, not a loop command
GATHER_REGION_LIMIT = 3


def constant_ops(graph) -> set[int]:
    """Ids of the ops MNN computes at resize time (GeometryComputerUtils::buildConstantTensors): ops whose
    content inputs are all constant, then (repeatedly) the producers of constant tensors, starting from
    the inputs read at shape time (``rules.shape_inputs``)."""
    constant: set[int] = set()
    const_tensors: set[int] = set()
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam):
            const_tensors.update(ints(op.outputIndexes))
    for op in graph.ops:
        if op.type in _SOURCE_OPS:
            continue
        ins = ints(op.inputIndexes)
        if all(t in const_tensors or not need_content(op.type, i) for i, t in enumerate(ins)):
            constant.add(id(op))
            const_tensors.update(ints(op.outputIndexes))
    forced = False
    for op in graph.ops:
        if op.type in _SOURCE_OPS or skips_forced_constants(op):
            continue
        ins = ints(op.inputIndexes)
        for i in shape_inputs(op):
            if i < len(ins) and ins[i] not in const_tensors:
                const_tensors.add(ins[i])
                forced = True
    while forced:
        forced = False
        for op in graph.ops:
            if id(op) in constant or op.type in _SOURCE_OPS:
                continue
            if any(t in const_tensors for t in ints(op.outputIndexes)):
                constant.add(id(op))
                const_tensors.update(ints(op.outputIndexes))
                const_tensors.update(ints(op.inputIndexes))
                forced = True
    return constant


def runs(op, constant: set[int]) -> bool:
    """Whether MNN's session has commands for the op (not an input, a constant, or folded)."""
    return op.type not in _SOURCE_OPS and id(op) not in constant


def tensors_from_facts(graph, facts: dict[int, TensorFacts]) -> dict[int, TensorInfo]:
    """The lowering's tensors from one forward's facts, with MNN's layouts (``layout.op_output_format``)."""
    tensors = {i: TensorInfo(name) for i, name in enumerate(graph.tensors)}
    for i, fact in facts.items():
        if i in tensors:
            tensors[i].shape, tensors[i].is_float = tuple(fact.shape), fact.dtype.kind == "f"
    for op in graph.ops:
        ins = [tensors[t] for t in ints(op.inputIndexes)]
        fmt = DataFormat(op_output_format(op, [t.layout for t in ins], [t.rank for t in ins]))
        for t in ints(op.outputIndexes):
            tensors[t].layout = fmt
    return tensors


# ------------------------------------------------------------------------------------------ geometry

class Lowering:
    """Replays MNN's geometry pass over the main graph (ops in execution order).

    ``tensors``: graph index -> ``TensorInfo`` (shapes, element types, layouts); temporaries are added.
    After ``run``: ``buffers`` holds (op, commands) per op that runs, ``main`` each op's own command,
    ``temp_of`` the temporaries made for an op's input slot (or ``"out"``).
    """

    def __init__(self, graph, tensors: dict):
        self.graph, self.tensors = graph, tensors
        self.outputs = set(graph.outputs)
        self.constant = constant_ops(graph)
        self.buffers: list[tuple[object, list[Command]]] = []
        self.main: dict[int, Command] = {}            # id(op) -> its own command
        self.temp_of: dict[tuple, str] = {}           # (id(op), input slot | "out") -> temporary
        self._temps = 0
        for op in graph.ops:
            if op.type in (OpType.Const, OpType.TrainableParam) or id(op) in self.constant:
                for t in ints(op.outputIndexes):
                    self.tensors[t].const = True

    def run(self) -> "Lowering":
        for op in self.graph.ops:
            if runs(op, self.constant):
                self.buffers.append((op, self._buffer(op, self._geometry(op))))
        return self

    # -- tensors -------------------------------------------------------------------------------------
    def _temp(self, like, *, layout=None, is_float=None, sources=None) -> str:
        self._temps += 1
        tid = f"tmp{self._temps}"
        base = self.tensors[like]
        self.tensors[tid] = TensorInfo(tid, base.shape, base.is_float if is_float is None else is_float,
                                       base.layout if layout is None else layout, virtual=sources is not None,
                                       sources=list(sources or ()))
        return tid

    def _view(self, op, ins, outs) -> None:
        """A data-movement op: its outputs become views over the inputs its regions read (empty ones
        contribute no region)."""
        direct = [ins[k] for k in region_inputs(op.type, len(ins)) if k < len(ins)]
        direct = [t for t in direct if self.tensors[t].shape is None or self.tensors[t].size > 0]
        full_ref = op.type in FULL_REF_OPS
        sources = []
        for s in direct:
            st = self.tensors[s]
            sources.extend(st.sources if full_ref and st.virtual else [s])
        reordered = op.type in TRANSPOSING_OPS or any(self.tensors[s].reordered for s in direct)
        # region fusion gives up on a packing conversion of a reshaped transpose (module docstring)
        unfused = None
        if (op.type == OpType.ConvertTensor and op.main is not None and op.main.dest == NC4HW4 and direct
                and self._pending(direct[0]) and self.tensors[direct[0]].reordered
                and self._producer_type(direct[0]) in RESHAPING_OPS):
            unfused = direct[0]
        for o in outs:
            t = self.tensors[o]
            t.virtual, t.full_ref, t.sources, t.reordered, t.unfused = True, full_ref, list(sources), reordered, \
                unfused

    def _pending(self, tid) -> bool:
        """A view not materialised yet."""
        t = self.tensors[tid]
        return t.virtual and not t.materialized

    def _producer_type(self, t: int):
        op = self.graph.producer.get(t)
        return None if op is None else op.type

    # -- commands ------------------------------------------------------------------------------------
    def _geometry(self, op) -> list[Command]:
        """The commands of one op before materialisation (and the views it defines)."""
        t = op.type
        ins, outs = ints(op.inputIndexes), ints(op.outputIndexes)
        try:
            kind = OpType(t).name
        except ValueError:
            kind = str(t)
        if t in VIEW_OPS or self.region_gather(op):
            self._view(op, ins, outs)
            return []
        if t == OpType.Pooling3D:
            p = op.main
            if p.isGlobal and self.tensors[ins[0]].rank < 5:
                return [self._own(op, "Pooling", ins, outs, named=False, params=PoolParams(p.type))]
            return [self._own(op, kind, ins, outs, named=True)]
        if t in (OpType.Sigmoid, OpType.TanH):
            unary = UnaryOpOperation.SIGMOID if t == OpType.Sigmoid else UnaryOpOperation.TANH
            return [self._own(op, "UnaryOp", ins, outs, named=False, params=UnaryParams(unary))]
        if t == OpType.BinaryOp and len(ins) == 2:
            return self._binary(op, ins, outs)
        if t == OpType.Select and len(ins) == 3:
            return self._select(op, ins, outs)
        if t in (OpType.MatMul, OpType.BatchMatMul) and self.tensors[outs[0]].rank != 2:
            return [self._own(op, "While", ins, outs, named=True)]
        if t in (OpType.Interp, OpType.Resize):
            ins = ins[:1]            # GeometryImageOp: the Interp command reads the image only
        if t in NC4HW4_ONLY and ins and self.tensors[ins[0]].layout != NC4HW4:
            return self._nc4hw4_copies(op, kind, ins, outs)
        return [self._own(op, kind, ins, outs, named=True)]

    def region_gather(self, op) -> bool:
        """A Gather/GatherV2 MNN lowers to regions of its data input (GeometryGather.cpp): constant
        indices (shape-derived ones included), fewer than three.  Quant attributes then spread through it
        like through any view (silero VAD's LSTM state: both gathers of the ``state`` input read its int8
        cast, as in MNN)."""
        ins = ints(op.inputIndexes)
        return (op.type in (OpType.Gather, OpType.GatherV2) and len(ins) >= 2 and self.tensors[ins[1]].const
                and self.tensors[ins[1]].shape is not None
                and self.tensors[ins[1]].size < GATHER_REGION_LIMIT)

    def _own(self, op, kind, ins, outs, named, params=None) -> Command:
        cmd = Command(kind, op, list(ins), list(outs), named=named, params=op.main if params is None else params)
        self.main[id(op)] = cmd
        return cmd

    def _broadcast_temp(self, op, slot, src, like, is_float) -> str:
        tid = self._temp(like, is_float=is_float, sources=[src])
        self.temp_of[(id(op), slot)] = tid
        return tid

    def _binary(self, op, ins, outs) -> list[Command]:
        """GeometryBinary::onCompute (CPU: no GPU broadcast rule; loop optimisation on)."""
        a, b = (self.tensors[i] for i in ins)
        out = self.tensors[outs[0]]
        if a.size == 1 or b.size == 1:
            return [self._own(op, "BinaryOp", ins, outs, named=True)]
        bcast = [x.size != out.size or x.layout != out.layout
                 or (out.rank != x.rank and out.layout == NC4HW4) for x in (a, b)]
        single = bcast[0] != bcast[1]
        loop_ok = (a.layout == out.layout and b.layout == out.layout and out.layout != NC4HW4 and a.is_float
                   and int(getattr(op.main, "activationType", 0) or 0) == 0)
        if single and loop_ok:
            return [self._own(op, "While", ins, outs, named=True)]
        new_ins = list(ins)
        for slot in (0, 1):
            if bcast[slot]:
                new_ins[slot] = self._broadcast_temp(op, slot, ins[slot], outs[0], out.is_float)
        return [self._own(op, "BinaryOp", new_ins, outs, named=True)]

    def _select(self, op, ins, outs) -> list[Command]:
        """GeometrySelect::onCompute, including its use of input 1's size for input 2."""
        out = self.tensors[outs[0]]
        sizes = [self.tensors[ins[0]].size, self.tensors[ins[1]].size, self.tensors[ins[1]].size]
        new_ins = list(ins)
        for slot in range(3):
            if sizes[slot] != out.size:
                is_float = self.tensors[ins[0]].is_float if slot == 0 else out.is_float
                new_ins[slot] = self._broadcast_temp(op, slot, ins[slot], outs[0], is_float)
        return [self._own(op, "Select", new_ins, outs, named=True)]

    def _nc4hw4_copies(self, op, kind, ins, outs) -> list[Command]:
        """computeSingle / GeometryImageOp: NC4HW4 copies of input 0 and output 0 around the op."""
        tin = self._temp(ins[0], layout=NC4HW4, sources=[ins[0]])
        tout = self._temp(outs[0], layout=NC4HW4)
        self.temp_of[(id(op), 0)] = tin
        self.temp_of[(id(op), "out")] = tout
        cmd = self._own(op, kind, [tin, *ins[1:]], [tout, *outs[1:]], named=True)
        out = self.tensors[outs[0]]
        out.virtual, out.sources = True, [tout]
        return [cmd]

    # -- rasters -------------------------------------------------------------------------------------
    def _origins(self, tid, buffer, op) -> list:
        """The real tensors under pending view ``tid`` (regions fuse through views, but for ``unfused``,
        which gets its Raster first and is then a real tensor)."""
        t = self.tensors[tid]
        if t.unfused is not None:
            self._materialize(t.unfused, buffer, op)
        out = []
        for s in t.sources:
            out.extend(self._origins(s, buffer, op) if self._pending(s) else [s])
        return out

    def _materialize(self, tid, buffer: list, op) -> None:
        """A Raster writing view ``tid`` from the real tensors under it."""
        if not self._pending(tid) or self.tensors[tid].const:
            return
        buffer.append(Command("Raster", op, self._origins(tid, buffer, op), [tid]))
        self.tensors[tid].materialized = True

    def _buffer(self, op, cmds: list[Command]) -> list[Command]:
        """GeometryComputerUtils::makeRaster: views an op's commands read are materialised before them,
        then graph outputs are materialised at once."""
        buffer: list[Command] = []
        main = self.main.get(id(op))
        for cmd in cmds:
            for k, i in enumerate(cmd.inputs):
                if cmd is not main or cmd.type == "While" or not isinstance(i, int) or need_content(op.type, k):
                    self._materialize(i, buffer, op)
            buffer.append(cmd)
        for o in ints(op.outputIndexes):
            if o in self.outputs:
                self._materialize(o, buffer, op)
        return buffer


def lower(graph, tensors: dict) -> Lowering:
    """The commands MNN's runtime executes for ``graph`` with these tensors (``Lowering.buffers``)."""
    return Lowering(graph, tensors).run()
