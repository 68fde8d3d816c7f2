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

/* Threads are started per call (parallel.c), at ~50-70 us each on the machines we measured (a 2-core VM:
 * a 96->96 1x1 conv on 20x20 took 84 us on one thread and 150 us on two).  A thread is only worth it for
 * ~16 MFLOP of work or more (~200 us of our GEMM), so callers cap their threads by the work of the call:
 * ppocr_cls fp32 on two threads took 7.7 ms against 1.7 ms on one, now 2.2 ms; ppocr_det 30.4 -> 27.0 ms
 * (one thread 27.1 ms).  A thread pool would take the rest of the start-up cost (issue 14). */
#define MNNLITE_FLOPS_PER_THREAD 16.0e6

static inline int mnnlite_threads_for_work(int requested, double flops) {
    const double cap = flops / MNNLITE_FLOPS_PER_THREAD;
    if (requested <= 1 || cap < 2.0) return 1;
    return cap < (double)requested ? (int)cap : requested;
}

/* fn(ctx, begin, end, thread) runs once per thread on its range; thread 0 is the caller. */
typedef void (*mnnlite_range_fn)(void *ctx, int begin, int end, int thread);

/* Runs serially when nthreads <= 1, ntasks <= 1 or threads cannot be created. */
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx);

#endif
