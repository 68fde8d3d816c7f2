#include "conv.h"
#include "winograd.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "gemm.h"
#include "parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#endif

static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline int max_int(int a, int b) { return a > b ? a : b; }
static inline int round_up(int v, int m) { return (v + m - 1) / m * m; }
/* Floor and ceiling of a / b for b > 0 and any sign of a (C division truncates toward zero). */
static inline int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int ceil_div(int a, int b) { return -floor_div(-a, b); }

static inline float act_scalar(float v, int act) {
    if (act == MNNLITE_ACT_NONE) return v;
    v = v > 0.0f ? v : 0.0f;
    return (act == MNNLITE_ACT_RELU6 && v > 6.0f) ? 6.0f : v;
}

/* Indices t in [0, n) with 0 <= first + t * step < limit form the range [*lo, *hi). */
static void valid_range(int first, int step, int limit, int n, int *lo, int *hi) {
    *lo = min_int(n, max_int(0, ceil_div(-first, step)));
    *hi = max_int(*lo, min_int(n, ceil_div(limit - first, step)));
}

/* ---- im2col + GEMM ------------------------------------------------------------------------ */

/* dst[q] = src[q * step] for q < n. */
static void copy_strided(const float *src, int step, int n, float *dst) {
    for (int q = 0; q < n; q++) dst[q] = src[q * step];
}

#if defined(__x86_64__)
/* The stride-2 case with vector shuffles: scalar, it cost depthwise stride 2 more than the whole conv. */
TARGET_AVX512 static void copy_strided_avx512(const float *src, int step, int n, float *dst) {
    int q = 0;
    if (step == 2) {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        for (; q + 17 <= n; q += 16) {  /* reads src[2q .. 2q+31]; the last one used is 2(n-1) */
            __m512 lo = _mm512_loadu_ps(src + 2 * q), hi = _mm512_loadu_ps(src + 2 * q + 16);
            _mm512_storeu_ps(dst + q, _mm512_permutex2var_ps(lo, even, hi));
        }
    }
    for (; q < n; q++) dst[q] = src[q * step];
}
#endif

typedef void (*copy_strided_fn)(const float *src, int step, int n, float *dst);

static copy_strided_fn copy_strided_select(int isa) {
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) return copy_strided_avx512;
#endif
    (void)isa;
    return copy_strided;
}

typedef struct {
    const mnnlite_conv_params *p;
    const float *x;  /* channel 0 of the group, in one image */
    copy_strided_fn copy;
} im2col_ctx;

/* cnt consecutive output pixels from n of the im2col row (c, kh, kw): x[c, ih, iw] or 0 in the padding. */
static void im2col_run(const im2col_ctx *ic, const float *plane, int kh, int kw, int n, int cnt, float *dst) {
    const mnnlite_conv_params *p = ic->p;
    int oy = n / p->ow, ox = n % p->ow;
    while (cnt > 0) {
        const int run = min_int(cnt, p->ow - ox);
        const int iy = oy * p->sy - p->pt + kh * p->dy;
        if (iy < 0 || iy >= p->h) {
            memset(dst, 0, run * sizeof(float));
        } else {
            const int ix0 = ox * p->sx - p->pl + kw * p->dx;
            const float *row = plane + (size_t)iy * p->w;
            int lo, hi;
            valid_range(ix0, p->sx, p->w, run, &lo, &hi);
            memset(dst, 0, lo * sizeof(float));
            if (p->sx == 1) memcpy(dst + lo, row + ix0 + lo, (hi - lo) * sizeof(float));
            else ic->copy(row + ix0 + lo * p->sx, p->sx, hi - lo, dst + lo);
            memset(dst + hi, 0, (run - hi) * sizeof(float));
        }
        dst += run, cnt -= run, ox = 0, oy++;
    }
}

