"""Calibration: which tensors get statistics, the KL / ADMM / EMA flows, scale propagation, debug mode.

MNN's quantizer observes the model *as its runtime executes it*: after "geometry lowering", data-movement
ops (ConvertTensor, Reshape, Concat, Slice, Permute, ...) no longer run; their outputs are *virtual* views,
and a ``Raster`` command named ``<consumer>_raster_<k>`` materialises a view right before the first op that
needs its memory.  Statistics are attached to every tensor an executed command reads or writes (docs/mnn-quantization.md §6.1),
and scales are propagated through Raster and Pooling commands (docs/mnn-quantization.md §6.6).  ``lower`` reproduces that
schedule on our graph (from the tensor shapes seen in one forward), so the set of tensors that get quant
info, their names and the propagation are MNN's.  The rules come from MNN 3.6.1's geometry code
(``source/geometry``, ``GeometryComputerUtils.cpp``, ``Pipeline.cpp``) and are checked against the commands
the official runtime executes and the files its quantizer writes (tests/quant/test_pipeline_tracking.py).

Sections: the lowered schedule (``lower``, ``plan_tracking``, ``propagate``); running the float model
(``Samples``, ``tensor_facts``); KL (``calibrate_kl`` over ``feature.kl.KLObserver``); ADMM
(``calibrate_admm``, ``StreamingADMM``); debug mode (``debug_distances``); EMA (``fused_convs``,
``calibrate_ema``).  Every flow streams: per-tensor accumulators of bounded size, one sample's activations
at a time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..format.tables import DataFormat, OpType
from ..layout import op_output_format
from .log import RANGES

NCHW, NHWC, NC4HW4 = int(DataFormat.NCHW), int(DataFormat.NHWC), int(DataFormat.NC4HW4)

# --------------------------------------------------------------------------------------------------
# Op families after MNN's geometry lowering
# --------------------------------------------------------------------------------------------------
# Pure data movement: the output is a view (regions) over these inputs; no command runs for the op.
_VIEW_ALL_INPUTS = {OpType.Concat, OpType.Pack, OpType.QuantizedConcat}
_VIEW_FIRST_INPUT = {
    OpType.ConvertTensor, OpType.Reshape, OpType.QuantizedReshape, OpType.Flatten, OpType.Squeeze,
    OpType.Unsqueeze, OpType.ExpandDims, OpType.Identity, OpType.Permute, OpType.Transpose,
    OpType.Slice, OpType.SliceTf, OpType.StridedSlice, OpType.Unpack, OpType.Tile, OpType.BroadcastTo,
    OpType.DepthToSpace, OpType.SpaceToDepth, OpType.Crop, OpType.Padding, OpType.Reverse,
    OpType.ReverseSequence,
}
VIEW_OPS = frozenset(_VIEW_ALL_INPUTS | _VIEW_FIRST_INPUT)

# OpCommonUtils::opNeedContent: inputs whose data an op never reads (only their shape).
_NO_CONTENT_ALL = {OpType.ZerosLike, OpType.ZeroGrad, OpType.Shape, OpType.Rank, OpType.Const, OpType.Size,
                   OpType.PriorBox}
_NO_CONTENT_INPUT1 = {OpType.Interp, OpType.Crop, OpType.Reshape, OpType.Reduction, OpType.Resize}

# SizeComputer::needInputContent: inputs read at shape-computation time (they become constants).
_SHAPE_INPUTS = {
    OpType.BatchToSpaceND: (1, 2), OpType.BroadcastTo: (1,), OpType.Col2Im: (1,),
    OpType.CosineSimilarity: (2,), OpType.CropAndResize: (3,), OpType.ExpandDims: (1,), OpType.Fill: (0,),
    OpType.GatherV2: (2,), OpType.GridSample: (2,), OpType.Interp: (1,), OpType.Interp3D: (1,),
    OpType.LinSpace: (2,), OpType.NonMaxSuppressionV2: (2, 3), OpType.OneHot: (1,), OpType.Padding: (1,),
    OpType.RandomUniform: (0,), OpType.RandomNormal: (0,), OpType.Range: (0, 1, 2), OpType.Reduction: (1,),
    OpType.Reshape: (1,), OpType.QuantizedReshape: (1,), OpType.ScatterNd: (2,), OpType.Segment: (1,),
    OpType.SetDiff1D: (0, 1), OpType.Slice: (1,), OpType.SliceTf: (1, 2), OpType.SpaceToBatchND: (1, 2),
    OpType.Tile: (1,), OpType.TopKV2: (1, 2), OpType.Transpose: (1,), OpType.Unique: (0,),
    OpType.Where: (0,), OpType.CumSum: (1,),
}


def op_needs_content(op, index: int) -> bool:
    """MNN's ``OpCommonUtils::opNeedContent``."""
    if op.type in _NO_CONTENT_ALL:
        return False
    if op.type in _NO_CONTENT_INPUT1 and index == 1:
        return False
    if op.type == OpType.GridSample and index == 2:
        return False
    return True


def shape_inputs(op) -> tuple[int, ...]:
    """MNN's ``SizeComputer::needInputContent``: inputs whose values decide output shapes."""
    n = len(_ints(op.inputIndexes))
    if op.type == OpType.Deconvolution and op.main is not None and op.main.common is not None \
            and op.main.common.hasOutputShape:
        return (n - 1,)
    if n > 1 and op.type in (OpType.Squeeze, OpType.Unsqueeze, OpType.ReverseSequence, OpType.Reverse):
        return (1,)
    if op.type == OpType.StridedSlice and op.main is not None and type(op.main).__name__ == "StridedSliceParam":
        if op.main.fromType == 0:
            return () if n == 5 else (1, 2, 3)
        return (1, 2, 3, 4)
    return _SHAPE_INPUTS.get(op.type, ())


def _ints(v) -> list[int]:
    return [] if v is None else [int(x) for x in v]


# --------------------------------------------------------------------------------------------------
# The lowered schedule
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One command MNN executes (what its debug callbacks report)."""

    name: str                   # op name, or "<op>_raster_<k>" for commands geometry made up
    type: str                   # "Raster", "Convolution", "While", ...
    inputs: tuple[int, ...]     # tensor indexes; negative = temporaries (MNN index -1)
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class TensorFacts:
    """What one forward tells about a tensor: its logical (NCHW-order) shape and element type."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


