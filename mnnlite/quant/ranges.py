"""Per-tensor range choice from one set of streamed statistics (the ``range_method`` key).

``RangeObserver`` streams a tensor twice, like the KL observer: pass 0 keeps min/max, pass 1 fills two
2048-bin histograms of |x| over [0, max|x|] (every value, and the negative values alone), with the C
kernels the KL path uses (``mnnlite.kernels.calib``).  Together they give a signed histogram over
[-max|x|, max|x|], from which every range method below is computed without touching the data again.

A range is ``Range(lo, hi)``: symmetric ranges have ``lo == -hi`` and zero point 0; asymmetric ones map
[lo, hi] onto the codes [-clamp, clamp] with a zero point, MNN's EMA convention
(``feature.ema.scale_zero``): ``s = (hi - lo) / (2 clamp)``, ``z = round(-lo / s - clamp)``.

Methods (``RANGE_METHODS``): ``max`` (the observed extremes), ``kl`` (MNN's KL threshold on the |x|
histogram, symmetric), ``percentile`` (99.9 / 99.99 / 99.999 % of the values inside), ``mse`` (the clip
range with the least expected squared error over a grid), and ``auto``: every candidate of max, percentile and
mse, in both forms where a zero point is allowed, the one with the least expected squared error.  The expected error of a range is estimated from
the histogram: values inside it cost ``s^2 / 12`` (uniform rounding error; exact zeros cost nothing,
the zero point is a code), values outside the squared
distance to the nearest end (clipping), as in the analysis of Banner et al. (ACIQ, 2019).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from mnnlite.kernels import calib as _calib

from .feature.kl import BINS, bin_values, kl_threshold, merge_range, shard_of, two_pass_update

RANGE_METHOD_NAMES = ("auto", "max", "kl", "percentile", "mse")
PERCENTILES = (99.9, 99.99, 99.999)
MSE_GRID = 128            # clip candidates per side of the MSE search
MIN_MAX_ABS = 1e-5        # below this a tensor has no usable range (KL's VALID_ABOVE)


@dataclass(frozen=True)
class Range:
    """A chosen clip range and how it was chosen."""

    lo: float
    hi: float
    method: str                   # "max", "kl", "percentile99.99", "mse", ...
    symmetric: bool
    error: float = float("nan")   # expected squared error per value (histogram estimate)

    def params(self, clamp: int = 127) -> tuple[float, float]:
        """(scale, zero point) for codes in [-clamp, clamp]."""
        if self.symmetric:
            return float(np.float32(max(abs(self.lo), abs(self.hi)) / clamp)), 0.0
        from .feature.ema import scale_zero

        s, z = scale_zero(self.lo, self.hi, clamp)
        return float(s), float(z)


class RangeObserver:
    """min/max, then a signed histogram (two |x| histograms) of one tensor; see the module doc."""

    passes = 2

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self.pass_index = 0
        self.lo, self.hi = np.float32(1e30), np.float32(-1e30)
        self.seen = False
        self.all = np.zeros(bins, np.int64)          # |x| of every value
        self.neg = np.zeros(bins, np.int64)          # |x| of the negative values
        self.zeros = 0                               # values with |x| <= 1e-6 (not in the histograms)
        self.count = 0
        self.shape = None

    def start_pass(self, index: int) -> None:
        self.pass_index = index

    def update(self, x: np.ndarray) -> None:
        step = two_pass_update(self, x)
        if step is None:
            return
        x, interval = step
        before = int(self.all.sum())
        _calib.histogram(x, interval, self.all)
        counted = int(self.all.sum()) - before
        if self.lo < 0 < self.hi:           # one-signed tensors need one histogram (see histogram())
            _calib.histogram(np.minimum(x, np.float32(0)), interval, self.neg)
        self.zeros += x.size - counted
        self.count += x.size

    def shard(self) -> "RangeObserver":
        """An empty observer for one shard of this pass (``workers.Workers.order_free_pass``); pass 1 shards
        carry the merged range, which sets the histogram's interval."""
        return shard_of(self, RangeObserver(self.bins))

    def partial(self):
        """This pass's statistics of a shard: the range in pass 0, the integer counts in pass 1."""
        if self.pass_index == 0:
            return self.lo, self.hi, self.seen, self.shape
        return self.all, self.neg, self.zeros, self.count

    def merge(self, part) -> None:
        """Fold a shard's ``partial()`` in (exact: min/max and integer sums)."""
        if self.pass_index == 0:
            merge_range(self, part)
            return
        counts, neg, zeros, count = part
        self.all += np.asarray(counts, np.int64)
        self.neg += np.asarray(neg, np.int64)
        self.zeros += int(zeros)
        self.count += int(count)

    @property
    def max_abs(self) -> float:
        return float(max(abs(self.lo), abs(self.hi))) if self.seen else 0.0

    def _interval(self) -> np.float32 | None:
        if not self.seen or not self.max_abs > MIN_MAX_ABS:
            return None
        return np.float32(self.bins) / np.float32(self.max_abs)

    def histogram(self) -> "SignedHistogram | None":
        if self._interval() is None or self.count == 0:
            return None
        if self.hi <= 0:
            self.neg = self.all.copy()          # every counted value is negative
        return SignedHistogram(self.all - self.neg, self.neg, self.zeros, self.max_abs,
                               float(self.lo), float(self.hi))


