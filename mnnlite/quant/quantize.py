"""The quantizer pipeline: ``quantize(src, dst, config) -> QuantReport`` (MNN's ``quantized.out``).

The five steps of MNN's calibration header, as functions: read the config and the samples
(``config.py``, ``dataset.py``); collect feature statistics with our own float runtime, by the flow the
feature method's registry entry names (``feature/``): "statistics" (KL, ADMM: ``tracking.py`` finds what
MNN observes, ``workers.py`` runs the samples, ``statistics.py`` feeds the observers) or "simulation"
(EMA: ``ema_flow.py`` over ``simulate.py``); quantize the conv weights (``weight.py``), rewrite the model
(``rewrite.py``) and write it with the scale dump (``report.py``).  Console output goes through ``log.py``
to the stream the caller passes; nothing is printed otherwise.

Outputs are written atomically (temporary file + rename) only after everything succeeded; the source
model is read, never written.  Identical inputs give byte-identical outputs.
"""
from __future__ import annotations


import dataclasses
import os
import time

import numpy as np

from .._build_check import require_extensions
from ..backend.rules import NHWC, ints
from ..errors import ConfigError, DataError
from ..format.model_io import dumps, load_model
from ..format.tables import OpType
from ..layout import DEFAULT_LAYOUT, check_layout, input_specs
from ..limits import memory_limit
from ..safety import OutputSet, check_distinct
from .bias_correction import ChannelMeans, channel_axis, corrected_bias
from .config import QuantConfig, load_config
from .feature import FEATURE_METHODS
from .dataset import CalibrationSet, RuntimeFeeds, sample_source
from .log import QuantLog
from .report import QuantReport, TensorStat, debug_json, debug_lines, dumps_scales, scale_dump
from .rewrite import CONV_TYPES, ConvQuant, TensorQuant, rewrite
from .statistics import collect_scales
from .tracking import layout_name, plan_tracking, propagate
from .weight import fake_quant_weights, quantize_weights
from .workers import SERIAL_BELOW_SECONDS, Samples, Workers, float_interpreter, make_workers, tensor_facts

require_extensions()        # calibration runs the compiled kernels: one clear error without them


def quantize(src, dst, config, *, samples=None, log=None, impl: str = "mnn", threads: int | None = None,
             progress=None, mnn_log: bool = False, layout: str = DEFAULT_LAYOUT, ray: str | None = None,
             preset: str | None = None, metric=None, target: str = "x86", max_memory=None) -> QuantReport:
    """Quantize ``src`` into ``dst`` (plus ``<dst>.json``) as MNN's offline quantizer does.

    ``config``: a dict or the path of a JSON file with MNN's keys.  ``samples``: calibrate on these instead
    of the config's ``path`` folder: an iterable of ``{input name: array}`` (or bare arrays for a one-input
    model), in the model input's own layout and already preprocessed (``ArraySamples`` in dataset.py);
    the config's ``path`` and image keys are then not used.  ``log``: a text stream for the console lines
    (or a ``QuantLog``); None is silent.  ``progress``: called as ``progress(stage, done, total)`` when a
    calibration loop starts (done 0) and after each step.  ``mnn_log``: write MNN's exact lines (with
    its C++ source line numbers and ``\\r`` progress) instead of readable ones.  ``impl``: the float
    kernels calibration runs with; the default "mnn" reproduces MNN's float rounding, so statistics, KL
    thresholds and the EMA simulation see MNN's own activations ("fast" is the same speed here but
    differs in the last bits, which can move a KL threshold a few bins).  ``threads``: how many samples
    KL calibration runs at once (default: the cores this process may use, at most 4); the result does
    not depend on it.  ``layout``: the order of sequence samples and ``inputs`` shapes, "model" (each
    input's declared layout, as MNN reads them) or "nchw" (Caffe order, converted; ``mnnlite.layout``);
    images are built in the model's layout either way.  ``ray``: a Ray cluster address ("auto", "local",
    "host:port"; ``mnnlite.distributed``): KL and EMA samples then run in shards as Ray tasks, with
    byte-identical output (ADMM and debug mode, whose sums depend on the order, stay on this process).
    ``max_memory``: the largest single allocation allowed (bytes or "2G"; default: the available RAM,
    ``mnnlite.limits``).  Raises ``ConfigError`` / ``DataError`` / ``FormatError`` / ``ResourceError``
    (``TypeError`` / ``ValueError`` for bad ``samples``, ``ClusterError`` for an unreachable cluster)
    before anything is printed or written, ``OutputError`` when an output is an input or cannot be written.

    mnnlite's accuracy options (README "Accurate preset"): ``preset="accurate"`` (the config's ``"preset"``
    key wins when both are given); ``metric(reference, test) -> float`` (higher is better) replaces the
    held-out cosine of accuracy control; ``target`` "x86" | "arm": whose int8 kernels accuracy control
    emulates.  Files and report then also include ``<dst>.report.json`` and ``<dst>.report.html``.
    """
    options = _Options(samples, log, impl, threads, progress, mnn_log, layout, None, preset, metric, target)
    with memory_limit(max_memory):
        return _quantize_with_cluster(src, dst, config, options, ray)


