/* KL feature calibration kernels (see kl_calib.h).
 *
 * The threshold search follows kl_threshold_ref (mnnlite/quant/feature/kl.py): a float64 estimate
 * of every candidate's divergence from prefix sums, then MNN's float32 evaluation of the candidates
 * that can still win.  The screening here keeps a superset of the reference's candidates (its rule,
 * widened by a tolerance far above the float64 rounding differences between the two), and the
 * float32 evaluation repeats the reference's operations one by one, so both return the same bin.
 * This file is compiled in ISO C mode (setup.py: -std=c11): GCC contracts nothing into FMAs; clang
 * is told below.  Each float32 product and sum therefore rounds on its own, as in MNN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kl_calib.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* The hot loops are written once (KLC_INLINE bodies) and instantiated per instruction set below, so
 * the same C code is vectorised for SSE2, AVX2 or AVX-512 and chosen at run time (klc_threshold's isa).
 * No "fma" in the targets, and contraction stays off (-std=c11, see above): each lane rounds every
 * operation as the scalar code does, so all paths give the same estimates and the same exact values. */
#if defined(__GNUC__)
#define KLC_INLINE static inline __attribute__((always_inline))
#else
#define KLC_INLINE static inline
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#define KLC_SIMD 1
#define KLC_AVX2 __attribute__((target("avx2")))
#define KLC_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#else
#define KLC_SIMD 0
#endif

void klc_range(const float *x, size_t n, float *lo, float *hi) {
    /* independent lanes so the compiler can keep several comparisons in flight; a NaN compares
     * false and never replaces a bound */
    float l[8], h[8];
    for (int j = 0; j < 8; j++) l[j] = *lo, h[j] = *hi;
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            const float v = x[k + j];
            l[j] = v < l[j] ? v : l[j];
            h[j] = v > h[j] ? v : h[j];
        }
    for (; k < n; k++) {
        const float v = x[k];
        l[0] = v < l[0] ? v : l[0];
        h[0] = v > h[0] ? v : h[0];
    }
    for (int j = 0; j < 8; j++) {
        *lo = l[j] < *lo ? l[j] : *lo;
        *hi = h[j] > *hi ? h[j] : *hi;
    }
}

/* Values fall into bins without a data-dependent branch (half of a ReLU output is 0: a branch there
 * mispredicts every other value), the skipped ones into a spare bin; four sub-histograms take turns
 * so that runs of equal bins do not wait on each other's increments.  Sub-counts are 32-bit, flushed
 * into the int64 totals every 2^30 values. */
enum { HIST_LANES = 4, HIST_STACK_BINS = 4096, HIST_CHUNK = 1 << 30 };

static void histogram_direct(const float *x, size_t n, float interval, int64_t *counts, int bins) {
    const float top = (float)(bins - 1);
    for (size_t k = 0; k < n; k++) {
        const float ax = fabsf(x[k]);
        if (ax > 1e-6f) {                      /* false for NaN */
            float t = ax * interval;
            t = t < top ? t : top;             /* a NaN product (inf * 0) takes the last bin */
            counts[(int)t]++;
        }
    }
}

void klc_histogram(const float *x, size_t n, float interval, int64_t *counts, int bins) {
    if (bins > HIST_STACK_BINS) {
        histogram_direct(x, n, interval, counts, bins);
        return;
    }
    uint32_t sub[HIST_LANES][HIST_STACK_BINS + 1];
    const float top = (float)(bins - 1);
    for (size_t start = 0; start < n; start += HIST_CHUNK) {
        const size_t end = n - start > HIST_CHUNK ? start + HIST_CHUNK : n;
        memset(sub, 0, sizeof sub);
        size_t k = start;
        for (; k + HIST_LANES <= end; k += HIST_LANES)
            for (int j = 0; j < HIST_LANES; j++) {
                const float ax = fabsf(x[k + j]);
                float t = ax * interval;
                t = t < top ? t : top;             /* NaN products take the last bin, as above */
                const int keep = -(int)(ax > 1e-6f);              /* 0 for NaN: the spare bin */
                sub[j][bins ^ (((int)t ^ bins) & keep)]++;        /* bit select: compilers keep it branch free */
            }
        for (; k < end; k++) {
            const float ax = fabsf(x[k]);
            float t = ax * interval;
            t = t < top ? t : top;
            sub[0][bins ^ (((int)t ^ bins) & -(int)(ax > 1e-6f))]++;
        }
        for (int b = 0; b < bins; b++)
            counts[b] += (int64_t)sub[0][b] + sub[1][b] + sub[2][b] + sub[3][b];
    }
}

