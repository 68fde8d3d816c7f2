"""The EMA flow of the quantizer: calibrate by simulation (``simulate.py``), then the quant info MNN's EMA writes.

MNN's ``feature_quantize_method: "EMA"`` is its training-based calibration (calibration.cpp
``_quantizeModelEMA``, docs/mnn-quantization.md §9): every fusable conv is simulated in int8 with fake-quantized
weights, its input and output ranges tracked as moving averages, and the rewrite then turns the fused convs
into int8 convs with MNN's FloatToInt8 / Int8ToFloat casts around them.  ``run_ema`` is the flow
``quantize.py`` calls for every feature method whose ``flow`` is "simulation".
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import ShapeError
from ..format.tables import OpType
from .bias_correction import ChannelMeans, corrected_bias
from .config import QuantConfig
from .dataset import CalibrationSet, RuntimeFeeds
from .report import scale_dump
from .rewrite import CONV_TYPES, ConvQuant, TensorQuant, rewrite
from .simulate import calibrate_ema, ema_weight_codes, fused_convs
from .workers import Samples

EMA_OUTPUT_MIN = -128.0     # Int8ToFloat's default clampMin, left on EMA conv outputs (docs/mnn-quantization.md §9.7)
DEFAULT_EMA_BATCH = 32      # MNN's EMA batch when neither the config nor the input's batch dim sets one


def ema_output_min(graph, t: int, int8_convs: set) -> float:
    """MNN's EMA rewrite: a conv output keeps the conv's own clamp (-127) when only int8 convs read it
    (the FloatToInt8(Int8ToFloat(y)) pair disappears); an Int8ToFloat for a float reader or a graph
    output overwrites it with its default -128 (docs/mnn-quantization.md §9.7; checked against the oracle's files)."""
    readers = graph.consumers.get(t, [])
    if t in graph.outputs or not readers or any(id(op) not in int8_convs for op in readers):
        return EMA_OUTPUT_MIN
    return -127.0


def single_samples(cfg: QuantConfig, dataset, error, qlog):
    """The EMA dataset that feeds one sample per forward, for a graph that cannot take the batch.

    Exported encoders often fix the batch inside the graph (a Reshape to the constant shape [1, S, h, d]):
    a batch of 32 cannot pass.  MNN's sequence EMA never meets this: it feeds only the last sample of each
    batch (calibration.cpp ``_quantizeModelEMA``, docs/mnn-quantization.md §14.18), which ``CalibrationSet`` reproduces by
    default, so its forwards have batch 1.  Image batches (which MNN stacks and then cannot run through
    such a graph) and ``"ema_sequence_batch": "full"`` do get here: every sample then gets its own
    forward.  ``samples=`` arrays are stacked into batches of the config's ``batch_size`` the same way,
    and fall back the same way.  None when the batch was 1 already (the error is then the model's or the
    data's).
    """
    batch = dataset.batch_size
    if batch <= 1:
        return None
    if isinstance(dataset, CalibrationSet):
        single = CalibrationSet(cfg, dataset.specs, batch_size=1, drop_last=False, on_warning=dataset.on_warning)
    else:
        single = copy.copy(dataset)
        single.batch_size, single.drop_last = 1, False
    reason = str(error).split(": ", 1)[-1]
    qlog.text(f"the graph cannot take a batch of {batch} ({reason}); calibrating with each of the "
              f"{single.sample_count} samples on its own\n")
    return single


def _log_batch(cfg: QuantConfig, dataset, qlog) -> None:
    """MNN's EMA console lines about the batch (calibration.cpp ``_quantizeModelEMA``)."""
    specs = dataset.specs
    declared = specs[0].shape[0] if specs and specs[0].shape and specs[0].shape[0] > 0 else None
    if cfg.batch_size is None and declared is not None and declared != DEFAULT_EMA_BATCH:
        qlog.line("batch_not_set", declared)
    qlog.line("batch_size", dataset.batch_size)
    qlog.line("quant_bits", cfg.quant_bits)
    wanted = cfg.batch_size or declared or DEFAULT_EMA_BATCH
    if dataset.sample_count < wanted:
        qlog.text(f"_calibrationFileNum {dataset.sample_count} < batch size {wanted}, "
                  f"set batch size as {dataset.sample_count}\n")


def _calibrate(model, modules, cfg: QuantConfig, dataset, qlog, runtime, threads: int, ray):
    """(EMA parameters per fused conv, bias-correction means, the dataset used); batches that the graph
    cannot take fall back to one sample per forward (``single_samples``)."""
    def calibrate(data):
        means = {m.pos: ChannelMeans() for m in modules} if cfg.bias_correction else {}
        feeds = RuntimeFeeds(Samples(data, budget=0), data.specs, cfg.source)
        params = calibrate_ema(model, modules, feeds, cfg.feature_clamp_value, cfg.weight_clamp_value, qlog,
                               runtime.impl, cfg.weight_quantize_method, threads, ray, runtime.layout,
                               cfg.weight_range_method, means)
        return params, means
    try:
        return (*calibrate(dataset), dataset)
    except ShapeError as exc:       # batches run in order: the first one fails before any result is used
        single = single_samples(cfg, dataset, exc, qlog)
        if single is None:
            raise
        return (*calibrate(single), single)


def _activation(graph, m) -> str | None:
    """The activation MNN fuses into an EMA int8 conv (the last ReLU/ReLU6 it absorbed)."""
    activation = None
    for pos in m.absorbed:
        kind = graph.ops[pos].type
        if kind == OpType.ReLU:
            activation = "relu"
        elif kind == OpType.ReLU6:
            activation = "relu6"
    return activation


def _conv_quants(graph, modules, params, means, cfg: QuantConfig, report):
    """(int8 convs, their input quant info) of the fused convs that saw non-zero values."""
    convs: dict[int, ConvQuant] = {}
    inputs: dict[int, TensorQuant] = {}
    fclamp, wclamp = cfg.feature_clamp_value, cfg.weight_clamp_value
    for m in modules:
        p = params[m.pos]
        op = graph.ops[m.pos]
        if not (p.scale_in > 0 and p.scale_out > 0):
            report.skipped_ops.append(op.name)          # never saw a non-zero value: keep it float
            continue
        w, b = m.weights(graph)
        codes, s_w = ema_weight_codes(w, wclamp, cfg.weight_quantize_method, cfg.quant_bits,
                                      cfg.weight_range_method)
        bias = b if m.absorbed else None
        if m.pos in means:
            w_quant = codes.astype(np.float32) * s_w[:, None]
            corrected = corrected_bias(op, w, w_quant, b, means[m.pos].compute())
            bias = bias if corrected is None else corrected
        convs[m.pos] = ConvQuant(codes, s_w, cfg.quant_bits, p.scale_in, p.scale_out, None, p.zero_in,
                                 p.zero_out, bias=bias, output=m.output if m.absorbed else None,
                                 activation=_activation(graph, m))
        # MNN's FloatToInt8 keeps 1/s and the rewrite stores 1/(1/s) (docs/mnn-quantization.md §9.7): one ulp off s at times
        s_in = float(np.float32(1) / np.float32(np.float32(1) / np.float32(p.scale_in)))
        inputs[m.pos] = TensorQuant(s_in, p.zero_in, -float(fclamp), float(fclamp))
        report.quantized_ops.append(op.name)
    return convs, inputs


def _tensor_quants(graph, modules, params, convs, inputs, specs):
    """(quant info per tensor, private input copies per conv): where MNN's EMA rewrite puts each scale."""
    quantized_inputs = {id(graph.ops[m.pos]) for m in modules if m.pos in convs}
    tensors: dict[int, TensorQuant] = {}
    for m in modules:
        if m.pos in convs:
            p = params[m.pos]
            tensors[m.output] = TensorQuant(p.scale_out, p.zero_out,
                                            ema_output_min(graph, m.output, quantized_inputs), 127.0)
    # MNN rewires a conv reading another quantized conv's output to read it directly.  Other convs: MNN's
    # inference forward builds the graph from inputs with the declared dims; where one is unknown, no
    # tensor has a known format, so its _Convert(x, NC4HW4) around the FloatToInt8 always adds ops and each
    # such conv reads a private quantized copy (the producer, e.g. MTCNN's PReLU, stays float); with known
    # dims the convert is a no-op and the quant info lands on the shared tensor (last conv wins)
    dynamic = any(d <= 0 for spec in specs for d in spec.shape)
    shared: dict[int, TensorQuant] = {}
    copies: dict[int, TensorQuant] = {}
    for m in modules:
        if m.pos in convs and m.input not in tensors:
            if dynamic:
                copies[m.pos] = inputs[m.pos]
            else:
                shared[m.input] = inputs[m.pos]
    tensors.update(shared)
    return tensors, copies


def run_ema(model, cfg: QuantConfig, dataset, qlog, runtime, report, threads: int = 1, ray=None):
    """The EMA flow: (quantized model, scale dump entries, None) like the other flows."""
    graph = model.graph
    _log_batch(cfg, dataset, qlog)
    modules = fused_convs(graph, cfg.skip_quant_op_names)
    params, means, dataset = _calibrate(model, modules, cfg, dataset, qlog, runtime, threads, ray)
    report.samples = dataset.sample_count
    convs, inputs = _conv_quants(graph, modules, params, means, cfg, report)
    tensors, copies = _tensor_quants(graph, modules, params, convs, inputs, dataset.specs)
    fused = {m.pos for m in modules}
    report.skipped_ops += [op.name for pos, op in enumerate(graph.ops)
                           if op.type in CONV_TYPES and pos not in fused and op.name not in report.skipped_ops]
    drop = [pos for m in modules if m.pos in convs for pos in m.absorbed]
    quantized = rewrite(model, tensors, convs, tables=False, drop_ops=drop, input_copies=copies)
    scales = {t: (q.scale, q.zero) for t, q in tensors.items()}
    scales.update({m.input: (copies[m.pos].scale, copies[m.pos].zero) for m in modules if m.pos in copies})
    report.scales = {graph.tensors[t]: v for t, v in sorted(scales.items())}
    return quantized, scale_dump(graph, set(scales), scales), None
