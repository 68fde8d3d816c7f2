"""Which ops run int8 (the ``int8_ops`` key): the convolutions, and only what MNN then runs int8 safely.

MNN's KL flow annotates every tensor its session visits, so element-wise ops, pools, Concat/Raster,
Select and final probability maps run int8 (docs/accuracy: EMA, which annotates only conv inputs and
outputs, keeps more accuracy on 13 of 16 real models).  Here the candidates are the convolutions MNN's
CPU backend runs int8 (``Convolution``/``ConvolutionDepthwise`` with their weights in the op: int8 weights
and a quantized input and output are what ``_supportQuant`` needs, ``mnnlite/int8/plan.py``); a tensor
gets quant info only when an int8 conv reads or writes it, with its own range.

MNN's runtime then spreads quant attributes along Raster/ReLU/Pooling/Interp commands and runs int8 every
command whose inputs and first output carry one (``int8/plan.py``).  ``check_plan`` replays that decision
(our planner is MNN's) and repairs the patterns MNN's int8 kernels get wrong (README "How MNN really
behaves"), by giving a tensor quant info of its own so the command runs float:

* max pooling on codes that can be negative (x86 compares ``q + 128`` as signed bytes; fine after a
  ReLU with zero point 0, and on ARM): the pool's output gets its own attribute;
* a Raster (Concat, ...) whose inputs would share one scale while their ranges differ by more than
  ``MIXED_RANGE_RATIO`` (boxes in pixels next to scores in [0, 1]): each input gets its own range, and
  a conv reading a concat of ranges over ``MIXED_INPUT_RATIO`` apart runs float (``mixed_concat_inputs``);
* an int8 Raster whose inputs' clamp ranges differ from the output's (codes pass through unclamped);
* average pooling on codes with a non-zero zero point (MNN's rounding there is not the one our runtime
  emulates exactly: one code off on mobilenet's global pool);
* a tensor MNN's propagation would give one of several attributes depending on its heap addresses
  (ddddocr det's SiLU outputs, read by an Interp into one Concat and by another Concat): the file gives it
  quant info of its own, equal to the attribute an int8 Interp reading it writes (int8 Interp copies codes,
  never rescales), else to the candidate that fits its values best, so every MNN process runs the same.

Comparison outputs are integer tensors and tensors without a usable range (scale 0) never get quant info.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..format.tables import OpType
from ..backend.rules import PROPAGATE_TYPES, ints

INT8_CONV_TYPES = (OpType.Convolution, OpType.ConvolutionDepthwise)
MIXED_RANGE_RATIO = 4.0     # a Concat of ranges further apart never shares one scale
# a conv reading a concat of ranges further apart than this runs float: pixel boxes next to [0, 1] scores
# are >= 100x apart; ppocr_det's FPN concat (5.4x) loses nothing int8 once its weights keep their tiny
# channels (held-out cosine 0.99064 int8, 0.99059 float)
MIXED_INPUT_RATIO = 16.0


@dataclass
class ConvSite:
    """One convolution that may run int8."""

    pos: int                # position in the main graph's op list
    name: str
    input: int
    output: int
    macs: int               # multiply-accumulates of one forward on the calibration shape


def conv_sites(graph, facts, skip=()) -> tuple[list[ConvSite], dict[str, str]]:
    """Convs MNN can run int8, and {conv name: why not} for the other convolutions."""
    from ..ops.weights import conv_weights

    skip = set(skip)
    sites, excluded = [], {}
    for pos, op in enumerate(graph.ops):
        if op.type not in INT8_CONV_TYPES + (OpType.Deconvolution, OpType.DeconvolutionDepthwise):
            continue
        ins, outs = ints(op.inputIndexes), ints(op.outputIndexes)
        if op.type not in INT8_CONV_TYPES:
            excluded[op.name] = "deconvolution: MNN's CPU backend has no int8 kernel for it"
        elif op.name in skip:
            excluded[op.name] = "skip_quant_op_names"
        elif len(ins) != 1 or not outs:
            excluded[op.name] = "weights are an input tensor (MNN runs such a conv in float)"
        elif any(t not in facts or facts[t].dtype != np.float32 for t in (ins[0], outs[0])):
            excluded[op.name] = "not executed by the calibration forward"
        else:
            w, _ = conv_weights(op)
            out_shape = facts[outs[0]].shape
            spatial = int(np.prod(out_shape[2:])) if len(out_shape) > 2 else 1
            batch = int(out_shape[0]) if out_shape else 1
            sites.append(ConvSite(pos, op.name, ins[0], outs[0], int(np.size(w)) * spatial * batch))
    return sites, excluded


# commands along which MNN's runtime spreads quant attributes, as named in the calibration schedule
# (a Pooling3D command there may run as Pooling)
_SPREAD_STEPS = PROPAGATE_TYPES | {"Pooling3D"}


def stat_tensors(plan, sites: list[ConvSite]) -> set[int]:
    """Tensors whose statistics the choice may need: conv inputs/outputs, and every tensor MNN's runtime
    may hand one of their attributes to (connected to them through the commands it spreads along)."""
    wanted = {s.input for s in sites} | {s.output for s in sites}
    links: dict[int, set[int]] = {}
    for step in plan.steps:
        if step.type in _SPREAD_STEPS:
            ends = [t for t in step.inputs + step.outputs if t >= 0]
            for t in ends:
                links.setdefault(t, set()).update(ends)
    todo = list(wanted)
    while todo:
        for t in links.get(todo.pop(), ()):
            if t not in wanted:
                wanted.add(t)
                todo.append(t)
    return wanted


def mixed_concat_inputs(plan, sites: list[ConvSite], stats: dict) -> dict[str, str]:
    """{conv name: why} for convs whose input concatenates tensors with ranges over ``MIXED_INPUT_RATIO``
    apart: MNN's int8 conv reads its input with one scale, which the small-range part cannot share (a
    detector head's boxes in pixels next to scores in [0, 1])."""
    out = {}
    # every Raster of the schedule (plan.rasters leaves Interp outputs out: that is MNN's scale
    # propagation, not what the Raster reads)
    for step in plan.steps:
        if step.type != "Raster" or not step.outputs:
            continue
        dst, ins = step.outputs[0], [t for t in step.inputs if t >= 0]
        ranges = [stats[t].max_abs for t in ins if t in stats]
        if len(ins) < 2 or len(ranges) != len(ins) or not min(ranges) > 0:
            continue
        ratio = max(ranges) / min(ranges)
        if ratio <= MIXED_INPUT_RATIO:
            continue
        for s in sites:
            if s.input == dst:
                out[s.name] = (f"its input concatenates ranges {min(ranges):.3g} to {max(ranges):.3g} "
                               f"({ratio:.1f}x): one int8 input scale cannot hold both")
    return out