/* ---------------------------------------------------------------------------------- threshold */

/* log(x) for positive, normal, finite x within a few ulp (checked against libm in the tests): the
 * atanh series of m in [sqrt(1/2), sqrt(2)), x = 2^k m.  Branch-free, so loops over it vectorise;
 * libm's log is several times slower and the search takes ~10^5 logarithms per histogram. */
KLC_INLINE double fast_log(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    const uint64_t kb = (b - 0x3fe6a09e667f3bcdULL + (1023ULL << 52)) >> 52;      /* k + 1023 */
    const uint64_t mb = b - ((kb - 1023) << 52);
    const uint64_t kd = 0x4330000000000000ULL | kb;                                  /* 2^52 + kb */
    double m, k;
    memcpy(&m, &mb, sizeof m);
    memcpy(&k, &kd, sizeof k);
    k -= 4503599627370496.0 + 1023.0;
    const double f = m - 1.0, s = f / (2.0 + f), z = s * s;
    /* 2 atanh(s) = 2 (s + s^3/3 + ... + s^15/15): |s| < 0.172, so the next term is < 4e-14 of the
     * sum (the exact float32 logs below need 2^-42); evaluated in Estrin's form for a short chain */
    const double z2 = z * z, z4 = z2 * z2;
    const double p = (2.0 + z * (2.0 / 3)) + z2 * (2.0 / 5 + z * (2.0 / 7))
                     + z4 * ((2.0 / 9 + z * (2.0 / 11)) + z2 * (2.0 / 13 + z * (2.0 / 15)));
    return k * 6.93147180369123816490e-01 + (s * p + k * 1.90821492927058770002e-10);   /* ln 2 hi + lo */
}

/* & rather than &&: one branch-free test, which keeps log_or_zero's first loop vectorisable */
static inline int normal64(double x) {
    return (x >= 2.2250738585072014e-308) & (x <= 1.7976931348623157e308);
}
static inline int normal32(float x) { return x >= 1.17549435e-38f && x <= 3.40282347e38f; }

/* out[k] = log(x[k]) where x[k] > 0, else 0.  The first loop runs fast_log on every value (branch
 * free: it vectorises) and notes whether any is out of its domain; only then does the second redo
 * those with libm. */
KLC_INLINE void log_or_zero(const double *x, double *out, int n) {
    uint64_t odd = 0;                           /* 64-bit, as the comparison masks of doubles */
    for (int k = 0; k < n; k++) {
        out[k] = fast_log(x[k]);
        odd |= (uint64_t)!normal64(x[k]);
    }
    if (odd)
        for (int k = 0; k < n; k++)
            if (!normal64(x[k])) out[k] = x[k] > 0 ? log(x[k]) : 0.0;
}

/* out[k] = (float)log((double)r[k]) exactly as with libm's log, or NaN when this cannot tell (see
 * log32_fix); returns whether any r[k] needs log32_fix.  fast_log is within 2^-42 of the true
 * logarithm, so when it is farther than that from the midpoints between its float neighbours, it and
 * libm's log round to the same float.  Branch free (it vectorises): the rare unsafe values and r that
 * is not a positive normal float (whose result here is garbage) are for log32_fix. */
