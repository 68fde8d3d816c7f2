"""ADMM calibration (docs/mnn-quantization.md §7; MNN ``TensorStatistic::computeScaleADMM``).

From ``alpha = max|x| / (2.5·clamp)``, 300 times: ``q = clamp(roundf(x · (1/alpha)), ±clamp)``,
``alpha = Σ q·x / Σ q²`` with **float32 sequential sums**.  The 300 iterations usually stop far from the
fixed point (each step moves alpha by ~0.1 %), so the float32 rounding of those sums decides the result:
float64 sums land several percent away from MNN.  We therefore keep MNN's arithmetic exactly, which
needs every value of the tensor for every iteration.

MNN stacks all samples into one batch (and crashes on NCHW models, docs/mnn-quantization.md §14.7).  Here samples are fed
one at a time; the values are kept in update order, in RAM up to ``ram_limit`` bytes and in an anonymous
temporary file beyond, and each iteration streams them in chunks while carrying the running float32
sums — RAM stays bounded; the disk holds what MNN would have held in RAM.  The element order differs
from MNN's raw packed memory; that changes the scale by ~1e-4 relative.
"""
from __future__ import annotations

import tempfile

import numpy as np

from ...format.idst import roundf
from . import FeatureObserver, QuantParams

ADMM_FEATURE_ITERS = 300
RAM_LIMIT = 64 << 20              # bytes of values kept in memory before spilling to a temporary file
CHUNK = 1 << 20                   # values per streamed chunk


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
    """MNN's ADMM scale (zero point 0), float32-exact, over every value seen, in update order."""

    method = "ADMM"
    passes = 1

    def __init__(self, clamp_value: int = 127, iters: int = ADMM_FEATURE_ITERS, ram_limit: int = RAM_LIMIT):
        super().__init__(clamp_value)
        self.iters = int(iters)
        self.max_abs = np.float32(0)
        self.values = _ValueStore(ram_limit)
        self.result: QuantParams | None = None

    def update(self, x: np.ndarray) -> None:
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

    def compute(self) -> QuantParams:
        """Runs the iterations once, then frees the stored values (later calls return the same result)."""
        if self.result is None:
            self.result = self._solve()
            self.values.close()
        return self.result

    def _solve(self) -> QuantParams:
        if not self.max_abs > 0:
            return QuantParams(0.0, 0)
        # MNN: max / (bound * 2.5) with 2.5 a double, stored into a float
        alpha = np.float32(float(self.max_abs) / (self.clamp * 2.5))
        with np.errstate(divide="ignore", invalid="ignore"):
            for _ in range(self.iters):
                alpha = self._step(alpha)
        return QuantParams(float(alpha), 0) if alpha > 0 else QuantParams(0.0, 0)