/* mnnlite_pack_b_fn: B[k][n] with k = (c, kh, kw) and n = output pixel, read straight from x. */
static void pack_b_im2col(const void *ctx, int k0, int kc, int n0, int nc, int nr, float *dst) {
    const im2col_ctx *ic = (const im2col_ctx *)ctx;
    const mnnlite_conv_params *p = ic->p;
    const int taps = p->kh * p->kw;
    for (int j0 = 0; j0 < nc; j0 += nr) {
        const int cols = min_int(nr, nc - j0);
        float *panel = dst + (size_t)j0 * kc;
        for (int k = 0; k < kc; k++) {
            const int kk = k0 + k, c = kk / taps, r = kk % taps;
            float *d = panel + (size_t)k * nr;
            im2col_run(ic, ic->x + (size_t)c * p->h * p->w, r / p->kw, r % p->kw, n0 + j0, cols, d);
            for (int j = cols; j < nr; j++) d[j] = 0.0f;
        }
    }
}

/* ap holds one packed A (og x cg*kh*kw) per group, apsize floats apart. */
static int conv_gemm_run(int isa, const mnnlite_gemm_kernel *kern, int nthreads, const mnnlite_conv_params *p,
                         const float *x, const float *ap, size_t apsize, const float *bias, float *y) {
    const int cg = p->c / p->groups, og = p->o / p->groups, K = cg * p->kh * p->kw;
    const int hw = p->h * p->w, npix = p->oh * p->ow;
    /* A 1x1 stride-1 unpadded conv reads x as the B matrix directly: no im2col at all. */
    const int pointwise = p->kh == 1 && p->kw == 1 && p->sy == 1 && p->sx == 1 && p->pt == 0 &&
                          p->pl == 0 && p->oh == p->h && p->ow == p->w;
    mnnlite_gemm_work work;
    /* buffers only for the threads the largest GEMM of the call takes (a per-image GEMM, or one over the
     * batch): asking for more threads must not cost small convs their allocation */
    const double gemm_flops = 2.0 * og * K * (npix > p->n ? npix : p->n);
    if (mnnlite_gemm_work_init(&work, kern, mnnlite_threads_for_work(nthreads, gemm_flops)) != 0) return -1;
    if (pointwise && npix == 1 && p->n > 1 && p->groups == 1) {
        /* One pixel per image (a fully connected layer in conv form): one GEMM over the batch,
         * B[k][j] = x[j][k], instead of a matrix-vector product per image; then C^T into y. */
        float *ct = mnnlite_alloc((size_t)p->o * p->n);
        if (ct) {
            mnnlite_matrix mat = {x, 1, p->c};
            mnnlite_gemm_threads(kern, &work, p->o, p->n, p->c, ap, mnnlite_pack_b_matrix, &mat, ct, p->n, bias,
                                 p->act, 0);
            for (int j = 0; j < p->n; j++)
                for (int m = 0; m < p->o; m++) y[(size_t)j * p->o + m] = ct[(size_t)m * p->n + j];
            mnnlite_free(ct);
        }
        mnnlite_gemm_work_release(&work);
        return ct ? 0 : -1;
    }
    for (int g = 0; g < p->groups; g++) {
        for (int n = 0; n < p->n; n++) {
            const float *xg = x + ((size_t)n * p->c + (size_t)g * cg) * hw;
            float *yg = y + ((size_t)n * p->o + (size_t)g * og) * npix;
            const float *bg = bias ? bias + g * og : NULL;
            mnnlite_matrix mat = {xg, hw, 1};
            im2col_ctx ic = {p, xg, copy_strided_select(isa)};
            mnnlite_gemm_threads(kern, &work, og, npix, K, ap + g * apsize,
                                 pointwise ? mnnlite_pack_b_matrix : pack_b_im2col,
                                 pointwise ? (const void *)&mat : (const void *)&ic, yg, npix, bg, p->act, 0);
        }
    }
    mnnlite_gemm_work_release(&work);
    return 0;
}

/* ---- depthwise ---------------------------------------------------------------------------- */

/* Each channel plane is copied once into a zero-padded scratch split by stride phase: sub-plane
 * (a, b) holds padded pixels (a + r*sy, b + q*sx) at r*stride + q.  Every tap then reads one
 * sub-plane at a fixed offset, and output (oy, ox) sits at oy*stride + ox for every tap, so the whole
 * plane is one long vector loop: no bounds checks, no gathers, no short rows.  The stride - ow
 * columns per row computed past the edge are thrown away. */
