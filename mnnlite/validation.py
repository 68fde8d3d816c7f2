"""Validate a quantized model against its float original on held-out samples.

``validate(float_path, quant_path, config, data=None, labels=None, num=None, min_cosine=None,
min_agreement=None) -> ValidationReport`` runs both models (the quantized one in int8, as MNN does) on
samples preprocessed with the config's rules (``mnnlite.quant.dataset``) and reports per output:
cosine, relative L2 and max abs error over all samples; top-1/top-5 agreement for classifier-like
outputs; labelled accuracy of both models when labels are given; per-layer cosine and overflow for the
worst layers (docs/mnn-quantization.md §10's metrics, here with the int8 runtime's real values).

Samples: by default the files of the config's ``path`` after the calibration ones (``used_sample_num``
/ ``used_image_num`` first files are calibration); ``data`` names another folder.  ``num`` caps them.
Labels: a text file, one ``NAME LABEL`` per line (NAME = a sample's file name, LABEL = class index;
``,`` also separates; ``#`` starts a comment).  Accuracy uses the first classifier-like output.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from . import metrics as M
from .errors import ConfigError, DataError
from .layout import DEFAULT_LAYOUT, input_specs

WORST_LAYERS = 5


# Per-layer comparisons run on every tensor of every sample: their float64 temporaries live in one
# reused per-thread scratch (fresh multi-MB arrays cost page faults on each call), up to this many
# elements per tensor; larger tensors take fresh arrays.
_SCRATCH_MAX = 1 << 21
_scratch = threading.local()


def _scratch_rows(n: int) -> np.ndarray:
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.shape[1] < n:
        buf = _scratch.buf = np.empty((3, max(n, 1 << 12)), np.float64)
    return buf[:, :n]


def contribution(ref: np.ndarray, test: np.ndarray, saturated: int = 0) -> tuple:
    """One comparison's terms for ``_Accumulator.fold``: dot, |ref|², |test|², |diff|², max |diff|, count,
    saturated.  numpy's pairwise reductions, not BLAS dot products: a threaded BLAS splits long sums by its
    thread count, which differs between processes (Ray workers run single-threaded), and the last bits with it."""
    ref, test = np.asarray(ref), np.asarray(test)
    n = ref.size
    if 0 < n <= _SCRATCH_MAX and test.size == n:
        # the sums below on the same float64 values, in scratch rows: the same reductions, the same bits
        r, t, w = _scratch_rows(n)
        np.copyto(r, ref.reshape(-1), casting="unsafe")
        np.copyto(t, test.reshape(-1), casting="unsafe")
        dot = float(np.add.reduce(np.multiply(r, t, out=w)))
        ref2 = float(np.add.reduce(np.multiply(r, r, out=w)))
        test2 = float(np.add.reduce(np.multiply(t, t, out=w)))
        d = np.subtract(t, r, out=w)
        diff2 = float(np.add.reduce(np.multiply(d, d, out=r)))
        return dot, ref2, test2, diff2, float(np.maximum.reduce(np.abs(d, out=d))), n, saturated
    r, t = np.asarray(ref, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    d = t - r
    return (float(np.add.reduce(r * t)), float(np.add.reduce(r * r)), float(np.add.reduce(t * t)),
            float(np.add.reduce(d * d)), float(np.abs(d).max()) if d.size else 0.0, r.size, saturated)


@dataclass
class _Accumulator:
    """Running sums for cosine / relative L2 / max abs of one tensor over many samples."""

    dot: float = 0.0
    ref2: float = 0.0
    test2: float = 0.0
    diff2: float = 0.0
    max_abs: float = 0.0
    saturated: int = 0
    count: int = 0

    def add(self, ref: np.ndarray, test: np.ndarray):
        self.fold(contribution(ref, test))

    def fold(self, part: tuple) -> None:
        """Add one comparison's ``contribution``; folding them in sample order gives the same sums
        wherever they were computed (here, or in a shard on another process)."""
        dot, ref2, test2, diff2, max_abs, count, saturated = part
        self.dot += dot
        self.ref2 += ref2
        self.test2 += test2
        self.diff2 += diff2
        self.max_abs = max(self.max_abs, max_abs)
        self.count += count
        self.saturated += saturated

    @property
    def cosine(self) -> float:
        if self.ref2 == 0 and self.test2 == 0:
            return 1.0
        if self.ref2 == 0 or self.test2 == 0:
            return 0.0
        return self.dot / math.sqrt(self.ref2 * self.test2)

    @property
    def rel_l2(self) -> float:
        return math.sqrt(self.diff2 / self.ref2) if self.ref2 > 0 else float(self.diff2 > 0)

    @property
    def overflow(self) -> float:
        return self.saturated / self.count if self.count else 0.0


@dataclass
class OutputReport:
    name: str
    cosine: float
    rel_l2: float
    max_abs: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None


@dataclass
class LayerReport:
    name: str
    cosine: float
    overflow: float | None
    note: str | None = None        # a known MNN runtime behaviour that explains (part of) the gap


# Known MNN runtime behaviours that move a layer's int8 values away from the float ones, reproduced by
# mnnlite because MNN's runtime does them (README "How MNN really behaves").  A worst-layer row says so
# where one applies, detected from the int8 plan and the op, never from tensor names.
MAXPOOL_NOTE = ("MNN's x86 int8 max pool compares q+128 as signed bytes: a wrong max where signs mix "
                "(as on the device; README: How MNN really behaves)")


@dataclass
class ValidationReport:
    float_model: str
    quant_model: str
    samples: list
    outputs: list                                   # OutputReport per graph output
    layers: list = field(default_factory=list)      # worst LayerReports, lowest cosine first
    accuracy_float: float | None = None
    accuracy_quant: float | None = None
    thresholds: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    precision: str = "int8"

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def gated(self) -> bool:
        """Whether any threshold was given (without one, nothing can fail)."""
        return any(v is not None for v in self.thresholds.values())

    @property
    def verdict(self) -> str:
        """PASS / FAIL against the thresholds given, or MEASURED when none was set."""
        if self.failures:
            return "FAIL"
        return "PASS" if self.gated else "MEASURED (no threshold set)"

    def metrics(self) -> dict[str, float]:
        """Flat ``"<output>.<kind>"`` metrics (kinds of ``mnnlite.metrics.DIRECTION``)."""
        out = {}
        for o in self.outputs:
            out[f"{o.name}.cosine"] = o.cosine
            out[f"{o.name}.rel_l2"] = o.rel_l2
            out[f"{o.name}.max_abs"] = o.max_abs
            if o.top1_agreement is not None:
                out[f"{o.name}.top1_agreement"] = o.top1_agreement
            if o.top5_agreement is not None:
                out[f"{o.name}.top5_agreement"] = o.top5_agreement
        if self.accuracy_float is not None:
            out["labels.accuracy_float"] = self.accuracy_float
            out["labels.accuracy_quant"] = self.accuracy_quant
        return out

    def to_dict(self) -> dict:
        return {
            "float_model": self.float_model, "quant_model": self.quant_model, "precision": self.precision,
            "samples": list(self.samples), "metrics": self.metrics(),
            "outputs": [dataclasses.asdict(o) for o in self.outputs],
            "worst_layers": [dataclasses.asdict(layer) for layer in self.layers],
            "thresholds": dict(self.thresholds), "gated": self.gated, "verdict": self.verdict,
            "passed": self.passed, "failures": list(self.failures),
        }

    def render(self) -> str:
        lines = [f"validate {os.path.basename(self.quant_model)} ({self.precision}) against "
                 f"{os.path.basename(self.float_model)} on {len(self.samples)} sample(s)", ""]
        lines.append(f"{'output':32} {'cosine':>10} {'rel_l2':>10} {'max_abs':>10} {'top1':>7} {'top5':>7}")
        for o in self.outputs:
            lines.append(f"{o.name[:32]:32} {o.cosine:10.6f} {o.rel_l2:10.4g} {o.max_abs:10.4g} "
                         f"{_pct(o.top1_agreement):>7} {_pct(o.top5_agreement):>7}")
        if self.accuracy_float is not None:
            lines += ["", f"labelled accuracy: float {self.accuracy_float:.2%}, quantized {self.accuracy_quant:.2%}"]
        if self.layers:
            lines += ["", "worst layers (of the tensors both models have):",
                      f"{'tensor':40} {'cosine':>10} {'overflow':>9}"]
            for layer in self.layers:
                ov = "-" if layer.overflow is None else f"{layer.overflow:.4f}"
                note = f"  * {layer.note}" if layer.note else ""
                lines.append(f"{layer.name[:40]:40} {layer.cosine:10.6f} {ov:>9}{note}")
        lines.append("")
        if self.failures:
            lines.append("FAIL: " + "; ".join(self.failures))
        elif self.gated:
            given = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in self.thresholds.items() if v is not None)
            lines.append(f"PASS ({given})")
        else:
            lines.append("MEASURED (no threshold set): the figures above were measured, nothing was gated; "
                         "give --min-cosine / --min-agreement to pass or fail")
        return "\n".join(lines)


def _pct(v) -> str:
    return "-" if v is None else f"{v:.1%}"


# ------------------------------------------------------------------------------------------ samples

def _dataset(config, specs, data, num):
    """A CalibrationSet over the held-out files: ``data``'s, or ``path``'s after the calibration ones."""
    from .quant.dataset import CalibrationSet, list_candidates

    if data is not None:
        if not os.path.isdir(data):
            raise DataError(f"validation data {data!r} is not a folder")
        cfg = dataclasses.replace(config, path=os.path.abspath(data), used_sample_num=None)
        files = list_candidates(cfg)
    else:
        cfg = dataclasses.replace(config, used_sample_num=None)
        everything = list_candidates(cfg)
        calibration = config.used_sample_num if config.used_sample_num is not None else len(everything)
        files = everything[calibration:]
        if not files:
            raise DataError(f'{config.source}: all {len(everything)} file(s) of "path" {config.path} are '
                            f"calibration samples (used_sample_num = {config.used_sample_num}); give a "
                            f"held-out folder (data=..., --data DIR)")
    if num is not None:
        files = files[:_check_num(num)]
    ds = CalibrationSet(cfg, specs, batch_size=1, drop_last=False)
    ds.files = files
    return ds


def _check_num(num) -> int:
    if num < 1:
        raise ConfigError(f"num must be at least 1, got {num}")
    return num


def read_labels(path: str) -> dict[str, int]:
    labels = {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise DataError(f"labels file {path}: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"labels file {path}, line {n}: expected 'NAME LABEL', got {line!r}")
        try:
            labels[os.path.basename(parts[0])] = int(parts[1])
        except ValueError:
            raise DataError(f"labels file {path}, line {n}: label {parts[1]!r} is not a class index") from None
    if not labels:
        raise DataError(f"labels file {path} holds no labels")
    return labels


# ------------------------------------------------------------------------------------------ helpers

def _classifier_like(graph, name: str, shape) -> bool:
    """Rank-2 [N, K] outputs, or any output of a Softmax, with K >= 2 classes on the last axis."""
    if len(shape) < 2 or shape[-1] < 2:
        return False
    if len(shape) == 2:
        return True
    producer = graph.producer.get(graph.index(name))
    from .format.tables import OpType
    return producer is not None and producer.type == OpType.Softmax


LAYER_BLOCKS, LAYER_BLOCK = 64, 1024     # per-layer statistics read at most 64 blocks of 1024 values


def layer_sample(a) -> np.ndarray:
    """The values a layer's statistics read: all of a tensor up to 64 Ki values; beyond, 64 contiguous
    blocks of 1024 spread evenly over it (the same positions in both models).  The worst-layer cosine and
    overflow are then estimates (a few 1e-4 on PP-OCR det), at a cost that no longer grows with the
    tensor: per-layer statistics stay cheap enough to be on by default (tools/bench_validate.py).
    Output metrics always read every value."""
    flat = np.asarray(a).reshape(-1)
    if flat.size <= LAYER_BLOCKS * LAYER_BLOCK:
        return flat
    return flat[_sample_index(flat.size)]


@functools.lru_cache(maxsize=256)
def _sample_index(size: int) -> np.ndarray:
    starts = np.linspace(0, size - LAYER_BLOCK, LAYER_BLOCKS).astype(np.intp)
    return (starts[:, None] + np.arange(LAYER_BLOCK, dtype=np.intp)).reshape(-1)


def _saturated(x: np.ndarray, info) -> int:
    """Elements of the float model's tensor that the quant attribute clamps (docs/mnn-quantization.md §10 overflow)."""
    if info is None or not info.scale:
        return 0
    # q = x / scale + zero reaches a clamp code; compared on x (two passes, no temporary array)
    x = np.asarray(x, np.float32)
    scale = np.float32(info.scale)
    high = (np.float32(info.max - 0.5) - np.float32(info.zero)) * scale
    low = (np.float32(info.min + 0.5) - np.float32(info.zero)) * scale
    if x.size == 0 or (float(x.max()) < high and float(x.min()) > low):
        return 0                                   # two reductions, no temporaries: the common case
    return int(np.count_nonzero(x >= high)) + int(np.count_nonzero(x <= low))