@dataclass
class SignedHistogram:
    """Counts of positive and negative values in ``bins`` bins of |x| over [0, max_abs]."""

    pos: np.ndarray
    neg: np.ndarray
    zeros: int
    max_abs: float
    lo: float
    hi: float

    @property
    def width(self) -> float:
        return self.max_abs / len(self.pos)

    @property
    def one_signed(self) -> bool:
        """Every value on one side of 0 (e.g. after a ReLU or a sigmoid)."""
        return self.lo >= 0 or self.hi <= 0

    def centres(self) -> np.ndarray:
        return (np.arange(len(self.pos)) + 0.5) * self.width

    def error(self, lo, hi, clamp: int = 127, symmetric: bool = False):
        """Expected squared error per value of quantizing with the range [lo, hi] (module doc); ``lo`` and
        ``hi`` may be arrays of candidates (suffix sums make each candidate O(1))."""
        lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        if symmetric:
            hi = np.maximum(np.abs(lo), np.abs(hi))
            lo = -hi
        lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
        step = (hi - lo) / (2 * clamp)
        total = max(float(self.pos.sum() + self.neg.sum() + self.zeros), 1.0)
        in_pos, clip_pos = self._side(self.pos, hi)
        in_neg, clip_neg = self._side(self.neg, -lo)
        err = (step * step / 12.0 * (in_pos + in_neg) + clip_pos + clip_neg) / total
        err = np.where(step > 0, err, np.inf)
        return float(err) if err.ndim == 0 else err

    def _side(self, counts: np.ndarray, end: np.ndarray):
        """(values at most ``end``, squared distance of the others to ``end``) of one side."""
        if not hasattr(self, "_sums"):
            self._sums = {}
        key = id(counts)
        if key not in self._sums:
            c = self.centres()
            w = counts.astype(np.float64)
            # suffix sums: n, sum c, sum c^2 of bins k.. (index len = 0)
            suf = [np.concatenate((np.cumsum(a[::-1])[::-1], [0.0])) for a in (w, w * c, w * c * c)]
            self._sums[key] = (c, suf)
        c, (n, s1, s2) = self._sums[key]
        k = np.searchsorted(c, end, side="right")          # first bin whose centre exceeds end
        inside = n[0] - n[k]
        clip = s2[k] - 2 * end * s1[k] + end * end * n[k]
        return inside, np.maximum(clip, 0.0)

    def quantile(self, p: float, side: str) -> float:
        """The value below which ``p`` % of this side's values lie (positive side, or |x| of the negative)."""
        counts = self.pos if side == "pos" else self.neg
        n = counts.sum()
        if n == 0:
            return 0.0
        k = int(np.searchsorted(np.cumsum(counts), n * p / 100.0))
        return float(min(k + 1, len(counts)) * self.width)