class _Lowering:
    """Replays MNN's geometry pass over the main graph (ops in execution order)."""

    def __init__(self, graph, facts: dict[int, TensorFacts]):
        self.graph = graph
        self.facts = facts
        self.formats: dict[int, int] = {}
        self.views: dict[int, list[int]] = {}      # virtual tensor -> region origins (while not materialised)
        self.was_view: set[int] = set()            # MNN keeps memoryType VIRTUAL after a raster is made
        self.reordered: set[int] = set()           # views whose regions pass through a transpose
        self.unfused: dict[int, int] = {}          # packing view -> reshaped-transpose view it cannot fuse
        self.temps = 0
        self.steps: list[Step] = []
        self.outputs = set(graph.outputs)
        self.constant_ops = _constant_ops(graph)
        self.constant_tensors = {t for op in graph.ops if id(op) in self.constant_ops
                                 for t in _ints(op.outputIndexes)}

    # -- tensor facts --------------------------------------------------------------------------------
    def _fmt(self, t: int) -> int:
        return self.formats.get(t, NCHW)

    def _size(self, t: int) -> int:
        fact = self.facts.get(t)
        return fact.size if fact is not None else 0

    def _rank(self, t: int) -> int:
        fact = self.facts.get(t)
        return len(fact.shape) if fact is not None else 0

    def _temp(self, fmt: int) -> int:
        self.temps += 1
        self.formats[-self.temps] = fmt
        return -self.temps

    # -- formats (SizeComputer) ------------------------------------------------------------------------
    def _set_formats(self, op) -> None:
        ins = _ints(op.inputIndexes)
        fmt = op_output_format(op, [self._fmt(t) for t in ins], [self._rank(t) for t in ins])
        for t in _ints(op.outputIndexes):
            self.formats[t] = fmt

    # -- commands ------------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        for op in self.graph.ops:
            self._set_formats(op)
            if op.type in (OpType.Input, OpType.Const, OpType.TrainableParam) or id(op) in self.constant_ops:
                continue
            buffer: list[tuple[str | None, str, list[int], list[int]]] = []
            if op.type in VIEW_OPS:
                self._view(op)
            else:
                for name, kind, ins, outs in self._commands(op):
                    self._materialise_inputs(op, kind, ins, buffer)
                    buffer.append((name, kind, ins, outs))
            for t in _ints(op.outputIndexes):
                if t in self.outputs and t in self.views:
                    self._materialise(t, buffer)
            for k, (name, kind, ins, outs) in enumerate(buffer):
                self.steps.append(Step(name if name is not None else f"{op.name}_raster_{k}", kind,
                                       tuple(ins), tuple(outs)))
        return self.steps

    def _view(self, op) -> None:
        ins = _ints(op.inputIndexes)
        sources = ins if op.type in _VIEW_ALL_INPUTS else ins[:1]
        sources = [t for t in sources if self._size(t) > 0 or t not in self.facts]
        reordered = op.type in (OpType.Permute, OpType.Transpose) or any(t in self.reordered for t in sources)
        # MNN's region fusion fails on a packing conversion (NC4HW4) of a reshaped transpose: the reshaped
        # view gets a Raster of its own first (seen on ppocr_rec's attention: Reshape494, Reshape631)
        unfused = (op.type == OpType.ConvertTensor and op.main is not None and int(op.main.dest) == NC4HW4
                   and sources and sources[0] in self.views and sources[0] in self.reordered
                   and self._reshaped(sources[0]))
        for t in _ints(op.outputIndexes):
            self.views[t] = list(sources)
            self.was_view.add(t)
            if reordered:
                self.reordered.add(t)
            if unfused:
                self.unfused[t] = sources[0]

    def _reshaped(self, t: int) -> bool:
        op = self.graph.producer.get(t)
        return op is not None and op.type in (OpType.Reshape, OpType.Flatten, OpType.Squeeze, OpType.Unsqueeze)

    def _commands(self, op):
        """The commands of one compute op: (name or None, type, inputs, outputs)."""
        ins, outs = _ints(op.inputIndexes), _ints(op.outputIndexes)
        kind = OpType(op.type).name
        if op.type == OpType.BinaryOp and len(ins) == 2:
            return self._binary(op, ins, outs)
        if op.type == OpType.Select and len(ins) == 3:
            out_size = self._size(outs[0])
            sizes = [self._size(ins[0]), self._size(ins[1]), self._size(ins[1])]  # sic: MNN reads input1 twice
            new = [self._broadcast(t, outs[0]) if s != out_size else t for t, s in zip(ins, sizes)]
            return [(op.name, kind, new, outs)]
        if op.type == OpType.Pooling3D and op.main is not None and op.main.isGlobal:
            return [(None, "Pooling", ins[:1], outs[:1])]
        if op.type in (OpType.MatMul, OpType.BatchMatMul):
            return [(op.name, "While", ins, outs)]
        if op.type in (OpType.Sigmoid, OpType.TanH):
            return [(op.name, "UnaryOp", ins, outs)]
        if op.type in (OpType.Interp, OpType.Resize):
            return [(op.name, "Interp", ins[:1], outs)]
        return [(op.name, kind, ins, outs)]

    def _binary(self, op, ins, outs):
        a, b = ins
        out = outs[0]
        la, lb, lo = self._size(a), self._size(b), self._size(out)
        if la == 1 or lb == 1:
            return [(op.name, "BinaryOp", [a, b], outs)]
        fo = self._fmt(out)
        nc4 = fo == NC4HW4

        def needs(t, size):
            return size != lo or self._fmt(t) != fo or (self._rank(out) != self._rank(t) and nc4)

        ba, bb = needs(a, la), needs(b, lb)
        activation = getattr(op.main, "activationType", 0) or 0
        is_float = self.facts.get(a) is None or self.facts[a].dtype.kind == "f"
        if (ba != bb) and self._fmt(a) == fo and self._fmt(b) == fo and not nc4 and is_float and activation == 0:
            return [(op.name, "While", [a, b], outs)]  # MNN_BINARY_LOOP_OPT: a loop reads the broadcast view
        if ba:
            a = self._broadcast(a, out)
        if bb:
            b = self._broadcast(b, out)
        return [(op.name, "BinaryOp", [a, b], outs)]

    def _broadcast(self, t: int, like: int) -> int:
        temp = self._temp(self._fmt(like))
        self.views[temp] = [t]
        self.was_view.add(temp)
        return temp

    def _materialise_inputs(self, op, kind, ins, buffer) -> None:
        for i, t in enumerate(ins):
            if kind != "While" and t >= 0 and not op_needs_content(op, i):
                continue
            if t in self.views:
                self._materialise(t, buffer)

    def _materialise(self, t: int, buffer) -> None:
        """A Raster writing view ``t`` from the real tensors under it (regions fuse, but for ``unfused``)."""
        origins: list[int] = []
        self._origins(t, self.views.pop(t), buffer, origins)
        buffer.append((None, "Raster", origins, [t]))

    def _origins(self, view: int, sources: list[int], buffer, origins: list[int]) -> None:
        for src in sources:
            if src in self.views and self.unfused.get(view) == src:
                self._materialise(src, buffer)          # its own Raster first; then it is a real tensor
            if src in self.views:
                self._origins(src, self.views[src], buffer, origins)
            elif src not in origins:
                origins.append(src)


