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

/* Threads come from a persistent pool (parallel.c); handing a range to a worker still costs a few us (more
 * when the worker slept), so a call takes a thread only per MNNLITE_FLOPS_PER_THREAD of work.  Starting
 * threads per call (~50-70 us each on a 2-core VM) needed 16 MFLOP per thread; with the pool 2 MFLOP pays
 * (idle 2-core VM, two threads: a 6.6 MFLOP 1x1 conv 81 -> 42 us; ppocr_det 25.0 -> 23.0 ms and mobilenet
 * 7.0 -> 5.8 ms against 1-2 % at 16 MFLOP).  Callers size per-thread buffers by this count too. */
#ifndef MNNLITE_FLOPS_PER_THREAD  /* a build may set it (-D) to measure another split size */
#define MNNLITE_FLOPS_PER_THREAD 2.0e6
#endif

static inline int mnnlite_threads_for_work(int requested, double flops) {
    const double cap = flops / MNNLITE_FLOPS_PER_THREAD;
    if (requested <= 1 || cap < 2.0) return 1;
    return cap < (double)requested ? (int)cap : requested;
}

/* fn(ctx, begin, end, thread) runs once per thread on its range; thread 0 is the caller. */
typedef void (*mnnlite_range_fn)(void *ctx, int begin, int end, int thread);

/* Runs serially when nthreads <= 1, ntasks <= 1 or threads cannot be created. */
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx);

/* This extension's pool (each shared object linking parallel.c has its own): for tests and benchmarks. */
typedef struct {
    int workers;                  /* pool threads started */
    long long calls;              /* parallel calls the pool served */
    long long ranges_on_workers;  /* ranges run by pool threads */
} mnnlite_parallel_counts;

void mnnlite_parallel_stats(mnnlite_parallel_counts *out);

#endif
