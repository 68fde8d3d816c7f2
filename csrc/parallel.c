#include "parallel.h"

#if defined(_WIN32)
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx) {
    (void)nthreads;
    if (ntasks > 0) fn(ctx, 0, ntasks, 0);
}
#else
#include <pthread.h>

typedef struct {
    mnnlite_range_fn fn;
    void *ctx;
    int begin, end, thread;
} job;

static void *run_job(void *arg) {
    job *j = (job *)arg;
    j->fn(j->ctx, j->begin, j->end, j->thread);
    return NULL;
}

/* Threads are created per call: a kernel call that is worth splitting takes far longer than
 * the ~20 us thread start-up, and no pool means no global state shared between extensions. */
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx) {
    if (nthreads > ntasks) nthreads = ntasks;
    if (nthreads > MNNLITE_MAX_THREADS) nthreads = MNNLITE_MAX_THREADS;
    if (nthreads <= 1) {
        if (ntasks > 0) fn(ctx, 0, ntasks, 0);
        return;
    }
    job jobs[MNNLITE_MAX_THREADS];
    pthread_t tids[MNNLITE_MAX_THREADS];
    int started[MNNLITE_MAX_THREADS] = {0};
    for (int t = 0; t < nthreads; t++) {
        jobs[t] = (job){fn, ctx, (int)((long long)ntasks * t / nthreads),
                        (int)((long long)ntasks * (t + 1) / nthreads), t};
    }
    for (int t = 1; t < nthreads; t++) started[t] = pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (int t = 1; t < nthreads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else run_job(&jobs[t]);  /* could not start a thread: do its share here */
    }
}
#endif