class Repair(NamedTuple):
    """A tensor that must get quant info of its own (``check_plan``)."""

    tensor: int
    reason: str
    apart: bool             # its key must differ from its neighbours' so that the command between runs float
    like: object = None     # a QuantAttr whose numbers it takes (else the tensor's own range)


def nudged(q, factor: float = 1 + 2.0 ** -20):
    """A copy of quant info ``q`` with a scale one step away: same codes' meaning to 1e-6, but a key of
    its own, so MNN's runtime never runs a Raster/Pooling between the two in int8."""
    import dataclasses

    return dataclasses.replace(q, scale=float(np.float32(q.scale * factor)))


def check_plan(plan8, tensors: dict, stats: dict, ranges, target: str = "x86") -> list[Repair]:
    """Repairs for the int8 plan MNN would run (``plan8``, ``mnnlite.int8.plan.Plan``): the tensors that
    must get quant info of their own.  ``tensors``: the current quant info by tensor index; ``stats``:
    tensor index -> SignedHistogram (for range ratios); ``ranges``: tensor index -> the Range the tensor
    would get of its own."""
    fixes: list[Repair] = []
    ambiguous = plan8.order_dependent()
    # the first of a chain (an Interp's input, not its output): the rest then follows it (next round)
    follows = {o for c in plan8.commands if c.type in PROPAGATE_TYPES and any(i in ambiguous for i in c.inputs)
               for o in c.outputs}
    for t, cands in ambiguous.items():
        if isinstance(t, int) and t not in tensors and t not in follows and plan8.tensors[t].is_float \
                and t in stats:
            like = _settled(plan8, t, cands, stats[t])
            fixes.append(Repair(t, f"tensor {plan8.tensors[t].name}: MNN's runtime gives it one of "
                                   f"{len(cands)} neighbours' attributes, which one depending on heap "
                                   f"addresses; it gets {like!r} of its own", False, like))
    for t, info in plan8.tensors.items():
        if isinstance(t, int) and t not in tensors and info.attr is not None and info.is_float and t in stats \
                and not any(f.tensor == t for f in fixes):
            why = _misfit(info.attr, stats[t], ranges[t])
            if why:
                fixes.append(Repair(t, f"tensor {info.name}: MNN's runtime would quantize it with a "
                                       f"neighbour's range ({why}); it gets its own", False))
    for cmd in plan8.commands:
        if not cmd.int8:
            continue
        outs = [t for t in cmd.outputs if isinstance(t, int)]
        ins = [t for t in cmd.inputs if isinstance(t, int)]
        if cmd.type == "Pooling" and target == "x86" and cmd.params is not None and int(cmd.params.type) == 0:
            src = cmd.inputs[0]
            lowest = _lowest_code(plan8.tensors[src].attr, stats.get(src) if isinstance(src, int) else None)
            if lowest < 0 and outs:
                why = (f"max pool {cmd.name}: MNN's x86 int8 max pool compares q+128 as signed bytes and codes "
                       f"here reach {lowest}; the pool runs float")
                fixes.append(Repair(outs[0], why, True))
                if isinstance(src, int) and src not in tensors:     # else MNN hands it the output's attribute
                    fixes.append(Repair(src, why, False))
        elif cmd.type == "Pooling" and cmd.params is not None and int(cmd.params.type) == 1 and outs \
                and float(plan8.tensors[cmd.inputs[0]].attr.zero) != 0:
            fixes.append(Repair(outs[0], f"average pool {cmd.name} on codes with a zero point: MNN's int8 "
                                         f"average rounds differently there (one code off on mobilenet's global "
                                         f"pool, where our emulation is exact for zero point 0); the pool runs "
                                         f"float", True))
        elif cmd.type == "Raster" and len(ins) > 1:
            ranges = [stats[t].max_abs for t in ins if t in stats]
            if len(ranges) == len(ins) and min(ranges) > 0 and max(ranges) / min(ranges) > MIXED_RANGE_RATIO:
                for t in ins:
                    if t not in tensors:
                        fixes.append(Repair(t, f"Raster {cmd.name} concatenates ranges {min(ranges):.3g} to "
                                               f"{max(ranges):.3g}: each input keeps its own scale", True))
        if cmd.type == "Raster" and outs:
            out_attr = plan8.tensors[cmd.outputs[0]].attr
            for t in cmd.inputs:
                a = plan8.tensors[t].attr
                if a is not None and out_attr is not None and (a.min, a.max) != (out_attr.min, out_attr.max):
                    fixes.append(Repair(outs[0], f"Raster {cmd.name}: inputs clamp to another code range than "
                                                 f"its output (MNN passes the codes through); it runs float", True))
                    break
    return fixes