def _constant_ops(graph) -> set[int]:
    """Ids of the ops MNN computes at resize time (GeometryComputerUtils::buildConstantTensors)."""
    constant: set[int] = set()
    const_tensors: set[int] = set()
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam):
            const_tensors.update(_ints(op.outputIndexes))
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam, OpType.Input):
            continue
        ins = _ints(op.inputIndexes)
        if all(t in const_tensors or not op_needs_content(op, i) for i, t in enumerate(ins)):
            constant.add(id(op))
            const_tensors.update(_ints(op.outputIndexes))
    forced = False
    for op in graph.ops:
        if op.type in (OpType.Const, OpType.TrainableParam, OpType.Input):
            continue
        if op.type == OpType.Where and type(op.main).__name__ != "Extra":
            continue   # MNN: "for compability old model"
        ins = _ints(op.inputIndexes)
        for i in shape_inputs(op):
            if i < len(ins) and ins[i] not in const_tensors:
                const_tensors.add(ins[i])
                forced = True
    while forced:
        forced = False
        for op in graph.ops:
            if id(op) in constant or op.type in (OpType.Const, OpType.TrainableParam, OpType.Input):
                continue
            if any(t in const_tensors for t in _ints(op.outputIndexes)):
                constant.add(id(op))
                const_tensors.update(_ints(op.outputIndexes))
                const_tensors.update(_ints(op.inputIndexes))
                forced = True
    return constant


def lower(graph, facts: dict[int, TensorFacts]) -> list[Step]:
    """The commands MNN's runtime executes for ``graph`` with these tensor shapes, in order."""
    return _Lowering(graph, facts).run()


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
    lowering = _Lowering(graph, facts)
    steps = lowering.run()
    interp_outputs = {t for op in graph.ops if op.type in (OpType.Interp, OpType.Resize)
                      for t in _ints(op.outputIndexes)}
    skip = set(skip)
    tracked: dict[int, str] = {}
    seen: set[int] = set()
    plan = TrackingPlan(steps, tracked, seen, dict(lowering.formats))
    for step in steps:
        if step.name in skip:
            continue
        for kind, tensors in (("input", step.inputs), ("output", step.outputs)):
            i = 0
            for t in tensors:
                if t < 0:
                    continue
                seen.add(t)
                virtual = kind == "input" and t in lowering.was_view and t not in lowering.outputs
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


# --------------------------------------------------------------------------------------------------
# Running the float model over the calibration samples
# --------------------------------------------------------------------------------------------------
class Samples:
    """Re-iterable calibration feeds: preprocessed once and kept while they fit ``budget`` bytes.

    Each pass of a two-pass method iterates again; samples beyond the budget are decoded again from the
    dataset, so memory stays bounded whatever the number of samples.
    """

    def __init__(self, dataset, budget: int = 256 << 20):
        self.dataset, self.budget = dataset, budget
        self._cache: list[dict] = []
        self._complete = False
        self._count: int | None = None

    def __iter__(self):
        if self._complete:
            yield from self._cache
            return
        cached, used, count = [], 0, 0
        for feeds in self.dataset:
            count += 1
            size = sum(a.nbytes for a in feeds.values())
            if used + size <= self.budget:
                cached.append(feeds)
                used += size
            yield feeds
        self._count = count
        if len(cached) == count:
            self._cache, self._complete = cached, True

    def __len__(self) -> int:
        if self._count is not None:
            return self._count
        return len(self.dataset)


def observe_values(a: np.ndarray) -> np.ndarray:
    """The float32 values MNN's statistics read: int32 tensors are read as their raw bits (host<float>)."""
    if a.dtype == np.float32:
        return a
    if a.dtype == np.int32 or a.dtype == np.uint32:
        return np.ascontiguousarray(a).view(np.float32)
    return a.astype(np.float32)


def tensor_facts(interp, feeds) -> dict[int, TensorFacts]:
    """Shapes and element types of every main-graph tensor in one forward."""
    facts: dict[int, TensorFacts] = {}

    def grab(i, _name, a):
        facts[i] = TensorFacts(tuple(int(d) for d in np.shape(a)), np.asarray(a).dtype)
    interp.run(feeds, observe=grab)
    return facts


def _layout(plan: TrackingPlan, t: int) -> str:
    return "NHWC" if plan.formats.get(t) == NHWC else "NCHW"


