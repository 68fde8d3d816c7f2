"""EMA (docs/mnn-quantization.md §9): fused conv modules simulated with fake quantization.

``fused_convs`` finds MNN's quantized modules (Conv [+BN] [+ReLU/ReLU6]); ``calibrate_ema`` runs the
float model with fake-quantized weights and activations over the calibration batches and averages the
ranges (``feature.ema.EMAObserver``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend.rules import ints
from ..format.tables import BinaryOpOperation, DataFormat, DataType, OpType
from .workers import _as_model, make_workers

_NCHW, _FLOAT = int(DataFormat.NCHW), int(DataType.DT_FLOAT)


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
        ins, outs = ints(op.inputIndexes), ints(op.outputIndexes)
        if len(ins) != 1 or len(outs) != 1 or op.main is None or op.main.common is None:
            continue
        common = op.main.common
        activation = "relu6" if common.relu6 else "relu" if common.relu else None
        out, absorbed = outs[0], []
        nxt = _single_consumer(graph, out)
        if activation is None and nxt is not None and nxt.type == OpType.BatchNorm and nxt.name not in skip:
            absorbed.append(position[id(nxt)])
            out = ints(nxt.outputIndexes)[0]
            nxt = _single_consumer(graph, out)
        if activation is None and nxt is not None and nxt.name not in skip and _plain_activation(nxt):
            absorbed.append(position[id(nxt)])
            activation = "relu" if nxt.type == OpType.ReLU else "relu6"
            out = ints(nxt.outputIndexes)[0]
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
                  main=Blob(dims=[], dataFormat=_NCHW, dataType=_FLOAT, float32s=np.zeros(1, np.float32)))]
    private: dict[int, int] = {}
    by_pos = {m.pos: m for m in modules}
    for pos, op in enumerate(ops):
        m = by_pos.get(pos)
        if m is None:
            new_ops.append(op)
            continue
        copy_index = len(net.tensorName)
        net.tensorName.append(f"__mnnlite_ema_in_{pos}")
        add = BinaryOp(opType=int(BinaryOpOperation.ADD), T=_FLOAT, activationType=0)
        new_ops.append(Op(name=f"__mnnlite_ema_copy_{pos}", type=OpType.BinaryOp, inputIndexes=[m.input, zero],
                          outputIndexes=[copy_index], main=add))
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
                              main=Blob(dims=list(arr.shape), dataFormat=_NCHW, dataType=_FLOAT,
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
    (``kernels.mnn_ops.tiled_conv_batch``, the same bits on any count), so the result does not depend on ``threads``
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