KLC_INLINE int logf_exact(const float *restrict r, float *restrict out, int n) {
    uint32_t fix = 0;
    for (int k = 0; k < n; k++) {
        const double y = fast_log((double)r[k]);
        const float f = (float)y, g = fabsf(f);
        uint32_t gb, fb;
        memcpy(&gb, &g, sizeof gb);
        memcpy(&fb, &f, sizeof fb);
        const uint32_t ub = gb + 1, db = gb - 1;
        float up, dn;
        memcpy(&up, &ub, sizeof up);
        memcpy(&dn, &db, sizeof dn);
        const double a = fabs(y), err = a * 0x1p-42;
        const double below = a - err - 0.5 * ((double)g + dn), above = 0.5 * ((double)g + up) - (a + err);
        uint64_t bb, ab;
        memcpy(&bb, &below, sizeof bb);
        memcpy(&ab, &above, sizeof ab);
        /* unsafe: a margin is negative or zero-signed, or f is 0 (only for r near 1) */
        const uint32_t bad = (uint32_t)((bb | ab) >> 63) | (uint32_t)(below == 0) | (uint32_t)(above == 0)
                             | (uint32_t)(gb == 0);
        fb |= 0x7fc00000u & (0u - bad);
        memcpy(&out[k], &fb, sizeof fb);
        /* log32_fix's test: r is not a positive normal float, or the NaN set just above */
        uint32_t rb;
        memcpy(&rb, &r[k], sizeof rb);
        fix |= bad | (uint32_t)(rb - 0x00800000u >= 0x7f000000u);
    }
    return fix != 0;
}

static inline float log32_fix(float r, float l) {
    return normal32(r) && !isnan(l) ? l : (float)log((double)r);
}

/* Candidate i's target bin j spans [s, e) = [j i, (j + 1) i) in units of 1/T: whole source bins
 * lu..rl-1, a partial bin lu-1 of weight (T - s mod T)/T when s mod T != 0 and a partial bin rl of
 * weight (e mod T)/T when e mod T != 0.  Kept as remainders (sr, er), found without divisions. */
typedef struct {
    int lu, rl, sr, er;
} span_t;

static void spans_of(int i, int T, span_t *sp) {
    const int qi = i / T, ri = i % T;
    int sq = 0, sr = 0;
    for (int j = 0; j < T; j++) {
        int eq = sq + qi, er = sr + ri;
        if (er >= T) er -= T, eq++;
        sp[j].lu = sq + (sr > 0);
        sp[j].rl = eq;
        sp[j].sr = sr;
        sp[j].er = er;
        sq = eq, sr = er;
    }
}

typedef struct {
    int n, T;
    const float *h;
    const double *h64, *c, *hlh, *habs, *wd;   /* wd[r] = r / T */
    const int *nz;
    const double *nzd, *hz, invT;               /* nzd[k] = nz[k], hz[k] = h[k] != 0 */
    span_t *sp;
    double *v, *logv, *inside, *wr, *hr, *e, *loge;
    double *gr, *gs, *gc, *gh, *gz, *gf;        /* estimate_fast: per span end, T + 1 each */
    const float *wf;                            /* wf[r] = (float)(r / T) */
    float *vf, *P, *E, *R, *L;
} kl_ws;

/* kl_threshold_ref's _kl_estimates for candidate i: the float64 divergence, the spread (sum of the
 * magnitudes of its terms, which scales every rounding error) and whether it is degenerate.  For
 * histograms with an infinite or NaN bin, whose NaN terms must land exactly where the reference's
 * do (estimate_fast reads fewer bins); the others take estimate_fast. */