def _quantize_with_cluster(src, dst, config, options, ray) -> QuantReport:
    if ray is not None:
        from ..distributed import cluster

        with cluster(ray) as connected:
            return _quantize(src, dst, config, dataclasses.replace(options, ray=connected))
    return _quantize(src, dst, config, options)


@dataclasses.dataclass(frozen=True)
class _Options:
    """``quantize``'s keyword arguments (``ray``: the connected Ray module, or None)."""

    samples: object
    log: object
    impl: str
    threads: int | None
    progress: object
    mnn_log: bool
    layout: str
    ray: object
    preset: str | None
    metric: object
    target: str


def _quantize(src, dst, config, options: _Options) -> QuantReport:
    start = time.perf_counter()
    samples, log, impl, progress, ray = options.samples, options.log, options.impl, options.progress, options.ray
    metric, target = options.metric, options.target
    threads = _thread_count(options.threads)
    layout = check_layout(options.layout)
    if isinstance(log, QuantLog):
        qlog = log
        qlog.callback = progress or qlog.callback
    else:
        qlog = QuantLog(log, mnn_lines=options.mnn_log, progress=progress)
    src, dst = os.fspath(src), os.fspath(dst)
    # everything that can be checked is checked before the first line is printed
    cfg = load_config(config, require_path=samples is None,
                      overrides={"preset": options.preset} if options.preset is not None else None)
    _check_accuracy_options(cfg, metric, target)
    model = load_model(src)
    _check_paths(src, dst, model, config)
    specs = input_specs(model, layout)
    asked = cfg
    batchnorm = None if cfg.accurate else _batchnorm_line(model)
    if batchnorm is not None:
        cfg = _with(cfg, feature_quantize_method="EMA")     # MNN switches to EMA (docs/mnn-quantization.md §2)
    report = QuantReport(src, dst, cfg.feature_quantize_method, cfg.weight_quantize_method, 0)
    dataset = sample_source(cfg, specs, samples, on_warning=lambda m: _warn(qlog, report, m))
    check_distinct(_outputs(dst, cfg), _inputs(src, model, config, getattr(dataset, "files", ())))
    qlog.line("model_file", src)
    qlog.line("config_file", config if not isinstance(config, dict) else "<dict>")
    qlog.line("dst_file", dst)
    qlog.line("calibrate")
    _log_config(qlog, asked)
    if samples is not None:
        qlog.text(f"calibration samples: {dataset.sample_count} given as arrays\n")
    qlog.line("dataset_num", dataset.sample_count)
    if batchnorm is not None:
        qlog.line(batchnorm)
    model = _equalized(model, cfg, qlog)
    if cfg.accurate:
        from . import accurate

        report.feature_method = "accurate"
        quantized, entries, debug_text = accurate.run(model, cfg, dataset, qlog, impl, report, threads,
                                                      metric=metric, target=target)
    else:
        run = _FLOWS[FEATURE_METHODS[report.feature_method].flow]
        quantized, entries, debug_text = run(model, cfg, dataset, qlog, _Runtime(impl, layout), report, threads,
                                             ray)
    _write(report, quantized, entries, debug_text)
    qlog.line("done")
    report.seconds = time.perf_counter() - start
    qlog.summary(report.summary())
    return report


def preprocess(model, config) -> list[dict[str, np.ndarray]]:
    """The samples of the config's ``path`` folder as arrays, ``{input name: array}`` each: decoded and
    preprocessed exactly as ``quantize`` feeds them (MNN's image math, or the sequence files), in the
    model input's own layout.  ``model``: a path or a loaded model.  What ``quantize(..., samples=)``
    and ``validate(..., samples=)`` take, e.g. to add samples of your own or to keep them in memory."""
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    specs = input_specs(model, DEFAULT_LAYOUT)
    return [inputs for _, inputs in CalibrationSet(load_config(config), specs).samples()]


# ---------------------------------------------------------------------------------------------- set-up

