"""Bias correction (config ``"bias_correction": true``): each int8 conv's float bias absorbs the mean
shift its weight quantization causes.

A conv computes ``y = W x + b``; with int8 weights it computes ``W_q x + b``, whose mean over the
calibration data is off by ``E[W_q x] - E[W x] = (W_q - W) E[x]``.  With ``mu_c`` the mean of input
channel ``c`` over samples and positions, output channel ``o`` shifts by
``sum_c (sum over the kernel window of (W_q - W)[o, c]) * mu_c``; the corrected bias is ``b - shift``.
(The idea: Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction", §4.2, here with empirical input means instead of batch-norm statistics.)  Border
positions that read zero padding see a smaller mean; the per-channel correction ignores that, as the
paper's does.

The channel means are gathered in the calibration pass that collects the activation statistics (no
extra forward): ``ChannelMeans`` is one more observer of the conv's input tensor.
"""
from __future__ import annotations

import numpy as np

# Fixed-point step of the per-sample channel sums, relative to the tensor's max |x| (pass 0): integer
# sums do not depend on the order samples arrive in (KL runs samples on several threads), so the
# corrected biases are byte-identical for any thread count.  2^-24 of max|x| per sample is far below
# float32 resolution of a mean; |sum| <= 2^24 * (elements per channel), int64 holds 2^39 samples of a
# 320x320 plane.
_FIXED_BITS = 24


class ChannelMeans:
    """Per-channel mean of one tensor over every calibration sample and position.

    ``axis``: the channel axis of the arrays the runtime shows (1 for NCHW, -1 for NHWC).  Two passes
    like the KL observers (``start_pass(0)``: max |x|; ``start_pass(1)``: sums); ``add_sums`` instead
    accumulates sums handed over in a fixed order (the EMA flow's single ordered pass).
    """

    def __init__(self, axis: int = 1):
        self.axis = axis
        self.pass_index = 0
        self.peak = 0.0
        self.fixed: np.ndarray | None = None
        self.sums: np.ndarray | None = None
        self.count = 0

    def start_pass(self, index: int) -> None:
        self.pass_index = index

    def sample_sums(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """(float64 sum per channel, elements per channel) of one array."""
        x = np.asarray(x)
        if x.ndim < 2:
            return np.asarray([x.astype(np.float64).sum()]), int(x.size)
        axis = self.axis % x.ndim
        other = tuple(d for d in range(x.ndim) if d != axis)
        return x.sum(axis=other, dtype=np.float64), int(x.size // x.shape[axis])

    def update(self, x: np.ndarray) -> None:
        if x.dtype != np.float32 or x.size == 0:
            return
        if self.pass_index == 0:
            peak = float(np.abs(x).max())
            if np.isfinite(peak):
                self.peak = max(self.peak, peak)
            return
        if self.peak <= 0:
            return
        sums, count = self.sample_sums(x)
        if not np.all(np.isfinite(sums)):
            return
        step = self.peak / (1 << _FIXED_BITS)
        fixed = np.rint(sums / step).astype(np.int64)
        self._accumulate(fixed, count, "fixed")

    def shard(self) -> "ChannelMeans":
        """An empty observer for one shard of this pass (``workers.Workers.order_free_pass``); pass 1 shards carry
        the merged peak, which sets the fixed-point step."""
        part = ChannelMeans(self.axis)
        part.pass_index = self.pass_index
        if self.pass_index == 1:
            part.peak = self.peak
        return part

    def partial(self):
        """The peak in pass 0; the fixed-point sums and count in pass 1."""
        return self.peak if self.pass_index == 0 else (self.fixed, self.count)

    def merge(self, part) -> None:
        """Fold a shard's ``partial()`` in (exact: a maximum and integer sums)."""
        if self.pass_index == 0:
            self.peak = max(self.peak, float(part))
            return
        fixed, count = part
        if fixed is not None:
            self._accumulate(np.asarray(fixed, np.int64), int(count), "fixed")

    def add_sums(self, sums: np.ndarray, count: int) -> None:
        """Accumulate one sample's ``sample_sums`` (callers hand them over in sample order)."""
        if np.all(np.isfinite(sums)):
            self._accumulate(np.asarray(sums, np.float64), count, "sums")

    def _accumulate(self, values: np.ndarray, count: int, kind: str) -> None:
        held = getattr(self, kind)
        if held is not None and held.shape != values.shape:
            return                       # a sample with another channel count: not a conv input we know
        setattr(self, kind, values.copy() if held is None else held + values)
        self.count += count

    def compute(self) -> np.ndarray | None:
        """float64 mean per channel, or None when no finite sample was seen."""
        if self.count == 0:
            return None
        if self.fixed is not None:
            return self.fixed.astype(np.float64) * (self.peak / (1 << _FIXED_BITS)) / self.count
        return self.sums / self.count


def channel_axis(layout: str) -> int:
    return -1 if layout == "NHWC" else 1


def mean_shift(w_float: np.ndarray, w_quant: np.ndarray, kernel_area: int, groups: int,
               means: np.ndarray) -> np.ndarray:
    """``(W_q - W) E[x]`` per output channel of a conv (or depthwise / grouped conv).

    ``w_float``/``w_quant``: [O, K] with ``K = (C / groups) * kernel_area`` in MNN's [O, C/g, KH, KW]
    storage order; ``means``: [C] input channel means.
    """
    out_count, k = w_float.shape
    groups = max(int(groups), 1)
    per_group_in = k // max(kernel_area, 1)
    if per_group_in * kernel_area != k or per_group_in * groups != means.shape[0] or out_count % groups:
        raise ValueError(f"weights [{out_count}, {k}] (kernel area {kernel_area}, {groups} groups) do not fit "
                         f"{means.shape[0]} input channels")
    diff = (w_quant.astype(np.float64) - w_float.astype(np.float64)).reshape(out_count, per_group_in, kernel_area)
    per_channel = diff.sum(axis=2)                                           # [O, C/g]
    group_of = np.arange(out_count) // (out_count // groups)                 # output channel -> group
    inputs = group_of[:, None] * per_group_in + np.arange(per_group_in)[None, :]
    return (per_channel * means[inputs]).sum(axis=1)


def corrected_bias(op, w_float: np.ndarray, w_quant: np.ndarray, bias: np.ndarray,
                   means: np.ndarray | None) -> np.ndarray | None:
    """The conv's float32 bias minus its weight-quantization mean shift; None when the means do not
    fit the conv (no sample seen, another layout) or the op is not a (grouped/depthwise) convolution."""
    from ..format.tables import OpType

    if means is None or means.ndim != 1 or means.size == 0 or op.type == OpType.Deconvolution:
        return None
    common = op.main.common
    try:
        shift = mean_shift(w_float, w_quant, int(common.kernelX) * int(common.kernelY), int(common.group or 1),
                           means)
    except ValueError:
        return None
    return (np.asarray(bias, np.float64).reshape(-1) - shift).astype(np.float32)


__all__ = ["ChannelMeans", "channel_axis", "mean_shift", "corrected_bias"]