static void estimate_one(const kl_ws *w, int i, float tail, double *est, double *spread, unsigned char *deg) {
    const int n = w->n, T = w->T;
    const double *h = w->h64;
    span_t *sp = w->sp;
    spans_of(i, T, sp);
    double last_count = 0;
    for (int j = 0; j < T; j++) {
        const int lu = sp[j].lu, rl = sp[j].rl, has_l = sp[j].sr > 0, has_r = sp[j].er > 0;
        const double wl = has_l ? w->wd[T - sp[j].sr] : 0.0, wr = w->wd[sp[j].er];
        const double hl = h[lu > 0 ? lu - 1 : 0], hr = h[rl < n - 1 ? rl : n - 1];
        const double inside = w->c[rl] - w->c[lu];
        const int lpart = has_l && hl != 0, rpart = has_r && hr != 0;
        const double q = wl * hl * has_l + wr * hr * has_r + inside;
        const double count = wl * lpart + wr * rpart + (double)(w->nz[rl] - w->nz[lu]);
        w->v[j] = count > 0 ? q / count : 0.0;
        w->inside[j] = inside;
        w->wr[j] = wr;
        w->hr[j] = rpart ? hr : 0.0;
        last_count = count;
    }
    log_or_zero(w->v, w->logv, T);
    /* the source bin holding the boundary between j and j + 1 expands to a blend of both */
    for (int j = 0; j < T; j++) {
        double e = w->v[j] * w->wr[j];
        if (j + 1 < T) e += w->v[j + 1] * (1 - w->wr[j]);
        w->e[j] = w->hr[j] != 0 && e > 0 ? e : 0.0;
    }
    log_or_zero(w->e, w->loge, T);
    double pe = 0, pe_abs = 0;
    for (int j = 0; j < T; j++) {
        const double t = w->hr[j] * w->loge[j];
        pe += w->logv[j] * w->inside[j] + t;
        pe_abs += fabs(w->logv[j]) * w->inside[j] + fabs(t);
    }
    const double last = (double)(w->h[i - 1] + tail);      /* MNN's float32 tail bin */
    const double last_log = last > 0 ? log(last) : 0.0;
    const double extra = last - h[i - 1];
    pe += extra * w->logv[T - 1];
    pe_abs += fabs(extra * w->logv[T - 1]);
    const double pp = w->hlh[i - 1] + last * last_log;
    *est = pp - pe;
    *spread = w->habs[i - 1] + fabs(last * last_log) + pe_abs;
    *deg = last < 0 || h[i - 1] == 0 || !isfinite(*est) || last_count == 0;
}

/* Terms summed in this many independent partial sums, so the sums vectorise (float64 estimates: the
 * order of their sums is within the tolerance, see EST_TOL). */
#define EST_LANES 8

/* estimate_one for a histogram of finite bins, in loops without branches (they vectorise).  Span j
 * ends at e_j = (j + 1) i (units of 1/T) in source bin floor(e_j / T), computed in closed form rather
 * than by spans_of's recurrence.  Its start is span j - 1's end, so the prefix sums are read at span
 * ends only: the first whole bin of span j is span j - 1's end bin, or the one after it when that bin
 * is split, and c[k + 1] = c[k] + h[k], nz[k + 1] = nz[k] + (h[k] != 0) is how the prefix sums were
 * built, which gives the same values.  With finite bins every term the reference multiplies by a zero
 * flag is zero, so the bins it reads at absent edges are not needed.  Flags are 0.0 / 1.0 factors:
 * GCC keeps floating-point comparisons as branches (-ftrapping-math), which would stop the
 * vectoriser. */

/* Span ends jj = 0..T: end bin floor(jj i / T), remainder jj i mod T and whether it is nonzero, and
 * the prefix sums and bin there.  jj i < 2^48 (bins <= 2^24) is exact, and (jj i + 1/2) / T is at
 * least 1/(2T) from an integer, far more than the product's rounding: the truncation is the floor.
 * dense (no bin is 0, as always after bin_values): nz[k] = k, so two of the four gathers go. */
KLC_INLINE void span_ends(int T, double di, double invT, int dense, const double *restrict c,
                          const double *restrict h, const double *restrict nzd, const double *restrict hz,
                          double *restrict gr, double *restrict gs, double *restrict gc, double *restrict gh,
                          double *restrict gz, double *restrict gf) {
    for (int jj = 0; jj <= T; jj++) {
        const double ed = (double)jj * di;
        const int rl = (int)((ed + 0.5) * invT);
        const int r = (int)(ed - (double)rl * T);
        gr[jj] = r;
        gs[jj] = (int)((unsigned)-r >> 31);    /* r > 0 */
        gc[jj] = c[rl];
        gh[jj] = h[rl];
        gz[jj] = dense ? (double)rl : nzd[rl];
        gf[jj] = dense ? 1.0 : hz[rl];
    }
}

/* Per span: v (its mean over nonzero source bins), the prefix-sum mass of its whole bins, the weight
 * of its split right edge and that edge bin (0 unless split and nonzero); cnt = its weighted count of
 * nonzero bins. */
