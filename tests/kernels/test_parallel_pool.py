"""csrc/parallel.c's persistent thread pool: split calls run on pool threads, give the one-thread bits under
any sequence of thread counts, from concurrent Python threads (the second caller starts threads of its own)
and in a forked child (calibration workers are forked), where the parent's workers do not exist."""
import multiprocessing
import threading

import numpy as np
import pytest

from mnnlite.kernels import conv, int8, matmul, threads


def _matmul_case(seed=0):
    # one GEMM of 2 * 140 * 300 * 1000 = 84 MFLOP: over 3 * csrc/parallel.h's MFLOP per thread (2)
    rng = np.random.default_rng(seed)
    return rng.standard_normal((140, 300), dtype=np.float32), rng.standard_normal((300, 1000), dtype=np.float32)


@pytest.fixture
def thread_count():
    yield threads.set_num_threads
    threads.set_num_threads(1)


def test_split_calls_run_on_pool_threads(thread_count):
    a, b = _matmul_case()
    one = matmul.matmul(a, b)
    before = matmul.parallel_pool_stats()
    thread_count(3)
    for _ in range(5):
        np.testing.assert_array_equal(matmul.matmul(a, b), one)
    after = matmul.parallel_pool_stats()
    assert after["workers"] >= 2, after
    assert after["calls"] - before["calls"] == 5, (before, after)
    assert after["ranges_on_workers"] - before["ranges_on_workers"] == 10, (before, after)


def test_thread_counts_in_any_order_give_the_one_thread_bits(thread_count):
    """Workers left over from a wider call must neither run nor be waited for in a narrower one."""
    a, b = _matmul_case(1)
    one = matmul.matmul(a, b)
    for n in (4, 2, 3, 1, 2, 4, 4, 2, 1, 3) * 3:
        thread_count(n)
        np.testing.assert_array_equal(matmul.matmul(a, b), one, err_msg=f"{n} threads")


def test_concurrent_callers_give_the_one_thread_bits(thread_count):
    """Kernels release the GIL: while one Python thread owns the pool, the others' calls start their own."""
    cases = [_matmul_case(s) for s in range(4)]
    expected = [matmul.matmul(a, b) for a, b in cases]
    thread_count(2)
    results = {}

    def run(i):
        a, b = cases[i % 4]
        results[i] = all(np.array_equal(matmul.matmul(a, b), expected[i % 4]) for _ in range(6))

    workers = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == {i: True for i in range(8)}


def _child_split_call(queue):
    threads.set_num_threads(2)
    a, b = _matmul_case()
    queue.put((matmul.matmul(a, b).tobytes(), matmul.parallel_pool_stats()))


def test_forked_child_starts_a_fresh_pool(thread_count):
    a, b = _matmul_case()
    one = matmul.matmul(a, b)
    thread_count(2)
    matmul.matmul(a, b)                              # the parent's pool has a worker now
    assert matmul.parallel_pool_stats()["workers"] >= 1
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_split_call, args=(queue,))
    child.start()
    got, stats = queue.get(timeout=120)
    child.join(timeout=120)
    assert child.exitcode == 0
    assert got == one.tobytes()
    assert stats["workers"] == 1 and stats["calls"] == 1 and stats["ranges_on_workers"] == 1, stats


def test_every_extension_has_its_pool():
    for module in (conv, int8, matmul):
        assert set(module.parallel_pool_stats()) == {"workers", "calls", "ranges_on_workers"}