typedef struct {
    const mnnlite_conv_params *p;
    const float *x, *w, *bias;
    float *y;
    int isa;
    int hq, stride;               /* rows and row stride of each sub-plane */
    size_t sub, span;             /* floats per sub-plane; outputs computed per plane (a multiple of 16) */
    const ptrdiff_t *tap_off;     /* scratch offset of tap (kh, kw) */
    copy_strided_fn copy;
    float **scratch;              /* per thread: sy*sx sub-planes, then span outputs */
} dw_job;

/* Copies the image part of a plane into the sub-planes.  The padding is never written: it is the
 * same for every plane, so the scratch is zeroed once per call and stays zero. */
static void dw_fill(const dw_job *j, const float *plane, float *scratch) {
    const mnnlite_conv_params *p = j->p;
    for (int b = 0; b < p->sx; b++) {
        int lo, hi;  /* columns q of this phase that fall inside the image: the same for every row */
        const int first = b - p->pl;
        valid_range(first, p->sx, p->w, j->stride, &lo, &hi);
        for (int a = 0; a < p->sy; a++) {
            int r0, r1;
            valid_range(a - p->pt, p->sy, p->h, j->hq, &r0, &r1);
            float *sub = scratch + (size_t)(a * p->sx + b) * j->sub;
            for (int r = r0; r < r1; r++) {
                const float *src = plane + (size_t)(a + r * p->sy - p->pt) * p->w + first + lo * p->sx;
                float *row = sub + (size_t)r * j->stride + lo;
                if (p->sx == 1) memcpy(row, src, (hi - lo) * sizeof(float));
                else j->copy(src, p->sx, hi - lo, row);
            }
        }
    }
}

/* out[i] = act(bias + sum_t wt[t] * base[off[t] + i]) for i < n (n a multiple of 16). */
static void dw_row_scalar(int n, const float *base, const ptrdiff_t *off, const float *wt, int taps,
                          float bias, int act, float *out) {
    for (int i = 0; i < n; i++) out[i] = bias;
    for (int t = 0; t < taps; t++) {
        const float *s = base + off[t], wv = wt[t];
        for (int i = 0; i < n; i++) out[i] += wv * s[i];
    }
    for (int i = 0; i < n; i++) out[i] = act_scalar(out[i], act);
}

#if defined(__x86_64__)
TARGET_AVX2 static inline __m256 act256(__m256 v, int act) {
    if (act == MNNLITE_ACT_NONE) return v;
    v = _mm256_max_ps(v, _mm256_setzero_ps());
    return act == MNNLITE_ACT_RELU6 ? _mm256_min_ps(v, _mm256_set1_ps(6.0f)) : v;
}

/* Four accumulators per pass hide the FMA latency of the serial sum over taps. */
TARGET_AVX2 static void dw_row_avx2(int n, const float *base, const ptrdiff_t *off, const float *wt,
                                    int taps, float bias, int act, float *out) {
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a0 = _mm256_set1_ps(bias), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < taps; t++) {
            const float *s = base + off[t] + i;
            __m256 wv = _mm256_set1_ps(wt[t]);
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8), a1);
            a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 16), a2);
            a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 24), a3);
        }
        _mm256_storeu_ps(out + i, act256(a0, act));
        _mm256_storeu_ps(out + i + 8, act256(a1, act));
        _mm256_storeu_ps(out + i + 16, act256(a2, act));
        _mm256_storeu_ps(out + i + 24, act256(a3, act));
    }
    for (; i < n; i += 8) {
        __m256 a0 = _mm256_set1_ps(bias);
        for (int t = 0; t < taps; t++)
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(wt[t]), _mm256_loadu_ps(base + off[t] + i), a0);
        _mm256_storeu_ps(out + i, act256(a0, act));
    }
}

TARGET_AVX512 static inline __m512 act512(__m512 v, int act) {
    if (act == MNNLITE_ACT_NONE) return v;
    v = _mm512_max_ps(v, _mm512_setzero_ps());
    return act == MNNLITE_ACT_RELU6 ? _mm512_min_ps(v, _mm512_set1_ps(6.0f)) : v;
}

