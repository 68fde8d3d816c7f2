"""Run a quantized model the way MNN's CPU backend does: int8 where ``plan`` says so, float elsewhere.

A tensor's value is a ``Value``: int8 codes with the (scale, zero) they were made with, and/or float
data.  The outputs of data-movement ops are computed lazily, as MNN's Rasters are: when a compute op
(or the graph output) needs one, it is built from its non-virtual sources in the mode of the Raster
that materialises it -- int8 (each source as codes: an int8 producer's codes as they are, a float
source cast with its own attribute) or float (codes dequantized).  Then each input of a compute op
goes through the stages the plan lists (a broadcast/layout copy) and is cast to what the op's command
reads: codes with the command input's attribute (FloatToInt8: ``mnnlite.ref.int8.quantize``) or float
(Int8ToFloat: ``dequantize``).  Float ops run the float kernels of ``mnnlite.ops``; int8 ops the
kernels of ``mnnlite.int8.ops``.

The plan depends on tensor shapes (broadcasts, loops): it is built on the first run of each input
shape signature from one float run of the same feeds, and cached.
"""
from __future__ import annotations

import numpy as np

from ..backend.rules import INT8_OP_TYPES
from ..errors import MnnliteError, ShapeError, UnsupportedOpError
from ..format.tables import DataFormat, OpType
from . import fastq
from .ops import INT8_KERNELS, Int8Call
from .plan import OpPlan, Plan, build_plan, need_content, region_inputs, stage


class Value:
    """A tensor value: float data ``f`` and/or int8 codes ``q`` made with ``key = (scale, zero)``."""

    __slots__ = ("f", "q", "key", "fmt")

    def __init__(self, fmt, f=None, q=None, key=None):
        self.fmt, self.f, self.q, self.key = fmt, f, q, key

    def float(self) -> np.ndarray:
        if self.f is None:
            self.f = fastq.dequantize(self.q, *self.key)
        return self.f

    def raw(self) -> np.ndarray:
        """Whatever array is at hand (for inputs an op reads only the shape of)."""
        return self.f if self.f is not None else self.q


def as_codes(v: Value, attr) -> Value:
    """The value as codes under ``attr``: as they are if made with its scale and zero, else cast."""
    if v.q is not None and v.key == attr.key:
        return v
    q = fastq.quantize(v.float(), attr.scale, attr.zero, *attr.qrange)
    return Value(v.fmt, q=q, key=attr.key)


def as_float(v: Value) -> Value:
    return v if v.q is None else Value(v.fmt, f=v.float())


def through(v: Value, stages) -> Value:
    """Apply the plan's stages: (True, attr) = held as int8 codes, (False, _) = held as float."""
    for int8, attr in stages:
        if int8 is None:
            continue
        v = as_codes(v, attr) if int8 else as_float(v)
    return v