class _LayerStats:
    """Per-tensor cosine of quant vs float values and float-side overflow, folded from the samples'
    per-layer contributions (``_SampleRun``) in sample order, and where a known MNN runtime behaviour
    applies (``notes``)."""

    def __init__(self):
        self.acc: dict[str, _Accumulator] = {}
        self.info: set = set()
        self.notes: dict[str, str] = {}

    def fold(self, parts: list, notes=()) -> None:
        for name, part in parts:
            self.acc.setdefault(name, _Accumulator()).fold(part)
        for name in notes:
            self.notes.setdefault(name, MAXPOOL_NOTE)

    def worst(self, count: int, skip: set) -> list:
        rows = [LayerReport(n, a.cosine, a.overflow if n in self.info else None, self.notes.get(n))
                for n, a in self.acc.items() if n not in skip]
        rows.sort(key=lambda r: (r.cosine, r.name))
        return rows[:count]


def int8_max_pools(quant_rt) -> dict[str, str]:
    """{output tensor: input tensor} of the max poolings the int8 plan runs in int8 (where MNN's x86
    signed-byte comparison applies; ``mnnlite.int8.ops.pooling``)."""
    from .format.tables import OpType

    runner = getattr(quant_rt, "_int8", None)
    if runner is None:
        return {}
    graph = quant_rt.model.graph
    pools = {}
    for plan in runner._plans.values():
        for p in plan.ops:
            op = p.op
            if (p.kind == "compute" and p.int8 and op.type in (OpType.Pooling, OpType.Pooling3D)
                    and op.main is not None and int(op.main.type) == 0):
                pools[graph.tensors[int(op.outputIndexes[0])]] = graph.tensors[int(op.inputIndexes[0])]
    return pools