TARGET_AVX512 static void dw_row_avx512(int n, const float *base, const ptrdiff_t *off, const float *wt,
                                        int taps, float bias, int act, float *out) {
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a0 = _mm512_set1_ps(bias), a1 = a0, a2 = a0, a3 = a0;
        for (int t = 0; t < taps; t++) {
            const float *s = base + off[t] + i;
            __m512 wv = _mm512_set1_ps(wt[t]);
            a0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s), a0);
            a1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 16), a1);
            a2 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 32), a2);
            a3 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 48), a3);
        }
        _mm512_storeu_ps(out + i, act512(a0, act));
        _mm512_storeu_ps(out + i + 16, act512(a1, act));
        _mm512_storeu_ps(out + i + 32, act512(a2, act));
        _mm512_storeu_ps(out + i + 48, act512(a3, act));
    }
    for (; i < n; i += 16) {
        __m512 a0 = _mm512_set1_ps(bias);
        for (int t = 0; t < taps; t++)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(wt[t]), _mm512_loadu_ps(base + off[t] + i), a0);
        _mm512_storeu_ps(out + i, act512(a0, act));
    }
}
#endif

typedef void (*dw_row_fn)(int, const float *, const ptrdiff_t *, const float *, int, float, int, float *);

static dw_row_fn dw_row_select(int isa) {
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) return dw_row_avx512;
    if (isa & MNNLITE_CPU_AVX2) return dw_row_avx2;
#endif
    (void)isa;
    return dw_row_scalar;
}

/* Tasks are (image, channel) planes. */
static void dw_range(void *arg, int begin, int end, int thread) {
    const dw_job *j = (const dw_job *)arg;
    const mnnlite_conv_params *p = j->p;
    const int taps = p->kh * p->kw;
    const dw_row_fn row_fn = dw_row_select(j->isa);
    float *scratch = j->scratch[thread];
    float *out = scratch + (size_t)p->sy * p->sx * j->sub;
    /* Rows of 32 outputs or more are computed straight into y, each rounded up to 16: the excess lands at
     * the start of the next row, which is computed after it and overwrites it; only the last row goes
     * through `out` (the excess would cross into the next plane).  Narrower rows: the whole plane as one
     * vector loop into `out`, then copied.  Same sums either way. */
    const int direct = p->ow >= 32;
    const int row_n = round_up(p->ow, 16);
    for (int task = begin; task < end; task++) {
        const int c = task % p->c;
        const float *wt = j->w + (size_t)c * taps, bias = j->bias ? j->bias[c] : 0.0f;
        dw_fill(j, j->x + (size_t)task * p->h * p->w, scratch);
        float *y = j->y + (size_t)task * p->oh * p->ow;
        if (direct) {
            for (int oy = 0; oy + 1 < p->oh; oy++)
                row_fn(row_n, scratch + (size_t)oy * j->stride, j->tap_off, wt, taps, bias, p->act,
                       y + (size_t)oy * p->ow);
            row_fn(row_n, scratch + (size_t)(p->oh - 1) * j->stride, j->tap_off, wt, taps, bias, p->act, out);
            memcpy(y + (size_t)(p->oh - 1) * p->ow, out, p->ow * sizeof(float));
            continue;
        }
        row_fn((int)j->span, scratch, j->tap_off, wt, taps, bias, p->act, out);
        for (int oy = 0; oy < p->oh; oy++)
            memcpy(y + (size_t)oy * p->ow, out + (size_t)oy * j->stride, p->ow * sizeof(float));
    }
}

