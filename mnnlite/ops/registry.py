"""The op registry: one kernel function per MNN OpType, shared by the float runtime and its tests.

A kernel is ``fn(call: OpCall) -> list[np.ndarray]``.  An op type may also register a *planner*,
``plan(op, impl) -> kernel``: the runtime calls it once per node when it loads a model and runs the
kernel it returns for that node, with its parameters parsed and its weights prepared (packed conv
layers) once instead of on every run.  A planned kernel computes exactly what the generic one does.  Arrays are *logical* tensors: a tensor whose MNN
layout is NCHW or NC4HW4 is held as an NCHW array (NC4HW4 is only MNN's packed memory order of the same
values), an NHWC tensor as an NHWC array.  ``call.formats`` tells the layout of each input; a kernel that
changes the layout sets ``call.out_formats`` (it defaults to the first input's layout for every output).
``call.impl`` is the interpreter's "ref", "fast" or "mnn": a kernel runs the form of its compute kernels
that it names (``mnnlite.kernels.table.form``), never an ``if`` of its own.
Kernels validate what they read from the op and raise ShapeError naming the op and the tensor.
"""
from __future__ import annotations

from typing import Any, Callable

from ..format.tables import OpType


class OpCall:
    """One kernel call.  A plain class with slots: the runtime makes one per op per run."""

    __slots__ = ("formats", "impl", "input_names", "inputs", "op", "out_formats", "output_names", "runtime")

    def __init__(self, op: Any, inputs: list, formats: list, impl: str = "fast", runtime: Any = None,
                 out_formats: list | None = None, input_names: list | None = None,
                 output_names: list | None = None):
        self.op = op                    # the Op table: .name, .type, .main (parameters), .inputIndexes
        self.inputs = inputs            # list[np.ndarray]
        self.formats = formats          # list[DataFormat], one per input
        self.impl = impl
        self.runtime = runtime          # the interpreter, for ops that run subgraphs (While, If)
        self.out_formats = out_formats  # list[DataFormat] | None, set by kernels that change layout
        self.input_names = [] if input_names is None else input_names
        self.output_names = [] if output_names is None else output_names

    @property
    def params(self):
        return self.op.main


Kernel = Callable[[OpCall], list]
Planner = Callable[[Any, str], Kernel]
KERNELS: dict[OpType, Kernel] = {}
PLANNERS: dict[OpType, Planner] = {}


def register(*op_types: OpType):
    """Decorator: ``@register(OpType.ReLU, OpType.ReLU6)``."""
    def wrap(fn: Kernel) -> Kernel:
        for t in op_types:
            if t in KERNELS:
                raise RuntimeError(f"two kernels registered for {t.name}")
            KERNELS[t] = fn
        return fn
    return wrap


def register_plan(*op_types: OpType):
    """Decorator for a planner ``plan(op, impl) -> kernel`` of op types that have a kernel."""
    def wrap(fn: Planner) -> Planner:
        for t in op_types:
            if t in PLANNERS:
                raise RuntimeError(f"two planners registered for {t.name}")
            PLANNERS[t] = fn
        return fn
    return wrap


def node_kernel(op_type, op, impl: str):
    """The kernel to run for one node: its planner's, else the op type's kernel (None if neither)."""
    planner = PLANNERS.get(op_type)
    if planner is not None:
        return planner(op, impl)
    return KERNELS.get(op_type)


def supported_op_types() -> list[str]:
    return sorted(t.name for t in KERNELS)
