# distutils: sources = csrc/kl_calib.c csrc/ema_calib.c
"""Feature calibration kernels.  KL (csrc/kl_calib.c): range, |x| histogram, threshold search; numpy
references (identical results): mnnlite.quant.feature.kl.range_ref, histogram_ref, kl_threshold_ref.
EMA (csrc/ema_calib.c): a batch's range and its fake quantization; reference
mnnlite.quant.feature.ema.fake_quantize_ref.  The GIL is released, so observers computed in threads
run in parallel.
"""
import numpy as np

from libc.stdint cimport int64_t

from mnnlite.kernels._select import isa_mask

cdef extern from "kl_calib.h":
    void klc_range(const float *x, size_t n, float *lo, float *hi) nogil
    void klc_histogram(const float *x, size_t n, float interval, int64_t *counts, int bins) nogil
    int klc_threshold(const float *hist, int bins, int target, int exact_top, int isa) nogil

cdef extern from "ema_calib.h":
    void emac_range(const float *x, size_t n, float *lo, float *hi) nogil
    void emac_fake_quant(int isa, const float *x, float *y, size_t n, float s, float z, float c) nogil

MAX_BINS = 1 << 24      # bins - 1 must be exact in float32 for the histogram's clamp


def _flat32(x):
    return np.ascontiguousarray(x, dtype=np.float32).reshape(-1)


def value_range(x, lo, hi):
    """(min(lo, min x), max(hi, max x)) as float32, NaNs ignored."""
    xf = _flat32(x)
    cdef const float[::1] xv = xf
    cdef float flo = lo, fhi = hi
    cdef size_t n = xf.shape[0]
    if n:
        with nogil:
            klc_range(&xv[0], n, &flo, &fhi)
    return np.float32(flo), np.float32(fhi)


def histogram(x, interval, counts):
    """Add the |x| > 1e-6 of ``x`` to ``counts`` (int64, C-contiguous): bin min(int(|x| * interval),
    bins - 1) in float32."""
    if not isinstance(counts, np.ndarray) or counts.dtype != np.int64 or counts.ndim != 1 \
            or not counts.flags.c_contiguous or not counts.flags.writeable:
        raise ValueError("counts must be a writeable 1-D C-contiguous int64 array")
    cdef int bins
    if not 1 <= counts.shape[0] <= MAX_BINS:
        raise ValueError(f"counts must have 1 to {MAX_BINS} bins, got {counts.shape[0]}")
    bins = counts.shape[0]
    xf = _flat32(x)
    cdef const float[::1] xv = xf
    cdef int64_t[::1] cv = counts
    cdef float fint = np.float32(interval)
    if not fint >= 0:       # a negative bin index would write outside counts
        raise ValueError(f"interval must be >= 0, got {interval!r}")
    cdef size_t n = xf.shape[0]
    if n:
        with nogil:
            klc_histogram(&xv[0], n, fint, &cv[0], bins)


def kl_threshold(hist, int target=128, int exact_top=64):
    """MNN's KL threshold bin of a normalised float32 histogram (1-D, C-contiguous)."""
    if not isinstance(hist, np.ndarray) or hist.dtype != np.float32 or hist.ndim != 1 \
            or not hist.flags.c_contiguous:
        raise ValueError("hist must be a 1-D C-contiguous float32 array")
    if target < 1 or hist.shape[0] < target + 1:
        raise ValueError(f"need target >= 1 and bins >= target + 1, got target {target}, "
                         f"bins {hist.shape[0]}")
    if hist.shape[0] > MAX_BINS:
        raise ValueError(f"hist has {hist.shape[0]} bins, at most {MAX_BINS} supported")
    if exact_top < 0:
        raise ValueError(f"exact_top must be >= 0, got {exact_top}")
    cdef const float[::1] hv = hist
    cdef int bins = hist.shape[0], thr, isa = isa_mask()
    with nogil:
        thr = klc_threshold(&hv[0], bins, target, exact_top, isa)
    if thr == -2:
        raise ValueError(f"kl_threshold: bad sizes (bins {bins}, target {target})")
    if thr < 0:
        raise MemoryError("kl_threshold: out of memory")
    return thr


def batch_range(x):
    """(min x, max x) as float32, NaN if x holds a NaN (numpy's min/max); x must not be empty."""
    xf = _flat32(x)
    cdef const float[::1] xv = xf
    cdef float flo = 0, fhi = 0
    cdef size_t n = xf.shape[0]
    if n == 0:
        raise ValueError("batch_range of an empty array")
    with nogil:
        emac_range(&xv[0], n, &flo, &fhi)
    return np.float32(flo), np.float32(fhi)


def fake_quant(x, s, z, c):
    """float32 ``s * (clip(roundf(x / s + z), -c, c) - z)``, shaped like x."""
    xa = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(xa)
    cdef const float[::1] xv = xa.reshape(-1)
    cdef float[::1] yv = y.reshape(-1)
    cdef float fs = s, fz = z, fc = c
    cdef size_t n = xa.size
    cdef int isa = isa_mask()
    if n:
        with nogil:
            emac_fake_quant(isa, &xv[0], &yv[0], n, fs, fz, fc)
    return y
