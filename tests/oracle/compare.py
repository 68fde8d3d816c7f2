"""Acceptance rules against the official runtime's outputs.

* float runtime: same NaN/infinity positions, max abs error <= REL_ERR_MAX * max|ref|, cosine >= COSINE_MIN;
* int8 runtime: max abs diff <= one quantization step of the output (``output_budget``) and a cosine.
"""
from __future__ import annotations

import numpy as np

from mnnlite.metrics import cosine

COSINE_MIN = 0.999999
REL_ERR_MAX = 1e-4          # max |got - ref| <= REL_ERR_MAX * max |ref|


def assert_close_to_oracle(got: np.ndarray, ref: np.ndarray, label: str, rel_err: float = REL_ERR_MAX) -> None:
    """Same NaN and infinity positions; on finite values max abs err <= rel_err * max|ref| and cosine >=
    COSINE_MIN."""
    g, r = got.astype(np.float64).reshape(-1), ref.astype(np.float64).reshape(-1)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(r), err_msg=f"{label}: NaN positions differ")
    infinite = np.isinf(r)
    np.testing.assert_array_equal(g[infinite], r[infinite], err_msg=f"{label}: infinities differ")
    finite = np.isfinite(r)
    g, r = g[finite], r[finite]
    if r.size == 0:
        return
    scale = np.abs(r).max()
    err = np.abs(g - r).max()
    assert err <= rel_err * scale + 1e-30, f"{label}: max abs err {err:.3g} > {rel_err} * {scale:.3g}"
    norms = np.linalg.norm(g) * np.linalg.norm(r)
    if norms > 0:
        cos = float(g @ r / norms)
        assert cos >= COSINE_MIN, f"{label}: cosine {cos:.9f} < {COSINE_MIN}"


def assert_output_matches(g: np.ndarray, r: np.ndarray, label: str, rel_err: float = REL_ERR_MAX) -> None:
    """Same shape and dtype kind (float or not); integers equal, floats within the float budget."""
    assert g.shape == r.shape, f"{label}: shape {g.shape} != oracle's {r.shape}"
    assert (g.dtype.kind == "f") == (r.dtype.kind == "f"), f"{label}: dtype {g.dtype} != oracle's {r.dtype}"
    if r.dtype.kind != "f":
        np.testing.assert_array_equal(g, r, err_msg=label)
    else:
        assert_close_to_oracle(g, r, label, rel_err)


def assert_matches(got: dict, ref: dict, where: str = "", rel_err: float = REL_ERR_MAX) -> None:
    """Same output names; each output as assert_output_matches."""
    assert set(got) == set(ref), f"{where}: outputs {sorted(got)} != oracle's {sorted(ref)}"
    for name, r in ref.items():
        assert_output_matches(got[name], r, f"{where} output {name!r}", rel_err)


# ------------------------------------------------------------------------------------ int8 runs

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
        result[name] = (float(np.abs(a - b).max()), output_budget(graph, name), cosine(a, b))
    return result
