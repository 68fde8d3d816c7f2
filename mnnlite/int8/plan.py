"""Which ops MNN's CPU backend runs in int8, and where it converts between float and int8, per op of the file.

``build_plan`` runs ``mnnlite.backend`` (constant folding, geometry lowering, attribute propagation, the
per-command int8 decision; docs/mnn-quantization.md §13.1) on a graph whose tensor shapes/layouts are
known (one float run gives them), then turns the command list into what the executor needs: one
``OpPlan`` per op of the file (see ``mnnlite.int8.execute``).  ``Plan.commands`` compares with the
official runtime's debug callbacks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..backend.decide import QuantAttr, decide, order_dependent, propagate_attrs, support_quant
from ..backend.lowering import Command, Lowering, TensorInfo, runs
from ..backend.rules import VIEW_OPS, ints, need_content, region_inputs
from ..format.tables import DataFormat, OpType
from ..graph import Graph

MOVE_OPS = VIEW_OPS


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
    buffers: list = field(default_factory=list)   # the lowering's (op, commands) before the int8 decision
    file_attrs: dict = field(default_factory=dict)   # tensor -> its attribute before propagation

    def order_dependent(self) -> dict:
        """{tensor: [attributes]} for tensors whose attribute in MNN's runtime depends on heap addresses
        (``mnnlite.backend.decide.order_dependent``); this plan holds the first."""
        return order_dependent(self.buffers, self.tensors, self.file_attrs)

    def int8_ops(self) -> list[str]:
        return [p.op.name for p in self.ops if p.kind == "compute" and p.int8]

    def float_ops(self) -> list[str]:
        return [p.op.name for p in self.ops if p.kind == "compute" and not p.int8]

    def command_table(self) -> list[tuple[str, str, bool]]:
        """(name, type, int8) per command, the shape of MNN's debug-callback listing."""
        return [(c.name, c.type, c.int8) for c in self.commands]


# ------------------------------------------------------------------------------------------ builder

def _tensors(graph: Graph, meta: dict) -> dict:
    """The lowering's tensors from the float run's arrays, with the file's quant attributes."""
    quant = graph.quant_info
    tensors = {}
    for i, name in enumerate(graph.tensors):
        shape, is_float, layout = meta.get(i, ((), True, DataFormat.NCHW))
        attr = QuantAttr.from_info(quant[i]) if i in quant else None
        tensors[i] = TensorInfo(name, tuple(shape), is_float, DataFormat(layout), attr)
    _fix_layouts(graph, tensors)
    return tensors


def _fix_layouts(graph: Graph, tensors: dict) -> None:
    """MNN's layout of a BinaryOp output is that of its higher-rank input (ShapeBinaryOp.cpp); the float
    runtime may keep input 0's instead, which is the same logical array for NCHW vs NC4HW4 but not for
    the layout checks of the lowering.  Ops that keep their input's layout follow."""
    orig = {i: t.layout for i, t in tensors.items()}
    for op in graph.ops:
        ins, outs = ints(op.inputIndexes), ints(op.outputIndexes)
        if not ins or not outs:
            continue
        first = tensors[ins[0]]
        for o in outs:
            t = tensors[o]
            if op.type == OpType.BinaryOp and len(ins) == 2:
                second = tensors[ins[1]]
                t.layout = second.layout if len(first.shape) < len(second.shape) else first.layout
            elif orig[o] == orig[ins[0]]:
                t.layout = first.layout


def _op_plans(graph: Graph, lowering: Lowering) -> list:
    plans = []
    for op in graph.ops:
        if op.type == OpType.Input:
            plans.append(OpPlan(op, "input"))
        elif not runs(op, lowering.constant):
            plans.append(OpPlan(op, "const"))
        elif op.type in MOVE_OPS or lowering.region_gather(op):
            plans.append(OpPlan(op, "move"))
        else:
            plans.append(_compute_plan(op, lowering))
    return plans


def _compute_plan(op, lowering: Lowering) -> OpPlan:
    tensors = lowering.tensors
    cmd = lowering.main.get(id(op))
    plan = OpPlan(op, "compute", int8=bool(cmd and cmd.int8 and cmd.int8_kernel), command=cmd)
    for k, i in enumerate(ints(op.inputIndexes)):
        if not need_content(op.type, k):
            continue
        stages = [stage(tensors[i])]
        temp = lowering.temp_of.get((id(op), k))
        if temp is not None:
            stages.append(stage(tensors[temp]))
        read = tensors[temp if temp is not None else i]
        plan.inputs.append(InputPlan(k, i, stages, read.attr))
    for k, o in enumerate(ints(op.outputIndexes)):
        src = lowering.temp_of.get((id(op), "out")) if k == 0 else None
        plan.out_attrs.append(tensors[src if src is not None else o].attr)
    return plan


def stage(t: TensorInfo) -> tuple:
    """How a tensor's value is held once MNN has it: (True, attr) int8 codes, (False, attr) float,
    (None, None) as it comes (a virtual tensor never materialised, or a non-float tensor)."""
    if (t.virtual and not t.materialized) or not t.is_float:
        return (None, None)
    return (t.int8, t.attr)


def build_plan(graph: Graph, meta: dict) -> Plan:
    """``meta``: tensor index -> (shape, is_float, layout) of the graph's main tensors (a float run)."""
    lowering = Lowering(graph, _tensors(graph, meta)).run()
    file_attrs = {k: t.attr for k, t in lowering.tensors.items() if t.attr is not None}
    propagate_attrs(lowering.buffers, lowering.tensors)
    commands = decide(lowering.buffers, lowering.tensors)
    return Plan(lowering.tensors, commands, _op_plans(graph, lowering), buffers=lowering.buffers,
                file_attrs=file_attrs)


__all__ = ["QuantAttr", "Plan", "OpPlan", "InputPlan", "Command", "build_plan", "support_quant", "stage", "MOVE_OPS",
           "need_content", "region_inputs"]
