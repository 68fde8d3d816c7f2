"""Activation (feature) calibration: one observer class per MNN method, all with the same interface.

Collecting statistics is separate from choosing the range (as in onnxruntime's ``calibrate.py``)::

    obs = FEATURE_METHODS["KL"](clamp_value=127)
    for p in range(obs.passes):        # KL and ADMM stream the data twice, EMA once
        obs.start_pass(p)
        for x in batches_of_this_tensor():
            obs.update(x)              # float32 array of any shape; samples are not kept
    scale, zero = obs.compute()        # QuantParams: x ~ (q - zero) * scale

* one observer per tensor; ``update`` may be called with one sample or a batch (KL/ADMM statistics do not
  depend on how samples are grouped; EMA treats each call as one batch, as MNN does).
* ``compute`` may be called when the passes are done; a tensor without a usable range (never seen, or
  all |x| tiny) gives ``QuantParams(0.0, 0)`` — MNN writes scale 0 for such tensors on the KL path.
* RAM per observer is bounded whatever the number of samples: a fixed histogram (KL, ADMM), a few
  scalars (EMA); ADMM's float32-exact summary keeps the values in a temporary file past a RAM limit.

``DEVIATIONS`` lists where we follow the documented intent instead of an MNN 3.6.1 bug (docs/mnn-quantization.md §14).
"""
from __future__ import annotations

from typing import Callable, ClassVar, Iterable, NamedTuple

import numpy as np

FEATURE_METHODS: dict[str, type["FeatureObserver"]] = {}

DEVIATIONS = (
    "KL/ADMM/EMA: a tensor with no usable range gives scale 0, zero 0 — never NaN (MNN's EMA divides "
    "0/0 on all-zero tensors, its ADMM starts from alpha 0).",
    "ADMM: statistics come from the tensor's logical values; MNN reads raw backend memory (packed C4/C8 "
    "channels incl. padding zeros, last elements skipped) and crashes on NCHW-input models (docs/mnn-quantization.md §14.7).",
    "ADMM: samples are fed one at a time instead of one forward over all samples stacked in a batch; "
    "the default summary bins |x| and sums in float64 instead of MNN's float32 running sums (within ~1e-4 "
    "of the exact iteration); summary='exact' keeps MNN's float32 sums, in logical order, not MNN's "
    "packed-memory order (~1e-4 relative).",
    "KL: `threshold='MAX'` exists so model inputs can use the MAX threshold MNN intends for them; MNN's "
    "lookup fails and they get KL (docs/mnn-quantization.md §14.6).  The caller decides per tensor.",
    "feature_clamp_value 0 is rejected by the config (MNN divides by zero, docs/mnn-quantization.md §14.20).",
    "EMA: an all-zero batch is fed on as NaN like MNN's, but stays out of the moving average (MNN's average "
    "becomes NaN and it writes NaN/inf scales).",
)


class QuantParams(NamedTuple):
    """Per-tensor affine parameters: ``x ~ (q - zero) * scale``."""

    scale: float
    zero: int


class FeatureObserver:
    """Base of every feature calibration method; subclasses register under ``method`` (the config's
    ``feature_quantize_method``), and the class attributes below tell the quantizer how to run it."""

    method: ClassVar[str] = ""
    passes: ClassVar[int] = 1
    # "statistics": observers of the tracked tensors fed by float forwards (quant/statistics.py);
    # "simulation": EMA's fake-quantized forwards of fused conv modules (quant/simulate.py)
    flow: ClassVar[str] = "statistics"
    order_free: ClassVar[bool] = False     # statistics independent of the sample order: shards may run on
                                           # several workers / Ray tasks (``shard``/``partial``/``merge``)
    progress: ClassVar[str] = ""           # MNN's progress line of the last pass
    compute_progress: ClassVar[str | None] = None   # MNN's progress line of compute(); None: all cores, silent
    only_needed: ClassVar[bool] = False    # observe only tensors whose own scale survives propagation

    @classmethod
    def for_tensor(cls, clamp_value: int, *, layout: str, shape, force_max: bool) -> "FeatureObserver":
        """The observer of one tracked tensor: its MNN layout ("NCHW"/"NHWC"), its shape in the first
        sample (None: unknown), whether the config forces the MAX threshold on it (model inputs)."""
        return cls(clamp_value)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.method:
            FEATURE_METHODS[cls.method] = cls

    def __init__(self, clamp_value: int = 127):
        if not 1 <= int(clamp_value) <= 127:
            raise ValueError(f"clamp_value must be 1..127, got {clamp_value}")
        self.clamp = int(clamp_value)
        self.pass_index = 0

    def start_pass(self, index: int) -> None:
        """Called before streaming the data for pass ``index`` (0-based, < ``passes``)."""
        if not 0 <= index < self.passes:
            raise ValueError(f"{self.method} has {self.passes} pass(es), got pass {index}")
        self.pass_index = index

    def update(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def compute(self) -> QuantParams:
        raise NotImplementedError


def calibrate(observer: FeatureObserver, data: Callable[[], Iterable[np.ndarray]]) -> QuantParams:
    """Run every pass of ``observer`` over a fresh ``data()`` iterable and return its parameters."""
    for p in range(observer.passes):
        observer.start_pass(p)
        for x in data():
            observer.update(x)
    return observer.compute()


from . import kl, admm, ema  # noqa: E402,F401,I001  (registers the methods, in the config's order)

__all__ = ["FEATURE_METHODS", "DEVIATIONS", "FeatureObserver", "QuantParams", "calibrate"]
