"""Test helpers around the official MNN runtime for the int8 runtime tests (test-only code).

* ``oracle_commands(path, feeds)``: the commands MNN's Session runs, as its debug callbacks report
  them -- ``(name, type, int8)``; MNN appends " [ DT_INT8 ] " to the type of commands whose output
  holds int8 (``OperatorInfo`` in source/core/Pipeline.cpp).
* ``run_oracle_isolated(path, feeds)``: ``model_zoo.run_oracle`` in a fresh child process.  Needed for
  files where MNN reads memory it never wrote (see ``needs_fresh_process``): its result then depends on
  what the process allocated before, and a fresh process has it zeroed.
* ``output_budget(graph, name)``: one quantization step of an output (its own scale, or for a float
  output the largest scale of the int8 tensors it is computed from).
"""
from __future__ import annotations

import json

import numpy as np

import model_zoo as zoo



def oracle_commands(path, feeds: dict) -> list[tuple[str, str, bool]]:
    """(command name, MNN op type, int8) for every command of one Session run, in order."""
    MNN = zoo._mnn()
    interp = MNN.Interpreter(str(path))
    session = interp.createSession({"numThread": 1})
    inputs = interp.getSessionInputAll(session)
    for name, tensor in inputs.items():
        interp.resizeTensor(tensor, tuple(feeds[name].shape))
    interp.resizeSession(session)
    for name, tensor in inputs.items():
        arr = np.ascontiguousarray(feeds[name], np.float32)
        # feeds are in the declared layout (an NHWC input through an NHWC host tensor)
        tensor.copyFrom(MNN.Tensor(arr.shape, MNN.Halide_Type_Float, arr, zoo._host_type(MNN, tensor, "model")))
    rows = []

    def begin(tensors, info):
        return True

    def end(tensors, info):
        kind = info.getType()
        rows.append((info.getName(), kind.replace("[ DT_INT8 ]", "").strip(), "DT_INT8" in kind))
        return True

    interp.runSessionWithCallBackInfo(session, begin, end)
    return rows


run_oracle_isolated = zoo.run_oracle_isolated


def needs_fresh_process(plan) -> bool:
    """True when MNN runs an int8 kernel into an int32 tensor (a comparison whose output carries a
    quant attribute): the consumer then reads bytes the kernel never wrote (mnnlite.int8.ops
    packed_int_output), zero only in a fresh process."""
    return any(c.int8 and not plan.tensors[c.outputs[0]].is_float for c in plan.commands
               if c.outputs[0] in plan.tensors)


def output_budget(graph, name: str) -> float:
    """One quantization step of output ``name``: its scale, or, for a float output, the largest scale
    among the first quantized tensors found walking back through its producers."""
    index = graph.index(name)
    info = graph.quant_info.get(index)
    if info is not None and info.scale > 0:
        return float(info.scale)
    frontier, seen, scales = [index], {index}, []
    while frontier and not scales:
        nxt = []
        for t in frontier:
            op = graph.producer.get(t)
            for i in ([] if op is None or op.inputIndexes is None else [int(v) for v in op.inputIndexes]):
                if i in seen:
                    continue
                seen.add(i)
                q = graph.quant_info.get(i)
                if q is not None and q.scale > 0:
                    scales.append(float(q.scale))
                else:
                    nxt.append(i)
        frontier = nxt
    if not scales:
        raise AssertionError(f"output {name!r}: no quantized tensor upstream to take a step size from")
    return max(scales)


def compare(ours: dict, theirs: dict, graph) -> dict:
    """{output: (max abs diff, budget, cosine)}."""
    result = {}
    for name, ref in theirs.items():
        a, b = np.asarray(ours[name], np.float64), np.asarray(ref, np.float64)
        assert a.shape == b.shape, f"{name}: shape {a.shape} vs the oracle's {b.shape}"
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        cos = 1.0 if na == nb == 0 else float(a.ravel() @ b.ravel() / (na * nb)) if na and nb else 0.0
        result[name] = (float(np.abs(a - b).max()), output_budget(graph, name), cos)
    return result


def dumps(result: dict) -> str:
    return json.dumps({k: [round(v, 9) for v in vals] for k, vals in result.items()})


class TinyNet:
    """Hand-written .mnn graphs for single-op tests: ``input``, ``op``, ``quant`` (a TensorDescribe), ``save``."""

    def __init__(self):
        self.tensors: list[str] = []
        self.ops: list = []
        self.describes: list = []

    def index(self, name: str) -> int:
        if name not in self.tensors:
            self.tensors.append(name)
        return self.tensors.index(name)

    def input(self, name, dims, dformat):
        from mnnlite.format.tables import TABLE_CLASSES as T, OpType
        main = T["Input"](dims=np.array(dims, np.int32), dtype=1, dformat=int(dformat))
        self.op(OpType.Input, [], [name], main, dformat)

    def op(self, op_type, inputs, outputs, main, fmt):
        from mnnlite.format.tables import TABLE_CLASSES as T
        self.ops.append(T["Op"](type=int(op_type), name=outputs[0], main=main, defaultDimentionFormat=int(fmt),
                                inputIndexes=np.array([self.index(n) for n in inputs], np.int32),
                                outputIndexes=np.array([self.index(n) for n in outputs], np.int32)))

    def quant(self, name, scale, zero=0, lo=-127, hi=127):
        from mnnlite.format.tables import TABLE_CLASSES as T
        info = T["TensorQuantInfo"](scale=float(scale), zero=float(zero), min=float(lo), max=float(hi), type=6)
        self.describes.append(T["TensorDescribe"](index=self.index(name), quantInfo=info))

    def save(self, path, outputs):
        from mnnlite import save_model
        from mnnlite.format.tables import TABLE_CLASSES as T
        from mnnlite.graph import Model
        net = T["Net"](oplists=self.ops, tensorName=list(self.tensors), outputName=list(outputs), sourceType=0,
                       extraTensorDescribe=self.describes or None)
        save_model(Model(net), path)
        return path