static int conv_depthwise_run(int isa, int nthreads, const mnnlite_conv_params *p, const float *x,
                              const float *w, const float *bias, float *y) {
    const int taps = p->kh * p->kw, tasks = p->n * p->c;
    dw_job j = {p, x, w, bias, y, isa, 0, 0, 0, 0, NULL, copy_strided_select(isa), NULL};
    /* Padded extent actually read, which may differ from h + pt + pb when the caller's oh is smaller. */
    const int hp = max_int(p->h + p->pt + p->pb, (p->oh - 1) * p->sy + (p->kh - 1) * p->dy + 1);
    const int wp = max_int(p->w + p->pl + p->pr, (p->ow - 1) * p->sx + (p->kw - 1) * p->dx + 1);
    j.hq = ceil_div(hp, p->sy);
    j.stride = max_int(ceil_div(wp, p->sx), p->ow + (p->kw - 1) * p->dx / p->sx);
    j.span = (size_t)round_up(p->oh * j.stride, 16);
    /* The last vector of the span may read up to 15 + (kw-1)*dx/sx floats past a sub-plane's rows. */
    j.sub = (size_t)j.hq * j.stride + 16 + (p->kw - 1) * p->dx / p->sx;
    const size_t scratch_size = (size_t)p->sy * p->sx * j.sub + j.span;

    ptrdiff_t *tap_off = (ptrdiff_t *)malloc(taps * sizeof(ptrdiff_t));
    float *scratch[MNNLITE_MAX_THREADS] = {0};
    /* scratch only for the threads the work takes (parallel.h) */
    nthreads = mnnlite_thread_count(mnnlite_threads_for_work(nthreads, 2.0 * tasks * p->oh * p->ow * taps), tasks);
    int ok = tap_off != NULL;
    for (int t = 0; t < nthreads; t++) {
        ok &= (scratch[t] = mnnlite_alloc(scratch_size)) != NULL;
        if (scratch[t]) memset(scratch[t], 0, scratch_size * sizeof(float));  /* padding and margins */
    }
    if (ok) {
        for (int kh = 0; kh < p->kh; kh++)
            for (int kw = 0; kw < p->kw; kw++) {
                const int row = kh * p->dy, col = kw * p->dx;
                const size_t sub = (size_t)(row % p->sy) * p->sx + col % p->sx;
                tap_off[kh * p->kw + kw] = sub * j.sub + (size_t)(row / p->sy) * j.stride + col / p->sx;
            }
        j.tap_off = tap_off;
        j.scratch = scratch;
        mnnlite_parallel_for(nthreads, tasks, dw_range, &j);
    }
    for (int t = 0; t < nthreads; t++) mnnlite_free(scratch[t]);
    free(tap_off);
    return ok ? 0 : -1;
}

/* ---- plans and dispatch ------------------------------------------------------------------- */

struct mnnlite_conv_plan {
    int isa;
    const mnnlite_gemm_kernel *kern;
    float *gemm_a;        /* groups packed A panels, gemm_size floats apart; NULL if not prepared */
    size_t gemm_size;
    float *wino_u;        /* Winograd weights, or NULL */
    float *dw;            /* depthwise weights [c][kh][kw], or NULL */
    float *w;             /* WINOGRAD_MNN: a copy of the weights, transformed per unit on first use */
    float *mnn_u[3];      /* WINOGRAD_MNN weights for units 2, 4, 6, or NULL */
};

int mnnlite_conv_algo_supported(const mnnlite_conv_params *p, int algo) {
    switch (algo) {
    case MNNLITE_CONV_AUTO:
    case MNNLITE_CONV_GEMM: return 1;
    case MNNLITE_CONV_WINOGRAD:
    case MNNLITE_CONV_WINOGRAD_MNN:
        return p->kh == 3 && p->kw == 3 && p->sy == 1 && p->sx == 1 && p->dy == 1 && p->dx == 1 &&
               p->groups == 1 && p->c > 0;
    case MNNLITE_CONV_DEPTHWISE: return p->groups > 1 && p->groups == p->c && p->groups == p->o;
    default: return 0;
    }
}

/* What AUTO runs.  Winograd only pays when channels amortise its transforms; it also needs a few
 * tiles, since tiny images waste most of each 4x4 tile. */
static int choose_algo(const mnnlite_conv_params *p) {
    if (mnnlite_conv_algo_supported(p, MNNLITE_CONV_DEPTHWISE)) return MNNLITE_CONV_DEPTHWISE;
    if (mnnlite_conv_algo_supported(p, MNNLITE_CONV_WINOGRAD) && p->c >= 16 && p->o >= 16 && p->oh >= 8 &&
        p->ow >= 8)
        return MNNLITE_CONV_WINOGRAD;
    return MNNLITE_CONV_GEMM;
}

static int prepare_gemm(mnnlite_conv_plan *plan, const mnnlite_conv_params *p, const float *w) {
    const int og = p->o / p->groups, K = p->c / p->groups * p->kh * p->kw;
    plan->gemm_size = mnnlite_packed_a_size(plan->kern, og, K);
    if (!(plan->gemm_a = mnnlite_alloc(plan->gemm_size * p->groups))) return -1;
    for (int g = 0; g < p->groups; g++)
        mnnlite_pack_a(plan->kern, og, K, w + (size_t)g * og * K, K, 1, plan->gemm_a + g * plan->gemm_size);
    return 0;
}

