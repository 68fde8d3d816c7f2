# Included by every extension that links csrc/parallel.c: each has its own thread pool, and this reads it.

cdef extern from "parallel.h":
    ctypedef struct mnnlite_parallel_counts:
        int workers
        long long calls
        long long ranges_on_workers
    void mnnlite_parallel_stats(mnnlite_parallel_counts *out) nogil


def parallel_pool_stats():
    """This extension's thread pool: workers started, parallel calls served, ranges run on pool threads
    (tests check that a call they split really ran on the pool)."""
    cdef mnnlite_parallel_counts c
    mnnlite_parallel_stats(&c)
    return {"workers": c.workers, "calls": c.calls, "ranges_on_workers": c.ranges_on_workers}
