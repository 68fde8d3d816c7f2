"""Validate a quantized model against its float original on held-out samples.

``validate(float_path, quant_path, config, data=None, labels=None, num=None, min_cosine=None,
min_agreement=None) -> ValidationReport`` runs both models (the quantized one in int8, as MNN does) on
samples preprocessed with the config's rules (``mnnlite.quant.dataset``) and reports per output:
cosine, relative L2 and max abs error over all samples; top-1/top-5 agreement for classifier-like
outputs; labelled accuracy of both models when labels are given; per-layer cosine and overflow for the
worst layers (quantization doc §10's metrics, here with the int8 runtime's real values).

Samples: by default the files of the config's ``path`` after the calibration ones (``used_sample_num``
/ ``used_image_num`` first files are calibration); ``data`` names another folder.  ``num`` caps them.
Labels: a text file, one ``NAME LABEL`` per line (NAME = a sample's file name, LABEL = class index;
``,`` also separates; ``#`` starts a comment).  Accuracy uses the first classifier-like output.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

import numpy as np

from . import metrics as M
from .errors import ConfigError, DataError
from .layout import DEFAULT_LAYOUT, input_specs

WORST_LAYERS = 5


def contribution(ref: np.ndarray, test: np.ndarray, saturated: int = 0) -> tuple:
    """One comparison's terms for ``_Accumulator.fold``: dot, |ref|², |test|², |diff|², max |diff|, count,
    saturated."""
    r, t = np.asarray(ref, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    d = t - r
    # numpy's pairwise sums, not BLAS dot products: a threaded BLAS splits long sums by its thread count,
    # which differs between processes (Ray workers run single-threaded), and the last bits with it
    return (float(np.sum(r * t)), float(np.sum(r * r)), float(np.sum(t * t)), float(np.sum(d * d)),
            float(np.abs(d).max()) if d.size else 0.0, r.size, saturated)


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
            "thresholds": dict(self.thresholds), "passed": self.passed, "failures": list(self.failures),
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
                lines.append(f"{layer.name[:40]:40} {layer.cosine:10.6f} {ov:>9}")
        lines.append("")
        lines.append("PASS" if self.passed else "FAIL: " + "; ".join(self.failures))
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
        if num < 1:
            raise ConfigError(f"num must be at least 1, got {num}")
        files = files[:num]
    ds = CalibrationSet(cfg, specs, batch_size=1, drop_last=False)
    ds.files = files
    return ds


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


def _saturated(x: np.ndarray, info) -> int:
    """Elements of the float model's tensor that the quant attribute clamps (doc §10 overflow)."""
    if info is None or not info.scale:
        return 0
    q = np.asarray(x, np.float32) * np.float32(1.0 / info.scale) + np.float32(info.zero)
    return int(np.count_nonzero((q >= info.max - 0.5) | (q <= info.min + 0.5)))


class _LayerStats:
    """Per-tensor cosine of quant vs float values and float-side overflow, folded from the samples'
    per-layer contributions (``_SampleRun``) in sample order."""

    def __init__(self):
        self.acc: dict[str, _Accumulator] = {}
        self.info: set = set()

    def fold(self, parts: list) -> None:
        for name, part in parts:
            self.acc.setdefault(name, _Accumulator()).fold(part)

    def worst(self, count: int, skip: set) -> list:
        rows = [LayerReport(n, a.cosine, a.overflow if n in self.info else None)
                for n, a in self.acc.items() if n not in skip]
        rows.sort(key=lambda r: (r.cosine, r.name))
        return rows[:count]


# ------------------------------------------------------------------------------------------ main

def validate(float_path, quant_path, config, *, data=None, labels=None, num=None, min_cosine=None,
             min_agreement=None, impl: str = "fast", worst: int = WORST_LAYERS, layers: bool = True,
             on_sample=None, layout: str = DEFAULT_LAYOUT, ray=None, max_memory=None) -> ValidationReport:
    """Compare ``quant_path`` (run in int8) with ``float_path`` on held-out samples; see the module doc.

    ``config``: the quantizer config (dict or JSON path) whose preprocessing is used.  ``min_cosine``
    applies to every output's cosine, ``min_agreement`` to the top-1 agreement of classifier-like
    outputs; ``report.failures`` lists each missed one.  ``layers=False`` skips per-layer statistics.
    ``layout``: the order of sequence samples, "model" (declared layouts) or "nchw" (``mnnlite.layout``).
    ``ray``: a Ray cluster address (``mnnlite.distributed``): the samples then run in shards as Ray
    tasks and their per-sample terms are folded here in sample order, so the report is identical.
    ``max_memory``: the largest single allocation allowed (bytes or "2G"; ``mnnlite.limits``).
    """
    from .limits import memory_limit

    with memory_limit(max_memory):
        return _validate(float_path, quant_path, config, data=data, labels=labels, num=num,
                         min_cosine=min_cosine, min_agreement=min_agreement, impl=impl, worst=worst,
                         layers=layers, on_sample=on_sample, layout=layout, ray=ray)