# ------------------------------------------------------------------------------------------ methods

def _finish(h: SignedHistogram, lo: float, hi: float, method: str, symmetric: bool, clamp: int) -> Range:
    if symmetric:
        t = max(abs(lo), abs(hi))
        lo, hi = -t, t
    return Range(float(lo), float(hi), method, symmetric, h.error(lo, hi, clamp, symmetric))


def _sides(h: SignedHistogram) -> tuple[float, float]:
    return max(h.hi, 0.0), max(-h.lo, 0.0)


def range_max(h: SignedHistogram, symmetric: bool, clamp: int = 127) -> list[Range]:
    return [_finish(h, min(h.lo, 0.0), max(h.hi, 0.0), "max", symmetric, clamp)]


def range_kl(h: SignedHistogram, symmetric: bool, clamp: int = 127) -> list[Range]:
    """MNN's KL threshold of the |x| histogram (always symmetric: KL has no zero point)."""
    counts = h.pos + h.neg
    hist = bin_values(counts)
    hist = hist / np.cumsum(hist, dtype=np.float32)[-1]
    thr = kl_threshold(hist)
    t = (thr + 0.5) * h.width
    return [_finish(h, -t, t, "kl", True, clamp)]


def range_percentile(h: SignedHistogram, symmetric: bool, clamp: int = 127) -> list[Range]:
    out = []
    top, bottom = _sides(h)
    for p in PERCENTILES:
        if symmetric:
            both = SignedHistogram(h.pos + h.neg, np.zeros_like(h.neg), h.zeros, h.max_abs, h.lo, h.hi)
            t = min(both.quantile(p, "pos"), h.max_abs)
            out.append(_finish(h, -t, t, f"percentile{p:g}", True, clamp))
        else:
            hi = min(h.quantile(p, "pos"), top)
            lo = -min(h.quantile(p, "neg"), bottom)
            out.append(_finish(h, lo, hi, f"percentile{p:g}", False, clamp))
    return out


def range_mse(h: SignedHistogram, symmetric: bool, clamp: int = 127) -> list[Range]:
    """The clip range with the least expected error: a grid over the symmetric threshold, or two rounds of
    coordinate search over each end of an asymmetric range."""
    top, bottom = _sides(h)
    fractions = np.linspace(1.0 / MSE_GRID, 1.0, MSE_GRID)
    if symmetric:
        t_all = max(top, bottom)
        t = fractions[int(np.argmin(h.error(-fractions * t_all, fractions * t_all, clamp, True)))] * t_all
        return [_finish(h, -t, t, "mse", True, clamp)]
    lo, hi = -bottom, top
    for _ in range(2):
        if top > 0:
            hi = top * fractions[int(np.argmin(h.error(np.full(MSE_GRID, lo), fractions * top, clamp)))]
        if bottom > 0:
            lo = -bottom * fractions[int(np.argmin(h.error(-fractions * bottom, np.full(MSE_GRID, hi), clamp)))]
    return [_finish(h, lo, hi, "mse", False, clamp)]


RANGE_METHODS: dict[str, Callable[[SignedHistogram, bool, int], list[Range]]] = {
    "max": range_max, "kl": range_kl, "percentile": range_percentile, "mse": range_mse,
}


# "auto" leaves KL out: it clips by a distribution criterion, costs a 1920-candidate search per tensor, and
# never had the least expected error of the candidates (ppocr_cls: 0 of 101 tensors); range_method "kl"
# still uses it everywhere
AUTO_CANDIDATES = ("max", "percentile", "mse")


