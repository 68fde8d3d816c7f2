"""Shared helpers for kernel tests: run a test on every SIMD path, compare with an error budget."""
import numpy as np
import pytest

from mnnlite.kernels import cpu

# Float32 sums in a different order than the float64 reference: the error grows with the sum of the
# absolute values of the terms, so the budget is relative to that magnitude, not to the result.
FP32_RTOL = 1e-5
FP32_ATOL = 1e-5

# None = every path this CPU has; ["avx2"] = AVX2 without AVX-512; [] = scalar C.
SIMD_PATHS = {"fastest": None, "avx2": ["avx2"], "scalar": []}


def _available(name):
    limit = SIMD_PATHS[name]
    return limit is None or all(f in cpu.features() for f in limit)


@pytest.fixture(params=[name for name in SIMD_PATHS if _available(name)])
def simd_path(request):
    """Run the test with the kernels limited to one SIMD path, then lift the limit."""
    cpu.set_limit(SIMD_PATHS[request.param])
    yield request.param
    cpu.set_limit(None)


def _assert_close(got, ref, magnitude, what=""):
    """|got - ref| <= FP32_ATOL + FP32_RTOL * magnitude, elementwise, with the worst offender named."""
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    excess = np.abs(got.astype(np.float64) - ref) - (FP32_ATOL + FP32_RTOL * magnitude)
    if excess.size and excess.max() > 0:
        i = np.unravel_index(np.argmax(excess), excess.shape)
        pytest.fail(f"{what}: at {i} got {got[i]!r}, reference {ref[i]!r} (magnitude {magnitude[i]:.3g})")


@pytest.fixture
def assert_close():
    """The comparison above, as a fixture so test modules need not import conftest."""
    return _assert_close