# ------------------------------------------------------------------------------------------ main

def validate(float_path, quant_path, config, *, samples=None, data=None, labels=None, num=None,
             min_cosine=None, min_agreement=None, impl: str = "fast", worst: int = WORST_LAYERS,
             layers: bool = True, progress=None, on_sample=None, layout: str = DEFAULT_LAYOUT,
             ray=None, target: str = "x86", max_memory=None) -> ValidationReport:
    """Compare ``quant_path`` (run in int8) with ``float_path`` on held-out samples; see the module doc.

    ``config``: the quantizer config (dict or JSON path) whose preprocessing is used.  ``samples``:
    validate on these instead of files: an iterable of ``{input name: array}`` (or bare arrays for a
    one-input model) in the model's own layout, already preprocessed (as for ``mnnlite.quantize``); the
    config's ``path`` is then not needed, and ``labels`` may be a list of class indices, one per sample.
    ``min_cosine`` applies to every output's cosine, ``min_agreement`` to the top-1 agreement of
    classifier-like outputs; ``report.failures`` lists each missed one, and without either threshold
    ``report.verdict`` is "MEASURED (no threshold set)".  ``layers=False`` skips per-layer statistics.
    ``progress(stage, done, total)`` is called with stage "validate" before the first sample (done 0)
    and after each one; ``on_sample(name)`` after each one.
    ``layout``: the order of sequence samples, "model" (declared layouts) or "nchw" (``mnnlite.layout``).
    ``ray``: a Ray cluster address (``mnnlite.distributed``): the samples then run in shards as Ray
    tasks and their per-sample terms are folded here in sample order, so the report is identical.
    ``target``: whose int8 kernels to emulate, "x86" (MNN's x86 build, the default) or "arm" (its max
    pool takes the true maximum where x86 compares codes as signed bytes).
    ``max_memory``: the largest single allocation allowed (bytes or "2G"; ``mnnlite.limits``).
    """
    from .limits import memory_limit

    with memory_limit(max_memory):
        return _validate(float_path, quant_path, config, samples=samples, data=data, labels=labels, num=num,
                         min_cosine=min_cosine, min_agreement=min_agreement, impl=impl, worst=worst,
                         layers=layers, progress=progress, on_sample=on_sample, layout=layout, ray=ray,
                         target=target)