KLC_INLINE void span_values(int T, double invT, const double *restrict gr, const double *restrict gs,
                            const double *restrict gc, const double *restrict gh, const double *restrict gz,
                            const double *restrict gf, double *restrict v, double *restrict inside,
                            double *restrict wr, double *restrict hr, double *restrict cnt) {
    const double Td = T;
    for (int j = 0; j < T; j++) {
        const double has_l = gs[j], has_r = gs[j + 1];
        const double wl = (Td - gr[j]) * invT, wrj = gr[j + 1] * invT;
        const double hl = gh[j], hrj = gh[j + 1];
        const double lpart = has_l * gf[j], rpart = has_r * gf[j + 1];
        const double in = gc[j + 1] - (gc[j] + has_l * hl);
        const double q = wl * hl * has_l + wrj * hrj * has_r + in;
        const double count = wl * lpart + wrj * rpart + (gz[j + 1] - (gz[j] + lpart));
        /* count is 0 or >= 1/T, so adding 1e-300 changes nothing but 0, where q is 0 too (all its
         * bins are) and v must be 0 */
        v[j] = q / (count + 1e-300);
        inside[j] = in;
        wr[j] = wrj;
        hr[j] = rpart * hrj;
        cnt[j] = count;
    }
}

KLC_INLINE void estimate_fast(const kl_ws *w, int i, float tail, double *est, double *spread,
                              unsigned char *deg) {
    const int T = w->T;
    const double *h = w->h64;
    double *v = w->v, *logv = w->logv, *inside = w->inside, *wr = w->wr, *hr = w->hr, *e = w->e;
    double *loge = w->loge;
    if (w->nz[w->n] == w->n)         /* two instances, so the test is not in the loop */
        span_ends(T, (double)i, w->invT, 1, w->c, h, w->nzd, w->hz, w->gr, w->gs, w->gc, w->gh, w->gz, w->gf);
    else
        span_ends(T, (double)i, w->invT, 0, w->c, h, w->nzd, w->hz, w->gr, w->gs, w->gc, w->gh, w->gz, w->gf);
    span_values(T, w->invT, w->gr, w->gs, w->gc, w->gh, w->gz, w->gf, v, inside, wr, hr, e);
    const double last_count = e[T - 1];
    log_or_zero(v, logv, T);
    /* the source bin holding the boundary between j and j + 1 expands to a blend of both.  Where the
     * reference takes no log (the edge is not split, or its bin is 0) hr[j] is 0 and the term is 0
     * whatever e[j] is; a blend <= 0 gets log 0 as in the reference.  The last span is never split. */
    for (int j = 0; j < T - 1; j++) e[j] = v[j] * wr[j] + v[j + 1] * (1 - wr[j]);
    e[T - 1] = 1.0;
    log_or_zero(e, loge, T);
    double pl[EST_LANES] = {0}, al[EST_LANES] = {0};
    int j = 0;
#if defined(__GNUC__)
    /* vector types, so the partial sums stay in registers (arrays of them go through memory) */
    typedef double vd __attribute__((vector_size(EST_LANES * sizeof(double))));
    typedef uint64_t vu __attribute__((vector_size(EST_LANES * sizeof(double))));
    const vu nosign = (vu){0} + 0x7fffffffffffffffULL;
    vd pv = {0}, av = {0};
    for (; j + EST_LANES <= T; j += EST_LANES) {
        vd a, b, x, y;
        memcpy(&a, logv + j, sizeof a);
        memcpy(&b, inside + j, sizeof b);
        memcpy(&x, hr + j, sizeof x);
        memcpy(&y, loge + j, sizeof y);
        const vd t = x * y;
        pv += a * b + t;
        av += (vd)((vu)a & nosign) * b + (vd)((vu)t & nosign);
    }
    memcpy(pl, &pv, sizeof pl);
    memcpy(al, &av, sizeof al);
#endif
    for (; j + EST_LANES <= T; j += EST_LANES)
        for (int l = 0; l < EST_LANES; l++) {
            const double t = hr[j + l] * loge[j + l];
            pl[l] += logv[j + l] * inside[j + l] + t;
            al[l] += fabs(logv[j + l]) * inside[j + l] + fabs(t);
        }
    for (; j < T; j++) {
        const double t = hr[j] * loge[j];
        pl[0] += logv[j] * inside[j] + t;
        al[0] += fabs(logv[j]) * inside[j] + fabs(t);
    }
    double pe = 0, pe_abs = 0;
    for (int l = 0; l < EST_LANES; l++) pe += pl[l], pe_abs += al[l];
    const double last = (double)(w->h[i - 1] + tail);      /* MNN's float32 tail bin */
    const double last_log = last > 0 ? log(last) : 0.0;
    const double extra = last - h[i - 1];
    pe += extra * logv[T - 1];
    pe_abs += fabs(extra * logv[T - 1]);
    const double pp = w->hlh[i - 1] + last * last_log;
    *est = pp - pe;
    *spread = w->habs[i - 1] + fabs(last * last_log) + pe_abs;
    *deg = last < 0 || h[i - 1] == 0 || !isfinite(*est) || last_count == 0;
}

