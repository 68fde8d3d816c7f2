/* A minimal parallel-for on pthreads (no OpenMP): tasks [0, ntasks) split into contiguous ranges. */
#ifndef MNNLITE_PARALLEL_H
#define MNNLITE_PARALLEL_H

/* Upper bound on threads; per-thread scratch arrays are sized by it. */
enum { MNNLITE_MAX_THREADS = 64 };

/* Threads worth starting for ntasks tasks: requested, clamped to [1, MNNLITE_MAX_THREADS] and to ntasks
 * (ntasks <= 0 means "no limit from the tasks"). */
static inline int mnnlite_thread_count(int requested, int ntasks) {
    int n = requested < 1 ? 1 : requested > MNNLITE_MAX_THREADS ? MNNLITE_MAX_THREADS : requested;
    return ntasks > 0 && n > ntasks ? ntasks : n;
}

/* fn(ctx, begin, end, thread) runs once per thread on its range; thread 0 is the caller. */
typedef void (*mnnlite_range_fn)(void *ctx, int begin, int end, int thread);

/* Runs serially when nthreads <= 1, ntasks <= 1 or threads cannot be created. */
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx);

#endif
