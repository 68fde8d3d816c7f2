/* clock_gettime and CLOCK_MONOTONIC under -std=c99 */
#define _POSIX_C_SOURCE 200809L

#include "parallel.h"

#if defined(_WIN32)
void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx) {
    (void)nthreads;
    if (ntasks > 0) fn(ctx, 0, ntasks, 0);
}

void mnnlite_parallel_stats(mnnlite_parallel_counts *out) {
    *out = (mnnlite_parallel_counts){0, 0, 0};
}
#else
#include <pthread.h>
#include <sched.h>
#include <time.h>

/* A persistent pool: each worker has a mailbox (its own range of the current call), so a worker never reads
 * another call's fields and the caller waits only for the workers the call uses.  Starting threads per call
 * cost ~50-70 us each on a 2-core VM (parallel.h), more than many kernel calls of our models take in total.
 *
 * Hand-off: the caller writes a mailbox, then publishes its `posted` generation (release); a worker spins a
 * while on `posted` (per-op gaps in the runtime are a few us of Python), then sleeps on `work_ready`.  The
 * worker runs its range, publishes `finished` and wakes the caller if it sleeps on `work_done`.  Every
 * sleeper re-checks its condition under `lock`, and every waker takes `lock` before signalling, so no wake-up
 * is lost.  One caller at a time owns the pool (`busy`); a second concurrent caller (another Python thread
 * with the GIL released, or a nested call) starts threads of its own, as before the pool existed.  The pool
 * lives in each extension that links this file (no state shared between shared objects).
 *
 * After fork() only the forking thread exists in the child: an atfork handler forgets the workers and
 * re-initialises the locks, so the child starts a fresh pool on its first parallel call (calibration workers
 * are forked processes). */

typedef struct {
    mnnlite_range_fn fn;
    void *ctx;
    int begin, end, thread;
    unsigned long posted;   /* generation of the call this mailbox holds; written last (release) */
    unsigned long finished; /* generation the worker completed (release) */
} mailbox;

/* Spin budgets, by the clock: a pause instruction takes ~10 cycles on some x86 cores and ~140 on others.
 * An idle worker spins through the Python gap between two kernel calls (a few us to tens of us); the caller
 * spins through the imbalance between equal ranges.  Past the budget both sleep (a futex wake-up, ~5-50 us). */
#define WORKER_SPIN_NS 100000L
#define CALLER_SPIN_NS 200000L

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work_ready, work_done;
    int workers;               /* started workers: mailboxes 1..workers */
    int busy;                  /* a caller owns the pool (atomic flag) */
    int atfork_registered;
    unsigned long generation;  /* of the last call, owned by the caller holding `busy` */
    long long calls, ranges_on_workers;
    mailbox box[MNNLITE_MAX_THREADS];
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spins until *word != not_this or the budget is spent; returns the last value read.  Past the first
 * few hundred pauses each round yields the core: on a machine with more runnable threads than cores the
 * thread being waited for may need exactly this core (measured on a loaded 2-core VM: a 2-thread conv of
 * 226 MFLOP took 4.5x its 1-thread time with pause-only spinning). */
static unsigned long spin_while_equal(const unsigned long *word, unsigned long not_this, long budget_ns) {
    unsigned long v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    long long deadline = 0;
    for (int i = 0; v == not_this; i++) {
        if ((i & 63) == 0) {
            long long t = now_ns();
            if (deadline == 0) deadline = t + budget_ns;
            else if (t > deadline) break;
        }
        if (i < 256) cpu_relax();
        else sched_yield();
        v = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    }
    return v;
}