def _check_accuracy_options(cfg: QuantConfig, metric, target: str) -> None:
    if metric is not None and not callable(metric):
        raise ConfigError(f"metric must be a callable (reference, test) -> float, got {type(metric).__name__}")
    if target not in ("x86", "arm"):
        raise ConfigError(f"target must be x86 or arm, got {target!r}")
    if metric is not None and cfg.target_cosine is None:
        raise ConfigError(f'{cfg.source}: metric= needs a target: "target_cosine" in the config (or preset accurate)')


def _check_paths(src: str, dst: str, model, config) -> None:
    """Before the config is read: no output may be the source model, its weights or the config file
    (checked again with the calibration files once they are listed)."""
    check_distinct(_outputs(dst, None), _inputs(src, model, config, ()))


def _outputs(dst: str, cfg) -> list[tuple[str, str]]:
    outputs = [("quantized model", dst), ("scale dump", dst + ".json")]
    if cfg is None or cfg.debug:
        outputs.append(("debug dump", dst + ".debug.json"))
    if cfg is None or cfg.accurate:
        outputs += [("accuracy report", dst + ".report.json"), ("accuracy report (HTML)", dst + ".report.html")]
    return outputs


def _inputs(src: str, model, config, calibration_files) -> list[tuple[str, str]]:
    """Every file quantize reads: the model, its external weights, the config, the calibration data
    (a sample folder's files too)."""
    inputs = [("source model", src), ("source model's weight file", src + ".weight")]
    if model.external_weights:
        inputs.append(("source model's weight file", model.external_weights))
    if not isinstance(config, dict):
        inputs.append(("config", os.fspath(config)))
    for path in calibration_files:
        if os.path.isdir(path):
            try:
                inputs += [("calibration file", os.path.join(path, n)) for n in sorted(os.listdir(path))]
            except OSError:
                pass
        else:
            inputs.append(("calibration file", path))
    return inputs

def _log_config(qlog: QuantLog, cfg: QuantConfig) -> None:
    qlog.line("feature_method", cfg.feature_quantize_method)
    qlog.line("weight_method", cfg.weight_quantize_method)
    qlog.line("feature_clamp", cfg.feature_clamp_value)
    qlog.line("weight_clamp", cfg.weight_clamp_value)
    if cfg.feature_quantize_method != "EMA":
        qlog.line("winograd_only_ema")
    if cfg.winograd_opt is False:
        qlog.line("winograd_off")
    for name in cfg.skip_quant_op_names:
        qlog.line("skip_op", name)
    for entry in cfg.inputs:
        qlog.text(f"input: {entry.name}\n")


def _batchnorm_line(model) -> str | None:
    """MNN switches to EMA, silently but for a log line, when the model has a BatchNorm (docs/mnn-quantization.md §2): the
    key of that line, or None."""
    if any(op.type == OpType.BatchNorm for op in model.graph.ops):
        return "has_batchnorm"
    if any(op.type == OpType.BatchNorm for g in model.subgraphs.values() for op in g.ops):
        return "has_batchnorm_subgraph"
    return None


def _write(report: QuantReport, quantized, entries, debug_text) -> None:
    """The dumps and the model as one set (``safety.OutputSet``): all written to temporaries first,
    then renamed debug dump, scale dump, model — the model last, so a reader that sees the new model
    also sees its new dumps."""
    report.scale_file = report.dst + ".json"
    items = []
    if debug_text is not None:
        report.debug_file = report.dst + ".debug.json"
        items.append((report.debug_file, debug_text.encode(), "debug dump"))
    if report.accuracy is not None:
        import json

        from .report_html import render_html

        report.report_file = report.dst + ".report.json"
        items += [(report.report_file, (json.dumps(report.accuracy.to_dict(), indent=1) + "\n").encode(),
                   "accuracy report"),
                  (report.dst + ".report.html", render_html(report).encode(), "accuracy report (HTML)")]
    items += [(report.scale_file, dumps_scales(entries).encode(), "scale dump"),
              (report.dst, dumps(quantized), "quantized model")]
    with OutputSet() as out:
        for path, data, role in items:
            out.add(path, data, role)
        out.commit()


def _warn(qlog: QuantLog, report: QuantReport, message: str) -> None:
    report.warnings.append(message)
    qlog.warning(message)


def _with(cfg: QuantConfig, **changes) -> QuantConfig:
    return dataclasses.replace(cfg, **changes)


@dataclasses.dataclass(frozen=True)
class _Runtime:
    """How calibration runs a model: float kernels ``impl``, feeds in ``layout``."""

    impl: str
    layout: str

    def interpreter(self, model):
        return float_interpreter(model, self.impl, self.layout)

    def workers(self, model, threads: int, ray=None):
        """``threads`` local interpreters, or Ray tasks when ``ray`` (the connected module) is given."""
        return make_workers(float_interpreter, model, (self.impl, self.layout), threads, ray)


