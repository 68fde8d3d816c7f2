"""Which ops MNN's CPU backend runs in int8, and where it converts between float and int8.

MNN decides this per *command*, after geometry lowering, not per op of the file (docs/mnn-quantization.md
§13.1; MNN 3.6.1 ``source/core/Pipeline.cpp`` ``Pipeline::encode``, ``source/backend/cpu/CPUBackend.cpp``
``CPURuntimeCreator::_supportQuant``).  ``build_plan`` replays that decision on a graph whose tensor
shapes/layouts are known (one float run gives them):

1. Constant folding: ops whose content inputs are all constant run once, in float, and are not
   commands (``GeometryComputerUtils::buildConstantTensors``).
2. Geometry: data-movement ops (Reshape, ConvertTensor, Concat, Permute, Slice, ...) only describe
   their output as regions of their inputs ("virtual" tensors); a ``Raster`` command materialises a
   virtual tensor when a compute command (or the graph output) first needs it, reading the ultimate
   non-virtual sources of the fused chain (``GeometryComputer::Context::getRasterCacheCreateRecursive``).
   Some ops add temporaries: broadcast copies (``GeometryBinary``, ``GeometrySelect``), NC4HW4 copies
   around convolution/pooling/interp on other layouts (``GeometryConvUtils::computeSingle``,
   ``GeometryImageOp``), Pooling3D global -> Pooling, Sigmoid/TanH -> UnaryOp, and a Loop (``While``)
   command for a one-sided broadcast binary op on NCHW/NHWC float data (``MNN_BINARY_LOOP_OPT``).
3. Quant attributes (one object per tensor of the file; identity matters for ReLU) spread to tensors
   without one along Raster/ReLU/ReLU6/Pooling/Interp/CropAndResize/ROIPooling commands, forward
   from single-input commands and backward to the inputs of single-output ones, at most 3 rounds
   (``Pipeline::encode``, "Propagate Scale").
4. A command runs int8 iff its first output has an attribute and ``_supportQuant`` agrees; a
   FloatToInt8 / Int8ToFloat cast is inserted before every float input whose producer's mode differs
   (cached per tensor).  Unnamed commands are named ``<op>_raster_<k>`` (``OperatorInfo``'s naming),
   so ``Plan.commands`` can be compared with the official runtime's debug callbacks.

The result for the executor is one ``OpPlan`` per op of the file (see ``mnnlite.int8.execute``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.tables import DataFormat, OpType, UnaryOpOperation
from ..graph import Graph

NC4HW4, NCHW, NHWC = DataFormat.NC4HW4, DataFormat.NCHW, DataFormat.NHWC
DT_INT8 = 6
_F32 = np.float32

# Data-movement ops whose geometry only writes regions.  makeFullRef (GeometryReshape.cpp) copies the
# input's regions when the input is virtual itself; the others reference the input tensor.
FULL_REF_OPS = {OpType.Reshape, OpType.Squeeze, OpType.Unsqueeze, OpType.ExpandDims, OpType.Flatten,
                OpType.Identity, OpType.QuantizedReshape}
REGION_OPS = {OpType.ConvertTensor, OpType.Permute, OpType.Transpose, OpType.Concat, OpType.Pack,
              OpType.Slice, OpType.SliceTf, OpType.Unpack, OpType.StridedSlice, OpType.BroadcastTo,
              OpType.Tile, OpType.Crop, OpType.Padding, OpType.DepthToSpace, OpType.SpaceToDepth,
              OpType.Reverse}
MOVE_OPS = FULL_REF_OPS | REGION_OPS
# Ops MNN runs on NC4HW4 only: other layouts get converted copies around them.
_NC4HW4_ONLY = {OpType.Convolution, OpType.Deconvolution, OpType.ConvolutionDepthwise, OpType.Pooling,
                OpType.Interp}
# Command types along which quant attributes spread (Pipeline.cpp _getQuantPropagateOp, Compiler_Loop).
PROPAGATE_TYPES = {"Raster", "ReLU", "ReLU6", "Pooling", "Interp", "CropAndResize", "ROIPooling"}
# opNeedContent (OpCommonUtils.cpp): inputs whose values an op does not read.
_NO_CONTENT = {OpType.ZerosLike, OpType.ZeroGrad, OpType.Shape, OpType.Rank, OpType.Const, OpType.Size,
               OpType.PriorBox}
_SHAPE_INPUT_1 = {OpType.Interp, OpType.Crop, OpType.Reshape, OpType.Reduction, OpType.Resize}
_UNARY_INT8_NO_TABLE = {UnaryOpOperation.NEG, UnaryOpOperation.ABS, UnaryOpOperation.SIGN}


class QuantAttr:
    """A tensor's quant attribute (MNN's ``QuantAttr``); compared by identity where MNN compares pointers."""

    __slots__ = ("scale", "zero", "min", "max", "type", "key", "qrange")

    def __init__(self, scale, zero=0.0, qmin=-127.0, qmax=127.0, type_=DT_INT8):
        self.scale, self.zero = _F32(scale), _F32(zero)
        self.min, self.max = _F32(qmin), _F32(qmax)
        self.type = int(type_) or DT_INT8          # DT_INVALID keeps the default (InitNet.cpp)
        # fixed at construction (an attribute never changes): read on every int8 step of every run
        self.key = (float(self.scale), float(self.zero))    # what an int8 Raster compares
        self.qrange = (int(self.min), int(self.max))

    @classmethod
    def from_info(cls, info) -> "QuantAttr":
        return cls(info.scale, info.zero, info.min, info.max, info.type)

    def __repr__(self):
        return f"QuantAttr(scale={float(self.scale):.6g}, zero={float(self.zero):g}, [{self.min:g}, {self.max:g}])"


@dataclass(eq=False)
class TensorInfo:
    """A tensor as the simulation sees it: a graph tensor (int index) or a temporary (str id)."""

    name: str
    shape: tuple = ()
    is_float: bool = True
    layout: DataFormat = NCHW
    attr: QuantAttr | None = None
    const: bool = False
    virtual: bool = False
    sources: list = field(default_factory=list)   # region origins (with multiplicity) when virtual
    full_ref: bool = False                         # regions copied from a virtual input (makeFullRef)
    materialized: bool = False
    int8: bool = False                             # applyQuant: holds int8 codes at run time

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(eq=False)
class Command:
    type: str                  # MNN op type of the command ("Convolution", "Raster", "FloatToInt8", ...)
    op: object                 # the file's op whose execute buffer holds the command
    inputs: list
    outputs: list
    named: bool = False        # carries the op's name (else "<op>_raster_<k>")
    params: object = None      # parameter table for the int8 support check
    int8: bool = False
    name: str = ""
    # The kernel the backend then creates: CPUBinaryCreator takes CPUBinaryInt8 only when both inputs
    # and the output hold int8 (getDataType: a quant attribute with applyQuant set, i.e. produced by an
    # int8 command or a cast); a BinaryOp decided int8 on int32 inputs that no int8 command wrote (token
    # ids, integer constants) runs its integer kernel on the true values (MiniLM's Gather indices).
    int8_kernel: bool = True


@dataclass(eq=False)
class InputPlan:
    """How a compute op reads input ``slot``: the graph tensor, then the stages its value passes
    (materialisation of the tensor, a broadcast/layout temporary), then the command's own need."""

    slot: int
    tensor: int
    stages: list               # [(int8: bool, QuantAttr | None)] applied in order
    attr: QuantAttr | None     # attribute the command reads the input with (int8 commands)