def _validate(float_path, quant_path, config, *, samples, data, labels, num, min_cosine, min_agreement, impl,
              worst, layers, progress, on_sample, layout, ray, target) -> ValidationReport:
    """``validate`` inside its memory budget."""
    connected_ray = None if isinstance(ray, str) or ray is None else ray
    ray = ray if isinstance(ray, str) else None
    from .quant.config import load_config
    from .quant.dataset import ArraySamples
    from .runtime import Interpreter

    cfg = load_config(config, require_path=samples is None and data is None)
    if target not in ("x86", "arm"):
        raise ConfigError(f"target must be x86 or arm, got {target!r}")
    if ray is not None:
        from .distributed import cluster

        with cluster(ray) as connected:
            return _validate(float_path, quant_path, config, samples=samples, data=data, labels=labels, num=num,
                             min_cosine=min_cosine, min_agreement=min_agreement, impl=impl, worst=worst,
                             layers=layers, progress=progress, on_sample=on_sample, layout=layout,
                             ray=connected, target=target)
    float_rt = Interpreter(float_path, impl=impl, precision="float", layout=layout)
    quant_rt = Interpreter(quant_path, impl=impl, layout=layout, target=target)
    specs = input_specs(quant_rt.model, layout)
    if set(float_rt.input_names) != set(quant_rt.input_names):
        raise DataError(f"{quant_path}: inputs {quant_rt.input_names} differ from {float_path}'s "
                        f"{float_rt.input_names}")
    if samples is not None:
        ds = ArraySamples(samples, specs)
        if num is not None:
            ds.keep_first(_check_num(num))
        if labels is not None and not isinstance(labels, (str, os.PathLike)):
            labels = list(labels)
            if len(labels) != ds.sample_count or not all(isinstance(x, (int, np.integer)) for x in labels):
                raise ValueError(f"labels: with samples=, give one class index (int) per sample: "
                                 f"{ds.sample_count} sample(s), got {len(labels)} label(s)")
            label_of = {f"samples[{i}]": int(x) for i, x in enumerate(labels)}
            labels = "labels"
        else:
            label_of = read_labels(labels) if labels is not None else None
    else:
        label_of = read_labels(labels) if labels is not None else None
        ds = _dataset(cfg, specs, data, num)
    outputs = [o for o in quant_rt.output_names if o in float_rt.output_names]
    if not outputs:
        raise DataError(f"{quant_path} and {float_path} have no output name in common")
    acc = {o: _Accumulator() for o in outputs}
    agree = {o: ([], []) for o in outputs}
    correct = [0, 0]
    labelled = 0
    stats = _LayerStats() if layers else None
    if stats:
        stats.info = set(_SampleRun.quant_info(quant_rt))
    used = []
    total = ds.sample_count
    if progress is not None:
        progress("validate", 0, total)
    compare = _SampleRun(outputs, label_of, layers)
    items = ds.samples()
    if connected_ray is None:
        records = (compare((float_rt, quant_rt), item) for item in items)
    else:
        import functools

        from .distributed import RayWorkers
        from .format.model_io import dumps

        pair = functools.partial(_interpreter_pair, dumps(float_rt.model), dumps(quant_rt.model), impl,
                                 layout, target)
        records = RayWorkers(connected_ray, pair).map(_Items(items, total), compare)
    for record in records:
        path = record["path"]
        used.append(path)
        for o, (part, top1, top5) in zip(outputs, record["outputs"]):
            acc[o].fold(part)
            if top1 is not None:
                agree[o][0].append(top1)
                agree[o][1].append(top5)
        if record["label"] is not None:
            labelled += 1
            correct[0] += record["label"][0]
            correct[1] += record["label"][1]
        if stats:
            stats.fold(record["layers"], record["notes"])
        if on_sample is not None:
            on_sample(path)
        if progress is not None:
            progress("validate", len(used), total)
    if not used:
        raise DataError(f"no usable validation sample ({total} tried)")
    reports = []
    for o in outputs:
        a = acc[o]
        top1 = top5 = None
        if agree[o][0]:
            top1 = float(np.mean(agree[o][0]))
            fives = [v for v in agree[o][1] if v is not None]
            top5 = float(np.mean(fives)) if fives else None
        reports.append(OutputReport(o, a.cosine, a.rel_l2, a.max_abs, top1, top5))
    report = ValidationReport(str(float_path), str(quant_path), used, reports,
                              thresholds={"min_cosine": min_cosine, "min_agreement": min_agreement},
                              precision=quant_rt.precision)
    if label_of is not None:
        if labelled == 0:
            raise DataError(f"labels file {labels}: no label for any of the {len(used)} sample(s), or "
                            f"no single-row classifier output to score")
        report.accuracy_float, report.accuracy_quant = correct[0] / labelled, correct[1] / labelled
    if stats:
        report.layers = stats.worst(worst, skip=set(outputs) | set(quant_rt.input_names))
    report.failures = _check(report, min_cosine, min_agreement)
    return report


