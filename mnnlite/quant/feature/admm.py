"""ADMM calibration (docs/mnn-quantization.md §7; MNN ``TensorStatistic::computeScaleADMM``).

From ``alpha = max|x| / (2.5·clamp)``, 300 times: ``q = clamp(roundf(x · (1/alpha)), ±clamp)``,
``alpha = Σ q·x / Σ q²``.  One observer, two summaries of the values:

* ``"bins"`` (default, what the quantizer runs): pass 0 finds max|x|; pass 1 fills ``bins`` bins over
  [0, max|x|] with the count and the float64 sum of the |x| falling in each.  An iteration needs, for the
  127 rounding boundaries ``(k - 0.5)·alpha``, how many values lie above and their sum; inside the bin that
  holds a boundary the values are taken as uniformly spread.  Sums are exact (float64) instead of MNN's
  float32 running sums, whose rounding moves MNN's result by several percent on tensors of 10^5+ values
  (README, deviations).  Memory: 16 bytes per bin whatever the number of samples; the result is within
  ~1e-4 of the same iteration over the raw values.
* ``"exact"``: MNN's arithmetic exactly, **float32 sequential sums** over every value (the 300 iterations
  usually stop far from the fixed point, so the float32 rounding of those sums decides the result).  One
  pass; the values are kept in update order, in RAM up to ``ram_limit`` bytes and in an anonymous
  temporary file beyond, and each iteration streams them in chunks.  The reference the oracle tests
  compare MNN's files with (tests/quant/test_feature_calibration.py).

MNN stacks all samples into one batch (and crashes on NCHW models, docs/mnn-quantization.md §14.7).  Here
samples are fed one at a time, in logical element order (MNN reads raw packed memory: ~1e-4 relative).
"""
from __future__ import annotations

import tempfile
from typing import ClassVar

import numpy as np

from ...format.idst import roundf
from . import FeatureObserver, QuantParams

ADMM_FEATURE_ITERS = 300
ADMM_BINS = 8192                  # bins of the default summary
RAM_LIMIT = 64 << 20              # exact summary: bytes of values kept in memory before spilling to a file
CHUNK = 1 << 20                   # exact summary: values per streamed chunk


class _ValueStore:
    """Append-only float32 store: a list of arrays, then a temporary file once ``ram_limit`` is passed."""

    def __init__(self, ram_limit: int):
        self.ram_limit, self.parts, self.file, self.size = ram_limit, [], None, 0

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, np.float32)
        self.size += values.size
        if self.file is None and self.size * 4 <= self.ram_limit:
            self.parts.append(values.copy())
            return
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="mnnlite-admm-")
            for part in self.parts:
                self.file.write(part.tobytes())
            self.parts = []
        self.file.write(values.tobytes())

    def chunks(self, chunk: int = CHUNK):
        if self.file is None:
            for part in self.parts:
                for start in range(0, part.size, chunk):
                    yield part[start:start + chunk]
            return
        self.file.flush()
        self.file.seek(0)
        while True:
            data = np.fromfile(self.file, np.float32, chunk)
            if data.size == 0:
                return
            yield data

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        self.parts, self.file, self.size = [], None, 0


def _running_sum(start: np.float32, terms: np.ndarray) -> np.float32:
    """``start + t0 + t1 + ...`` added left to right in float32 (cumsum keeps the order)."""
    return np.cumsum(np.concatenate(([start], terms)), dtype=np.float32)[-1]


