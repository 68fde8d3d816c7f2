"""mnnlite.kernels.matmul against mnnlite.ref.matmul.matmul_ref, on every SIMD path."""
import numpy as np
import pytest

from mnnlite.kernels import matmul, threads
from mnnlite.ref.matmul import matmul_ref

# (a shape, b shape, transpose_a, transpose_b, with bias), shapes given as stored (before transposing).
CASES = {
    "small_odd": ((5, 7), (7, 9), False, False, False),
    "transpose_a": ((7, 5), (7, 9), True, False, True),
    "transpose_b": ((5, 7), (9, 7), False, True, True),
    "transpose_both": ((13, 3), (17, 13), True, True, False),
    "row_vector_m1": ((1, 300), (300, 97), False, False, True),
    # Up to 4 rows take the unpacked path: axpy over rows of B, or dot products when B is transposed.
    "gemv_transposed_b": ((1, 1000), (77, 1000), False, True, True),
    "four_rows_transposed_b": ((4, 70), (33, 70), False, True, False),
    "four_rows_transposed_a": ((40, 4), (40, 9), True, False, True),
    "five_rows_packed": ((5, 130), (50, 130), False, True, True),
    "large_k_blocks": ((130, 600), (600, 501), False, False, True),
    "inner_product": ((3, 257), (100, 257), False, True, True),
    "batched": ((4, 6, 11), (4, 11, 5), False, False, False),
    "broadcast_batch": ((2, 1, 7, 5), (3, 7, 9), True, False, True),
    "shared_b": ((3, 2, 8, 9), (9, 10), False, False, False),
    "vector_a": ((7,), (2, 7, 3), False, False, False),
    "vector_b": ((4, 7), (7,), False, False, False),
    "vectors": ((6,), (6,), False, False, False),
    "k_is_zero": ((3, 0), (0, 4), False, False, True),
    "m_is_zero": ((0, 5), (5, 4), False, False, False),
}


@pytest.mark.parametrize("name", CASES)
def test_matmul_matches_reference(name, simd_path, assert_close):
    sa, sb, ta, tb, with_bias = CASES[name]
    rng = np.random.default_rng(len(name))
    a, b = rng.standard_normal(sa, dtype=np.float32), rng.standard_normal(sb, dtype=np.float32)
    n = sb[-2] if tb and len(sb) > 1 else sb[-1]
    bias = rng.standard_normal(n, dtype=np.float32) if with_bias else None
    got = matmul.matmul(a, b, ta, tb, bias)
    ref = matmul_ref(a, b, ta, tb, bias).astype(np.float64)
    magnitude = matmul_ref(np.abs(a), np.abs(b), ta, tb, None if bias is None else np.abs(bias))
    assert_close(got, ref, magnitude.astype(np.float64), f"matmul {name} path={simd_path}")


def test_matmul_threads_give_identical_results():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 70, 300), dtype=np.float32), rng.standard_normal((300, 1000), dtype=np.float32)
    one = matmul.matmul(a, b)
    try:
        threads.set_num_threads(2)
        np.testing.assert_array_equal(matmul.matmul(a, b), one)
    finally:
        threads.set_num_threads(1)


@pytest.mark.parametrize("a, b, kwargs, message", [
    (np.zeros((2, 3)), np.zeros((3, 4), np.float32), {}, "a: expected a C-contiguous float32"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32).T, {}, "b: expected a C-contiguous"),
    (np.zeros((2, 3), np.float32), np.zeros((4, 4), np.float32), {}, "inner dimensions differ"),
    (np.zeros((2, 2, 3), np.float32), np.zeros((3, 3, 4), np.float32), {}, "do not broadcast"),
    (np.zeros((2, 3), np.float32), np.zeros((3, 4), np.float32), {"bias": np.zeros(3, np.float32)},
     r"bias: expected shape \(4,\)"),
    (np.float32(1.0), np.zeros((3, 4), np.float32), {}, "a: expected a C-contiguous"),
])
def test_matmul_rejects_bad_arguments(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        matmul.matmul(a, b, **kwargs)


def test_set_num_threads_rejects_nonsense():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="set_num_threads"):
            threads.set_num_threads(bad)