static int prepare_winograd(mnnlite_conv_plan *plan, const mnnlite_conv_params *p, const float *w) {
    if (!(plan->wino_u = mnnlite_alloc(mnnlite_winograd_weights_size(plan->kern, p->o, p->c)))) return -1;
    mnnlite_winograd_pack_weights(plan->kern, p, w, plan->wino_u);
    return 0;
}

static int prepare_depthwise(mnnlite_conv_plan *plan, const mnnlite_conv_params *p, const float *w) {
    const size_t size = (size_t)p->c * p->kh * p->kw;
    if (!(plan->dw = mnnlite_alloc(size))) return -1;
    memcpy(plan->dw, w, size * sizeof(float));
    return 0;
}

static int prepare_winograd_mnn(mnnlite_conv_plan *plan, const mnnlite_conv_params *p, const float *w) {
    const size_t size = (size_t)p->o * p->c * 9;
    if (!(plan->w = mnnlite_alloc(size))) return -1;
    memcpy(plan->w, w, size * sizeof(float));
    return prepare_gemm(plan, p, w);  /* the sizes where MNN runs no Winograd */
}

mnnlite_conv_plan *mnnlite_conv_plan_new(int isa, const mnnlite_conv_params *p, const float *w, int algo) {
    mnnlite_conv_plan *plan = (mnnlite_conv_plan *)calloc(1, sizeof(*plan));
    if (!plan) return NULL;
    plan->isa = isa;
    plan->kern = mnnlite_gemm_select(isa);
    const int all = algo == MNNLITE_CONV_AUTO;
    int rc = 0;
    if (all || algo == MNNLITE_CONV_GEMM) rc |= prepare_gemm(plan, p, w);
    if ((all || algo == MNNLITE_CONV_WINOGRAD) && mnnlite_conv_algo_supported(p, MNNLITE_CONV_WINOGRAD))
        rc |= prepare_winograd(plan, p, w);
    if ((all || algo == MNNLITE_CONV_DEPTHWISE) && mnnlite_conv_algo_supported(p, MNNLITE_CONV_DEPTHWISE))
        rc |= prepare_depthwise(plan, p, w);
    if (algo == MNNLITE_CONV_WINOGRAD_MNN) rc |= prepare_winograd_mnn(plan, p, w);
    if (rc != 0) {
        mnnlite_conv_plan_free(plan);
        return NULL;
    }
    return plan;
}

void mnnlite_conv_plan_free(mnnlite_conv_plan *plan) {
    if (!plan) return;
    mnnlite_free(plan->gemm_a);
    mnnlite_free(plan->wino_u);
    mnnlite_free(plan->dw);
    mnnlite_free(plan->w);
    for (int i = 0; i < 3; i++) mnnlite_free(plan->mnn_u[i]);
    free(plan);
}

int mnnlite_conv_plan_prepare(mnnlite_conv_plan *plan, int algo, const mnnlite_conv_params *p) {
    if (algo != MNNLITE_CONV_WINOGRAD_MNN || !plan->w) return 0;
    const int unit = mnnlite_winograd_mnn_unit(p);
    if (unit == 0 || plan->mnn_u[unit / 2 - 1]) return 0;
    float *u = mnnlite_alloc(mnnlite_winograd_mnn_weights_size(plan->kern, unit, p->o, p->c));
    if (!u) return -1;
    mnnlite_winograd_mnn_pack_weights(plan->kern, unit, p, plan->w, u);
    plan->mnn_u[unit / 2 - 1] = u;
    return 0;
}

