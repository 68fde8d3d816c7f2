"""EMA calibration (docs/mnn-quantization.md §9; MNN ``NN.cpp``, ``ConvBNReluFusedModule``).

Each batch is fake-quantized with its own range; the *nudged* range of that batch (the float values the
int8 codes -127 and 127 map back to, widened to contain 0) feeds an exponential moving average with
momentum 0.99; the first batch sets the average.  Scale and zero point follow from the averaged range:
``s = (max - min) / 254``, ``z = round(-min / s - 127)``.  All float32, MNN's operation order.
"""
from __future__ import annotations

import numpy as np

from ...format.idst import roundf
from ...kernels import calib as _calib
from . import FeatureObserver, QuantParams

MOMENTUM = np.float32(0.99)


def scale_zero(lo, hi, clamp: int = 127) -> tuple[np.float32, np.float32]:
    """``computeScaleAndZeroPoint``: range widened to contain 0, ``s = (hi - lo) / (2 * clamp)``.

    The zero point comes back as a float (MNN rounds, then casts to int8 only when writing the model).
    With ``hi == lo == 0`` the scale is 0 and the zero point NaN, as in MNN; observers guard that case.
    """
    c = np.float32(clamp)
    lo = np.minimum(np.float32(0), np.float32(lo))
    hi = np.maximum(np.float32(0), np.float32(hi))
    s = (hi - lo) / (np.float32(2) * c)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = roundf((np.float32(0) - lo) / s - c)
    return np.float32(s), np.float32(z)


IN_PLACE_CHUNK = 1 << 20          # elements fake-quantized at a time by fake_quantize(..., out=x)


def fake_quantize(x: np.ndarray, clamp: int = 127, out: np.ndarray | None = None):
    """``fakeQuantFeatureWithMinMax`` with the batch's own range.

    Returns ``(x_hat, nudged_min, nudged_max)``: ``x_hat = s * (clamp(round(x / s + z)) - z)`` is what
    feeds the next layer during EMA calibration; the nudged range is what the moving average sees.

    An all-zero batch has ``s = 0`` and ``z = round(0 / 0)`` = NaN, so MNN's ``x_hat`` is NaN everywhere, and
    the next layers compute on it as MNN's kernels do (a conv's max/min clamp turns NaN into -FLT_MAX, a
    ReLU6 the -inf that follows into 0): that is what downstream layers see in MNN, so it is reproduced.
    Its nudged range (NaN in MNN, which then poisons that tensor's average) is reported as (0, 0).
    The arithmetic runs in C (``kernels.calib``); ``fake_quantize_ref`` is the same in numpy.
    ``out=x`` (a writeable contiguous float32 ``x``) writes ``x_hat`` over ``x`` a chunk at a time, so a
    batch's activation (hundreds of MB at 640x640, batch 32) is never held twice.
    """
    x = np.asarray(x, np.float32)
    if x.size == 0:
        return (x if out is not None else x.copy()), np.float32(0), np.float32(0)
    s, z, nudged_min, nudged_max = nudged_range(*_calib.batch_range(x), clamp)
    if out is not None:
        flat = out.reshape(-1)                     # a view: out must be contiguous
        if s == 0:
            flat[:] = np.nan
        else:
            for i in range(0, flat.size, IN_PLACE_CHUNK):
                flat[i:i + IN_PLACE_CHUNK] = _calib.fake_quant(flat[i:i + IN_PLACE_CHUNK], s, z, np.float32(clamp))
        return out, nudged_min, nudged_max
    if s == 0:                                     # all-zero batch: MNN's x_hat is 0 * (q - NaN)
        return np.full_like(x, np.nan), nudged_min, nudged_max
    return _calib.fake_quant(x, s, z, np.float32(clamp)), nudged_min, nudged_max


def nudged_range(lo, hi, clamp: int = 127):
    """``(s, z, nudged_min, nudged_max)`` of a batch whose values span ``[lo, hi]``; an all-zero batch
    (``s = 0``, MNN's nudged range NaN) reports the range (0, 0)."""
    c = np.float32(clamp)
    with np.errstate(over="ignore", invalid="ignore"):
        s, z = scale_zero(lo, hi, clamp)
        if s == 0:
            return s, z, np.float32(0), np.float32(0)
        return s, z, np.minimum(np.float32(0), (-c - z) * s), np.maximum(np.float32(0), (c - z) * s)


def fake_quantize_ref(x: np.ndarray, clamp: int = 127):
    """``fake_quantize`` in numpy: the reference the C kernels are tested against."""
    x = np.asarray(x, np.float32)
    c = np.float32(clamp)
    with np.errstate(over="ignore", invalid="ignore"):
        s, z, nudged_min, nudged_max = nudged_range(x.min(), x.max(), clamp)
        if s == 0:
            return np.full_like(x, np.nan), nudged_min, nudged_max
        q = np.clip(roundf(x / s + z), -c, c)
        return (s * (q - z)).astype(np.float32), nudged_min, nudged_max


class EMAObserver(FeatureObserver):
    """Moving average of each batch's nudged range; one ``update`` call = one batch."""

    method = "EMA"
    passes = 1
    flow = "simulation"

    def __init__(self, clamp_value: int = 127, momentum: float = float(MOMENTUM)):
        super().__init__(clamp_value)
        self.momentum = np.float32(momentum)
        self.lo = self.hi = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32)
        if x.size == 0:
            return
        _, _, lo, hi = nudged_range(*_calib.batch_range(x), self.clamp)
        self.add_range(lo, hi)

    def add_range(self, lo, hi) -> None:
        """One batch given by its nudged range (``fake_quantize``'s second and third results)."""
        if not (np.isfinite(lo) and np.isfinite(hi)):
            # a batch with NaN (after an all-zero batch upstream) or an overflowing range: MNN's average
            # becomes NaN or infinite for good; we keep the average of the usable batches
            return
        if self.lo is None:
            self.lo, self.hi = lo, hi
            return
        keep, new = self.momentum, np.float32(1) - self.momentum   # MNN: _Scalar(1.0f - mMomentum)
        self.lo = np.float32(self.lo * keep + lo * new)
        self.hi = np.float32(self.hi * keep + hi * new)

    @property
    def range(self) -> tuple[float, float] | None:
        """The averaged ``(min, max)``, None before the first batch."""
        return None if self.lo is None else (float(self.lo), float(self.hi))

    def compute(self) -> QuantParams:
        if self.lo is None:
            return QuantParams(0.0, 0)
        s, z = scale_zero(self.lo, self.hi, self.clamp)
        if not s > 0:                                  # never saw a non-zero value (MNN: NaN zero point)
            return QuantParams(0.0, 0)
        return QuantParams(float(s), int(np.int8(np.clip(z, -128, 127))))