class Int8Runner:
    """Executes the main graph of an ``Interpreter`` in MNN's int8 mode."""

    def __init__(self, interpreter):
        self.interp = interpreter
        self.program = interpreter.program()
        self.graph = interpreter.model.graph
        # While/If run as float ops of the main graph's plan, their bodies in the float interpreter: the
        # quantizers (MNN's and ours) leave subgraphs float, MNN's Module API runs each straight-line part
        # of the main graph as its own session, and a tensor crossing from one part to another leaves as
        # float and is cast back with the same attribute, which gives the codes it had (ddddocr OCR's KL
        # file, a bidirectional LSTM of two While loops: bit-exact with the official runtime on its 8
        # held-out samples).  Int8 content inside a body would run in the body's own session: refused.
        # Not modelled: MNN misreads quant info on a While/If *output* in some files (backend/rules.py
        # CONTROL_FLOW_OPS); mnnlite's quantizer never writes it, and this runner takes such a tensor as
        # float data cast with its attribute where an int8 command reads it.
        int8_bodies = _int8_subgraphs(interpreter.model)
        if int8_bodies:
            raise UnsupportedOpError(f"{interpreter.source}: subgraph {int8_bodies[0]!r} holds int8 ops or quant "
                                     f"info; int8 execution inside While/If bodies is not supported, run with "
                                     f"precision='float'")
        self._plans: dict = {}
        self.caches: dict = {}         # id(op) -> kernel cache (decoded weights, prepared convs)
        # feeds' shapes -> what the float run found (shapes, float or not, layouts); shared by the
        # interpreters of models that differ only in quant info and conv weights (``Interpreter(...,
        # plan_facts=)``: the accurate flow's candidate files), where it is the same for every one
        self.facts: dict = interpreter.plan_facts if interpreter.plan_facts is not None else {}

    def plan_for(self, bound: dict) -> Plan:
        """The plan for these feeds' shapes (built from one float run the first time)."""
        key = tuple(sorted((i, a.shape, int(f)) for i, (a, f) in bound.items()))
        plan = self._plans.get(key)
        if plan is None:
            facts = self.facts.get(key)
            if facts is None:
                env = self.program.run(bound, True, None)
                facts = self.facts[key] = ({i: (a.shape, a.dtype.kind == "f", int(f)) for i, (a, f) in env.items()},
                                           {i: DataFormat(f) for i, (a, f) in env.items()})
            meta, layouts = facts
            plan = self._plans[key] = build_plan(self.graph, meta)
            plan.layouts = dict(layouts)
            plan.frees = _lazy_frees(self.program, plan, set(self.graph.outputs))
        return plan

    def run(self, bound: dict, keep_all: bool, observe) -> dict:
        """Like ``_Program.run``: {tensor index: (float array, layout)} for the outputs (or all)."""
        return _Execution(self, self.plan_for(bound), bound).run(keep_all, observe)