@dataclass(eq=False)
class OpPlan:
    op: object
    kind: str                  # "input", "const", "move" or "compute"
    int8: bool = False
    command: Command | None = None
    inputs: list = field(default_factory=list)          # InputPlan per content input (compute)
    out_attrs: list = field(default_factory=list)       # attribute of each output (int8 compute)
    fixed: tuple | None = None         # the executor's per-plan lookups (kernel, outputs' kinds, cache)


@dataclass(eq=False)
class Plan:
    tensors: dict                      # id -> TensorInfo
    commands: list                     # every command in execution order (casts included)
    ops: list                          # OpPlan per op of the graph, in file order
    layouts: dict = field(default_factory=dict)   # tensor -> layout of the float kernels' arrays
    frees: dict = field(default_factory=dict)     # step position -> tensors the executor may drop

    def int8_ops(self) -> list[str]:
        return [p.op.name for p in self.ops if p.kind == "compute" and p.int8]

    def float_ops(self) -> list[str]:
        return [p.op.name for p in self.ops if p.kind == "compute" and not p.int8]

    def command_table(self) -> list[tuple[str, str, bool]]:
        """(name, type, int8) per command, the shape of MNN's debug-callback listing."""
        return [(c.name, c.type, c.int8) for c in self.commands]


# ------------------------------------------------------------------------------------------ helpers