# ------------------------------------------------------------------------------------------ KL / ADMM

DEFAULT_MAX_THREADS = 4     # more samples in flight mostly add memory: the GIL-bound glue saturates


def _thread_count(threads) -> int:
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(cores, DEFAULT_MAX_THREADS))
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 64:
        raise ConfigError(f"threads must be an int in 1..64, got {threads!r}")
    return threads


def _run_statistics(model, cfg: QuantConfig, dataset, qlog, runtime, report, threads: int = 1, ray=None):
    """KL, ADMM (any method of the "statistics" flow): track, collect, propagate, quantize the weights."""
    graph = model.graph
    method = FEATURE_METHODS[cfg.feature_quantize_method]
    samples = RuntimeFeeds(Samples(dataset), dataset.specs, cfg.source)
    # a method whose statistics depend on the order of the samples calibrates here, one sample at a time
    sharded = ray if method.order_free else None
    workers = runtime.workers(model, threads, sharded)
    interp = workers.first
    first = next(iter(samples), None)
    if first is None:
        raise DataError(f'{cfg.source}: no usable calibration sample in "path" {cfg.path}')
    clock = time.perf_counter()
    facts = tensor_facts(interp, first)
    if time.perf_counter() - clock < SERIAL_BELOW_SECONDS and isinstance(workers, Workers):
        workers.count = 1
    plan = plan_tracking(graph, facts, cfg.skip_quant_op_names)
    qlog.line("fake_quant_done")
    fclamp = cfg.feature_clamp_value
    means = _input_means(graph, plan) if cfg.bias_correction else {}
    max_tensors = set(graph.inputs) if cfg.input_threshold == "max" else set()
    raw = collect_scales(method, workers, plan, samples, fclamp, qlog, max_tensors=max_tensors, facts=facts,
                         extra=means)
    report.samples = len(samples)
    scales = propagate(raw, plan)
    convs = _conv_weights(graph, plan, facts, scales, cfg, qlog, report, means)
    debug_text = None
    if cfg.debug:
        debug_text = _debug(model, convs, plan, scales, samples, cfg, qlog, runtime, report)
    tensors = {t: TensorQuant(float(s), float(z), -float(fclamp), float(fclamp))
               for t, (s, z) in scales.items() if _usable(t, s, facts, cfg.writes_rangeless_tensors)}
    quantized = rewrite(model, tensors, convs)
    report.scales = {graph.tensors[t]: (q.scale, q.zero) for t, q in sorted(tensors.items())}
    return quantized, scale_dump(graph, plan.seen, scales), debug_text


def _usable(t: int, scale: float, facts, rangeless: bool) -> bool:
    """Tensors that get quant info.

    MNN (default, ``rangeless`` true) writes every tensor of its scale map, scale-0 ones included: all-zero
    constants, and integer tensors such as comparison results, whose bits it reads as floats.  Its runtime
    then runs ops like BinaryOp or Select in int8 with a zero scale; that is how MNN's own file runs, and
    on MTCNN-type PReLU (GREATER + Select + MUL) it is more accurate in MNN's runtime than leaving them
    out.  ``"quantize_rangeless_tensors": false`` writes only float tensors with a positive finite scale,
    which keeps those ops in float and their outputs reproducible (README: deviations).
    """
    if t < 0:
        return False
    if rangeless:
        return True
    fact = facts.get(t)
    return scale > 0 and np.isfinite(scale) and (fact is None or fact.dtype == np.float32)


def _conv_weights(graph, plan, facts, scales, cfg: QuantConfig, qlog, report, means=None) -> dict[int, ConvQuant]:
    """§8.1-8.2: int8 weights for every eligible conv (main graph, not skipped, one input, tensors seen).
    ``means``: conv input tensor -> ChannelMeans when bias correction is on."""
    from ..ops.weights import conv_weights

    skip = set(cfg.skip_quant_op_names)
    convs: dict[int, ConvQuant] = {}
    for pos, op in enumerate(graph.ops):
        if op.type not in CONV_TYPES:
            continue
        ins, outs = ints(op.inputIndexes), ints(op.outputIndexes)
        if op.name in skip or len(ins) != 1 or not outs or ins[0] not in plan.seen or outs[0] not in plan.seen:
            report.skipped_ops.append(op.name)
            continue
        w, _ = conv_weights(op)
        count = int(op.main.common.outputCount)
        w_float = w = np.asarray(w, np.float32).reshape(count, -1)
        if op.type != OpType.Deconvolution and cfg.weight_range_method == "max_abs":
            w = fake_quant_weights(w, cfg.weight_clamp_value)          # §6.2 (a clipped range starts from w)
        codes, alpha = quantize_weights(w, cfg.weight_quantize_method, cfg.quant_bits, cfg.weight_clamp_value,
                                        cfg.weight_range_method)
        if cfg.weight_quantize_method == "ADMM":
            qlog.line("admm_weight", _admm_diff(w, alpha, cfg.weight_clamp_value))
        convs[pos] = ConvQuant(codes, alpha, cfg.quant_bits, scales.get(ins[0], (0.0, 0.0))[0],
                               scales.get(outs[0], (0.0, 0.0))[0], _channels(facts, plan, ins[0]),
                               bias=_corrected_bias(op, w_float, codes, alpha, (means or {}).get(ins[0])))
        report.quantized_ops.append(op.name)
    return convs