int mnnlite_conv_plan_run(const mnnlite_conv_plan *plan, int nthreads, int algo, const mnnlite_conv_params *p,
                          const float *x, const float *bias, float *y) {
    if (algo == MNNLITE_CONV_AUTO) algo = choose_algo(p);
    if (algo == MNNLITE_CONV_WINOGRAD_MNN && plan->w) {
        const int unit = mnnlite_winograd_mnn_unit(p);
        if (unit != 0) {
            const float *u = plan->mnn_u[unit / 2 - 1];
            return u ? mnnlite_winograd_mnn_run(plan->kern, plan->isa, nthreads, unit, p, x, u, bias, y) : -2;
        }
        algo = MNNLITE_CONV_GEMM;
    }
    if (algo == MNNLITE_CONV_DEPTHWISE && plan->dw)
        return conv_depthwise_run(plan->isa, nthreads, p, x, plan->dw, bias, y);
    if (algo == MNNLITE_CONV_WINOGRAD && plan->wino_u)
        return mnnlite_winograd_run(plan->kern, plan->isa, nthreads, p, x, plan->wino_u, bias, y);
    if (!plan->gemm_a) return -2;  /* the plan was made for another algorithm */
    return conv_gemm_run(plan->isa, plan->kern, nthreads, p, x, plan->gemm_a, plan->gemm_size, bias, y);
}

int mnnlite_conv2d(int isa, int nthreads, int algo, const mnnlite_conv_params *p, const float *x,
                   const float *w, const float *bias, float *y) {
    if (algo == MNNLITE_CONV_AUTO) {
        algo = choose_algo(p);
        /* One call also pays the weight transform (~30 ns a filter, about what Winograd saves on 250
         * output pixels), so small images are cheaper on the GEMM here; a prepared plan has no such cost. */
        if (algo == MNNLITE_CONV_WINOGRAD && (long long)p->n * p->oh * p->ow < 256) algo = MNNLITE_CONV_GEMM;
    }
    if (algo == MNNLITE_CONV_DEPTHWISE)  /* reads w as it is: nothing to prepare */
        return conv_depthwise_run(isa, nthreads, p, x, w, bias, y);
    mnnlite_conv_plan *plan = mnnlite_conv_plan_new(isa, p, w, algo);
    if (!plan) return -1;
    int rc = mnnlite_conv_plan_prepare(plan, algo, p);
    if (rc == 0) rc = mnnlite_conv_plan_run(plan, nthreads, algo, p, x, bias, y);
    mnnlite_conv_plan_free(plan);
    return rc;
}

/* ---- transposed convolution: GEMM + col2im ------------------------------------------------ */

/* dst[i * step] += src[i] for i < n. */
typedef void (*add_strided_fn)(float *dst, int step, const float *src, int n);

static void add_strided(float *dst, int step, const float *src, int n) {
    if (step == 1) {
        for (int i = 0; i < n; i++) dst[i] += src[i];  /* a separate loop, so it vectorises */
    } else {
        for (int i = 0; i < n; i++) dst[i * step] += src[i];
    }
}

#if defined(__x86_64__)
/* Step 1 and 2 (the usual upsampling deconv) in vectors; a masked add leaves the other lanes exact. */
TARGET_AVX512 static void add_strided_avx512(float *dst, int step, const float *src, int n) {
    int i = 0;
    if (step == 1) {
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(dst + i), _mm512_loadu_ps(src + i)));
    } else if (step == 2) {
        const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
        const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
        const __mmask16 even = 0x5555;
        for (; i + 17 <= n; i += 16) {  /* touches dst[2i .. 2i+31]; the last one used is 2(n-1) */
            const __m512 v = _mm512_loadu_ps(src + i);
            float *d = dst + 2 * i;
            __m512 d0 = _mm512_loadu_ps(d), d1 = _mm512_loadu_ps(d + 16);
            _mm512_storeu_ps(d, _mm512_mask_add_ps(d0, even, d0, _mm512_permutexvar_ps(lo, v)));
            _mm512_storeu_ps(d + 16, _mm512_mask_add_ps(d1, even, d1, _mm512_permutexvar_ps(hi, v)));
        }
    }
    for (; i < n; i++) dst[i * step] += src[i];
}
#endif