def choose_range(h: SignedHistogram, method: str, *, asymmetric: bool = True, clamp: int = 127) -> Range:
    """The range ``method`` gives this histogram; "auto" and multi-candidate methods keep the candidate
    with the least expected error.  ``asymmetric``: whether the tensor may carry a zero point (then both
    forms are candidates; a one-signed tensor wastes half the codes under a symmetric range)."""
    if method == "auto":
        names = AUTO_CANDIDATES
    elif method in RANGE_METHODS:
        names = [method]
    else:
        raise ValueError(f"range method must be one of {', '.join(RANGE_METHOD_NAMES)}, got {method!r}")
    forms = (True, False) if asymmetric else (True,)
    # KL has no asymmetric form: one evaluation (its search is the expensive part)
    candidates = [r for name in names for sym in (forms if name != "kl" else (True,))
                  for r in RANGE_METHODS[name](h, sym, clamp)]
    candidates = [r for r in candidates if np.isfinite(r.error) and r.hi - r.lo > 0]
    if not candidates:
        return range_max(h, True, clamp)[0]
    return min(candidates, key=lambda r: (r.error, not r.symmetric))


# ------------------------------------------------------------------------------ downstream objective

RANGE_OBJECTIVES = ("tensor", "downstream")
# clip fractions of the observed extremes the downstream search tries besides the histogram candidates:
# a half-octave grid down to 1/64 (a tensor whose small channels feed large weights may be best
# clipped far inside its extremes)
DOWNSTREAM_FRACTIONS = 2.0 ** -np.arange(0.0, 6.01, 0.5)


@dataclass
class Downstream:
    """What the readers of one tensor see of its quantization error (``range_objective`` "downstream").

    ``values``: a subsample of the tensor's values per channel, ``[C, n]``; ``gains``: per reader, the
    ``[C]`` weights of each channel's squared error in that reader's output: for a conv, the sum of the
    squared weights reading channel ``c`` (its output error is ``W e``; with errors independent across
    channels and positions, ``E|W e|^2 = sum_c |W_{:,c}|^2 E e_c^2``), ones for any other reader (the
    values go on as they are).
    """

    values: np.ndarray
    gains: list[np.ndarray]

    def cost(self, r: Range, clamp: int = 127) -> float:
        """Sum over the readers of the relative squared error of their outputs with range ``r``."""
        s, z = r.params(clamp)
        if not s > 0:
            return float("inf")
        x = self.values
        q = np.clip(np.round(x / np.float32(s) + np.float32(z)), -clamp, clamp)
        err = np.square((q - np.float32(z)) * np.float32(s) - x, dtype=np.float64).sum(axis=1)
        energy = np.square(x, dtype=np.float64).sum(axis=1)
        return float(sum(g @ err / max(float(g @ energy), 1e-30) for g in self.gains))


def choose_downstream(h: SignedHistogram, seen: Downstream, method: str, *, asymmetric: bool = True,
                      clamp: int = 127) -> Range:
    """The range of least downstream cost (``Downstream.cost``) among the candidates of ``method`` (as in
    ``choose_range``) and the clips ``DOWNSTREAM_FRACTIONS`` of the observed extremes, each form.  The
    histogram objective weighs every value alike; here a channel that feeds large weights counts more
    than one whose errors its readers scale down (a depthwise conv multiplying a small-range channel by
    15, PP-OCR's LCNet), which is the error the range causes downstream (docs/accuracy.md)."""
    names = AUTO_CANDIDATES if method == "auto" else [method]
    forms = (True, False) if asymmetric else (True,)
    candidates = [r for name in names for sym in (forms if name != "kl" else (True,))
                  for r in RANGE_METHODS[name](h, sym, clamp)]
    lo, hi = min(h.lo, 0.0), max(h.hi, 0.0)
    for f in DOWNSTREAM_FRACTIONS:
        for sym in forms:
            candidates.append(_finish(h, lo * f, hi * f, "downstream", sym, clamp))
    candidates = [r for r in candidates if np.isfinite(r.error) and r.hi - r.lo > 0]
    if not candidates:
        return range_max(h, True, clamp)[0]
    costs = [seen.cost(r, clamp) for r in candidates]
    return candidates[min(range(len(candidates)), key=lambda i: (costs[i], not candidates[i].symmetric))]


__all__ = ["RANGE_METHOD_NAMES", "RANGE_METHODS", "RANGE_OBJECTIVES", "Downstream", "Range", "RangeObserver",
           "SignedHistogram", "choose_downstream", "choose_range"]
