/* A minimal parallel-for on pthreads (no OpenMP): tasks [0, ntasks) split into contiguous ranges. */
#ifndef MNNLITE_PARALLEL_H
#define MNNLITE_PARALLEL_H

/* Upper bound on threads; per-thread scratch arrays are sized by it. */
enum { MNNLITE_MAX_THREADS = 64 };

/* fn(ctx, begin, end, thread) runs once per thread on its range; thread 0 is the caller. */
typedef void (*mnnlite_range_fn)(void *ctx, int begin, int end, int thread);

/* Runs serially when nthreads <= 1, ntasks <= 1 or threads cannot be created. */
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx);

#endif