def _validate(float_path, quant_path, config, *, data, labels, num, min_cosine, min_agreement, impl, worst,
              layers, on_sample, layout, ray) -> ValidationReport:
    """``validate`` inside its memory budget."""
    connected_ray = None if isinstance(ray, str) or ray is None else ray
    ray = ray if isinstance(ray, str) else None
    from .quant.config import load_config
    from .runtime import Interpreter

    cfg = load_config(config)
    if ray is not None:
        from .distributed import cluster

        with cluster(ray) as connected:
            return validate(float_path, quant_path, config, data=data, labels=labels, num=num,
                            min_cosine=min_cosine, min_agreement=min_agreement, impl=impl, worst=worst,
                            layers=layers, on_sample=on_sample, layout=layout, ray=connected)
    float_rt = Interpreter(float_path, impl=impl, precision="float", layout=layout)
    quant_rt = Interpreter(quant_path, impl=impl, layout=layout)
    specs = input_specs(quant_rt.model, layout)
    if set(float_rt.input_names) != set(quant_rt.input_names):
        raise DataError(f"{quant_path}: inputs {quant_rt.input_names} differ from {float_path}'s "
                        f"{float_rt.input_names}")
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
    samples = []
    compare = _SampleRun(outputs, label_of, layers)
    items = ds.samples()
    if connected_ray is None:
        records = (compare((float_rt, quant_rt), item) for item in items)
    else:
        import functools

        from .distributed import RayWorkers
        from .format.model_io import dumps

        pair = functools.partial(_interpreter_pair, dumps(float_rt.model), dumps(quant_rt.model), impl,
                                 layout)
        records = RayWorkers(connected_ray, pair).map(_Items(items, len(ds.files)), compare)
    for record in records:
        path = record["path"]
        samples.append(path)
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
            stats.fold(record["layers"])
        if on_sample is not None:
            on_sample(path)
    if not samples:
        raise DataError(f"no usable validation sample ({len(ds.files)} file(s) tried)")
    reports = []
    for o in outputs:
        a = acc[o]
        top1 = top5 = None
        if agree[o][0]:
            top1 = float(np.mean(agree[o][0]))
            fives = [v for v in agree[o][1] if v is not None]
            top5 = float(np.mean(fives)) if fives else None
        reports.append(OutputReport(o, a.cosine, a.rel_l2, a.max_abs, top1, top5))
    report = ValidationReport(str(float_path), str(quant_path), samples, reports,
                              thresholds={"min_cosine": min_cosine, "min_agreement": min_agreement},
                              precision=quant_rt.precision)
    if label_of is not None:
        if labelled == 0:
            raise DataError(f"labels file {labels}: no label for any of the {len(samples)} sample(s), or "
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
        keep, compare = self._layer_hooks(quant_rt, parts) if self.layers else (None, None)
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
        return {"path": path, "outputs": outs, "label": label, "layers": parts}

    def _layer_hooks(self, quant_rt, parts: list):
        info = self.quant_info(quant_rt)
        float_values: dict = {}

        def keep(i, name, a):
            if np.issubdtype(np.asarray(a).dtype, np.floating):
                float_values[name] = a

        def compare(i, name, a):
            ref = float_values.pop(name, None)
            if ref is None or np.shape(ref) != np.shape(a) or not np.issubdtype(np.asarray(a).dtype, np.floating):
                return
            parts.append((name, contribution(ref, a, _saturated(ref, info.get(name)))))
        return keep, compare


class _Items:
    """The (path, feeds) items with their count, for sharding."""

    def __init__(self, items, count: int):
        self.items, self.count = items, count

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return self.count


def _interpreter_pair(float_bytes: bytes, quant_bytes: bytes, impl: str, layout: str = DEFAULT_LAYOUT):
    """The float and the quantized interpreter, from their .mnn bytes (a Ray worker's copy)."""
    from .format.model_io import loads
    from .runtime import Interpreter

    return (Interpreter(loads(float_bytes), impl=impl, precision="float", layout=layout),
            Interpreter(loads(quant_bytes), impl=impl, layout=layout))


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