# --------------------------------------------------------------------------------------------------
# KL (docs/mnn-quantization.md §6.3-6.5)
# --------------------------------------------------------------------------------------------------
def _compute_all(observers) -> list[tuple]:
    """``compute()`` of every observer, on all cores (numpy releases the GIL; results are independent of
    the order, so the output is the same as a serial loop)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    observers = list(observers)
    workers = min(len(observers), os.cpu_count() or 1)
    if workers <= 1:
        return [tuple(o.compute()) for o in observers]
    with ThreadPoolExecutor(workers) as pool:
        return [tuple(r) for r in pool.map(lambda o: o.compute(), observers)]


def calibrate_kl(workers: Workers, plan: TrackingPlan, samples, clamp: int, log, max_tensors=(),
                 facts=None, extra=None) -> dict[int, tuple]:
    """Two streamed passes (ranges, then histograms); returns tensor -> (scale, zero) before propagation.

    ``max_tensors``: tensors that use the MAX threshold whatever their shape (the model inputs: MNN's
    intent, docs/mnn-quantization.md §14.6).  ``facts``: the first sample's tensor shapes, which decide the MAX-or-KL rule
    (samples may finish in any order on several workers).  ``extra``: more two-pass observers
    (tensor -> observer, order-independent) fed in the same passes (bias correction's channel means).
    """
    from .feature.kl import KLObserver

    needed = needed_statistics(plan)
    observers = {t: KLObserver(clamp, threshold="MAX" if t in max_tensors else "auto", layout=_layout(plan, t))
                 for t in plan.tracked if t in needed}
    for t, obs in observers.items():
        if facts is not None and t in facts:
            obs.shape = facts[t].shape
    _two_passes(workers, _joined(observers, extra), samples, log, "CollectFeatureDistribution", parallel=True)
    scales = dict(zip(observers, _compute_all(observers.values())))
    # tensors whose own statistics propagation overwrites: any value will do, MNN's map holds them too
    scales.update({t: (0.0, 0.0) for t in plan.tracked if t not in observers})
    return scales


# --------------------------------------------------------------------------------------------------
# ADMM (docs/mnn-quantization.md §7), streamed
# --------------------------------------------------------------------------------------------------
ADMM_BINS = 8192


class StreamingADMM:
    """MNN's 300 ADMM iterations from a bounded summary of |x| (not registered as a feature method).

    Pass 0 finds max|x|; pass 1 fills ``bins`` bins over [0, max|x|] with the count and the float64 sum
    of the |x| falling in each.  An iteration needs, for the 127 rounding boundaries ``(k - 0.5)·alpha``,
    how many values lie above and their sum; inside the bin that holds a boundary the values are taken
    as uniformly spread.  Sums are exact (float64) instead of MNN's float32 running sums, whose rounding
    moves MNN's result by several percent on tensors of 10^5+ values (README, deviations).  Memory:
    16 bytes per bin, whatever the number of samples; the result is within ~1e-4 of the same iteration
    over the raw values.
    """

    passes = 2

    def __init__(self, clamp: int = 127, iters: int = 300, bins: int = ADMM_BINS):
        self.clamp, self.iters, self.bins = int(clamp), int(iters), int(bins)
        self.pass_index = 0
        self.max_abs = np.float32(0)
        self.count = np.zeros(bins, np.int64)
        self.total = np.zeros(bins, np.float64)

    def start_pass(self, index: int) -> None:
        self.pass_index = index

    def update(self, x: np.ndarray) -> None:
        ax = np.abs(np.asarray(x, np.float32).reshape(-1))
        if ax.size == 0:
            return
        if self.pass_index == 0:
            m = np.nanmax(ax)
            if m > self.max_abs:
                self.max_abs = np.float32(m)
            return
        if not self._usable():
            return
        ax = ax[ax > 0]                                   # zeros contribute nothing (q = 0), drops NaN
        width = float(self.max_abs) / self.bins
        idx = np.minimum((ax.astype(np.float64) / width).astype(np.int64), self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.total += np.bincount(idx, weights=ax.astype(np.float64), minlength=self.bins)

    def _usable(self) -> bool:
        """A positive, finite range: an infinite one (a layer that overflowed float32) has no scale
        (bins of width inf would put every value at NaN)."""
        return bool(self.max_abs > 0 and np.isfinite(self.max_abs))

    def compute(self) -> tuple[float, int]:
        if not self._usable() or self.count.sum() == 0:
            return 0.0, 0
        m = float(self.max_abs)
        width = m / self.bins
        cum_n = np.concatenate(([0.0], np.cumsum(self.count, dtype=np.float64)))
        cum_s = np.concatenate(([0.0], np.cumsum(self.total)))
        n_all, s_all = cum_n[-1], cum_s[-1]
        k = np.arange(1, self.clamp + 1, dtype=np.float64)
        alpha = float(np.float32(m / (self.clamp * 2.5)))        # MNN: max / (bound * 2.5)
        for _ in range(self.iters):
            t = np.clip((k - 0.5) * alpha, 0.0, m)                # q >= k  <=>  |x| >= (k - 0.5) alpha
            b = np.minimum((t / width).astype(np.int64), self.bins - 1)
            frac = np.clip(t / width - b, 0.0, 1.0)
            below_n = cum_n[b] + frac * self.count[b]
            below_s = cum_s[b] + frac * self.count[b] * (b + frac / 2) * width
            s1 = np.sum(s_all - below_s)                          # sum of q·|x| = sum_k sum_{q>=k} |x|
            s2 = np.sum((2 * k - 1) * (n_all - below_n))          # sum of q^2 = sum_k (2k-1) #{q>=k}
            if not s2 > 0:
                return 0.0, 0
            alpha = s1 / s2
        return float(np.float32(alpha)), 0


class Workers:
    """Interpreters that run calibration samples side by side (the float kernels release the GIL).

    Two ways to use them, both independent of the worker count: ``map`` returns per-sample results in
    sample order (EMA's batch ranges, folded in order by the caller), and ``order_free_pass`` collects
    statistics that do not depend on the order of the samples (KL's ranges and integer histograms) in
    shard-local observers merged at the end.  ``mnnlite.distributed.RayWorkers`` offers the same two on
    a Ray cluster, with the same shard functions (``observe_shard``, ``merge_shard``).  ADMM's float sums
    depend on the order and run on ``first`` alone.
    """

    def __init__(self, make, count: int = 1):
        self.make, self.count = make, max(1, int(count))
        self._interps = [make()]

    @property
    def first(self):
        return self._interps[0]

    def _all(self) -> list:
        while len(self._interps) < self.count:
            self._interps.append(self.make())
        return self._interps

    def map(self, samples, fn):
        """``fn(interp, feeds)`` for every sample, the results yielded in sample order.

        Several samples run at once when there are several workers (``fn`` is then called from several
        threads, each with its own interpreter); at most two per worker are in flight, so memory stays
        bounded whatever the number of samples.
        """
        if self.count == 1:
            for feeds in samples:
                yield fn(self.first, feeds)
            return
        import queue
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        idle = queue.SimpleQueue()
        for interp in self._all():
            idle.put(interp)

        def one(feeds):
            interp = idle.get()
            try:
                return fn(interp, feeds)
            finally:
                idle.put(interp)
        pending = deque()
        with ThreadPoolExecutor(self.count) as pool:
            try:
                for feeds in samples:
                    if len(pending) >= 2 * self.count:
                        yield pending.popleft().result()
                    pending.append(pool.submit(one, feeds))
                while pending:
                    yield pending.popleft().result()
            finally:
                for f in pending:
                    f.cancel()

    def order_free_pass(self, observers: dict, samples, done=None) -> None:
        """Every sample through the model, each interpreter feeding observers of its own
        (``shard_observers``), merged into ``observers`` at the end (``merge_shard``); ``done()`` after
        each sample.  Only for observers whose statistics do not depend on the order of the samples."""
        own: dict = {}

        def run(interp, feeds):
            shard = own.get(id(interp))
            if shard is None:
                shard = own[id(interp)] = shard_observers(observers)
            interp.run(feeds, observe=feed_observers(shard))
        for _ in self.map(samples, run):
            if done is not None:
                done()
        for shard in own.values():
            merge_shard(observers, shard_partials(shard))


def shard_observers(observers: dict) -> dict:
    """Empty observers for one shard of the samples, carrying what earlier passes found (KL's range)."""
    return {t: obs.shard() for t, obs in observers.items()}


def feed_observers(observers: dict):
    """The ``observe`` hook that feeds each tracked tensor to its observer."""
    def feed(i, _name, a):
        obs = observers.get(i)
        if obs is not None:
            obs.update(observe_values(a))
    return feed


def shard_partials(observers: dict) -> dict:
    """What a shard's observers gathered this pass, to send back and merge."""
    return {t: obs.partial() for t, obs in observers.items()}


def observe_shard(interp, observers: dict, shard) -> dict:
    """Run a shard of samples with its own ``observers`` (from ``shard_observers``); their partials."""
    feed = feed_observers(observers)
    for feeds in shard:
        interp.run(feeds, observe=feed)
    return shard_partials(observers)


def merge_shard(observers: dict, partials: dict) -> None:
    """Fold a shard's partial statistics into the run's observers (exact: min/max and integer sums)."""
    for t, part in partials.items():
        observers[t].merge(part)


def as_workers(interp) -> Workers:
    """A ``Workers`` as is (or anything with ``order_free_pass``); else a single local worker."""
    return interp if hasattr(interp, "order_free_pass") else Workers(lambda: interp)


def make_workers(build, model, args: tuple, count: int, ray=None):
    """Workers whose interpreters ``build(model, *args)`` makes: ``count`` local threads, or tasks on the
    Ray cluster when ``ray`` (the connected module) is given; there the model travels as its bytes."""
    if ray is None:
        return Workers(lambda: build(model, *args), count)
    import functools

    from ..distributed import RayWorkers
    from ..format.model_io import dumps

    return RayWorkers(ray, functools.partial(build, dumps(model), *args))


def float_interpreter(model, impl: str, layout: str = "model"):
    """The float interpreter calibration runs (``model``: a Model or an .mnn file's bytes), feeds in
    ``layout`` (``mnnlite.layout``)."""
    from ..runtime import Interpreter

    return Interpreter(_as_model(model), impl=impl, precision="float", layout=layout)


def _as_model(model):
    from ..format.model_io import loads

    return loads(model) if isinstance(model, (bytes, bytearray)) else model


class _Both:
    """Two observers of one tensor fed together (``start_pass``/``update``; results read from each)."""

    def __init__(self, first, second):
        self.observers = (first, second)

    def start_pass(self, index: int) -> None:
        for obs in self.observers:
            obs.start_pass(index)

    def update(self, x) -> None:
        for obs in self.observers:
            obs.update(x)

    def shard(self) -> "_Both":
        return _Both(*(obs.shard() for obs in self.observers))

    def partial(self) -> tuple:
        return tuple(obs.partial() for obs in self.observers)

    def merge(self, part) -> None:
        for obs, p in zip(self.observers, part):
            obs.merge(p)


def _joined(observers: dict, extra) -> dict:
    if not extra:
        return observers
    joined = dict(observers)
    for t, obs in extra.items():
        joined[t] = _Both(joined[t], obs) if t in joined else obs
    return joined


def _two_passes(workers: Workers, observers: dict, samples, log, progress: str, parallel: bool) -> None:
    """Stream every sample through the model twice, feeding each tracked tensor to its observer
    (pass 0: ranges, pass 1: distributions; the second pass shows MNN's progress line).  ``parallel``:
    the observers' statistics do not depend on sample order, so samples may run on every worker
    (``order_free_pass``); else one after the other on ``first``."""
    workers = as_workers(workers)
    total = len(samples)
    for p in range(2):
        for obs in observers.values():
            obs.start_pass(p)
        count = [0]
        label, shown_by_mnn = (progress, True) if p == 1 else (RANGES, False)

        def done():
            count[0] += 1
            log.progress(label, count[0], total, mnn=shown_by_mnn)
        log.progress(label, 0, total, mnn=shown_by_mnn)
        if parallel:
            workers.order_free_pass(observers, samples, done)
        else:
            feed = feed_observers(observers)
            for feeds in samples:
                workers.first.run(feeds, observe=feed)
                done()
        log.end_progress(mnn=shown_by_mnn)


def calibrate_admm(workers: Workers, plan: TrackingPlan, samples, clamp: int, log, extra=None) -> dict[int, tuple]:
    """ADMM feature scales, one sample at a time (two streamed passes); tensor -> (scale, 0).
    ``extra``: as ``calibrate_kl``'s."""
    observers = {t: StreamingADMM(clamp) for t in plan.tracked}
    _two_passes(workers, _joined(observers, extra), samples, log, "ProcessCalibrationFiles", parallel=False)
    scales = {}
    log.progress("ComputeADMM", 0, len(observers))
    for n, (t, obs) in enumerate(observers.items(), 1):
        scales[t] = obs.compute()
        log.progress("ComputeADMM", n, len(observers))
    log.end_progress()
    return scales


# --------------------------------------------------------------------------------------------------
# Debug mode (docs/mnn-quantization.md §10)
# --------------------------------------------------------------------------------------------------
def fake_quant_values(x: np.ndarray, scale: float, zero: float, clamp: int):
    """``x̂ = (clamp(roundf(x / s) + z, ±c) - z) · s`` and the share of codes at ±c (TensorStatistic.cpp)."""
    from ..format.idst import roundf

    c = np.float32(clamp)
    s, z = np.float32(scale), np.float32(zero)
    with np.errstate(all="ignore"):
        q = np.fmin(c, np.fmax(-c, roundf(x / s) + z))
    xq = ((q - z) * s).astype(np.float32)
    overflow = float(np.count_nonzero(np.abs(np.abs(q) - c) < np.float32(1e-6))) / max(x.size, 1)
    return xq, overflow


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    na, nb = np.sqrt(np.dot(a64, a64)), np.sqrt(np.dot(b64, b64))
    with np.errstate(all="ignore"):
        return float(np.dot(a64, b64) / na / nb)


def debug_distances(interp_float, interp_quant, plan: TrackingPlan, scales: dict, samples, clamp: int, log):
    """Per tracked tensor: mean cosine (float vs fake-quantized execution) and overflow ratio.

    ``interp_quant`` runs the model with the int8 weights dequantized (MNN keeps float weights here, doc
    §14.13); every tracked tensor is replaced by its fake-quantized value as it is produced, so errors
    accumulate like in int8 execution.  Returns {tensor: (cosine, overflow)} averaged over samples.
    """
    # MNN's debug callbacks skip the inputs of Raster commands: a tensor first seen there (the model
    # input, constants fed to broadcasts) is neither fake-quantized nor reported
    sums: dict[int, list] = {t: [0.0, 0.0] for t in plan.tracked if t not in plan.raster_input_first}
    total = len(samples)
    count = 0
    log.progress("computeDistance", 0, total)
    for feeds in samples:
        fq: dict[int, np.ndarray] = {}
        over: dict[int, float] = {}

        def quantize(i, _name, a):
            if i not in sums or a.dtype != np.float32:
                return
            s, z = scales.get(i, (0.0, 0.0))
            if not s > 0:
                # no int8 for this tensor at run time (MNN's debug pass would zero it: x / 0)
                fq[i], over[i] = a.copy(), 0.0
                return
            xq, ratio = fake_quant_values(a, s, z, clamp)
            if a.flags.writeable:
                np.copyto(a, xq)          # later ops read the fake-quantized tensor, as in MNN
            fq[i], over[i] = xq, ratio
        interp_quant.run(feeds, observe=quantize)

        def compare(i, _name, a):
            if i in fq:
                sums[i][0] += _cosine(a, fq[i])
                sums[i][1] += over[i]
        interp_float.run(feeds, observe=compare)
        count += 1
        log.progress("computeDistance", count, total)
    log.text("\n\nDebug info:\n\n")
    n = max(count, 1)
    return {t: (c / n, o / n) for t, (c, o) in sums.items() if t in scales}


# --------------------------------------------------------------------------------------------------
# EMA (docs/mnn-quantization.md §9): fused conv modules simulated with fake quantization
# --------------------------------------------------------------------------------------------------
@dataclass
class FusedConv:
    """One quantized module of the EMA path: a conv, optionally followed by BatchNorm and ReLU/ReLU6."""

    pos: int                          # position of the conv in the op list
    input: int                        # tensor the conv reads
    output: int                       # tensor the module writes (after BN / activation)
    absorbed: list[int]               # positions of the BatchNorm / activation ops merged into the conv
    activation: str | None            # "relu", "relu6" or None (fused flags included)

    def weights(self, graph) -> tuple[np.ndarray, np.ndarray]:
        """Float weights [O, ...] and bias with the BatchNorm folded in (running statistics)."""
        from ..ops.weights import conv_weights

        op = graph.ops[self.pos]
        w, b = conv_weights(op)
        w = np.asarray(w, np.float32).reshape(int(op.main.common.outputCount), -1)
        b = np.asarray(b, np.float32).reshape(-1)
        for p in self.absorbed:
            bn = graph.ops[p]
            if bn.type != OpType.BatchNorm:
                continue
            m = bn.main
            gamma, beta = np.asarray(m.slopeData, np.float32), np.asarray(m.biasData, np.float32)
            mean, var = np.asarray(m.meanData, np.float32), np.asarray(m.varData, np.float32)
            a = (np.float32(1) / np.sqrt(var + np.float32(m.epsilon))) * gamma
            w = (a[:, None] * w).astype(np.float32)
            b = (a * b + (beta - mean * a)).astype(np.float32)
        return w, b


def _single_consumer(graph, t: int):
    users = graph.consumers.get(t, [])
    return users[0] if len(users) == 1 and t not in graph.outputs else None


def fused_convs(graph, skip=()) -> list[FusedConv]:
    """MNN's module extraction + ``turnQuantize``: Conv [+BN] [+ReLU/ReLU6], intermediates single-use.

    Only convs with their weights in the op (one input) become quantized modules; Deconvolution and
    everything else stays float.  ``skip_quant_op_names`` is honoured (MNN's EMA ignores it, §14.8), and
    a ReLU6 is fused only with its standard [0, 6] bounds (MNN fuses any Clip as [0, 6], §14.9).
    """
    skip = set(skip)
    position = {id(op): p for p, op in enumerate(graph.ops)}
    modules = []
    for pos, op in enumerate(graph.ops):
        if op.type not in (OpType.Convolution, OpType.ConvolutionDepthwise) or op.name in skip:
            continue
        ins, outs = _ints(op.inputIndexes), _ints(op.outputIndexes)
        if len(ins) != 1 or len(outs) != 1 or op.main is None or op.main.common is None:
            continue
        common = op.main.common
        activation = "relu6" if common.relu6 else "relu" if common.relu else None
        out, absorbed = outs[0], []
        nxt = _single_consumer(graph, out)
        if activation is None and nxt is not None and nxt.type == OpType.BatchNorm and nxt.name not in skip:
            absorbed.append(position[id(nxt)])
            out = _ints(nxt.outputIndexes)[0]
            nxt = _single_consumer(graph, out)
        if activation is None and nxt is not None and nxt.name not in skip and _plain_activation(nxt):
            absorbed.append(position[id(nxt)])
            activation = "relu" if nxt.type == OpType.ReLU else "relu6"
            out = _ints(nxt.outputIndexes)[0]
        modules.append(FusedConv(pos, ins[0], out, absorbed, activation))
    return modules


def _plain_activation(op) -> bool:
    if op.type == OpType.ReLU:
        return op.main is None or not op.main.slope
    if op.type == OpType.ReLU6:
        lo = 0.0 if op.main is None else float(op.main.minValue)
        hi = 6.0 if op.main is None else float(op.main.maxValue)
        return lo == 0.0 and hi == 6.0
    return False


@dataclass(frozen=True)
class EMAParams:
    """The int8 parameters EMA gives one fused conv."""

    scale_in: float
    zero_in: int
    scale_out: float
    zero_out: int


def _simulation_net(model, modules: list[FusedConv], clamp_w: int, method: str = "MAX_ABS",
                    range_method: str = "max_abs"):
    """A copy of the net where each module's conv reads a private copy of its input (``x + 0``, so the
    input fake quantization does not leak to other readers) and has fake-quantized weights."""
    import copy

    from ..format.tables import TABLE_CLASSES

    Op, Blob, BinaryOp = TABLE_CLASSES["Op"], TABLE_CLASSES["Blob"], TABLE_CLASSES["BinaryOp"]
    net = copy.copy(model.net)
    net.tensorName = list(model.net.tensorName)
    ops = list(model.net.oplists)
    zero = len(net.tensorName)
    net.tensorName.append("__mnnlite_ema_zero")
    new_ops = [Op(name="__mnnlite_ema_zero", type=OpType.Const, outputIndexes=[zero],
                  main=Blob(dims=[], dataFormat=NCHW, dataType=1, float32s=np.zeros(1, np.float32)))]
    private: dict[int, int] = {}
    by_pos = {m.pos: m for m in modules}
    for pos, op in enumerate(ops):
        m = by_pos.get(pos)
        if m is None:
            new_ops.append(op)
            continue
        copy_index = len(net.tensorName)
        net.tensorName.append(f"__mnnlite_ema_in_{pos}")
        new_ops.append(Op(name=f"__mnnlite_ema_copy_{pos}", type=OpType.BinaryOp, inputIndexes=[m.input, zero],
                          outputIndexes=[copy_index], main=BinaryOp(opType=0, T=1, activationType=0)))
        w, b = _conv_float(op)
        codes, scale = ema_weight_codes(w, clamp_w, method, range_method=range_method)
        conv = copy.copy(op)
        conv.main = copy.copy(op.main)
        conv.main.weight = (codes.astype(np.float32) * scale[:, None]).reshape(-1)
        conv.main.bias = b
        conv.main.quanParameter = None
        conv.main.external = None
        # MNN's EMA module runs _Conv(weight, bias, x): weights are inputs, so its CPU backend never uses
        # Winograd / Strassen for them; impl="mnn" does the same for convs fed their weights
        common = op.main.common
        operands = [copy_index]
        for tag, arr in (("w", conv.main.weight.reshape(int(common.outputCount), -1,
                                                        int(common.kernelY), int(common.kernelX))),
                         ("b", np.asarray(b, np.float32).reshape(-1))):
            t = len(net.tensorName)
            net.tensorName.append(f"__mnnlite_ema_{tag}_{pos}")
            new_ops.append(Op(name=f"__mnnlite_ema_{tag}_{pos}", type=OpType.Const, outputIndexes=[t],
                              main=Blob(dims=list(arr.shape), dataFormat=NCHW, dataType=1,
                                        float32s=arr.reshape(-1))))
            operands.append(t)
        conv.inputIndexes = operands
        private[pos] = copy_index
        new_ops.append(conv)
    net.oplists = new_ops
    net.extraTensorDescribe = None
    assert private == _private_inputs(model, modules)
    return net, private


def _private_inputs(model, modules: list[FusedConv]) -> dict[int, int]:
    """Conv position -> the tensor ``_simulation_net`` gives its private input copy: after the model's
    tensors come the shared zero, then per module in op order its copy, weight and bias."""
    base = len(model.net.tensorName)
    return {pos: base + 1 + 3 * k for k, pos in enumerate(sorted(m.pos for m in modules))}


def ema_interpreter(model, impl: str, modules: list[FusedConv], clamp_w: int, method: str, layout: str = "model",
                    range_method: str = "max_abs"):
    """The EMA simulation's float interpreter (``model``: a Model or an .mnn file's bytes)."""
    from ..graph import Model
    from ..runtime import Interpreter

    model = _as_model(model)
    net, _ = _simulation_net(model, modules, clamp_w, method, range_method)
    return Interpreter(Model(net, path=model.path), impl=impl, precision="float", layout=layout)


def ema_batch_ranges(tracked: frozenset, clamp_act: int, mean_axes: dict, interp, feeds) -> tuple[dict, dict]:
    """One EMA batch: every tracked tensor fake-quantized with its own range.  Returns (tensor -> nudged
    range, tensor -> (per-channel sums, count) of the fake-quantized values for the tensors of
    ``mean_axes`` (tensor -> channel axis; bias correction))."""
    from .bias_correction import ChannelMeans
    from .feature.ema import fake_quantize

    ranges, sums = {}, {}

    def simulate(i, _name, a):
        if i not in tracked or a.dtype != np.float32:
            return
        if a.flags.writeable and a.flags.c_contiguous:
            xq, lo, hi = fake_quantize(a, clamp_act, out=a)     # no second copy of the activation
        else:
            xq, lo, hi = fake_quantize(a, clamp_act)
            if a.flags.writeable:
                np.copyto(a, xq)
        ranges[i] = (lo, hi)
        if i in mean_axes:
            sums[i] = ChannelMeans(mean_axes[i]).sample_sums(xq)
    interp.run(feeds, observe=simulate)
    return ranges, sums


def _conv_float(op):
    from ..ops.weights import conv_weights

    w, b = conv_weights(op)
    return np.asarray(w, np.float32).reshape(int(op.main.common.outputCount), -1), np.asarray(b, np.float32)


def ema_weight_codes(w: np.ndarray, limit: int, method: str = "MAX_ABS", bits: int = 8,
                     range_method: str = "max_abs"):
    """Int8 codes and per-channel scales of the EMA path's conv weights.

    MAX_ABS as NN.cpp: ``s = max(max|w[o]|, 1e-6) · (1/L)``, ``q = clamp(round(w · (1/s)), ±L)`` (reciprocals,
    as MNN), for any limit ``L`` (the config's weight_clamp_value).  ADMM: the KL path's ADMM scales, per
    channel where they fit the weights better than MAX_ABS (smaller squared error).  MNN's EMA ignores both
    the clamp value and the method (docs/mnn-quantization.md §14.8).  ``range_method="mse"`` (mnnlite's): then, per channel,
    the MSE-optimal clipped range where it beats that (weight.mse_alpha).
    """
    if range_method != "max_abs":
        from .weight import mse_alpha, symmetric_codes

        codes, scale = ema_weight_codes(w, limit, method, bits)
        alpha = mse_alpha(w, limit, scale)
        return symmetric_codes(w, alpha, bits, limit), alpha
    from ..format.idst import roundf
    from .weight import admm_alpha, encoder_codes

    w = np.asarray(w, np.float32)
    lim = np.float32(limit)
    s = (np.maximum(np.abs(w).max(axis=1), np.float32(1e-6)) * (np.float32(1) / lim)).astype(np.float32)
    q = np.clip(roundf(w * (np.float32(1) / s)[:, None]), -lim, lim).astype(np.int8)
    if method != "ADMM":
        return q, s
    alpha = admm_alpha(w, limit)
    codes = np.clip(encoder_codes(w, alpha, bits), -limit, limit).astype(np.int8)
    # MNN's ADMM iteration can settle where a dominant weight is clipped hard (ppocr_det's conv2d_497: 52 %
    # relative error against 0.9 % for MAX_ABS, and the model's output collapses); MNN's EMA never meets it
    # (it ignores the method), so here a channel keeps ADMM only where its squared error is smaller
    w64 = w.astype(np.float64)
    err_admm = np.square(codes * alpha[:, None].astype(np.float64) - w64).sum(axis=1)
    err_max = np.square(q * s[:, None].astype(np.float64) - w64).sum(axis=1)
    better = err_admm < err_max
    return np.where(better[:, None], codes, q), np.where(better, alpha, s).astype(np.float32)


def calibrate_ema(model, modules: list[FusedConv], samples, clamp_act: int, clamp_w: int, log,
                  impl: str = "mnn", weight_method: str = "MAX_ABS", threads: int = 1,
                  ray=None, layout: str = "model", range_method: str = "max_abs",
                  means: dict | None = None) -> dict[int, EMAParams]:
    """Per fused conv (by position): EMA ranges of its input and output over the calibration batches.

    Each batch runs the float model with, for every module, fake-quantized weights, its input
    fake-quantized with the batch's own range and its output fake-quantized the same way before the next
    layer reads it; each range, nudged onto the int8 grid, feeds a moving average (momentum 0.99).
    Batch norms run with their running statistics (MNN trains them, docs/mnn-quantization.md §14.10).  Memory: one batch is
    in flight locally (a 640x640 batch of 32 holds hundreds of MB per activation; two at once would double
    the peak), each activation is fake-quantized in place and freed after its last reader (the runtime's
    plan), and ``threads`` split the batch's dense convs by column chunks instead
    (``ops.nn.tiled_conv_batch``, the same bits on any count), so the result does not depend on ``threads``
    (nor on ``ray``, the connected Ray module: batches then run as tasks on the cluster, one batch per
    task).  ``layout``: the feeds' order (``mnnlite.layout``).  ``means``: conv position ->
    ``bias_correction.ChannelMeans``, given the (fake-quantized) input each conv reads, in batch order.
    """
    import functools

    from ..kernels.threads import get_num_threads, set_num_threads
    from .feature.ema import EMAObserver

    private = _private_inputs(model, modules)
    mean_of = {private[pos]: obs for pos, obs in (means or {}).items() if pos in private}
    workers = make_workers(ema_interpreter, model, (impl, modules, clamp_w, weight_method, layout, range_method),
                           1, ray)
    observers = {private[m.pos]: EMAObserver(clamp_act) for m in modules}
    observers.update({m.output: EMAObserver(clamp_act) for m in modules})
    batch_ranges = functools.partial(ema_batch_ranges, frozenset(observers), clamp_act,
                                     {i: obs.axis for i, obs in mean_of.items()})
    total = len(samples)
    log.progress("quantize with EMA", 0, total)
    kernel_threads = get_num_threads()
    set_num_threads(max(kernel_threads, threads))
    try:
        for count, (ranges, sums) in enumerate(workers.map(samples, batch_ranges), 1):
            for i, (lo, hi) in ranges.items():
                observers[i].add_range(lo, hi)
            for i, (channel_sums, n) in sums.items():
                mean_of[i].add_sums(channel_sums, n)
            log.progress("quantize with EMA", count, total)
    finally:
        set_num_threads(kernel_threads)
    log.end_progress()
    result = {}
    for m in modules:
        s_in, z_in = observers[private[m.pos]].compute()
        s_out, z_out = observers[m.output].compute()
        result[m.pos] = EMAParams(s_in, z_in, s_out, z_out)
    # MNN reads a conv output directly when the next conv consumes it (FloatToInt8(Int8ToFloat(y))
    # is rewired to y): the consumer's input parameters are the producer's output parameters.
    produced = {m.output: result[m.pos] for m in modules}
    for m in modules:
        src = produced.get(m.input)
        if src is not None:
            own = result[m.pos]
            result[m.pos] = EMAParams(src.scale_out, src.zero_out, own.scale_out, own.zero_out)
    return result