class _SampleRun:
    """Both models on one held-out sample: a picklable record of everything the report sums (per
    output: the cosine/L2 terms and top-k agreement; the label hits; per layer: the cosine terms and
    the float side's saturated count), folded by ``validate`` in sample order."""

    def __init__(self, outputs: list, label_of: dict | None, layers: bool):
        self.outputs, self.label_of, self.layers = outputs, label_of, layers

    @staticmethod
    def quant_info(quant_rt) -> dict:
        graph = quant_rt.model.graph
        return {graph.tensors[i]: q for i, q in graph.quant_info.items()}

    def __call__(self, pair, item) -> dict:
        float_rt, quant_rt = pair
        path, feeds = item
        graph = quant_rt.model.graph
        parts: list = []
        notes: list = []
        keep, compare = self._layer_hooks(quant_rt, parts, notes) if self.layers else (None, None)
        ref = float_rt.run(feeds, observe=keep)
        got = quant_rt.run(feeds, observe=compare)
        outs = []
        for o in self.outputs:
            r, t = ref[o], got[o]
            if r.shape != t.shape:
                raise DataError(f"output {o!r}: shape {t.shape} (quantized) != {r.shape} (float) on {path}")
            top1 = top5 = None
            if _classifier_like(graph, o, t.shape):
                top1 = M.topk_agreement(r, t, 1)
                top5 = M.topk_agreement(r, t, 5) if t.shape[-1] > 5 else None
            outs.append((contribution(r, t), top1, top5))
        label = _score(self.label_of, path, ref, got, self.outputs, graph) if self.label_of is not None else None
        return {"path": path, "outputs": outs, "label": label, "layers": parts, "notes": notes}

    def _layer_hooks(self, quant_rt, parts: list, notes: list):
        """Observe hooks that compare every float tensor of the quantized run with the float run's, on
        ``layer_sample``'s values (the float run keeps only those), and note the int8 max poolings whose
        input mixes signs (MNN's x86 quirk, ``MAXPOOL_NOTE``)."""
        info = self.quant_info(quant_rt)
        max_pools: list = []        # the int8 plan exists once the quantized run has started
        float_values: dict = {}

        def keep(i, name, a):
            if np.issubdtype(np.asarray(a).dtype, np.floating):
                float_values[name] = (np.shape(a), layer_sample(a))

        def compare(i, name, a):
            kept = float_values.get(name)
            if kept is None or kept[0] != np.shape(a) or not np.issubdtype(np.asarray(a).dtype, np.floating):
                return
            ref = kept[1]
            parts.append((name, contribution(ref, layer_sample(a), _saturated(ref, info.get(name)))))
            if not max_pools:
                max_pools.append(int8_max_pools(quant_rt))
            source = float_values.get(max_pools[0].get(name))
            if source is not None and source[1].size and float(source[1].min()) < 0 < float(source[1].max()):
                notes.append(name)
        return keep, compare


