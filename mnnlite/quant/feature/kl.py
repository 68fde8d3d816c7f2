"""KL calibration (docs/mnn-quantization.md §6.3-6.5; MNN ``TensorStatistic.cpp``).

Pass 0 tracks min/max; pass 1 fills a 2048-bin histogram of |x| over [0, max|x|].  The threshold bin
minimises the KL divergence between the clipped histogram and its 128-level quantization; the scale is
``(threshold + 0.5) / interval / clamp``.  Everything is float32 in MNN's order of operations: the bins'
``+= 1.0f`` counting (floor 1e-7, saturating at 2^24), the sequential sums (reproduced with ``cumsum``,
which accumulates left to right), so the same histogram gives the same threshold bin.

``kl_threshold`` is the one KL search of the package (the quantization pipeline uses ``KLObserver``): it
screens the 1920 candidates with exact float64 estimates and evaluates only the possible winners in MNN's
float32 arithmetic, which gives MNN's answer at a fraction of the cost of evaluating every candidate.
The search, the range and the histogram run in C (``mnnlite.kernels.calib``, GIL released);
``kl_threshold_ref``, ``range_ref`` and ``histogram_ref`` are their numpy references (same results).
"""
from __future__ import annotations

import warnings

import numpy as np

from mnnlite.kernels import calib as _calib

from . import FeatureObserver, QuantParams

BINS = 2048
TARGET_BINS = 128
HIST_FLOOR = np.float32(1e-7)      # every bin starts at 1e-7, so no bin is ever zero
SKIP_BELOW = np.float32(1e-6)      # |x| <= 1e-6 is not counted
VALID_ABOVE = np.float32(1e-5)     # max|x| must exceed this, else scale 0
SMALL_AREA = 100                   # width * height < 100 -> MAX threshold
KL_EXACT_TOP = 64                  # candidates always evaluated with MNN's float32 arithmetic
_CHUNK = 64                        # candidates evaluated together (memory ~ _CHUNK * 2048 floats)
_EPS32 = 2.0 ** -24


def uses_max_threshold(shape, layout: str = "NCHW") -> bool:
    """MNN's rule: MAX when ``tensor->width() * tensor->height() < 100``.

    width/height are dims 3/2 (NCHW, NC4HW4) or 2/1 (NHWC).  Dims a tensor of rank < 4 lacks read as 1:
    MNN's shape pass pads them (``TensorUtils::adjustTensorForCompability``), so a [1, 40, 120] tensor has
    area 120 and uses KL (checked against the official quantizer on ppocr_rec).
    """
    w_axis, h_axis = (2, 1) if layout == "NHWC" else (3, 2)
    width = shape[w_axis] if len(shape) > w_axis else 1
    height = shape[h_axis] if len(shape) > h_axis else 1
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


def kl_threshold(hist, target: int = TARGET_BINS) -> int:
    """MNN's KL threshold bin of a normalised histogram: ``kl_threshold_ref`` in C, same answer."""
    return _calib.kl_threshold(np.ascontiguousarray(hist, np.float32).reshape(-1), target, KL_EXACT_TOP)


def kl_threshold_ref(hist, target: int = TARGET_BINS) -> int:
    """MNN's KL threshold search (``TensorStatistic::_computeThreshold``) on a normalised float32 histogram.

    The answer is MNN's: the first candidate of minimal divergence under MNN's float32 arithmetic, a NaN
    divergence never winning (MNN's strict ``kl < best``; ``np.argmin`` would return a NaN one).  To
    keep it fast, all 1920 candidates are first scored with exact arithmetic from prefix sums (O(target)
    each, ``_kl_estimates``); only the ones that can still win are then evaluated exactly as MNN does
    (``_kl_float32``): the best ``KL_EXACT_TOP`` estimates, every candidate whose estimate is within 5 %
    of a worst-case float32 rounding bound of the best, and every degenerate one.  On 150 random and all
    zoo histograms the MNN winner ranked at most 14th among the estimates.
    """
    h = np.asarray(hist, np.float32)
    n = h.size
    # tail mass past candidate i, updated as MNN does: after -= h[i] once candidate i is done
    tails = np.cumsum(np.concatenate(([_sequential_sum(h[target:])], -h[target:n - 1])), dtype=np.float32)
    cand = np.arange(target, n)
    estimate, bound, degenerate = _kl_estimates(h, tails, target)
    score = np.where(degenerate, -np.inf, estimate)
    best = int(np.argmin(np.where(degenerate, np.inf, estimate))) if not degenerate.all() else 0
    margin = 0.05 * (bound + bound[best])
    pick = degenerate | (estimate <= estimate[best] + margin)
    pick[np.argsort(score, kind="stable")[:KL_EXACT_TOP]] = True
    chosen = cand[pick]
    kl = np.concatenate([_kl_float32(h, chosen[c:c + _CHUNK], tails, target)
                         for c in range(0, chosen.size, _CHUNK)])
    best_kl, best_i = np.float32(10000), target
    for i, value in zip(chosen, kl):                 # ascending i; strict '<': first minimum, never NaN
        if value < best_kl:
            best_kl, best_i = value, int(i)
    return best_i