def _op_type(op):
    try:
        return OpType(op.type)
    except ValueError:
        return op.type


def _ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


def need_content(op_type, index: int) -> bool:
    if op_type in _NO_CONTENT:
        return False
    return not (op_type in _SHAPE_INPUT_1 and index == 1)


# Data-movement ops whose geometry takes regions from their first input only: the other inputs are read
# at shape time (slice points, Padding's pads, axes: GeometrySlice.cpp, GeometryPadding.cpp,
# GeometryReshape.cpp's makeFullRef of input 0).
_FIRST_INPUT_REGIONS = {OpType.Slice, OpType.SliceTf, OpType.StridedSlice, OpType.Unpack, OpType.Padding,
                        OpType.Gather, OpType.GatherV2, OpType.Squeeze, OpType.Unsqueeze, OpType.ExpandDims}
# GeometryGather.cpp: a gather whose indices are constant (shape-derived ones included) and fewer than
# this many becomes Raster regions of its data input instead of a loop command
_GATHER_REGION_LIMIT = 3


def region_inputs(op_type, count: int) -> list[int]:
    """Positions of a data-movement op's inputs its Raster regions read."""
    content = [k for k in range(count) if need_content(op_type, k)]
    return content[:1] if op_type in _FIRST_INPUT_REGIONS else content


def _weight_inline(params) -> bool:
    return getattr(params, "weight", None) is not None


def support_quant(cmd: Command, tensors: dict) -> bool:
    """CPURuntimeCreator::_supportQuant (MNN_SUPPORT_QUANT_EXTEND on, the default build)."""
    ins = [tensors[t] for t in cmd.inputs]
    if any(t.attr is None or t.attr.type != DT_INT8 for t in ins):
        return False
    out = tensors[cmd.outputs[0]]
    kind, p = cmd.type, cmd.params
    if kind in ("Convolution", "ConvolutionDepthwise"):
        return len(ins) == 1 and not _weight_inline(p)
    if kind in ("ConvInt8", "DepthwiseConvInt8"):
        return True
    if kind == "Raster":
        return all(t.attr.key == out.attr.key and t.attr.scale != 0 and out.attr.scale != 0 for t in ins)
    if kind == "Pooling":
        return ins[0].attr.key == out.attr.key and p is not None and int(p.type) in (0, 1)
    if kind in ("Softmax", "LayerNorm", "BinaryOp", "Scale", "Interp", "PReLU"):
        return True
    if kind == "ReLU":
        slope = getattr(p, "slope", 0.0) if p is not None else 0.0
        return ins[0].attr is out.attr and slope == 0
    if kind == "UnaryOp":
        table = getattr(p, "tableInt8", None)
        return (table is not None and len(table) > 0) or int(p.opType) in _UNARY_INT8_NO_TABLE
    return False