class _Items:
    """The (path, feeds) items with their count, for sharding."""

    def __init__(self, items, count: int):
        self.items, self.count = items, count

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return self.count


def _interpreter_pair(float_bytes: bytes, quant_bytes: bytes, impl: str, layout: str = DEFAULT_LAYOUT,
                      target: str = "x86"):
    """The float and the quantized interpreter, from their .mnn bytes (a Ray worker's copy)."""
    from .format.model_io import loads
    from .runtime import Interpreter

    return (Interpreter(loads(float_bytes), impl=impl, precision="float", layout=layout),
            Interpreter(loads(quant_bytes), impl=impl, layout=layout, target=target))


def _score(label_of, path, ref, got, outputs, graph):
    """(float correct, quant correct) on the first single-row classifier output; None when unlabelled."""
    label = label_of.get(os.path.basename(path))
    if label is None:
        return None
    for o in outputs:
        shape = got[o].shape
        if _classifier_like(graph, o, shape) and int(np.prod(shape[:-1])) == 1:
            return int(np.argmax(ref[o]) == label), int(np.argmax(got[o]) == label)
    return None


def _check(report: ValidationReport, min_cosine, min_agreement) -> list[str]:
    failures = []
    for o in report.outputs:
        if min_cosine is not None and not o.cosine >= min_cosine:
            failures.append(f"{o.name}.cosine {o.cosine:.6f} < min-cosine {min_cosine}")
        if min_agreement is not None and o.top1_agreement is not None and not o.top1_agreement >= min_agreement:
            failures.append(f"{o.name}.top1_agreement {o.top1_agreement:.4f} < min-agreement {min_agreement}")
    return failures


__all__ = ["validate", "ValidationReport", "OutputReport", "LayerReport", "read_labels"]
