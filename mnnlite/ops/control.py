"""Control flow: While and If, which run subgraphs of the model (``Net.subgraphs``).

Semantics of MNN 3.6.1's Express modules (express/module/WhileModule.cpp, IfModule.cpp); the Session API
cannot run these ops.  Subgraphs are run through ``call.runtime.run_graph(name, arrays, formats)``,
which binds arrays to the subgraph's inputs by position (``SubGraphProto.inputs``) and returns its
outputs (``SubGraphProto.outputs``); ``call.runtime.graph_io(name)`` gives their names.
"""
from __future__ import annotations

import numpy as np

from ..format.tables import OpType
from ..limits import check_iterations
from .registry import OpCall, register
from .shape import NCHW, fail

NO_LIMIT = 2 ** 31 - 1


def truthy(x: np.ndarray) -> bool:
    """MNN reads a condition as ``readMap<int>()[0] > 0``: the first element's bits as int32 (for float
    that is "> 0" except for NaN payloads); an empty condition counts as true (ONNX optional input)."""
    flat = np.ascontiguousarray(x).reshape(-1)
    if flat.size == 0:
        return True
    if flat.dtype == np.float32:
        return bool(flat[:1].view(np.int32)[0] > 0)
    return bool(flat[0] > 0)


@register(OpType.While)
def while_(call: OpCall):
    p = call.op.main
    if p is None or type(p).__name__ != "WhileParam" or not p.body_graph:
        raise fail(call, "only While ops with a WhileParam body graph are supported (not LoopParam)")
    if not p.cond_graph:
        return _onnx_loop(call, p.body_graph)
    return _tf_while(call, p)


def _onnx_loop(call: OpCall, body: str):
    """ONNX Loop (no cond graph).  Op inputs: trip count M, condition, N carried values (captured outer
    tensors are appended as carried values).  Body inputs: iteration, condition, the N values; body
    outputs: condition, N values, K scan values.  Op outputs: the N final values, then K scans stacked
    along a new axis 0."""
    rt = call.runtime
    xs, fmts = list(call.inputs), list(call.formats)
    n = len(xs) - 2
    k = len(call.output_names) - n
    if n < 0 or k < 0:
        raise fail(call, f"{len(xs)} inputs and {len(call.output_names)} outputs do not form an ONNX loop")
    limit = int(xs[0].reshape(-1)[0]) if xs[0].size else NO_LIMIT
    cond = truthy(xs[1])
    values, value_fmts = xs[2:], fmts[2:]
    scans, scan_fmts = [[] for _ in range(k)], [NCHW] * k
    step = 0
    while step < limit and cond:
        check_iterations(f"op {call.op.name!r} (While, ONNX Loop)", step)
        outs, out_fmts = rt.run_graph(body, [np.array(step, np.int32), xs[1], *values],
                                      [NCHW, fmts[1], *value_fmts])
        if len(outs) != 1 + n + k:
            raise fail(call, f"body graph {body!r} has {len(outs)} outputs, expected {1 + n + k}")
        values, value_fmts = outs[1:1 + n], out_fmts[1:1 + n]
        for i in range(k):
            scans[i].append(outs[1 + n + i])
            scan_fmts[i] = out_fmts[1 + n + i]
        cond = truthy(outs[0])
        step += 1
    stacked = [_stack(call, s) for s in scans]
    call.out_formats = list(value_fmts) + scan_fmts
    return list(values) + stacked


def _stack(call: OpCall, items):
    if not items:
        return np.zeros((0,), np.float32)
    if any(a.shape != items[0].shape for a in items):
        raise fail(call, f"scan outputs change shape between iterations: {[a.shape for a in items]}")
    return np.stack(items)


