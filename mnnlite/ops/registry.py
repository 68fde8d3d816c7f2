"""The op registry: one kernel function per MNN OpType, shared by the float runtime and its tests.

A kernel is ``fn(call: OpCall) -> list[np.ndarray]``.  Arrays are *logical* tensors: a tensor whose MNN
layout is NCHW or NC4HW4 is held as an NCHW array (NC4HW4 is only MNN's packed memory order of the same
values), an NHWC tensor as an NHWC array.  ``call.formats`` tells the layout of each input; a kernel that
changes the layout sets ``call.out_formats`` (it defaults to the first input's layout for every output).
``call.impl`` is "fast" (Cython kernels where there are some) or "ref" (numpy reference only).
Kernels validate what they read from the op and raise ShapeError naming the op and the tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..format.tables import DataFormat, OpType


@dataclass
class OpCall:
    op: Any                          # the Op table: .name, .type, .main (parameters), .inputIndexes
    inputs: list[np.ndarray]
    formats: list[DataFormat]
    impl: str = "fast"
    runtime: Any = None              # the interpreter, for ops that run subgraphs (While, If)
    out_formats: list[DataFormat] | None = None
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)

    @property
    def params(self):
        return self.op.main


Kernel = Callable[[OpCall], list]
KERNELS: dict[OpType, Kernel] = {}


def register(*op_types: OpType):
    """Decorator: ``@register(OpType.ReLU, OpType.ReLU6)``."""
    def wrap(fn: Kernel) -> Kernel:
        for t in op_types:
            if t in KERNELS:
                raise RuntimeError(f"two kernels registered for {t.name}")
            KERNELS[t] = fn
        return fn
    return wrap


def supported_op_types() -> list[str]:
    return sorted(t.name for t in KERNELS)