# ------------------------------------------------------------------------------------------ builder

class _Builder:
    def __init__(self, graph: Graph, meta: dict):
        self.graph = graph
        self.tensors: dict = {}
        self._temps = 0
        quant = graph.quant_info
        for i, name in enumerate(graph.tensors):
            shape, is_float, layout = meta.get(i, ((), True, NCHW))
            attr = QuantAttr.from_info(quant[i]) if i in quant else None
            self.tensors[i] = TensorInfo(name, tuple(shape), is_float, DataFormat(layout), attr)
        self._fix_layouts()
        self.outputs = set(graph.outputs)
        self.buffers: list[tuple[object, list]] = []
        self.main: dict[int, Command] = {}            # id(op) -> its own command
        self.temp_of: dict[tuple, object] = {}        # (id(op), input slot) -> temp id

    def _fix_layouts(self):
        """MNN's layout of a BinaryOp output is that of its higher-rank input (ShapeBinaryOp.cpp);
        the float runtime may keep input 0's instead, which is the same logical array for NCHW vs
        NC4HW4 but not for the layout checks here.  Ops that keep their input's layout follow."""
        orig = {i: t.layout for i, t in self.tensors.items()}
        for op in self.graph.ops:
            ins, outs = _ints(op.inputIndexes), _ints(op.outputIndexes)
            if not ins or not outs:
                continue
            first = self.tensors[ins[0]]
            for o in outs:
                t = self.tensors[o]
                if _op_type(op) == OpType.BinaryOp and len(ins) == 2:
                    second = self.tensors[ins[1]]
                    t.layout = second.layout if len(first.shape) < len(second.shape) else first.layout
                elif orig[o] == orig[ins[0]]:
                    t.layout = first.layout

    # -------------------------------------------------------------------------------- tensors
    def temp(self, like, *, layout=None, is_float=None, virtual=False, sources=()) -> str:
        self._temps += 1
        tid = f"tmp{self._temps}"
        base = self.tensors[like]
        self.tensors[tid] = TensorInfo(tid, base.shape, base.is_float if is_float is None else is_float,
                                       base.layout if layout is None else layout, None, virtual=virtual,
                                       sources=list(sources))
        return tid

    def make_virtual(self, out, sources, full_ref=False):
        t = self.tensors[out]
        t.virtual, t.full_ref = True, full_ref
        srcs = []
        for s in sources:
            st = self.tensors[s]
            srcs.extend(st.sources if full_ref and st.virtual else [s])
        t.sources = srcs

    # -------------------------------------------------------------------------------- constants
    def mark_constants(self):
        """buildConstantTensors: Const outputs, then ops whose content inputs are all constant."""
        for op in self.graph.ops:
            t = _op_type(op)
            ins, outs = _ints(op.inputIndexes), _ints(op.outputIndexes)
            if t in (OpType.Const, OpType.TrainableParam):
                const = True
            elif t == OpType.Input:
                const = False
            else:
                const = all(self.tensors[i].const or not need_content(t, k) for k, i in enumerate(ins))
            for o in outs:
                self.tensors[o].const = const

    # -------------------------------------------------------------------------------- geometry
    def geometry(self, op) -> list:
        """The commands of one op before materialisation (and the virtual outputs it defines)."""
        t = _op_type(op)
        ins, outs = _ints(op.inputIndexes), _ints(op.outputIndexes)
        name = t.name if isinstance(t, OpType) else str(t)
        if t in MOVE_OPS or self.region_gather(op):
            content = [ins[k] for k in region_inputs(t, len(ins))]
            for o in outs:
                self.make_virtual(o, content, full_ref=t in FULL_REF_OPS)
            return []
        if t == OpType.Pooling3D:
            p = op.main
            if p.isGlobal and len(self.tensors[ins[0]].shape) < 5:
                return [self.own(op, "Pooling", ins, outs, named=False, params=_PoolParams(p.type))]
            return [self.own(op, name, ins, outs, named=True)]
        if t in (OpType.Sigmoid, OpType.TanH):
            unary = UnaryOpOperation.SIGMOID if t == OpType.Sigmoid else UnaryOpOperation.TANH
            return [self.own(op, "UnaryOp", ins, outs, named=False, params=_UnaryParams(unary))]
        if t == OpType.BinaryOp:
            return self.binary(op, ins, outs)
        if t == OpType.Select:
            return self.select(op, ins, outs)
        if t in (OpType.MatMul, OpType.BatchMatMul) and len(self.tensors[outs[0]].shape) != 2:
            return [self.own(op, "While", ins, outs, named=True)]     # GeometryBatchMatMul's loop
        if t in (OpType.Interp, OpType.Resize):
            ins = ins[:1]            # GeometryImageOp: the Interp command reads the image only
        if t in _NC4HW4_ONLY and ins and self.tensors[ins[0]].layout != NC4HW4:
            return self.nc4hw4_copies(op, name, ins, outs)
        return [self.own(op, name, ins, outs, named=True)]

    def region_gather(self, op) -> bool:
        """A Gather/GatherV2 MNN lowers to Raster regions (GeometryGather.cpp): constant indices, fewer
        than three.  Quant attributes then spread through it like through any Raster (silero_vad's
        LSTM state: both gathers of the ``state`` input read its int8 cast, as in MNN)."""
        ins = _ints(op.inputIndexes)
        return (_op_type(op) in (OpType.Gather, OpType.GatherV2) and len(ins) >= 2
                and self.tensors[ins[1]].const and self.tensors[ins[1]].size < _GATHER_REGION_LIMIT)

    def own(self, op, kind, ins, outs, named, params=None) -> Command:
        cmd = Command(kind, op, list(ins), list(outs), named=named,
                      params=op.main if params is None else params)
        self.main[id(op)] = cmd
        return cmd

    def broadcast_temp(self, op, slot, src, like, is_float) -> str:
        tid = self.temp(like, is_float=is_float, virtual=True, sources=[src])
        self.temp_of[(id(op), slot)] = tid
        return tid

    def binary(self, op, ins, outs) -> list:
        """GeometryBinary::onCompute (CPU: no GPU broadcast rule; loop optimisation on)."""
        a, b = (self.tensors[i] for i in ins[:2])
        out = self.tensors[outs[0]]
        if a.size == 1 or b.size == 1:
            return [self.own(op, "BinaryOp", ins, outs, named=True)]
        bcast = [x.size != out.size or x.layout != out.layout
                 or (len(out.shape) != len(x.shape) and out.layout == NC4HW4) for x in (a, b)]
        single = bcast[0] != bcast[1]
        loop_ok = (a.layout == out.layout and b.layout == out.layout and out.layout != NC4HW4 and a.is_float
                   and int(getattr(op.main, "activationType", 0) or 0) == 0)
        if single and loop_ok:
            return [self.own(op, "While", ins, outs, named=True)]
        new_ins = list(ins)
        for slot in (0, 1):
            if bcast[slot]:
                new_ins[slot] = self.broadcast_temp(op, slot, ins[slot], outs[0], out.is_float)
        return [self.own(op, "BinaryOp", new_ins, outs, named=True)]

    def select(self, op, ins, outs) -> list:
        """GeometrySelect::onCompute, including its use of input 1's size for input 2."""
        out = self.tensors[outs[0]]
        sizes = [self.tensors[ins[0]].size, self.tensors[ins[1]].size, self.tensors[ins[1]].size]
        new_ins = list(ins)
        for slot in range(3):
            if sizes[slot] != out.size:
                is_float = self.tensors[ins[0]].is_float if slot == 0 else out.is_float
                new_ins[slot] = self.broadcast_temp(op, slot, ins[slot], outs[0], is_float)
        return [self.own(op, "Select", new_ins, outs, named=True)]

    def nc4hw4_copies(self, op, kind, ins, outs) -> list:
        """computeSingle / GeometryImageOp: NC4HW4 copies of input 0 and output 0 around the op."""
        tin = self.temp(ins[0], layout=NC4HW4, virtual=True, sources=[ins[0]])
        tout = self.temp(outs[0], layout=NC4HW4)
        self.temp_of[(id(op), 0)] = tin
        self.temp_of[(id(op), "out")] = tout
        cmd = self.own(op, kind, [tin, *ins[1:]], [tout, *outs[1:]], named=True)
        self.make_virtual(outs[0], [tout])
        return [cmd]

    # -------------------------------------------------------------------------------- rasters
    def fused_sources(self, tid) -> list:
        t = self.tensors[tid]
        if t.virtual and not t.materialized:
            out = []
            for s in t.sources:
                out.extend(self.fused_sources(s))
            return out
        return [tid]

    def materialize(self, tid, buffer: list, op):
        t = self.tensors[tid]
        if not t.virtual or t.materialized or t.const:
            return
        sources = []
        for s in t.sources:
            sources.extend(self.fused_sources(s))
        buffer.append(Command("Raster", op, sources, [tid]))
        t.materialized = True

    def make_buffer(self, op, cmds) -> list:
        """GeometryComputerUtils::makeRaster, then graph outputs are materialised at once."""
        buffer = []
        for cmd in cmds:
            for k, i in enumerate(cmd.inputs):
                if need_content(_op_type(op) if cmd is self.main.get(id(op)) else None, k):
                    self.materialize(i, buffer, op)
            buffer.append(cmd)
        for o in _ints(op.outputIndexes):
            if o in self.outputs:
                self.materialize(o, buffer, op)
        return buffer

    def lower(self):
        self.mark_constants()
        for op in self.graph.ops:
            t = _op_type(op)
            outs = _ints(op.outputIndexes)
            if t == OpType.Input or (outs and all(self.tensors[o].const for o in outs)):
                continue
            self.buffers.append((op, self.make_buffer(op, self.geometry(op))))

    # -------------------------------------------------------------------------------- attributes
    def propagate(self):
        """Pipeline::encode "Propagate Scale": forward/backward maps, N->1 pruning, <= 3 rounds."""
        forward, backward = {}, {}
        for _, buffer in self.buffers:
            for cmd in buffer:
                if cmd.type not in PROPAGATE_TYPES:
                    continue
                vin = [t for t in cmd.inputs if self.tensors[t].is_float]
                vout = [t for t in cmd.outputs if self.tensors[t].is_float]
                if len(vin) == 1:
                    for t in vout:
                        if self.tensors[t].attr is None:
                            _insert(forward, vin[0], t)
                if len(vout) == 1:
                    for t in vin:
                        if self.tensors[t].attr is None:
                            _insert(backward, vout[0], t)
        starts = (_starts(forward, backward), _starts(backward, forward))
        for _ in range(3):
            if not (self._spread(forward, starts[0]) or self._spread(backward, starts[1])):
                break

    def _spread(self, mapping, starts) -> bool:
        changed = False
        for t in starts:
            changed |= self._spread_from(mapping, t)
        return changed

    def _spread_from(self, mapping, t) -> bool:
        attr = self.tensors[t].attr
        if attr is None or t not in mapping:
            return False
        changed = False
        for x in mapping[t]:
            if self.tensors[x].attr is not attr:
                self.tensors[x].attr = attr
                changed = True
            changed |= self._spread_from(mapping, x)
        return changed

    # -------------------------------------------------------------------------------- decide
    def decide(self) -> list:
        """Int8 or float per command; casts before inputs whose mode differs; MNN's command names."""
        cast_cache = {}
        commands = []
        for op, buffer in self.buffers:
            final = []
            for cmd in buffer:
                out = self.tensors[cmd.outputs[0]]
                use = out.attr is not None and support_quant(cmd, self.tensors)
                if use and cmd.type == "BinaryOp":
                    # float inputs are cast to int8 below; integer ones hold codes only if an int8 command wrote them
                    cmd.int8_kernel = all(self.tensors[i].is_float or self.tensors[i].int8 for i in cmd.inputs)
                if out.attr is not None:
                    for o in cmd.outputs:
                        self.tensors[o].int8 = use
                cmd.int8 = use
                for k, i in enumerate(cmd.inputs):
                    t = self.tensors[i]
                    if t.int8 != use and t.is_float:
                        if i not in cast_cache:
                            cast = Command("FloatToInt8" if use else "Int8ToFloat", op, [i], [f"cast:{i}"],
                                           int8=use)
                            cast_cache[i] = cast
                            final.append(cast)
                final.append(cmd)
            for k, cmd in enumerate(final):
                cmd.name = op.name if cmd.named and op.name else f"{op.name}_raster_{k}"
            commands.extend(final)
        return commands

    # -------------------------------------------------------------------------------- per op
    def op_plans(self) -> list:
        plans = []
        for op in self.graph.ops:
            t = _op_type(op)
            outs = _ints(op.outputIndexes)
            if t == OpType.Input:
                plans.append(OpPlan(op, "input"))
            elif outs and all(self.tensors[o].const for o in outs):
                plans.append(OpPlan(op, "const"))
            elif t in MOVE_OPS or self.region_gather(op):
                plans.append(OpPlan(op, "move"))
            else:
                plans.append(self.compute_plan(op))
        return plans

    def compute_plan(self, op) -> OpPlan:
        cmd = self.main.get(id(op))
        plan = OpPlan(op, "compute", int8=bool(cmd and cmd.int8 and cmd.int8_kernel), command=cmd)
        t = _op_type(op)
        for k, i in enumerate(_ints(op.inputIndexes)):
            if not need_content(t, k):
                continue
            stages = [self._stage(i)]
            temp = self.temp_of.get((id(op), k))
            if temp is not None:
                stages.append(self._stage(temp))
            read = self.tensors[temp if temp is not None else i]
            plan.inputs.append(InputPlan(k, i, stages, read.attr))
        for k, o in enumerate(_ints(op.outputIndexes)):
            src = self.temp_of.get((id(op), "out")) if k == 0 else None
            plan.out_attrs.append(self.tensors[src if src is not None else o].attr)
        return plan

    def _stage(self, tid):
        return stage(self.tensors[tid])