/* MNN's float32 divergence of candidate i, with the operations of kl_threshold_ref's _kl_float32
 * (which are MNN's, in MNN's order). */
KLC_INLINE float kl_exact(const kl_ws *w, int i, float tail) {
    const int n = w->n, T = w->T;
    const float *h = w->h, *wf = w->wf;
    float *v = w->vf, *P = w->P, *E = w->E, *R = w->R;
    span_t *sp = w->sp;
    spans_of(i, T, sp);
    for (int j = 0; j < T; j++) {
        const int lu = sp[j].lu, rl = sp[j].rl, has_l = sp[j].sr > 0, has_r = sp[j].er > 0;
        const float wl = wf[T - sp[j].sr], wr = wf[sp[j].er];
        const float hl = h[lu > 0 ? lu - 1 : 0], hr = h[rl < n - 1 ? rl : n - 1];
        float q = has_l ? wl * hl : 0.0f;
        if (has_r) q = q + wr * hr;
        int nonzero = 0;
        for (int k = lu; k < rl; k++) {
            q = q + h[k];
            nonzero += h[k] != 0;
        }
        /* the reference adds the edge weights in float32, then the whole-bin count in float64 */
        const float edges = (has_l && hl != 0 ? wl : 0.0f) + (has_r && hr != 0 ? wr : 0.0f);
        const float count = (float)((double)edges + nonzero);
        v[j] = count > 0 ? q / count : 0.0f;
    }
    /* expand back: bins inside target bin j get v[j]; the bin holding the boundary between j and
     * j + 1 gets v[j] * (its part in j) + v[j + 1] * (its part in j + 1), added in that order.  Each
     * span's run is written with the same length W >= any span's whole bins (a fixed trip count the
     * branch predictor follows); what runs past a span is overwritten by the spans after it, or lies
     * past bin i - 1 (E has room).  Empty bins are zeroed at the end. */
    const int W = i / T + 1;
    for (int j = 0; j < T; j++) {
        const float vj = v[j];
        float *restrict run = E + sp[j].lu;
        for (int t = 0; t < W; t++) run[t] = vj;
        if (sp[j].er > 0) E[sp[j].rl] = v[j] * wf[sp[j].er] + v[j + 1] * wf[T - sp[j].er];
    }
    for (int k = 0; k < i; k++) E[k] = h[k] != 0 ? E[k] : 0.0f;
    memcpy(P, h, (size_t)i * sizeof *P);
    P[i - 1] = P[i - 1] + tail;
    for (int k = 0; k < i; k++) R[k] = P[k] / E[k];     /* 0 / 0 and x / 0 are not used */
    float *restrict L = w->L;
    if (logf_exact(R, L, i))
        for (int k = 0; k < i; k++) L[k] = log32_fix(R[k], L[k]);
    /* the terms first (vectorised), then their sum in order; a skipped term is added as -0, which
     * leaves every sum as it is */
    for (int k = 0; k < i; k++) R[k] = P[k] != 0 ? (E[k] == 0 ? 1.0f : P[k] * L[k]) : -0.0f;
    float kl = 0.0f;
    for (int k = 0; k < i; k++) kl = kl + R[k];
    return kl;
}