class ADMMObserver(FeatureObserver):
    """MNN's ADMM scale (zero point 0) from a binned summary of |x| (``summary="bins"``, two passes) or
    float32-exact over every value seen, in update order (``summary="exact"``, one pass)."""

    method = "ADMM"
    passes = 2                         # the default summary's; "exact" needs one
    order_free = False                 # the exact summary's float32 sums depend on the order
    progress = "ProcessCalibrationFiles"
    compute_progress: ClassVar[str | None] = "ComputeADMM"

    def __init__(self, clamp_value: int = 127, iters: int = ADMM_FEATURE_ITERS, summary: str = "bins",
                 bins: int = ADMM_BINS, ram_limit: int = RAM_LIMIT):
        super().__init__(clamp_value)
        if summary not in ("bins", "exact"):
            raise ValueError(f'summary must be "bins" or "exact", got {summary!r}')
        self.iters, self.summary = int(iters), summary
        self.max_abs = np.float32(0)
        self.result: QuantParams | None = None
        if summary == "exact":
            self.passes = 1
            self.values = _ValueStore(ram_limit)
        else:
            self.bins = int(bins)
            self.count = np.zeros(self.bins, np.int64)
            self.total = np.zeros(self.bins, np.float64)

    def update(self, x: np.ndarray) -> None:
        if self.summary == "exact":
            self._keep(x)
        else:
            self._bin(x)

    def compute(self) -> QuantParams:
        """Runs the iterations once (then frees the exact summary's values; later calls return the same)."""
        if self.result is None:
            if self.summary == "exact":
                self.result = self._solve_exact()
                self.values.close()
            else:
                self.result = self._solve_binned()
        return self.result

    # -- "bins" -------------------------------------------------------------------------------------
    def _bin(self, x: np.ndarray) -> None:
        ax = np.abs(np.asarray(x, np.float32).reshape(-1))
        if ax.size == 0:
            return
        if self.pass_index == 0:
            m = np.nanmax(ax)
            if m > self.max_abs:
                self.max_abs = np.float32(m)
            return
        if not self._usable():
            return
        ax = ax[ax > 0]                                   # zeros contribute nothing (q = 0), drops NaN
        width = float(self.max_abs) / self.bins
        idx = np.minimum((ax.astype(np.float64) / width).astype(np.int64), self.bins - 1)
        self.count += np.bincount(idx, minlength=self.bins)
        self.total += np.bincount(idx, weights=ax.astype(np.float64), minlength=self.bins)

    def _usable(self) -> bool:
        """A positive, finite range: an infinite one (a layer that overflowed float32) has no scale
        (bins of width inf would put every value at NaN)."""
        return bool(self.max_abs > 0 and np.isfinite(self.max_abs))

    def _solve_binned(self) -> QuantParams:
        if not self._usable() or self.count.sum() == 0:
            return QuantParams(0.0, 0)
        m = float(self.max_abs)
        width = m / self.bins
        cum_n = np.concatenate(([0.0], np.cumsum(self.count, dtype=np.float64)))
        cum_s = np.concatenate(([0.0], np.cumsum(self.total)))
        n_all, s_all = cum_n[-1], cum_s[-1]
        k = np.arange(1, self.clamp + 1, dtype=np.float64)
        alpha = float(np.float32(m / (self.clamp * 2.5)))        # MNN: max / (bound * 2.5)
        for _ in range(self.iters):
            t = np.clip((k - 0.5) * alpha, 0.0, m)                # q >= k  <=>  |x| >= (k - 0.5) alpha
            b = np.minimum((t / width).astype(np.int64), self.bins - 1)
            frac = np.clip(t / width - b, 0.0, 1.0)
            below_n = cum_n[b] + frac * self.count[b]
            below_s = cum_s[b] + frac * self.count[b] * (b + frac / 2) * width
            s1 = np.sum(s_all - below_s)                          # sum of q·|x| = sum_k sum_{q>=k} |x|
            s2 = np.sum((2 * k - 1) * (n_all - below_n))          # sum of q^2 = sum_k (2k-1) #{q>=k}
            if not s2 > 0:
                return QuantParams(0.0, 0)
            alpha = s1 / s2
        return QuantParams(float(np.float32(alpha)), 0)

    # -- "exact" ------------------------------------------------------------------------------------
    def _keep(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32).reshape(-1)
        if x.size == 0:
            return
        ax = np.abs(x)
        if np.any(ax > self.max_abs):                    # MNN: absData > max, so NaN never wins
            self.max_abs = np.float32(np.nanmax(ax))
        self.values.append(x)

    def _step(self, alpha: np.float32) -> np.float32:
        inv, c = np.float32(1) / alpha, np.float32(self.clamp)
        sum1 = sum2 = np.float32(0)
        for x in self.values.chunks():
            # fmin/fmax (not clip) so NaN codes behave as in MNN
            q = np.fmin(c, np.fmax(-c, roundf(x * inv)))
            sum1, sum2 = _running_sum(sum1, q * x), _running_sum(sum2, q * q)
        return np.float32(sum1 / sum2)

    def _solve_exact(self) -> QuantParams:
        if not self.max_abs > 0:
            return QuantParams(0.0, 0)
        # MNN: max / (bound * 2.5) with 2.5 a double, stored into a float
        alpha = np.float32(float(self.max_abs) / (self.clamp * 2.5))
        with np.errstate(divide="ignore", invalid="ignore"):
            for _ in range(self.iters):
                alpha = self._step(alpha)
        return QuantParams(float(alpha), 0) if alpha > 0 else QuantParams(0.0, 0)
