"""KL calibration kernels (mnnlite.kernels.calib) against their numpy references in feature/kl.py:
the same threshold bin, the same counts, the same range, bit for bit."""
import warnings

import numpy as np
import pytest

from mnnlite.kernels import calib
from mnnlite.quant.feature import kl

F = np.float32


def _normalised(counts):
    h = kl.bin_values(np.asarray(counts, np.int64))
    return (h / kl._sequential_sum(h)).astype(F)


def _abs_samples(rng, kind, size):
    if kind == "gauss":
        return np.abs(rng.standard_normal(size))
    if kind == "laplace":
        return np.abs(rng.laplace(size=size))
    if kind == "heavy":
        return np.abs(rng.standard_t(rng.choice([1, 2, 3]), size))
    if kind == "mixture":
        return np.abs(rng.standard_normal(size) * rng.choice([0.1, 1, 10], size))
    if kind == "uniform":
        return rng.uniform(0, 1, size)
    return np.abs(rng.exponential(size=size)) ** 3                       # "skewed"


def _counts_from_samples(rng, kind, bins):
    x = _abs_samples(rng, kind, int(rng.choice([50, 3000, 200000])))
    top = x.max() * rng.choice([1.0, 1.0, 0.5, 0.1])                   # some clip the tail into the last bin
    return np.bincount(np.minimum((x / top * bins).astype(int), bins - 1), minlength=bins)


def _special_counts(rng, case, bins):
    c = np.zeros(bins, np.int64)
    if case == "single":
        c[rng.integers(bins)] = int(rng.choice([1, 2, 1000, (1 << 24) + 7]))
    elif case == "all_equal":
        c[:] = int(rng.choice([0, 1, 2, 5, 1 << 24]))
    elif case == "spikes":
        c[rng.integers(0, bins, 6)] = rng.integers(1, 10 ** 6, 6)
    elif case == "mostly_zero":
        c[rng.integers(0, bins, 20)] = rng.integers(1, 3, 20)
    elif case == "saturated":                                           # counts past 2^24 stop growing
        c = _counts_from_samples(rng, "gauss", bins) * (1 << 12) + rng.integers(0, 3, bins)
    elif case == "tiny":                                                # counts of 0, 1, 2: bin_values' steps
        c = rng.integers(0, 3, bins)
    else:                                                               # "huge"
        c = rng.integers(1 << 23, 1 << 26, bins)
    return c


KINDS = ["gauss", "laplace", "heavy", "mixture", "uniform", "skewed"]
SPECIAL = ["single", "all_equal", "spikes", "mostly_zero", "saturated", "tiny", "huge"]


def _cases():
    cases = [(kind, 2048, seed) for kind in KINDS for seed in range(10)]
    cases += [(case, 2048, seed) for case in SPECIAL for seed in range(4)]
    cases += [(kind, bins, seed) for kind in KINDS[:3] + SPECIAL[:4] for bins in (129, 300, 1024)
              for seed in range(3)]
    cases += [("gauss", 4096, 0), ("heavy", 4096, 1)]
    return cases


@pytest.mark.parametrize("kind,bins,seed", _cases())
def test_threshold_matches_reference(kind, bins, seed):
    rng = np.random.default_rng([seed, bins, len(kind)])
    counts = _special_counts(rng, kind, bins) if kind in SPECIAL else _counts_from_samples(rng, kind, bins)
    hist = _normalised(counts)
    assert calib.kl_threshold(hist) == kl.kl_threshold_ref(hist)
    assert kl.kl_threshold(hist) == kl.kl_threshold_ref(hist)