/* All candidates' estimates (est, spread, deg indexed by candidate - T), and the exact divergence of
 * one candidate, per instruction set. */
KLC_INLINE void estimate_all(const kl_ws *w, const float *tails, int nc, double *est, double *spread,
                             unsigned char *deg) {
    for (int m = 0; m < nc; m++) estimate_fast(w, w->T + m, tails[m], &est[m], &spread[m], &deg[m]);
}

#define KLC_VARIANT(suffix, attr)                                                                     \
    attr static void estimate_all_##suffix(const kl_ws *w, const float *tails, int nc, double *est,  \
                                           double *spread, unsigned char *deg) {                     \
        estimate_all(w, tails, nc, est, spread, deg);                                                \
    }                                                                                                 \
    attr static float kl_exact_##suffix(const kl_ws *w, int i, float tail) { return kl_exact(w, i, tail); }

KLC_VARIANT(scalar, )
#if KLC_SIMD
KLC_VARIANT(avx2, KLC_AVX2)
KLC_VARIANT(avx512, KLC_AVX512)
#endif

/* k-th smallest (0-based) of a[0..n-1] (finite values), reordering a. */
static double kth_smallest(double *a, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const double pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                const double t = a[i];
                a[i] = a[j], a[j] = t;
                i++, j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return a[k];
}

/* Relative tolerance on an estimate (times its spread): the reference's float64 sums run in another
 * order, its log may differ by an ulp and its edge weights r / T by an ulp (estimate_fast multiplies
 * by 1 / T), which moves an estimate by ~1e-13 of its spread. */
#define EST_TOL 1e-9