def _tf_while(call: OpCall, p):
    """Cond/body graphs wired by name (WhileModule::create): ``aliases_inputs[i]`` names the subgraph
    inputs fed by op input i; ``aliases_updates`` pairs [body or cond output, input it replaces];
    ``aliases_outputs`` names the body outputs (or inputs) that become the op outputs."""
    rt = call.runtime
    body_in_names, body_out_names = rt.graph_io(p.body_graph)
    cond_in_names, cond_out_names = rt.graph_io(p.cond_graph)
    body = [None] * len(body_in_names)
    cond = [None] * len(cond_in_names)
    for i, names in enumerate(p.aliases_inputs or []):
        for name in names.data or []:
            _put(body, body_in_names, name, (call.inputs[i], call.formats[i]))
            _put(cond, cond_in_names, name, (call.inputs[i], call.formats[i]))
    updates = [tuple(u.data) for u in (p.aliases_updates or [])]
    out_names = list(p.aliases_outputs or [])
    outputs = _outputs_from_inputs(call, p, out_names)
    iterations = 0
    while True:
        check_iterations(f"op {call.op.name!r} (While)", iterations)
        iterations += 1
        res = _run(call, p.cond_graph, cond)
        if not truthy(res[0][0]):
            break
        outs = _run(call, p.body_graph, body)
        by_name = dict(zip(body_out_names, outs))
        cond_by_name = {cond_out_names[0]: res[0]} if cond_out_names else {}
        for out_name, in_name in updates:
            value = by_name.get(out_name, cond_by_name.get(out_name))
            if value is not None:
                _put(body, body_in_names, in_name, value)
                _put(cond, cond_in_names, in_name, value)
        for j, name in enumerate(out_names):
            # a body input of that name wins over a body output (mOutputFromBodyInput is applied last)
            if name in body_in_names:
                outputs[j] = body[body_in_names.index(name)]
            elif name in by_name:
                outputs[j] = _updated(by_name, updates, name)
    if any(o is None for o in outputs):
        raise fail(call, f"outputs {out_names} are not all produced by body graph {p.body_graph!r}")
    call.out_formats = [f for _, f in outputs]
    return [a for a, _ in outputs]


def _put(slots, names, name, value):
    if name in names:
        slots[names.index(name)] = value


def _updated(by_name, updates, name):
    """An output that is itself updated from another body output reads that one (replaceOutputs)."""
    for out_name, in_name in updates:
        if in_name == name and out_name in by_name:
            return by_name[out_name]
    return by_name[name]


def _outputs_from_inputs(call: OpCall, p, out_names):
    """Before any iteration an output is the op input that aliases the same name (mOutputFromInput)."""
    outputs = [None] * len(out_names)
    for j, name in enumerate(out_names):
        for i, names in enumerate(p.aliases_inputs or []):
            if name in (names.data or []):
                outputs[j] = (call.inputs[i], call.formats[i])
                break
    return outputs


def _run(call: OpCall, graph: str, slots):
    if any(s is None for s in slots):
        raise fail(call, f"subgraph {graph!r} has inputs no alias feeds")
    outs, fmts = call.runtime.run_graph(graph, [a for a, _ in slots], [f for _, f in slots])
    return list(zip(outs, fmts))


@register(OpType.If)
def if_(call: OpCall):
    """IfModule: input 0 is the condition; ``aliases_inputs[i]`` names the branch inputs fed by op input
    i; ``aliases_outputs[j]`` = [then output, else output] of op output j (absent: by position)."""
    p = call.op.main
    if p is None or not p.then_graph or not p.else_graph:
        raise fail(call, "If needs an IfParam with then and else graphs")
    branch = p.then_graph if truthy(call.inputs[0]) else p.else_graph
    side = 0 if branch == p.then_graph else 1
    in_names, out_names = call.runtime.graph_io(branch)
    slots = [None] * len(in_names)
    for i, names in enumerate(p.aliases_inputs or []):
        for name in names.data or []:
            _put(slots, in_names, name, (call.inputs[i], call.formats[i]))
    results = _run(call, branch, slots)
    if p.aliases_outputs is None:
        picked = results[:len(call.output_names)]
    else:
        by_name = dict(zip(out_names, results))
        picked = []
        for pair in p.aliases_outputs:
            name = pair.data[side]
            if name not in by_name:
                raise fail(call, f"branch {branch!r} has no output {name!r}")
            picked.append(by_name[name])
    call.out_formats = [f for _, f in picked]
    return [a for a, _ in picked]