def stage(t: TensorInfo) -> tuple:
    """How a tensor's value is held once MNN has it: (True, attr) int8 codes, (False, attr) float,
    (None, None) as it comes (a virtual tensor never materialised, or a non-float tensor)."""
    if (t.virtual and not t.materialized) or not t.is_float:
        return (None, None)
    return (t.int8, t.attr)


@dataclass
class _PoolParams:
    type: int


@dataclass
class _UnaryParams:
    opType: int
    tableInt8: object = None


def _insert(mapping, key, value):
    mapping.setdefault(key, [])
    if value not in mapping[key]:
        mapping[key].append(value)


def _starts(mapping, anti) -> list:
    """Keys that are no value, after dropping keys that feed a many-to-one entry of the other map."""
    for targets in list(anti.values()):
        if len(targets) > 1:
            for t in targets:
                mapping.pop(t, None)
    leaves = {t for targets in mapping.values() for t in targets}
    return [k for k in mapping if k not in leaves]


def build_plan(graph: Graph, meta: dict) -> Plan:
    """``meta``: tensor index -> (shape, is_float, layout) of the graph's main tensors (a float run)."""
    b = _Builder(graph, meta)
    b.lower()
    b.propagate()
    commands = b.decide()
    return Plan(b.tensors, commands, b.op_plans())


__all__ = ["QuantAttr", "Plan", "OpPlan", "InputPlan", "Command", "build_plan", "support_quant", "stage", "MOVE_OPS"]