def _merge_grid(n: int, target: int):
    """The merge geometry of every candidate (it does not depend on the histogram): for candidate i and
    target bin j, the first/last whole source bins, whether partial edge bins exist, and their weights."""
    key = (n, target)
    grid = _GRIDS.get(key)
    if grid is None:
        cand = np.arange(target, n)
        s = cand[:, None] * np.arange(target)        # target bin j spans [s, e) in units of 1/target
        e = s + cand[:, None]
        lu, rl = -(-s // target), e // target
        has_l, has_r = lu * target > s, rl * target < e
        grid = (cand, lu, rl, has_l, has_r, (lu * target - s) / target, (e - rl * target) / target,
                np.maximum(lu - 1, 0), np.minimum(rl, n - 1))
        _GRIDS[key] = grid
    return grid


_GRIDS: dict = {}


def _kl_estimates(h32: np.ndarray, tails: np.ndarray, target: int):
    """For every candidate: the divergence in exact (float64) arithmetic, a bound on how far MNN's float32
    evaluation can be from it, and whether the candidate is degenerate (negative or NaN tail bin, empty
    last bin) and must be evaluated exactly anyway."""
    h = h32.astype(np.float64)
    n = h.size
    cand, lu, rl, has_l, has_r, w_l, w_r, left_bin, right_bin = _merge_grid(n, target)
    c = np.concatenate(([0.0], np.cumsum(h)))
    nz = np.concatenate(([0], np.cumsum(h != 0)))
    log_h = np.log(h, out=np.zeros_like(h), where=h > 0)
    h_log_h = np.concatenate(([0.0], np.cumsum(h * log_h)))
    h_abs_log = np.concatenate(([0.0], np.cumsum(h * np.abs(log_h))))
    h_l, h_r = h[left_bin], h[right_bin]
    inside = c[rl] - c[lu]
    l_part, r_part = has_l & (h_l != 0), has_r & (h_r != 0)
    q = w_l * h_l * has_l + w_r * h_r * has_r + inside
    count = w_l * l_part + w_r * r_part + (nz[rl] - nz[lu])
    v = np.divide(q, count, out=np.zeros_like(q), where=count > 0)
    log_v = np.log(v, out=np.zeros_like(v), where=v > 0)
    # the source bin holding the boundary between j and j + 1 gets v[j]·w_r + v[j+1]·(1 - w_r)
    e_split = v * w_r
    e_split[:, :-1] += v[:, 1:] * (1 - w_r[:, :-1])
    split = r_part & (e_split > 0)
    log_e = np.log(e_split, out=np.zeros_like(e_split), where=split)
    last = (h32[cand - 1] + tails).astype(np.float64)       # MNN's float32 tail bin
    last_log = np.log(last, out=np.zeros_like(last), where=last > 0)
    extra = last - h[cand - 1]                                   # the tail mass added to bin i - 1
    hr_log_e = h_r * log_e
    p_log_p = h_log_h[cand - 1] + last * last_log
    p_log_e = np.einsum("ij,ij->i", log_v, inside) + hr_log_e.sum(1) + extra * log_v[:, -1]
    with np.errstate(invalid="ignore"):
        estimate = p_log_p - p_log_e
    spread = (h_abs_log[cand - 1] + np.abs(last * last_log) + np.einsum("ij,ij->i", np.abs(log_v), inside)
              + np.abs(hr_log_e).sum(1) + np.abs(extra * log_v[:, -1]))
    bound = _EPS32 * (64 + (cand + 8) * spread)
    degenerate = (last < 0) | (h[cand - 1] == 0) | ~np.isfinite(estimate) | (count[:, -1] == 0)
    return estimate, bound, degenerate


def _kl_float32(h: np.ndarray, cand: np.ndarray, tails: np.ndarray, target: int) -> np.ndarray:
    """Divergence of each candidate in ``cand`` computed exactly as MNN does (float32, same order).

    The merge/expand edge weights are exact multiples of 1/target, so they are computed in integers.
    """
    n = h.size
    nz = h != 0
    rows = np.arange(cand.size)
    j = np.arange(target)
    s = cand[:, None] * j                         # start of target bin j, times target
    e = s + cand[:, None]                         # its end
    lu, rl = -(-s // target), e // target         # ceil(start), floor(end)
    has_l, has_r = lu * target > s, rl * target < e
    w_l = ((lu * target - s) / target).astype(np.float32)
    w_r = ((e - rl * target) / target).astype(np.float32)
    h_l, h_r = h[np.maximum(lu - 1, 0)], h[np.minimum(rl, n - 1)]
    mid = lu[..., None] + np.arange(int(cand.max()) // target + 2)
    mid_ok = mid < rl[..., None]
    h_mid = h[np.minimum(mid, n - 1)]
    parts = np.concatenate([np.where(has_l, w_l * h_l, np.float32(0))[..., None],
                            np.where(has_r, w_r * h_r, np.float32(0))[..., None],
                            np.where(mid_ok, h_mid, np.float32(0))], axis=-1).astype(np.float32)
    q = np.cumsum(parts, axis=-1, dtype=np.float32)[..., -1]          # left, right, then whole bins
    count = (np.where(has_l & (h_l != 0), w_l, np.float32(0)) + np.where(has_r & (h_r != 0), w_r, np.float32(0))
             + (mid_ok & (h_mid != 0)).sum(-1)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(count > 0, q / count, np.float32(0)).astype(np.float32)
    # expand back: source bin k gets v of its target bin, or, when a target boundary b falls inside
    # it, v[left] * (b - k) + v[right] * (k + 1 - b) (added in that order, as MNN's loop over j)
    k = np.arange(int(cand.max()))[None, :]
    jk = np.minimum((target * k) // cand[:, None], target - 1)
    b = (jk + 1) * cand[:, None]
    split = b < target * (k + 1)
    v_here = np.take_along_axis(v, jk, axis=1)
    v_next = np.take_along_axis(v, np.minimum(jk + 1, target - 1), axis=1)
    split_val = ((v_here * ((b - target * k) / target).astype(np.float32)).astype(np.float32)
                 + (v_next * ((target * (k + 1) - b) / target).astype(np.float32)).astype(np.float32))
    expanded = np.where(nz[None, :k.shape[1]], np.where(split, split_val, v_here), np.float32(0)).astype(np.float32)
    valid = k < cand[:, None]
    p = np.where(valid, h[None, :k.shape[1]], np.float32(0)).astype(np.float32)
    p[rows, cand - 1] = h[cand - 1] + tails[cand - target]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log((p / expanded).astype(np.float32).astype(np.float64)).astype(np.float32)
        terms = np.where(expanded == 0, np.float32(1), (p * logs).astype(np.float32))
    terms = np.where(valid & (p != 0), terms, np.float32(0)).astype(np.float32)
    return np.cumsum(terms, axis=1, dtype=np.float32)[:, -1]


def range_ref(x: np.ndarray, lo, hi):
    """(min(lo, min x), max(hi, max x)) as float32, NaNs ignored (all NaN: lo, hi unchanged)."""
    x = np.asarray(x, np.float32)
    if x.size == 0:
        return np.float32(lo), np.float32(hi)
    mn, mx = x.min(), x.max()                          # NaN only if x holds one: then skip NaNs
    if np.isnan(mn) or np.isnan(mx):
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mn, mx = np.nanmin(x), np.nanmax(x)        # all NaN: NaN, which min/max below ignore
    return min(np.float32(lo), np.float32(mn)), max(np.float32(hi), np.float32(mx))


def histogram_ref(x: np.ndarray, interval, bins: int = BINS) -> np.ndarray:
    """Counts of |x| > 1e-6 in bins min(int(|x| * interval), bins - 1), float32 arithmetic.

    NaN is not counted; a NaN product (inf * 0, when the range is infinite) goes to the last bin.
    """
    ax = np.abs(np.asarray(x, np.float32)).reshape(-1)
    # |x| <= 1e-6 and NaN go to an extra bin that is dropped (cheaper than compressing with a mask)
    skip = ~(ax > SKIP_BELOW)
    with np.errstate(invalid="ignore", over="ignore"):
        ax *= np.float32(interval)
    np.fmin(ax, np.float32(bins - 1), out=ax)
    ax[skip] = bins
    return np.bincount(ax.astype(np.intp), minlength=bins + 1)[:bins]


def two_pass_update(obs, x: np.ndarray):
    """The shared ``update`` of the two-pass histogram observers (``KLObserver``, ``ranges.RangeObserver``):
    records the first shape; pass 0 widens ``obs.lo``/``obs.hi``; pass 1 returns ``(x, interval)`` for the
    caller to histogram, or None when there is nothing to count (empty array, no usable range)."""
    x = np.asarray(x, np.float32)
    if obs.shape is None:
        obs.shape = x.shape
    if x.size == 0:
        return None
    if obs.pass_index == 0:
        obs.lo, obs.hi = _calib.value_range(x, obs.lo, obs.hi)           # range_ref in C
        obs.seen = True
        return None
    interval = obs._interval()
    return None if interval is None else (x, interval)


def shard_of(obs, part):
    """``part`` (a new, empty observer of ``obs``'s kind) set up as one shard of ``obs``'s current pass:
    the first shape and the pass, and in pass 1 the merged range, which sets the histogram interval."""
    part.shape, part.pass_index = obs.shape, obs.pass_index
    if obs.pass_index == 1:
        part.lo, part.hi, part.seen = obs.lo, obs.hi, obs.seen
    return part


def merge_range(obs, part) -> None:
    """Fold a shard's pass-0 ``(lo, hi, seen, shape)`` into ``obs`` (exact: a min and a max)."""
    lo, hi, seen, shape = part
    obs.lo, obs.hi = min(obs.lo, np.float32(lo)), max(obs.hi, np.float32(hi))
    obs.seen = obs.seen or bool(seen)
    if obs.shape is None:
        obs.shape = shape


class KLObserver(FeatureObserver):
    """KL (or MAX) threshold over a 2048-bin |x| histogram.

    ``threshold``: "auto" = MNN's rule (MAX when H*W < 100, from the first tensor's shape and ``layout``),
    or force "KL" / "MAX" (e.g. "MAX" for model inputs, the documented intent).
    """

    method = "KL"
    passes = 2
    order_free = True
    progress = "CollectFeatureDistribution"
    only_needed = True          # a KL threshold is the expensive part: none for overwritten statistics

    @classmethod
    def for_tensor(cls, clamp_value: int, *, layout: str, shape, force_max: bool) -> "KLObserver":
        obs = cls(clamp_value, threshold="MAX" if force_max else "auto", layout=layout)
        obs.shape = shape       # the first sample's (samples may finish in any order on several workers)
        return obs

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
        step = two_pass_update(self, x)
        if step is not None:
            _calib.histogram(step[0], step[1], self.counts)                # histogram_ref in C

    # Order-free statistics: a pass can be split over shards of the samples (threads, Ray tasks) and
    # merged exactly, since min/max and integer bin counts do not depend on the order of the values.
    def shard(self) -> "KLObserver":
        """An empty observer for one shard of this pass; pass 1 shards carry the merged range."""
        return shard_of(self, KLObserver(self.clamp, self.threshold, self.layout, self.bins))

    def partial(self):
        """This pass's statistics of a shard: ``(lo, hi, seen, shape)`` in pass 0, the bin counts in pass 1."""
        return (self.lo, self.hi, self.seen, self.shape) if self.pass_index == 0 else self.counts

    def merge(self, part) -> None:
        """Fold a shard's ``partial()`` in."""
        if self.pass_index == 0:
            merge_range(self, part)
        else:
            self.counts += np.asarray(part, np.int64)

    def _max_abs(self) -> np.float32:
        return max(abs(self.hi), abs(self.lo))

    def _interval(self) -> np.float32 | None:
        # an infinite range (a layer that overflowed float32 on some sample) has no usable scale: MNN
        # divides by interval = bins / inf = 0 and writes inf; the tensor gets no quant info here
        if not self.seen or not self._max_abs() > VALID_ABOVE or not np.isfinite(self._max_abs()):
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
