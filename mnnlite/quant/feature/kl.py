"""KL calibration (quantization doc §6.3-6.5; MNN ``TensorStatistic.cpp``).

Pass 0 tracks min/max; pass 1 fills a 2048-bin histogram of |x| over [0, max|x|].  The threshold bin
minimises the KL divergence between the clipped histogram and its 128-level quantization; the scale is
``(threshold + 0.5) / interval / clamp``.  Everything is float32 in MNN's order of operations: the bins'
``+= 1.0f`` counting (floor 1e-7, saturating at 2^24), the sequential sums (reproduced with ``cumsum``,
which accumulates left to right), so the same histogram gives the same threshold bin.
"""
from __future__ import annotations

import numpy as np

from . import FeatureObserver, QuantParams

BINS = 2048
TARGET_BINS = 128
HIST_FLOOR = np.float32(1e-7)      # every bin starts at 1e-7, so no bin is ever zero
SKIP_BELOW = np.float32(1e-6)      # |x| <= 1e-6 is not counted
VALID_ABOVE = np.float32(1e-5)     # max|x| must exceed this, else scale 0
SMALL_AREA = 100                   # width * height < 100 -> MAX threshold
_CHUNK = 64                        # thresholds evaluated together (memory ~ _CHUNK * 2048 floats)


def uses_max_threshold(shape, layout: str = "NCHW") -> bool:
    """MNN's rule: MAX when ``width * height < 100``; extents missing for rank < 4 count as 0.

    width/height are dims 3/2 (NCHW, NC4HW4) or 2/1 (NHWC), as ``Tensor::width()/height()`` read them.
    """
    w_axis, h_axis = (2, 1) if layout == "NHWC" else (3, 2)
    width = shape[w_axis] if len(shape) > w_axis else 0
    height = shape[h_axis] if len(shape) > h_axis else 0
    return width * height < SMALL_AREA


def bin_values(counts: np.ndarray) -> np.ndarray:
    """Float32 bins as MNN holds them after ``counts`` increments of ``+= 1.0f`` from 1e-7.

    1e-7 + 1 rounds to 1.00000012; one more increment ties back to exactly 2.0, after which bins are
    exact integers until 2^24, where ``x + 1`` rounds back to ``x`` forever.
    """
    values = np.minimum(counts, 1 << 24).astype(np.float32)
    values[counts == 0] = HIST_FLOOR
    values[counts == 1] = HIST_FLOOR + np.float32(1)
    return values