def _input_means(graph, plan) -> dict:
    """Bias correction: a ChannelMeans observer on the input of every conv that may be quantized."""
    means = {}
    for op in graph.ops:
        ins = ints(op.inputIndexes)
        if op.type in CONV_TYPES and op.type != OpType.Deconvolution and len(ins) == 1 and ins[0] in plan.seen:
            means.setdefault(ins[0], ChannelMeans(channel_axis(layout_name(plan, ins[0]))))
    return means


def _corrected_bias(op, w_float, codes, alpha, means):
    """The bias with the weight-quantization mean shift removed (None: keep the op's bias)."""
    if means is None:
        return None
    from ..ops.weights import conv_weights

    w_quant = codes.astype(np.float32) * alpha[:, None]
    return corrected_bias(op, w_float, w_quant, conv_weights(op)[1], means.compute())


def _equalized(model, cfg: QuantConfig, qlog):
    """Cross-layer equalization of the float model, when the config asks for it."""
    if not cfg.cross_layer_equalization:
        return model
    from .equalize import equalize

    result = equalize(model)
    qlog.text(f"cross_layer_equalization: {len(result.pairs)} conv pairs equalized in {result.sweeps} sweeps\n")
    return result.model


def _admm_diff(w: np.ndarray, alpha: np.ndarray, clamp: int) -> str:
    """quantizeWeight.cpp's log value: Σ|w| − Σ|q·alpha| (float32 running sums), printed like ostream."""
    from ..format.idst import roundf

    c = np.float32(clamp)
    q = np.clip(roundf(w / (alpha + np.float32(1e-9))[:, None]), -c, c)
    pre = np.cumsum(np.abs(w).reshape(-1), dtype=np.float32)[-1]
    cur = np.cumsum(np.abs(q * alpha[:, None]).reshape(-1), dtype=np.float32)[-1]
    return f"{float(np.float32(pre - cur)):g}"


def _channels(facts, plan, t: int) -> int | None:
    fact = facts.get(t)
    if fact is None or len(fact.shape) < 2:
        return None
    return int(fact.shape[-1] if plan.formats.get(t) == NHWC else fact.shape[1])


def _debug(model, convs, plan, scales, samples, cfg, qlog, runtime, report) -> str:
    """docs/mnn-quantization.md §10, with the int8 weights in the simulated model (MNN keeps float weights, §14.13)."""
    import copy

    from ..graph import Model

    net = copy.copy(model.net)
    net.oplists = list(model.net.oplists)
    for pos, conv in convs.items():
        op = copy.copy(net.oplists[pos])
        op.main = copy.copy(op.main)
        op.main.weight = (conv.codes.astype(np.float32) * conv.alpha[:, None]).reshape(-1)
        op.main.quanParameter = None
        op.main.external = None
        net.oplists[pos] = op
    interp_q = runtime.interpreter(Model(net, path=model.path))
    interp_f = runtime.interpreter(model)
    from .debug import debug_distances

    stats = debug_distances(interp_f, interp_q, plan, scales, samples, cfg.feature_clamp_value, qlog)
    report.debug = [TensorStat(plan.tracked[t], t, c, o) for t, (c, o) in stats.items()]
    qlog.text(debug_lines(report.debug))
    return debug_json(report.debug, report.samples)


# a feature method's flow (``feature.FeatureObserver.flow``) -> the function that quantizes with it
def _run_ema(*args, **kwargs):
    from .ema_flow import run_ema       # imported when used: the other flows start faster without it

    return run_ema(*args, **kwargs)


_FLOWS = {"statistics": _run_statistics, "simulation": _run_ema}

__all__ = ["quantize", "preprocess", "QuantReport"]
