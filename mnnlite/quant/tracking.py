"""Which tensors MNN's quantizer tracks, and how their scales propagate.

MNN's quantizer observes the model *as its runtime executes it* (``mnnlite.backend``): statistics are
attached to every tensor an executed command reads or writes (docs/mnn-quantization.md §6.1), and scales
are propagated through Raster and Pooling commands (docs/mnn-quantization.md §6.6).  ``plan_tracking``
replays MNN's discovery callbacks over the lowered schedule, so the set of tensors that get quant info,
their names and the propagation are MNN's (tests/quant/test_pipeline_tracking.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..backend.lowering import Lowering, TensorFacts, tensors_from_facts
from ..backend.rules import NHWC, ints
from ..format.tables import OpType


@dataclass(frozen=True)
class Step:
    """One command MNN executes (what its debug callbacks report)."""

    name: str                   # op name, or "<op>_raster_<k>" for commands geometry made up
    type: str                   # "Raster", "Convolution", "While", ...
    inputs: tuple[int, ...]     # tensor indexes; negative = temporaries (MNN index -1)
    outputs: tuple[int, ...]


def lowered_steps(lowering: Lowering) -> list[Step]:
    """The float session's commands as ``Step``s: MNN's names, a Raster's origins once each, temporaries
    as negative indexes."""
    temps: dict[str, int] = {}

    def index(t) -> int:
        return t if isinstance(t, (int, np.integer)) else temps.setdefault(t, -1 - len(temps))
    steps = []
    for op, buffer in lowering.buffers:
        for k, cmd in enumerate(buffer):
            ins = [index(t) for t in cmd.inputs]
            if cmd.type == "Raster":
                ins = list(dict.fromkeys(ins))
            steps.append(Step(op.name if cmd.named else f"{op.name}_raster_{k}", cmd.type, tuple(ins),
                              tuple(index(t) for t in cmd.outputs)))
    return steps


# --------------------------------------------------------------------------------------------------
# Which tensors get statistics (docs/mnn-quantization.md §6.1) and what propagation records (docs/mnn-quantization.md §6.6)
# --------------------------------------------------------------------------------------------------
@dataclass
class TrackingPlan:
    """The discovery pass: what MNN's quantizer tracks for this graph."""

    steps: list[Step]
    tracked: dict[int, str]                 # tensor -> statistics name ("<op> output_tensor_0"), first sight
    seen: set[int]                          # every tensor an executed, non-skipped command touched
    formats: dict[int, int] = field(default_factory=dict)                     # MNN layout per tensor
    rasters: dict[str, tuple[int, list[int]]] = field(default_factory=dict)   # name -> (output, inputs)
    pools: dict[str, tuple[int, list[int]]] = field(default_factory=dict)
    raster_input_first: set[int] = field(default_factory=set)   # first seen as a Raster's input

    @property
    def order(self) -> list[int]:
        """Tracked tensors in the order they are first computed in a forward."""
        return list(self.tracked)


def plan_tracking(graph, facts: dict[int, TensorFacts], skip=()) -> TrackingPlan:
    """Replay MNN's discovery callbacks over the lowered schedule."""
    lowering = Lowering(graph, tensors_from_facts(graph, facts)).run()
    steps = lowered_steps(lowering)
    formats = {i: int(lowering.tensors[i].layout) for i in range(len(graph.tensors))}
    interp_outputs = {t for op in graph.ops if op.type in (OpType.Interp, OpType.Resize)
                      for t in ints(op.outputIndexes)}
    skip = set(skip)
    tracked: dict[int, str] = {}
    seen: set[int] = set()
    plan = TrackingPlan(steps, tracked, seen, formats)
    for step in steps:
        if step.name in skip:
            continue
        for kind, tensors in (("input", step.inputs), ("output", step.outputs)):
            i = 0
            for t in tensors:
                if t < 0:
                    continue
                seen.add(t)
                virtual = kind == "input" and lowering.tensors[t].virtual and t not in lowering.outputs
                if t not in tracked and not virtual:
                    tracked[t] = f"{step.name} {kind}_tensor_{i}"
                    if kind == "input" and step.type == "Raster":
                        plan.raster_input_first.add(t)
                i += 1
        if step.type == "Raster":
            # Observed with MNN 3.6.1: an Interp's output never shows up among a Raster's inputs
            # (tests/quant/test_pipeline_tracking.py::test_concat_after_interp).
            ins = [t for t in step.inputs if t >= 0 and t not in interp_outputs]
            if ins:
                plan.rasters[step.name] = (step.outputs[0], ins)
        elif step.type == "Pooling":
            ins = [t for t in step.inputs if t >= 0]
            if ins:
                plan.pools[step.name] = (step.outputs[0], ins)
    return plan


def needed_statistics(plan: TrackingPlan) -> set[int]:
    """Tracked tensors whose own scale survives propagation into some written (index >= 0) tensor.

    Propagation only copies values around, so running it on the tensors' own ids tells whose statistics
    are ever read; the others need no KL threshold (the expensive part).
    """
    tokens = {t: (t, 0) for t in plan.tracked}
    final = propagate(tokens, plan)
    return {v[0] for t, v in final.items() if t >= 0 and v[0] in plan.tracked}


def propagate(scales: dict[int, tuple[float, float]], plan: TrackingPlan) -> dict[int, tuple[float, float]]:
    """docs/mnn-quantization.md §6.6: Raster then Pooling commands, each in name order; missing entries read as (0, 0).

    Returns a new dict (the keys may grow: MNN's map creates the entries it reads).
    """
    out = dict(scales)
    zero = (0.0, 0.0)
    for name in sorted(plan.rasters):
        dst, ins = plan.rasters[name]
        if len(ins) > 1:
            value = out.setdefault(dst, zero)
            for t in ins:
                out[t] = value
        else:
            out[dst] = out.setdefault(ins[0], zero)
    for name in sorted(plan.pools):
        dst, ins = plan.pools[name]
        for t in ins:
            out[dst] = out.setdefault(t, zero)
    return out



def layout_name(plan: TrackingPlan, t: int) -> str:
    return "NHWC" if plan.formats.get(t) == NHWC else "NCHW"