/* y[o, iy*sy-pt+kh*dy, ix*sx-pl+kw*dx] += col[(o, kh, kw)][iy - iy0][ix] for one block of input rows. */
static void col2im_add(const mnnlite_conv_params *p, add_strided_fn add, const float *col, int m_rows,
                       int iy0, int rows, float *yg) {
    const int taps = p->kh * p->kw, ldcol = rows * p->w;
    for (int m = 0; m < m_rows; m++) {
        const int o = m / taps, kh = (m % taps) / p->kw, kw = m % p->kw;
        const int first = kw * p->dx - p->pl;
        int lo, hi;
        valid_range(first, p->sx, p->ow, p->w, &lo, &hi);  /* input columns ix landing inside y */
        for (int r = 0; r < rows; r++) {
            const int oy = (iy0 + r) * p->sy - p->pt + kh * p->dy;
            if (oy < 0 || oy >= p->oh || hi <= lo) continue;
            float *yrow = yg + ((size_t)o * p->oh + oy) * p->ow;
            const float *crow = col + (size_t)m * ldcol + (size_t)r * p->w;
            add(yrow + first + lo * p->sx, p->sx, crow + lo, hi - lo);
        }
    }
}

/* Fills y: bias, then per group and block of input rows a GEMM into col and col2im_add from it. */
static void deconv_run(int isa, const mnnlite_gemm_kernel *kern, const mnnlite_gemm_work *work,
                       const mnnlite_conv_params *p, const float *x, const float *w, const float *bias,
                       float *y, float *ap, float *col, int rows_blk) {
    const int cg = p->c / p->groups, og = p->o / p->groups, M = og * p->kh * p->kw;
    const size_t hw = (size_t)p->h * p->w, npix = (size_t)p->oh * p->ow;
    add_strided_fn add = add_strided;
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) add = add_strided_avx512;
#endif
    (void)isa;
    for (size_t i = 0; i < (size_t)p->n * p->o; i++) {
        const float b = bias ? bias[i % p->o] : 0.0f;
        for (size_t k = 0; k < npix; k++) y[i * npix + k] = b;
    }
    for (int g = 0; g < p->groups; g++) {
        /* A = w_g^T: row m = (o', kh, kw), column k = input channel; w_g is [cg][M]. */
        mnnlite_pack_a(kern, M, cg, w + (size_t)g * cg * M, 1, M, ap);
        for (int n = 0; n < p->n; n++) {
            const float *xg = x + ((size_t)n * p->c + (size_t)g * cg) * hw;
            float *yg = y + ((size_t)n * p->o + (size_t)g * og) * npix;
            for (int iy0 = 0; iy0 < p->h; iy0 += rows_blk) {
                const int rows = min_int(rows_blk, p->h - iy0), ncols = rows * p->w;
                mnnlite_matrix mat = {xg + (size_t)iy0 * p->w, (ptrdiff_t)hw, 1};
                mnnlite_gemm_threads(kern, work, M, ncols, cg, ap, mnnlite_pack_b_matrix, &mat, col, ncols,
                                     NULL, MNNLITE_ACT_NONE, 0);
                col2im_add(p, add, col, M, iy0, rows, yg);
            }
        }
    }
    if (p->act != MNNLITE_ACT_NONE)
        for (size_t i = 0; i < (size_t)p->n * p->o * npix; i++) y[i] = act_scalar(y[i], p->act);
}

int mnnlite_deconv2d(int isa, int nthreads, const mnnlite_conv_params *p, const float *x,
                     const float *w, const float *bias, float *y) {
    const mnnlite_gemm_kernel *kern = mnnlite_gemm_select(isa);
    const int M = p->o / p->groups * p->kh * p->kw;
    /* Input rows per block: the column buffer (~512 KiB) stays in L2 from the GEMM to col2im. */
    const int rows_blk = max_int(1, min_int(p->h, (1 << 17) / max_int(1, M * p->w)));
    float *ap = mnnlite_alloc(mnnlite_packed_a_size(kern, M, p->c / p->groups));
    float *col = mnnlite_alloc((size_t)M * rows_blk * p->w);
    mnnlite_gemm_work work;
    const double block_flops = 2.0 * M * rows_blk * p->w * (p->c / p->groups);   /* one GEMM of a row block */
    const int ok = ap && col &&
                   mnnlite_gemm_work_init(&work, kern, mnnlite_threads_for_work(nthreads, block_flops)) == 0;
    if (ok) {
        deconv_run(isa, kern, &work, p, x, w, bias, y, ap, col, rows_blk);
        mnnlite_gemm_work_release(&work);
    }
    mnnlite_free(ap);
    mnnlite_free(col);
    return ok ? 0 : -1;
}
