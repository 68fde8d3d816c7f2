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

WORST_LAYERS = 5


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
        r, t = np.asarray(ref, np.float64).ravel(), np.asarray(test, np.float64).ravel()
        self.dot += float(r @ t)
        self.ref2 += float(r @ r)
        self.test2 += float(t @ t)
        d = t - r
        self.diff2 += float(d @ d)
        if d.size:
            self.max_abs = max(self.max_abs, float(np.abs(d).max()))
        self.count += r.size

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

def _input_specs(interp):
    from .quant.dataset import InputSpec

    specs = []
    for name, info in interp.input_info().items():
        layout = "NHWC" if info.layout == "NHWC" else "NCHW"
        specs.append(InputSpec(name, tuple(int(d) for d in info.shape), layout, str(info.dtype)))
    return specs


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


def _to_feeds(inputs: dict, specs) -> dict:
    """Dataset arrays are in the input's own layout; the runtime takes NCHW order."""
    feeds = {}
    for spec in specs:
        if spec.name in inputs:
            a = inputs[spec.name]
            feeds[spec.name] = np.moveaxis(a, -1, 1) if spec.layout == "NHWC" and a.ndim >= 3 else a
    return feeds


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
    """Per-tensor cosine of quant vs float values (observe hooks) and float-side overflow."""

    def __init__(self, quant_graph):
        self.acc: dict[str, _Accumulator] = {}
        self.info = {quant_graph.tensors[i]: q for i, q in quant_graph.quant_info.items()}
        self.float_values: dict[str, np.ndarray] = {}

    def keep_float(self, i, name, a):
        if np.issubdtype(np.asarray(a).dtype, np.floating):
            self.float_values[name] = a

    def compare(self, i, name, a):
        ref = self.float_values.pop(name, None)
        if ref is None or np.shape(ref) != np.shape(a) or not np.issubdtype(np.asarray(a).dtype, np.floating):
            return
        acc = self.acc.setdefault(name, _Accumulator())
        acc.add(ref, a)
        acc.saturated += _saturated(ref, self.info.get(name))

    def worst(self, count: int, skip: set) -> list:
        rows = [LayerReport(n, a.cosine, a.overflow if n in self.info else None)
                for n, a in self.acc.items() if n not in skip]
        rows.sort(key=lambda r: (r.cosine, r.name))
        return rows[:count]


# ------------------------------------------------------------------------------------------ main

def validate(float_path, quant_path, config, *, data=None, labels=None, num=None, min_cosine=None,
             min_agreement=None, impl: str = "fast", worst: int = WORST_LAYERS, layers: bool = True,
             on_sample=None, max_memory=None) -> ValidationReport:
    """Compare ``quant_path`` (run in int8) with ``float_path`` on held-out samples; see the module doc.

    ``config``: the quantizer config (dict or JSON path) whose preprocessing is used.  ``min_cosine``
    applies to every output's cosine, ``min_agreement`` to the top-1 agreement of classifier-like
    outputs; ``report.failures`` lists each missed one.  ``layers=False`` skips per-layer statistics.
    ``max_memory``: the largest single allocation allowed (bytes or "2G"; ``mnnlite.limits``).
    """
    from .limits import memory_limit

    with memory_limit(max_memory):
        return _validate(float_path, quant_path, config, data=data, labels=labels, num=num,
                         min_cosine=min_cosine, min_agreement=min_agreement, impl=impl, worst=worst,
                         layers=layers, on_sample=on_sample)


def _validate(float_path, quant_path, config, *, data, labels, num, min_cosine, min_agreement, impl, worst,
              layers, on_sample) -> ValidationReport:
    """``validate`` inside its memory budget."""
    from .quant.config import load_config
    from .runtime import Interpreter

    cfg = load_config(config)
    float_rt = Interpreter(float_path, impl=impl, precision="float")
    quant_rt = Interpreter(quant_path, impl=impl)
    specs = _input_specs(quant_rt)
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
    stats = _LayerStats(quant_rt.model.graph) if layers else None
    samples = []
    for path, inputs in ds.samples():
        feeds = _to_feeds(inputs, specs)
        ref = float_rt.run(feeds, observe=stats.keep_float if stats else None)
        got = quant_rt.run(feeds, observe=stats.compare if stats else None)
        if stats:
            stats.float_values.clear()
        samples.append(path)
        for o in outputs:
            r, t = ref[o], got[o]
            if r.shape != t.shape:
                raise DataError(f"output {o!r}: shape {t.shape} (quantized) != {r.shape} (float) on {path}")
            acc[o].add(r, t)
            if _classifier_like(quant_rt.model.graph, o, t.shape):
                agree[o][0].append(M.topk_agreement(r, t, 1))
                agree[o][1].append(M.topk_agreement(r, t, 5) if t.shape[-1] > 5 else None)
        if label_of is not None:
            labelled += _score(label_of, path, ref, got, outputs, quant_rt.model.graph, correct)
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


def _score(label_of, path, ref, got, outputs, graph, correct) -> int:
    label = label_of.get(os.path.basename(path))
    if label is None:
        return 0
    for o in outputs:
        shape = got[o].shape
        if _classifier_like(graph, o, shape) and int(np.prod(shape[:-1])) == 1:
            correct[0] += int(np.argmax(ref[o]) == label)
            correct[1] += int(np.argmax(got[o]) == label)
            return 1
    return 0


def _check(report: ValidationReport, min_cosine, min_agreement) -> list[str]:
    failures = []
    for o in report.outputs:
        if min_cosine is not None and not o.cosine >= min_cosine:
            failures.append(f"{o.name}.cosine {o.cosine:.6f} < min-cosine {min_cosine}")
        if min_agreement is not None and o.top1_agreement is not None and not o.top1_agreement >= min_agreement:
            failures.append(f"{o.name}.top1_agreement {o.top1_agreement:.4f} < min-agreement {min_agreement}")
    return failures


__all__ = ["validate", "ValidationReport", "OutputReport", "LayerReport", "read_labels"]