@pytest.mark.parametrize("seed", range(12))
def test_threshold_raw_histograms(seed):
    """Not produced by bin_values: exact zero bins (the degenerate and NaN paths), unnormalised mass,
    other targets."""
    rng = np.random.default_rng(100 + seed)
    bins = int(rng.choice([200, 700, 2048]))
    h = rng.exponential(size=bins).astype(F) ** F(rng.choice([1, 4]))
    h[rng.random(bins) < rng.choice([0.02, 0.3, 0.9])] = 0
    if seed % 3 == 0:
        h[-rng.integers(1, bins // 2):] = 0                              # empty tail: empty last bins
    if seed % 4 == 1:
        h = (h / kl._sequential_sum(h)).astype(F)
    target = int(rng.choice([64, 128, 100]))
    assert calib.kl_threshold(h, target, kl.KL_EXACT_TOP) == kl.kl_threshold_ref(h, target)


def _nonfinite_histogram(seed):
    rng = np.random.default_rng(200 + seed)
    bins = int(rng.choice([200, 700, 2048]))
    h = rng.exponential(size=bins).astype(F)
    h[rng.integers(0, bins, int(rng.integers(1, 3)))] = rng.choice([np.inf, -np.inf, np.nan])
    if seed % 2:
        h[rng.random(bins) < 0.3] = 0
    return h


@pytest.mark.parametrize("seed", range(8))
def test_threshold_nonfinite_bins(seed):
    """An infinite or NaN bin makes NaN estimates, which must fall where the reference's do."""
    h = _nonfinite_histogram(seed)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ref = kl.kl_threshold_ref(h)
    assert calib.kl_threshold(h, 128, kl.KL_EXACT_TOP) == ref


@pytest.mark.parametrize("limit", [[], ["avx2"]])
def test_threshold_paths_agree(limit):
    """The portable and the SIMD paths of the search return the same bins: histograms from
    bin_values (no empty bin), raw ones with empty bins, and ones with an infinite or NaN bin."""
    from mnnlite.kernels import cpu

    hists = []
    for kind, bins, seed in _cases()[::3]:
        rng = np.random.default_rng([seed, bins, len(kind)])
        counts = _special_counts(rng, kind, bins) if kind in SPECIAL else _counts_from_samples(rng, kind, bins)
        hists.append((_normalised(counts), 128))
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        h = rng.exponential(size=int(rng.choice([200, 700, 2048]))).astype(F)
        h[rng.random(h.size) < rng.choice([0.02, 0.3, 0.9])] = 0
        hists.append((h, int(rng.choice([64, 128, 100]))))
    hists += [(_nonfinite_histogram(seed), 128) for seed in range(8)]

    def run():
        return [calib.kl_threshold(h, target, kl.KL_EXACT_TOP) for h, target in hists]

    default = run()
    cpu.set_limit(limit)
    try:
        limited = run()
    finally:
        cpu.set_limit(None)
    assert limited == default


def test_threshold_exact_top_only_widens():
    rng = np.random.default_rng(7)
    hist = _normalised(_counts_from_samples(rng, "mixture", 2048))
    ref = kl.kl_threshold_ref(hist)
    assert all(calib.kl_threshold(hist, 128, top) == ref for top in (64, 200, 5000))


# ------------------------------------------------------------------------------- range, histogram

def _edge_values(rng):
    interval = F(2048) / F(3.5)
    edges = (np.arange(0, 2049, 37, dtype=F) / interval).astype(F)        # values at (or next to) bin edges
    x = np.concatenate([
        rng.standard_normal(5000).astype(F) * F(2),
        [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-6, -1e-6, 1.0000001e-6, 9e-7, 3.5, -3.5, 3e38, -3e38, 1e-40],
        edges, np.nextafter(edges, F(0)), np.nextafter(edges, F(10)), -edges,
    ]).astype(F)
    return x, interval


def test_histogram_matches_reference():
    rng = np.random.default_rng(3)
    x, interval = _edge_values(rng)
    for bins in (2048, 1, 7, 4096, 4097, 8192):        # > 4096: the kernel's direct path
        counts = np.zeros(bins, np.int64)
        calib.histogram(x, interval, counts)
        calib.histogram(x[::3], interval, counts)                         # non-contiguous, accumulates
        assert np.array_equal(counts, kl.histogram_ref(x, interval, bins) + kl.histogram_ref(x[::3], interval, bins))
    for interval in (F(0), F(1e30), F(np.inf)):                          # inf * 0, overflow to inf
        counts = np.zeros(2048, np.int64)
        calib.histogram(x, interval, counts)
        assert np.array_equal(counts, kl.histogram_ref(x, interval))
    counts = np.zeros(2048, np.int64)
    calib.histogram(np.zeros((0, 3), F), interval, counts)
    calib.histogram(x.astype(np.float64).reshape(-1, 1)[::2], interval, counts)   # converted to float32
    assert np.array_equal(counts, kl.histogram_ref(x[::2], interval))


def test_range_matches_reference():
    rng = np.random.default_rng(4)
    x, _ = _edge_values(rng)
    cases = [x, x[::5], x[np.isfinite(x)], np.full(9, np.nan, F), np.zeros(0, F), np.array([np.nan, 2, np.nan], F),
             rng.standard_normal((3, 5, 7)).astype(F)[:, ::2], np.array([5.0], F)]
    for arr in cases:
        for lo, hi in ((F(1e5), F(-1e5)), (F(-1), F(1)), (F(np.nan), F(0))):
            got = calib.value_range(arr, lo, hi)
            ref = kl.range_ref(arr, lo, hi)
            assert [np.isnan(g) for g in got] == [np.isnan(r) for r in ref]
            assert all(g == r for g, r in zip(got, ref) if not np.isnan(r)), (arr, lo, hi, got, ref)


def test_histogram_of_relu_like_data():
    """Half exact zeros (skipped, branch free) and half positive values, in runs and interleaved."""
    rng = np.random.default_rng(6)
    x = np.maximum(rng.standard_normal(100_003).astype(F), F(0))
    x[:5000] = 0
    interval = F(2048) / x.max()
    counts = np.zeros(2048, np.int64)
    calib.histogram(x, interval, counts)
    assert np.array_equal(counts, kl.histogram_ref(x, interval))
    assert counts.sum() == np.count_nonzero(x > F(1e-6))


def test_observer_streams_like_reference():
    """KLObserver's C update gives the counts and range of the numpy reference over a stream."""
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((2, 3, 16, 16)).astype(F) * F(s) for s in (0.5, 3, 1)]
    xs[1][0, 0, 0, :3] = [np.nan, 1e-7, -0.0]
    obs = kl.KLObserver()
    lo, hi = F(1e5), F(-1e5)
    for x in xs:
        obs.update(x)
        lo, hi = kl.range_ref(x, lo, hi)
    assert (obs.lo, obs.hi) == (lo, hi)
    obs.start_pass(1)
    for x in xs:
        obs.update(x[:, :, ::2])
    assert np.array_equal(obs.counts, sum(kl.histogram_ref(x[:, :, ::2], obs._interval()) for x in xs))


def test_bad_arguments():
    h = np.full(2048, 1 / 2048, F)
    for bad in (h.astype(np.float64), h[::2], h.reshape(32, 64), list(h)):
        with pytest.raises(ValueError, match="hist must be"):
            calib.kl_threshold(bad)
    with pytest.raises(ValueError, match="bins >= target"):
        calib.kl_threshold(h[:128])
    with pytest.raises(ValueError, match="target >= 1"):
        calib.kl_threshold(h, 0)
    with pytest.raises(ValueError, match="exact_top"):
        calib.kl_threshold(h, 128, -1)
    x = np.ones(10, F)
    for bad in (np.zeros(10, np.int32), np.zeros(10), np.zeros(20, np.int64)[::2], np.zeros((2, 5), np.int64),
                [0] * 10):
        with pytest.raises(ValueError, match="counts must be"):
            calib.histogram(x, 1.0, bad)
    ro = np.zeros(10, np.int64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        calib.histogram(x, 1.0, ro)
    with pytest.raises(ValueError, match="bins"):
        calib.histogram(x, 1.0, np.zeros(0, np.int64))
    for interval in (-1.0, np.nan):                 # a negative bin index would write before counts
        with pytest.raises(ValueError, match="interval"):
            calib.histogram(x, interval, np.zeros(10, np.int64))


# ------------------------------------------------------------------------------------------ EMA


@pytest.mark.parametrize("seed", range(40))
def test_ema_fake_quantize_matches_reference(seed):
    """The C batch range and fake quantization give the numpy reference's bits (NaN payloads aside:
    x86 arithmetic makes its own NaN sign)."""
    from mnnlite.quant.feature import ema

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    x = (rng.standard_normal(n) * rng.choice([1e-30, 1e-3, 1, 1e3, 1e30])).astype(F)
    if seed % 4 == 0:
        x[rng.integers(0, n, 3)] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, -1e38], 3)
    if seed % 7 == 0:
        x[:] = 0
    if seed % 5 == 0:
        x[::2] = -0.0
    if seed % 6 == 0:       # exact half steps: the rounding must go away from zero like C's roundf
        x = (rng.integers(-300, 300, n) * F(0.5)).astype(F)
    for clamp in (127, 63, 7):
        got, ref = ema.fake_quantize(x, clamp), ema.fake_quantize_ref(x, clamp)
        np.testing.assert_array_equal(got[0], ref[0])
        assert np.array_equal(np.asarray(got[1:]), np.asarray(ref[1:]), equal_nan=True)
        finite = np.isfinite(ref[0])
        assert got[0][finite].tobytes() == ref[0][finite].tobytes()
    assert calib.batch_range(x)[0] == x.min() or np.isnan(x.min())
    with pytest.raises(ValueError, match="empty"):
        calib.batch_range(np.zeros(0, F))
    assert ema.fake_quantize(np.zeros((0, 3), F))[0].shape == (0, 3)


def test_ema_fake_quant_paths_agree():
    """The AVX2 kernel and the portable loop give the same bits, NaN payloads included, on values at
    rounding ties, past 2^23, non-finite, and with degenerate scales and zero points."""
    from mnnlite.kernels import cpu

    rng = np.random.default_rng(7)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e38, -1e38, 0.5, -0.5, 1.5, -2.5, 8388607.5,
                         8388608.0, -8388609.0, 1e-45], F)
    for _ in range(100):
        n = int(rng.integers(1, 300))
        x = (rng.standard_normal(n) * rng.choice([1e-3, 1, 1e3, 1e30])).astype(F)
        x[rng.integers(0, n, min(n, 5))] = rng.choice(specials, min(n, 5))
        s, z = F(rng.choice([1e-3, 0.01, 1.0, 3e-39, 1e30])), F(rng.choice([0, 3, -7.0, np.nan]))
        simd = calib.fake_quant(x, s, z, F(127))
        cpu.set_limit([])
        try:
            portable = calib.fake_quant(x, s, z, F(127))
        finally:
            cpu.set_limit(None)
        assert simd.tobytes() == portable.tobytes()