class _Execution:
    """One run: concrete values, lazily evaluated data movement, kernel calls."""

    def __init__(self, runner: Int8Runner, plan: Plan, bound: dict):
        self.runner, self.plan, self.program = runner, plan, runner.program
        self.env: dict[int, Value] = {i: Value(DataFormat(f), f=a) for i, (a, f) in bound.items()}
        self.lazy: dict[int, object] = {}          # virtual tensor -> the move step producing it
        self.memo: dict = {}                       # (tensor, int8) -> Value of a lazy tensor

    def run(self, keep_all: bool, observe) -> dict:
        names, views = self.runner.graph.tensors, {}
        watching = keep_all or observe is not None
        env, memo, lazy, all_frees, run_step = self.env, self.memo, self.lazy, self.plan.frees, self.step
        for pos, (step, op_plan) in enumerate(zip(self.program.steps, self.plan.ops)):
            if op_plan.kind == "move":
                for o in step.outputs:
                    lazy[o] = step
                values = [self.materialized(o) for o in step.outputs] if watching else ()
            else:
                values = run_step(step, op_plan)
                for i, v in zip(step.outputs, values):
                    env[i] = v
            if watching:
                for i, v in zip(step.outputs, values):
                    f = self.final(i, v)
                    if keep_all:
                        views[i] = (f, v.fmt)
                    if observe is not None:
                        observe(i, names[i], f)
            if not keep_all:
                frees = all_frees.get(pos)
                if frees:
                    for i in frees:
                        env.pop(i, None)
                        if memo:
                            memo.pop((i, True), None)
                            memo.pop((i, False), None)
        result = dict(views)
        for i in self.runner.graph.outputs:
            v = self.materialized(i)
            result[i] = (self.final(i, v), v.fmt)
        return result

    # ------------------------------------------------------------------------------- values
    def final(self, i, v: Value) -> np.ndarray:
        """The float value the official runtime reports for a tensor (codes dequantized)."""
        t = self.plan.tensors.get(i)
        return through(v, [stage(t)] if t is not None else []).float()

    def materialized(self, i) -> Value:
        """A tensor's value as MNN holds it: a virtual one built in its Raster's mode."""
        if i in self.env:
            return self.env[i]
        if i not in self.lazy:
            raise ShapeError(f"{self.program.where}: tensor {self.runner.graph.tensors[i]!r} is produced by no op")
        t = self.plan.tensors[i]
        v = self.virtual(i, bool(t.int8) if t.materialized else False)
        if t.materialized:
            self.env[i] = v
        return v

    def source(self, i, int8: bool) -> Value:
        """A Raster source as the Raster reads it (FloatToInt8 with the source's own attribute)."""
        if i in self.lazy and i not in self.env:
            return self.virtual(i, int8)
        v = self.env[i]
        t = self.plan.tensors[i]
        if not t.is_float:
            return v
        if int8:
            return as_codes(v, t.attr)
        return as_float(v)

    def virtual(self, i, int8: bool) -> Value:
        """Evaluate the data-movement chain producing ``i`` on codes (int8) or floats."""
        memo = self.memo.get((i, int8))
        if memo is not None:
            return memo
        step = self.lazy[i]
        t = step.op_type
        ins = []
        for k, j in enumerate(step.inputs):
            if need_content(t, k):
                ins.append(self.source(j, int8 and self.plan.tensors[j].attr is not None))
            else:
                ins.append(self.env[j] if j in self.env else self.virtual(j, False))
        content = region_inputs(t, len(ins))
        codes = [k for k in content if ins[k].q is not None]
        keys = {ins[k].key for k in codes}
        if codes and len(codes) == len(content) and len(keys) == 1:
            arrays = [ins[k].q if k in content else ins[k].raw() for k in range(len(ins))]
            (key,) = keys
            zero = int(key[1])
            if t == OpType.Padding and zero != 0:
                # MNN's int8 Raster fills what no region covers with the zero point (CPURaster.cpp
                # mZeroPoint), i.e. float 0, where the kernel would write code 0: pad q - zero instead
                arrays[0] = arrays[0].astype(np.int16) - zero
            results = self.program.call(step, [(a, v.fmt) for a, v in zip(arrays, ins)])
            if t == OpType.Padding and zero != 0:
                results = [((a + zero).astype(np.int8), f) for a, f in results]
            values = [Value(DataFormat(f), q=a, key=key) if a.dtype == np.int8 else Value(DataFormat(f), f=a)
                      for a, f in results]
        else:
            arrays = [ins[k].float() if k in content and ins[k].q is not None else ins[k].raw()
                      for k in range(len(ins))]
            values = self.call_float(step, arrays, ins)
        for o, v in zip(step.outputs, values):
            self.memo[(o, int8)] = v
        return self.memo[(i, int8)]

    def read(self, i) -> Value:
        """An op's input as it stands (a virtual one evaluated the way its Raster makes it)."""
        if i in self.env:
            return self.env[i]
        return self.materialized(i)

    # -------------------------------------------------------------------------------- steps
    def step(self, step, op_plan: OpPlan) -> list:
        kind = op_plan.kind
        if step.const is not None:
            return [Value(f, f=a) for a, f in step.const]
        if kind == "input":
            return [self.env[step.outputs[0]]]
        env = self.env
        ins = [env[i] if i in env else self.read_input(step, k, op_plan) for k, i in enumerate(step.inputs)]
        if kind == "const":
            return self.call_float(step, [v.raw() for v in ins], ins)
        if op_plan.int8:
            return self.compute_int8(step, op_plan, ins)
        arrays = [v.raw() for v in ins]
        for ip in op_plan.inputs:
            arrays[ip.slot] = through(ins[ip.slot], ip.stages).float()
        return self.call_float(step, arrays, ins)

    def read_input(self, step, k, op_plan: OpPlan) -> Value:
        i = step.inputs[k]
        if i in self.env:
            return self.env[i]
        if i not in self.lazy:
            raise ShapeError(f"{self.program.where}: op {step.op.name!r} reads tensor "
                             f"{step.input_names[k]!r}, which no earlier op produced")
        t = self.plan.tensors[i]
        if t.materialized or op_plan.kind != "compute":
            return self.materialized(i)
        # a virtual input fused into a broadcast/layout copy: built in that copy's mode
        ip = next((p for p in op_plan.inputs if p.slot == k), None)
        mode = next((m for m, _ in (ip.stages if ip else []) if m is not None), False)
        return self.virtual(i, bool(mode))

    def call_float(self, step, arrays, ins) -> list:
        results = self.program.call(step, [(a, v.fmt) for a, v in zip(arrays, ins)])
        return [Value(DataFormat(f), f=a) for a, f in results]

    def compute_int8(self, step, op_plan: OpPlan, ins) -> list:
        fixed = op_plan.fixed
        if fixed is None:     # what depends on the plan only, looked up on the first run
            t = step.op_type
            kernel = INT8_KERNELS.get(t)
            if kernel is None:
                raise UnsupportedOpError(f"{self.program.where}: op {step.op.name!r} ({_name(t)}) runs in int8 "
                                         f"in MNN, and mnnlite has no int8 kernel for it; supported: "
                                         f"{sorted(_name(k) for k in INT8_KERNELS)}")
            interp = self.runner.interp
            attrs = [None] * len(step.inputs)            # the same list on every call: kernels only read it
            for ip in op_plan.inputs:
                attrs[ip.slot] = ip.attr
            out_float = [self.plan.tensors[o].is_float for o in step.outputs]
            fixed = op_plan.fixed = (
                kernel, out_float, self.runner.caches.setdefault(id(step.op), {}), interp.impl,
                getattr(interp, "target", "x86"),
                [(self.plan.layouts.get(o), attr.key if is_float else None, is_float)
                 for o, attr, is_float in zip(step.outputs, op_plan.out_attrs, out_float)],
                attrs, (self.program, step))
        kernel, out_float, cache, impl, target, outs, attrs, float_step = fixed
        arrays = [v.f if v.f is not None else v.q for v in ins]
        for ip in op_plan.inputs:
            v = ins[ip.slot]
            if ip.stages:
                v = through(v, ip.stages)
            arrays[ip.slot] = as_codes(v, ip.attr).q
        call = Int8Call(step.op, arrays, [v.fmt for v in ins], attrs, op_plan.out_attrs, impl, cache, out_float,
                        target, float_step)
        try:
            results = kernel(call)
        except MnnliteError:
            raise
        except (ValueError, IndexError, TypeError, ZeroDivisionError) as exc:
            raise ShapeError(f"{self.program.where}: op {step.op.name!r} ({_name(step.op_type)}, int8): "
                             f"{exc}") from exc
        except (MemoryError, OverflowError, AttributeError) as exc:
            from ..limits import op_failure
            raise op_failure(f"{self.program.where}: op {step.op.name!r} ({_name(step.op_type)}, int8)", step.op,
                             exc) from exc
        out = []
        for (fmt, key, is_float), a in zip(outs, results):
            if fmt is None:
                fmt = ins[0].fmt if ins else DataFormat.NCHW
            out.append(Value(fmt, None, a, key) if is_float else Value(fmt, a))
        return out


