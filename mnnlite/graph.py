"""The graph IR: a model, its main graph and subgraphs, tensors by index, ops in execution order.

``Model`` wraps the decoded ``Net`` table, so nothing in a file is lost on the way back out; ``Graph`` is a
view over the main graph or one subgraph with the lookups the runtime and the quantizer need.  No math
and no file format here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .errors import FormatError
from .format.tables import DataFormat, DataType, OpType, TABLE_CLASSES

Net = TABLE_CLASSES["Net"]
Op = TABLE_CLASSES["Op"]


def op_type_name(op) -> str:
    return OpType(op.type).name


@dataclass(eq=False)
class Graph:
    """Ops in execution order over a tensor index space of its own."""

    name: str
    tensors: list[str]
    ops: list
    inputs: list[int]
    outputs: list[int]
    describe: list = field(default_factory=list)  # TensorDescribe entries (quant info, static shapes)

    @cached_property
    def tensor_index(self) -> dict[str, int]:
        index = {}
        for i, name in enumerate(self.tensors):
            index.setdefault(name, i)
        return index

    @cached_property
    def op_by_name(self) -> dict[str, object]:
        return {op.name: op for op in self.ops if op.name is not None}

    @cached_property
    def producer(self) -> dict[int, object]:
        return {t: op for op in self.ops for t in _ints(op.outputIndexes)}

    @cached_property
    def consumers(self) -> dict[int, list]:
        users: dict[int, list] = {}
        for op in self.ops:
            for t in _ints(op.inputIndexes):
                users.setdefault(t, []).append(op)
        return users

    @cached_property
    def quant_info(self) -> dict[int, object]:
        """Tensor index -> TensorQuantInfo, for tensors the file marks as int8."""
        return {d.index: d.quantInfo for d in self.describe if d.quantInfo is not None}

    def index(self, tensor_name: str) -> int:
        try:
            return self.tensor_index[tensor_name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no tensor named {tensor_name!r}") from None

    def op(self, op_name: str):
        try:
            return self.op_by_name[op_name]
        except KeyError:
            raise KeyError(f"graph {self.name!r} has no op named {op_name!r}") from None

    def input_names(self) -> list[str]:
        return [self.tensors[i] for i in self.inputs]

    def output_names(self) -> list[str]:
        return [self.tensors[i] for i in self.outputs]

    def topological_order(self) -> list:
        """Ops sorted so every op follows the producers of its inputs (stable for sorted files)."""
        produced_by = self.producer
        state: dict[int, int] = {}
        order = []
        for root in self.ops:
            stack = [(root, False)]
            while stack:
                op, done = stack.pop()
                key = id(op)
                if done:
                    if state.get(key) != 2:
                        state[key] = 2
                        order.append(op)
                    continue
                if state.get(key) == 2:
                    continue
                if state.get(key) == 1:
                    raise FormatError(f"graph {self.name!r}: op {op.name!r} is part of a cycle")
                state[key] = 1
                stack.append((op, True))
                for t in reversed(_ints(op.inputIndexes)):
                    dep = produced_by.get(t)
                    if dep is not None and dep is not op and state.get(id(dep)) != 2:
                        stack.append((dep, False))
        return order

    def invalidate(self):
        """Drop cached lookups after editing ``ops``/``tensors``/``describe`` in place."""
        for key in ("tensor_index", "op_by_name", "producer", "consumers", "quant_info"):
            self.__dict__.pop(key, None)


def _ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


@dataclass(eq=False)
class Model:
    """A loaded ``.mnn`` model.  ``net`` is the whole file; ``graph``/``subgraphs`` are views of it."""

    net: object
    path: str | None = None
    external_weights: str | None = None  # the .weight file the data was read from, if any

    def __eq__(self, other):
        return isinstance(other, Model) and self.net == other.net

    __hash__ = None

    @cached_property
    def graph(self) -> Graph:
        net = self.net
        ops = net.oplists
        tensors = net.tensorName
        inputs = [int(op.outputIndexes[0]) for op in ops
                  if op.type == OpType.Input and op.outputIndexes is not None and len(op.outputIndexes)]
        if net.outputName:
            index = {n: i for i, n in reversed(list(enumerate(tensors)))}
            missing = [n for n in net.outputName if n not in index]
            if missing:
                raise FormatError(f"{self.path or 'model'}: output {missing[0]!r} names no tensor")
            outputs = [index[n] for n in net.outputName]
        else:
            outputs = _unconsumed_outputs(ops)
        return Graph("main", tensors, ops, inputs, outputs, net.extraTensorDescribe or [])

    @cached_property
    def subgraphs(self) -> dict[str, Graph]:
        graphs = {}
        for sub in self.net.subgraphs or []:
            graphs[sub.name] = Graph(sub.name, sub.tensors or [], sub.nodes or [], _ints(sub.inputs),
                                     _ints(sub.outputs), sub.extraTensorDescribe or [])
        return graphs

    @property
    def is_quantized(self) -> bool:
        """True when any tensor carries int8 quant info: MNN then runs eligible ops in int8."""
        return bool(self.graph.quant_info) or any(g.quant_info for g in self.subgraphs.values())

    def all_ops(self):
        """(graph, op) over the main graph and every subgraph."""
        for g in (self.graph, *self.subgraphs.values()):
            for op in g.ops:
                yield g, op

    def invalidate(self):
        """Rebuild the graph views after editing ``net``."""
        for key in ("graph", "subgraphs"):
            self.__dict__.pop(key, None)


def _unconsumed_outputs(ops) -> list[int]:
    consumed = {t for op in ops for t in _ints(op.inputIndexes)}
    outputs = []
    for op in ops:
        for t in _ints(op.outputIndexes):
            if t not in consumed and t not in outputs:
                outputs.append(t)
    return outputs


__all__ = ["Graph", "Model", "Net", "Op", "OpType", "DataType", "DataFormat", "op_type_name"]