int klc_threshold(const float *hist, int n, int T, int exact_top, int isa) {
    const int nc = n - T;
    if (T < 1 || nc < 1) return -2;         /* the wrapper checks first; never index outside hist */
    const size_t nd = (size_t)6 * (n + 1) + (size_t)7 * (T + 1) + (size_t)7 * T + (size_t)4 * nc;
    const size_t nf = (size_t)nc + (T + 1) + T + (size_t)4 * n + (size_t)(n / T + 2);   /* E: n + n / T + 2 */
    double *dbuf = malloc(nd * sizeof(double));
    float *fbuf = malloc(nf * sizeof(float));
    int *nz = malloc((size_t)(n + 1) * sizeof(int));
    span_t *sp = malloc((size_t)T * sizeof(span_t));
    unsigned char *cbuf = malloc(2 * (size_t)nc);
    if (!dbuf || !fbuf || !nz || !sp || !cbuf) {
        free(dbuf), free(fbuf), free(nz), free(sp), free(cbuf);
        return -1;
    }
    double *h64 = dbuf, *c = h64 + (n + 1), *hlh = c + (n + 1), *habs = hlh + (n + 1);
    double *wd = habs + (n + 1), *v = wd + (T + 1), *logv = v + T, *inside = logv + T, *wr = inside + T;
    double *hr = wr + T, *e = hr + T, *loge = e + T, *nzd = loge + T, *hz = nzd + (n + 1);
    double *gr = hz + (n + 1), *gs = gr + (T + 1), *gc = gs + (T + 1), *gh = gc + (T + 1), *gz = gh + (T + 1);
    double *gf = gz + (T + 1), *est = gf + (T + 1), *bound = est + nc, *tol = bound + nc, *scratch = tol + nc;
    float *tails = fbuf, *wf = tails + nc, *vf = wf + (T + 1), *P = vf + T, *E = P + n;
    float *R = E + n + (n / T + 2), *L = R + n;
    unsigned char *deg = cbuf, *pick = deg + nc;

    /* tail mass past candidate i, updated as MNN does: after -= h[i] once candidate i is done */
    float tail = 0.0f;
    for (int k = T; k < n; k++) tail = tail + hist[k];
    tails[0] = tail;
    for (int m = 1; m < nc; m++) tails[m] = tails[m - 1] - hist[T + m - 1];

    for (int r = 0; r <= T; r++) {
        wd[r] = (double)r / T;
        wf[r] = (float)wd[r];
    }
    c[0] = hlh[0] = habs[0] = nzd[0] = 0;
    nz[0] = 0;
    int finite = 1;
    for (int k = 0; k < n; k++) {
        const double hk = hist[k], lg = hk > 0 ? log(hk) : 0.0;
        h64[k] = hk;
        c[k + 1] = c[k] + hk;
        nz[k + 1] = nz[k] + (hk != 0);
        nzd[k + 1] = nz[k + 1];
        hz[k] = hk != 0;
        hlh[k + 1] = hlh[k] + hk * lg;
        habs[k + 1] = habs[k] + hk * fabs(lg);
        finite &= fabs(hk) <= 3.40282347e38;
    }
    const kl_ws w = {n, T, hist, h64, c, hlh, habs, wd, nz, nzd, hz, 1.0 / T, sp, v, logv, inside, wr, hr, e,
                     loge, gr, gs, gc, gh, gz, gf, wf, vf, P, E, R, L};
    void (*estimate_all_isa)(const kl_ws *, const float *, int, double *, double *, unsigned char *) =
        estimate_all_scalar;
    float (*kl_exact_isa)(const kl_ws *, int, float) = kl_exact_scalar;
#if KLC_SIMD
    if (isa & MNNLITE_CPU_AVX512) {
        estimate_all_isa = estimate_all_avx512;
        kl_exact_isa = kl_exact_avx512;
    } else if (isa & MNNLITE_CPU_AVX2) {
        estimate_all_isa = estimate_all_avx2;
        kl_exact_isa = kl_exact_avx2;
    }
#else
    (void)isa;
#endif
    /* spreads first go to bound */
    if (finite) {
        estimate_all_isa(&w, tails, nc, est, bound, deg);
    } else {
        for (int m = 0; m < nc; m++) estimate_one(&w, T + m, tails[m], &est[m], &bound[m], &deg[m]);
    }
    int best = -1, ndeg = 0;
    double tolmax = 0;
    for (int m = 0; m < nc; m++) {
        const int i = T + m;
        const double spread = bound[m];
        bound[m] = ldexp(64 + (i + 8) * spread, -24);       /* float32 rounding, worst case */
        tol[m] = EST_TOL * (spread + fabs(est[m]));
        if (deg[m]) {
            ndeg++;
            continue;
        }
        if (best < 0 || est[m] < est[best]) best = m;
        if (tol[m] > tolmax) tolmax = tol[m];
    }

    if (best < 0) {
        memset(pick, 1, (size_t)nc);
    } else {
        /* the reference's best can be any candidate within the tolerance of ours: take the
         * largest bound among them for its margin */
        const double mbest = est[best];
        double bnear = 0;
        for (int m = 0; m < nc; m++)
            if (!deg[m] && est[m] - tol[m] <= mbest + tolmax && bound[m] > bnear) bnear = bound[m];
        /* the reference always evaluates its exact_top best scores, degenerate ones first */
        double kth = -INFINITY;
        if (ndeg < exact_top) {
            int cnt = 0;
            for (int m = 0; m < nc; m++)
                if (!deg[m]) scratch[cnt++] = est[m];
            const int k = exact_top - ndeg;
            kth = k >= cnt ? INFINITY : kth_smallest(scratch, cnt, k - 1);
        }
        for (int m = 0; m < nc; m++) {
            const double lower = est[m] - tol[m];
            pick[m] = deg[m] || lower <= kth + tolmax ||
                      lower <= mbest + tolmax + 0.05 * (1 + EST_TOL) * (bound[m] + bnear);
        }
    }

    float best_kl = 10000.0f;
    int best_i = T;
    for (int m = 0; m < nc; m++) {
        if (!pick[m]) continue;
        const float kl = kl_exact_isa(&w, T + m, tails[m]);
        if (kl < best_kl) {                    /* strict: the first minimum wins, NaN never */
            best_kl = kl;
            best_i = T + m;
        }
    }
    free(dbuf), free(fbuf), free(nz), free(sp), free(cbuf);
    return best_i;
}