def _sequential_sum(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Left-to-right float32 sum (``cumsum`` accumulates in order; ``sum`` would add pairwise)."""
    return np.take(np.cumsum(a, axis=axis, dtype=np.float32), -1, axis=axis)


class _Spans:
    """For candidates ``i`` x target bins ``j``: the source bins each target bin covers.

    ``start = j * i / target`` and ``end = start + i / target`` are exact in float32 (at most 18
    significant bits), so integer arithmetic in units of 1/target reproduces MNN's ceil/floor.
    """

    def __init__(self, hist: np.ndarray, i: np.ndarray, target: int):
        n = hist.size
        s = i[:, None] * np.arange(target)                  # start * target
        e = s + i[:, None]                                  # end * target
        lu, rl = -(-s // target), e // target               # ceil(start), floor(end)
        self.left = (lu * target - s).astype(np.float32) / np.float32(target)    # lu - start (0: none)
        self.right = (e - rl * target).astype(np.float32) / np.float32(target)   # end - rl (0: none)
        self.lo_bin, self.hi_bin = np.maximum(lu - 1, 0), np.minimum(rl, n - 1)
        self.mid = lu[..., None] + np.arange(int(i.max()) // target + 2)          # whole bins lu..rl-1
        self.mid_ok = self.mid < rl[..., None]
        self.mid = np.minimum(self.mid, n - 1)


def _merge(hist: np.ndarray, sp: _Spans) -> np.ndarray:
    """Q[j]: left fraction, right fraction, then the whole bins, added in this order (float32)."""
    terms = np.concatenate([np.where(sp.left > 0, sp.left * hist[sp.lo_bin], 0)[..., None],
                            np.where(sp.right > 0, sp.right * hist[sp.hi_bin], 0)[..., None],
                            np.where(sp.mid_ok, hist[sp.mid], np.float32(0))], axis=-1)
    return _sequential_sum(terms.astype(np.float32))


def _expand(hist: np.ndarray, sp: _Spans, q: np.ndarray) -> np.ndarray:
    """Spread Q[j] evenly over the non-zero source bins it covers, fractional edges weighted."""
    nz = hist != 0
    use_left, use_right = (sp.left > 0) & nz[sp.lo_bin], (sp.right > 0) & nz[sp.hi_bin]
    mid_nz = sp.mid_ok & nz[sp.mid]
    count = (np.where(use_left, sp.left, 0) + np.where(use_right, sp.right, 0)
             + mid_nz.sum(axis=-1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(count > 0, q / count, np.float32(0)).astype(np.float32)
    rows = np.broadcast_to(np.arange(q.shape[0])[:, None], q.shape)
    out = np.zeros((q.shape[0], hist.size), np.float32)
    # each source bin gets at most two contributions (i >= target), so the order of adds is moot
    np.add.at(out, (rows[use_left], sp.lo_bin[use_left]), (v * sp.left)[use_left])
    np.add.at(out, (rows[use_right], sp.hi_bin[use_right]), (v * sp.right)[use_right])
    rows3 = np.broadcast_to(rows[..., None], sp.mid.shape)
    np.add.at(out, (rows3[mid_nz], sp.mid[mid_nz]), np.broadcast_to(v[..., None], sp.mid.shape)[mid_nz])
    return out


def _kl_values(hist: np.ndarray, i: np.ndarray, tails: np.ndarray, target: int) -> np.ndarray:
    """KL divergence of every candidate threshold in ``i`` (one row each), float32 like MNN."""
    sp = _Spans(hist, i, target)
    expanded = _expand(hist, sp, _merge(hist, sp))
    # candidate P: hist[:i] with the clipped tail mass folded into its last bin
    p = np.where(np.arange(hist.size) < i[:, None], hist, np.float32(0))
    p[np.arange(i.size), i - 1] = hist[i - 1] + tails
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log((p / expanded).astype(np.float32).astype(np.float64)).astype(np.float32)
    terms = np.where(expanded == 0, np.float32(1), p * logs)
    return _sequential_sum(np.where(p != 0, terms, np.float32(0)).astype(np.float32))


def kl_threshold(hist: np.ndarray, target: int = TARGET_BINS) -> int:
    """MNN's ``_computeThreshold`` (KL branch) on a normalised float32 histogram: the best bin index."""
    hist = np.asarray(hist, np.float32)
    n = hist.size
    candidates = np.arange(target, n)
    # tail mass beyond the candidate, updated as MNN does: t -= hist[i] after each candidate
    tails = np.cumsum(np.concatenate(([_sequential_sum(hist[target:])], -hist[target:n - 1])),
                      dtype=np.float32)
    kl = np.concatenate([_kl_values(hist, candidates[c:c + _CHUNK], tails[c:c + _CHUNK], target)
                         for c in range(0, candidates.size, _CHUNK)])
    best = int(np.argmin(kl))                     # first minimum wins, as MNN's strict '<'
    return int(candidates[best]) if kl[best] < np.float32(10000) else target


class KLObserver(FeatureObserver):
    """KL (or MAX) threshold over a 2048-bin |x| histogram.

    ``threshold``: "auto" = MNN's rule (MAX when H*W < 100, from the first tensor's shape and ``layout``),
    or force "KL" / "MAX" (e.g. "MAX" for model inputs, the documented intent).
    """

    method = "KL"
    passes = 2

    def __init__(self, clamp_value: int = 127, threshold: str = "auto", layout: str = "NCHW",
                 bins: int = BINS):
        super().__init__(clamp_value)
        if threshold not in ("auto", "KL", "MAX"):
            raise ValueError(f"threshold must be auto, KL or MAX, got {threshold!r}")
        self.threshold, self.layout, self.bins = threshold, layout, bins
        self.lo, self.hi = np.float32(100000.0), np.float32(-100000.0)
        self.counts = np.zeros(bins, np.int64)
        self.seen = False
        self.shape = None

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32)
        if self.shape is None:
            self.shape = x.shape
        if x.size == 0:
            return
        if self.pass_index == 0:
            self.lo = min(self.lo, np.float32(np.nanmin(x)))
            self.hi = max(self.hi, np.float32(np.nanmax(x)))
            self.seen = True
        elif self._interval() is not None:
            ax = np.abs(x).reshape(-1)
            ax = ax[ax > SKIP_BELOW]                       # also drops NaN
            idx = np.minimum(ax * self._interval(), np.float32(self.bins - 1)).astype(np.int64)
            self.counts += np.bincount(idx, minlength=self.bins)

    def _max_abs(self) -> np.float32:
        return max(abs(self.hi), abs(self.lo))

    def _interval(self) -> np.float32 | None:
        if not self.seen or not self._max_abs() > VALID_ABOVE:
            return None
        return np.float32(self.bins) / self._max_abs()

    def compute(self) -> QuantParams:
        interval = self._interval()
        if interval is None:
            return QuantParams(0.0, 0)
        hist = bin_values(self.counts)
        hist = hist / _sequential_sum(hist)
        use_max = self.threshold == "MAX" or (self.threshold == "auto" and
                                              uses_max_threshold(self.shape, self.layout))
        thr = self.bins - 1 if use_max else kl_threshold(hist)
        # (float)threshold + 0.5 is a double in MNN, so the divisions run in double, stored as float
        scale = np.float32((thr + 0.5) / float(interval) / float(self.clamp))
        return QuantParams(float(scale), 0)