def _lazy_frees(program, plan: Plan, keep: set) -> dict:
    """Step position -> tensors to drop after it.  A virtual tensor's sources live until the last
    op that reads the virtual tensor (its Raster runs there), not until the move op's position."""
    producer = {o: pos for pos, step in enumerate(program.steps) for o in step.outputs}
    lazy = {o for pos, (step, p) in enumerate(zip(program.steps, plan.ops)) if p.kind == "move" for o in step.outputs}
    last: dict[int, int] = {}

    def use(i, pos):
        if last.get(i, -1) >= pos:
            return
        last[i] = pos
        if i in lazy:
            for j in program.steps[producer[i]].inputs:
                use(j, pos)

    for pos, step in enumerate(program.steps):
        for o in step.outputs:
            last.setdefault(o, pos)
        if plan.ops[pos].kind != "move":
            for i in step.inputs:
                use(i, pos)
    end = len(program.steps)
    for i in keep:
        use(i, end)
    frees: dict[int, list] = {}
    for i, pos in last.items():
        if i not in keep and pos < end:
            frees.setdefault(pos, []).append(i)
    return frees


def _int8_subgraphs(model) -> list[str]:
    """Names of the subgraphs that carry quant info or int8 ops (FloatToInt8, ConvInt8, ...)."""
    found = []
    for name, graph in sorted(model.subgraphs.items()):
        if graph.quant_info or any(op.type in INT8_OP_TYPES for op in graph.ops):
            found.append(name)
    return found


def _name(t) -> str:
    return t.name if isinstance(t, OpType) else f"#{t}"


__all__ = ["Int8Runner", "Value", "as_codes", "as_float", "through"]