static void *pool_worker(void *arg) {
    mailbox *m = (mailbox *)arg;
    /* not `posted`: the first call may already be posted when this thread starts; `finished` is written
     * by this thread only, and was set before it was created */
    unsigned long seen = m->finished;
    for (;;) {
        unsigned long g = spin_while_equal(&m->posted, seen, WORKER_SPIN_NS);
        if (g == seen) {
            pthread_mutex_lock(&pool.lock);
            while ((g = __atomic_load_n(&m->posted, __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&pool.work_ready, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = g;
        m->fn(m->ctx, m->begin, m->end, m->thread);
        __atomic_store_n(&m->finished, g, __ATOMIC_RELEASE);
        pthread_mutex_lock(&pool.lock);
        pthread_cond_broadcast(&pool.work_done);
        pthread_mutex_unlock(&pool.lock);
    }
    return NULL;
}

static void pool_forget_after_fork(void) {
    /* the child has no workers; locks may have been held by threads that no longer exist */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.work_ready, NULL);
    pthread_cond_init(&pool.work_done, NULL);
    pool.workers = 0;
    pool.busy = 0;
    pool.calls = pool.ranges_on_workers = 0;
}

/* Starts workers until `want` exist (caller owns the pool); returns how many exist. */
static int pool_grow(int want) {
    if (!pool.atfork_registered) {
        if (pthread_atfork(NULL, NULL, pool_forget_after_fork) != 0) return 0;
        pool.atfork_registered = 1;
    }
    while (pool.workers < want) {
        int w = pool.workers + 1;
        mailbox *m = &pool.box[w];
        m->posted = m->finished = pool.generation;
        pthread_t tid;
        pthread_attr_t attr;
        if (pthread_attr_init(&attr) != 0) break;
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&tid, &attr, pool_worker, m);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pool.workers = w;
    }
    return pool.workers;
}

static inline int range_begin(int ntasks, int t, int nthreads) {
    return (int)((long long)ntasks * t / nthreads);
}

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

/* The pool is taken: threads of this call's own, started and joined here. */
static void parallel_for_own_threads(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx) {
    job jobs[MNNLITE_MAX_THREADS];
    pthread_t tids[MNNLITE_MAX_THREADS];
    int started[MNNLITE_MAX_THREADS] = {0};
    for (int t = 0; t < nthreads; t++)
        jobs[t] = (job){fn, ctx, range_begin(ntasks, t, nthreads), range_begin(ntasks, t + 1, nthreads), t};
    for (int t = 1; t < nthreads; t++) started[t] = pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (int t = 1; t < nthreads; t++) {
        if (started[t]) pthread_join(tids[t], NULL);
        else run_job(&jobs[t]);  /* could not start a thread: do its share here */
    }
}

void mnnlite_parallel_for(int nthreads, int ntasks, mnnlite_range_fn fn, void *ctx) {
    if (nthreads > ntasks) nthreads = ntasks;
    if (nthreads > MNNLITE_MAX_THREADS) nthreads = MNNLITE_MAX_THREADS;
    if (nthreads <= 1) {
        if (ntasks > 0) fn(ctx, 0, ntasks, 0);
        return;
    }
    int expected = 0;
    if (!__atomic_compare_exchange_n(&pool.busy, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        parallel_for_own_threads(nthreads, ntasks, fn, ctx);
        return;
    }
    int workers = pool_grow(nthreads - 1);
    unsigned long g = ++pool.generation;
    unsigned long before[MNNLITE_MAX_THREADS];
    pool.calls++;
    for (int t = 1; t < nthreads && t <= workers; t++) {
        mailbox *m = &pool.box[t];
        before[t] = m->finished;  /* == its last `posted`: every earlier call waited for its workers */
        m->fn = fn;
        m->ctx = ctx;
        m->begin = range_begin(ntasks, t, nthreads);
        m->end = range_begin(ntasks, t + 1, nthreads);
        m->thread = t;
        __atomic_store_n(&m->posted, g, __ATOMIC_RELEASE);
        pool.ranges_on_workers++;
    }
    pthread_mutex_lock(&pool.lock);
    pthread_cond_broadcast(&pool.work_ready);
    pthread_mutex_unlock(&pool.lock);

    fn(ctx, range_begin(ntasks, 0, nthreads), range_begin(ntasks, 1, nthreads), 0);
    for (int t = workers + 1; t < nthreads; t++)  /* threads that could not be started: their share here */
        fn(ctx, range_begin(ntasks, t, nthreads), range_begin(ntasks, t + 1, nthreads), t);

    for (int t = 1; t < nthreads && t <= workers; t++) {
        mailbox *m = &pool.box[t];
        if (spin_while_equal(&m->finished, before[t], CALLER_SPIN_NS) != g) {
            pthread_mutex_lock(&pool.lock);
            while (__atomic_load_n(&m->finished, __ATOMIC_ACQUIRE) != g)
                pthread_cond_wait(&pool.work_done, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
}

void mnnlite_parallel_stats(mnnlite_parallel_counts *out) {
    out->workers = pool.workers;
    out->calls = pool.calls;
    out->ranges_on_workers = pool.ranges_on_workers;
}
#endif