def _settled(plan8, t, cands, hist):
    """The attribute an order-dependent tensor ``t`` takes for good: the one an int8 Interp reading it
    writes (its codes are copied, never rescaled: README, How MNN really behaves), else the candidate with
    the least expected error on its values."""
    interp_keys = {plan8.tensors[c.outputs[0]].attr.key for c in plan8.commands
                   if c.type == "Interp" and c.int8 and c.inputs and c.inputs[0] == t
                   and plan8.tensors[c.outputs[0]].attr is not None}

    def cost(a):
        s, z = float(a.scale), float(a.zero)
        return (a.key not in interp_keys, hist.error((float(a.min) - z) * s, (float(a.max) - z) * s))
    return min(cands, key=cost)


MISFIT_ERROR_RATIO = 2.0     # an inherited range may cost this much more expected error than the tensor's own


def _misfit(attr, hist, own) -> str | None:
    """Why quantizing a tensor with a range inherited from a neighbour (MNN propagates attributes along
    Raster/Pooling/ReLU/Interp commands) loses accuracy: its expected error is over ``MISFIT_ERROR_RATIO``
    times that of the tensor's own range ``own`` (a reshape or transpose of the same values inherits a
    fitting range and keeps its int8 data movement)."""
    s, z = float(attr.scale), float(attr.zero)
    if not s > 0:
        return "scale 0"
    lo, hi = (float(attr.min) - z) * s, (float(attr.max) - z) * s
    inherited = hist.error(lo, hi)
    if inherited <= MISFIT_ERROR_RATIO * own.error + 1e-30:
        return None
    return (f"expected error {inherited:.3g} against {own.error:.3g} with its own range; values "
            f"{hist.lo:.4g}..{hist.hi:.4g}, inherited range {lo:.4g}..{hi:.4g}")


def _lowest_code(attr, hist) -> int:
    """The smallest code a tensor quantized with ``attr`` holds: from its observed minimum when known,
    else the attribute's clamp minimum."""
    if hist is None or not float(attr.scale) > 0:
        return int(attr.min)
    return int(max(attr.min, np.round(hist.lo / float(attr.scale)) + float(attr.zero)))


__all__ = ["ConvSite", "Repair", "conv_sites", "mixed_concat_inputs", "stat_tensors", "check_plan", "nudged",
           "INT8_CONV_TYPES", "MIXED_RANGE_RATIO", "MIXED_INPUT_RATIO"]
