#define _POSIX_C_SOURCE 200112L  /* posix_memalign under -std=c11 */
#include "gemm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#endif

float *mnnlite_alloc(size_t nfloats) {
    void *p = NULL;
    size_t bytes = (nfloats * sizeof(float) + 63) & ~(size_t)63;
#if defined(_WIN32)
    p = _aligned_malloc(bytes ? bytes : 64, 64);
#else
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) p = NULL;
#endif
    return (float *)p;
}

void mnnlite_free(float *p) {
#if defined(_WIN32)
    _aligned_free(p);
#else
    free(p);
#endif
}

static inline float act_scalar(float v, int act) {
    if (act == MNNLITE_ACT_NONE) return v;
    v = v > 0.0f ? v : 0.0f;
    return (act == MNNLITE_ACT_RELU6 && v > 6.0f) ? 6.0f : v;
}

/* ---- micro-kernels ------------------------------------------------------------------------ */

/* Scalar 4 x 16: plain C that the compiler vectorises for the baseline ISA (SSE2, NEON).  One named
 * array per row and the k loop outside the j loop: the shape GCC turns into vector code. */
enum { SC_MR = 4, SC_NR = 16 };

static void micro_scalar(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                         const float *bias, int first, int act, int cols) {
    (void)cols;
    float c0[SC_NR] = {0}, c1[SC_NR] = {0}, c2[SC_NR] = {0}, c3[SC_NR] = {0};
    for (int k = 0; k < kc; k++, a += SC_MR, b += SC_NR) {
        const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
        for (int j = 0; j < SC_NR; j++) {
            c0[j] += a0 * b[j];
            c1[j] += a1 * b[j];
            c2[j] += a2 * b[j];
            c3[j] += a3 * b[j];
        }
    }
    float *rows[SC_MR] = {c0, c1, c2, c3};
    for (int i = 0; i < SC_MR; i++) {
        float *ci = c + i * ldc;
        const float base = bias ? bias[i] : 0.0f;
        for (int j = 0; j < SC_NR; j++) ci[j] = act_scalar(rows[i][j] + (first ? base : ci[j]), act);
    }
}

#if defined(__x86_64__)
/* AVX2 6 x 16: 12 accumulators + 2 B vectors + 1 broadcast fill the 16 ymm registers. */
enum { AVX2_MR = 6, AVX2_NR = 16 };

TARGET_AVX2 static inline __m256 act256(__m256 v, int act) {
    if (act == MNNLITE_ACT_NONE) return v;
    v = _mm256_max_ps(v, _mm256_setzero_ps());
    return act == MNNLITE_ACT_RELU6 ? _mm256_min_ps(v, _mm256_set1_ps(6.0f)) : v;
}

TARGET_AVX2 static inline void store256(float *c, __m256 acc, const float *bias, int i, int first, int act) {
    __m256 base = first ? _mm256_set1_ps(bias ? bias[i] : 0.0f) : _mm256_loadu_ps(c);
    _mm256_storeu_ps(c, act256(_mm256_add_ps(acc, base), act));
}

/* Twelve named accumulators: with arrays GCC stores them to the stack on every k. */
#define AVX2_ROW(i)                                                                                  \
    do {                                                                                             \
        const __m256 ai = _mm256_broadcast_ss(a + i);                                                \
        c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);                                                  \
        c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);                                                  \
    } while (0)
#define AVX2_STORE(i)                                                                                \
    do {                                                                                             \
        store256(c + i * ldc, c##i##0, bias, i, first, act);                                         \
        store256(c + i * ldc + 8, c##i##1, bias, i, first, act);                                     \
    } while (0)

TARGET_AVX2 static void micro_avx2(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                                   const float *bias, int first, int act, int cols) {
    (void)cols;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; k++, a += AVX2_MR, b += AVX2_NR) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        AVX2_ROW(0); AVX2_ROW(1); AVX2_ROW(2); AVX2_ROW(3); AVX2_ROW(4); AVX2_ROW(5);
    }
    AVX2_STORE(0); AVX2_STORE(1); AVX2_STORE(2); AVX2_STORE(3); AVX2_STORE(4); AVX2_STORE(5);
}

/* AVX-512 8 x 48: 24 accumulators; per k, 3 B loads and 8 broadcasts feed 24 FMAs.  A tile with
 * fewer columns runs with nv = 1 or 2 vectors and masked C access, so narrow GEMMs (Winograd on small
 * images, edges) do not pay for the full 48 columns. */
enum { AVX512_MR = 8, AVX512_NR = 48 };

TARGET_AVX512 static inline __m512 act512(__m512 v, int act) {
    if (act == MNNLITE_ACT_NONE) return v;
    v = _mm512_max_ps(v, _mm512_setzero_ps());
    return act == MNNLITE_ACT_RELU6 ? _mm512_min_ps(v, _mm512_set1_ps(6.0f)) : v;
}

TARGET_AVX512 static inline void store512(float *c, __m512 acc, __mmask16 m, const float *bias, int i,
                                          int first, int act) {
    __m512 base = first ? _mm512_set1_ps(bias ? bias[i] : 0.0f) : _mm512_maskz_loadu_ps(m, c);
    _mm512_mask_storeu_ps(c, m, act512(_mm512_add_ps(acc, base), act));
}

/* nv is a constant after inlining; three named accumulator arrays (not one 2-D array) keep GCC from
 * spilling them to the stack. */
TARGET_AVX512 static inline __attribute__((always_inline)) void micro_avx512_nv(
        int nv, int kc, const float *a, const float *b, float *c, ptrdiff_t ldc, const float *bias,
        int first, int act, int cols) {
    __m512 acc0[AVX512_MR], acc1[AVX512_MR], acc2[AVX512_MR];
    for (int i = 0; i < AVX512_MR; i++) acc0[i] = acc1[i] = acc2[i] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++, a += AVX512_MR, b += AVX512_NR) {
        const __m512 b0 = _mm512_loadu_ps(b);
        const __m512 b1 = nv > 1 ? _mm512_loadu_ps(b + 16) : b0;
        const __m512 b2 = nv > 2 ? _mm512_loadu_ps(b + 32) : b0;
        for (int i = 0; i < AVX512_MR; i++) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
            if (nv > 1) acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
            if (nv > 2) acc2[i] = _mm512_fmadd_ps(ai, b2, acc2[i]);
        }
    }
    const int rest = cols - 16 * (nv - 1);
    const __mmask16 all = 0xFFFF, last = rest >= 16 ? all : (__mmask16)((1u << rest) - 1);
    for (int i = 0; i < AVX512_MR; i++) {
        float *ci = c + i * ldc;
        store512(ci, acc0[i], nv == 1 ? last : all, bias, i, first, act);
        if (nv > 1) store512(ci + 16, acc1[i], nv == 2 ? last : all, bias, i, first, act);
        if (nv > 2) store512(ci + 32, acc2[i], last, bias, i, first, act);
    }
}

TARGET_AVX512 static void micro_avx512(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                                       const float *bias, int first, int act, int cols) {
    if (cols > 32) micro_avx512_nv(3, kc, a, b, c, ldc, bias, first, act, cols);
    else if (cols > 16) micro_avx512_nv(2, kc, a, b, c, ldc, bias, first, act, cols);
    else micro_avx512_nv(1, kc, a, b, c, ldc, bias, first, act, cols);
}
#endif

static const mnnlite_gemm_kernel k_scalar = {SC_MR, SC_NR, 0, micro_scalar, "scalar"};
#if defined(__x86_64__)
static const mnnlite_gemm_kernel k_avx2 = {AVX2_MR, AVX2_NR, 0, micro_avx2, "avx2"};
static const mnnlite_gemm_kernel k_avx512 = {AVX512_MR, AVX512_NR, 1, micro_avx512, "avx512"};
#endif

const mnnlite_gemm_kernel *mnnlite_gemm_select(int isa) {
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) return &k_avx512;
    if (isa & MNNLITE_CPU_AVX2) return &k_avx2;
#endif
    (void)isa;
    return &k_scalar;
}

/* ---- packing ------------------------------------------------------------------------------ */

static inline int round_up(int v, int m) { return (v + m - 1) / m * m; }
static inline int min_int(int a, int b) { return a < b ? a : b; }

size_t mnnlite_packed_a_size(const mnnlite_gemm_kernel *kern, int M, int K) {
    return (size_t)round_up(M, kern->mr) * (size_t)K;
}

/* K block pc occupies kc * Mpad floats at offset pc * Mpad; its panel of rows i0.. is at i0 * kc. */
void mnnlite_pack_a(const mnnlite_gemm_kernel *kern, int M, int K, const float *a, ptrdiff_t rs,
                    ptrdiff_t cs, float *dst) {
    const int mr = kern->mr, mpad = round_up(M, mr);
    for (int pc = 0; pc < K; pc += MNNLITE_KC) {
        const int kc = min_int(MNNLITE_KC, K - pc);
        float *blk = dst + (size_t)pc * mpad;
        for (int i0 = 0; i0 < mpad; i0 += mr) {
            float *panel = blk + (size_t)i0 * kc;
            for (int k = 0; k < kc; k++)
                for (int i = 0; i < mr; i++)
                    panel[k * mr + i] = i0 + i < M ? a[(i0 + i) * rs + (pc + k) * cs] : 0.0f;
        }
    }
}

void mnnlite_pack_b_matrix(const void *ctx, int k0, int kc, int n0, int nc, int nr, float *dst) {
    const mnnlite_matrix *m = (const mnnlite_matrix *)ctx;
    for (int j0 = 0; j0 < nc; j0 += nr) {
        const int cols = min_int(nr, nc - j0);
        float *panel = dst + (size_t)j0 * kc;
        if (m->rs == 1 && m->cs != 1) {
            /* B transposed: walk each contiguous column of B once, rather than touching nr cache lines
             * for every k. */
            for (int j = 0; j < cols; j++) {
                const float *src = m->b + k0 + (n0 + j0 + j) * m->cs;
                for (int k = 0; k < kc; k++) panel[(size_t)k * nr + j] = src[k];
            }
        } else {
            for (int k = 0; k < kc; k++) {
                const float *src = m->b + (k0 + k) * m->rs + (n0 + j0) * m->cs;
                float *d = panel + (size_t)k * nr;
                if (m->cs == 1) memcpy(d, src, cols * sizeof(float));
                else for (int j = 0; j < cols; j++) d[j] = src[j * m->cs];
            }
        }
        for (int k = 0; k < kc && cols < nr; k++)
            memset(panel + (size_t)k * nr + cols, 0, (nr - cols) * sizeof(float));
    }
}

/* ---- drivers ------------------------------------------------------------------------------ */

/* A tile cut by the edge of C: run the full micro-kernel on a scratch tile, copy the valid part. */
static void edge_tile(const mnnlite_gemm_kernel *kern, int kc, const float *a, const float *b, float *c,
                      ptrdiff_t ldc, int rows, int cols, const float *bias, int first, int act) {
    float tile[MNNLITE_MAX_MR * MNNLITE_MAX_NR] __attribute__((aligned(64)));
    float tbias[MNNLITE_MAX_MR] = {0};
    const int nr = kern->nr;
    for (int i = 0; i < rows; i++) {
        if (bias) tbias[i] = bias[i];
        if (!first) memcpy(tile + i * nr, c + i * ldc, cols * sizeof(float));
    }
    kern->micro(kc, a, b, tile, nr, bias ? tbias : NULL, first, act, cols);
    for (int i = 0; i < rows; i++) memcpy(c + i * ldc, tile + i * nr, cols * sizeof(float));
}

void mnnlite_gemm_block(const mnnlite_gemm_kernel *kern, int M, int nc, int kc, const float *ap_block,
                        const float *bp, float *c, ptrdiff_t ldc, const float *bias, int first, int act) {
    const int mr = kern->mr, nr = kern->nr;
    for (int i0 = 0; i0 < M; i0 += mr) {
        const float *a = ap_block + (size_t)i0 * kc;
        const float *bi = bias ? bias + i0 : NULL;
        const int rows = min_int(mr, M - i0);
        for (int j0 = 0; j0 < nc; j0 += nr) {
            const int cols = min_int(nr, nc - j0);
            float *cij = c + i0 * ldc + j0;
            if (rows == mr && (cols == nr || kern->partial_cols))
                kern->micro(kc, a, bp + (size_t)j0 * kc, cij, ldc, bi, first, act, cols);
            else
                edge_tile(kern, kc, a, bp + (size_t)j0 * kc, cij, ldc, rows, cols, bi, first, act);
        }
    }
}

size_t mnnlite_gemm_work_size(const mnnlite_gemm_kernel *kern) {
    return (size_t)MNNLITE_KC * round_up(MNNLITE_NC, kern->nr);
}

void mnnlite_gemm_packed(const mnnlite_gemm_kernel *kern, int M, int K, const float *ap,
                         mnnlite_pack_b_fn pack_b, const void *ctx, int n_begin, int n_end, float *c,
                         ptrdiff_t ldc, const float *bias, int act, int accumulate, float *work) {
    const int mpad = round_up(M, kern->mr);
    const int nc_max = MNNLITE_NC / kern->nr * kern->nr;
    for (int jc = n_begin; jc < n_end; jc += nc_max) {
        const int nc = min_int(nc_max, n_end - jc);
        for (int pc = 0; pc < K; pc += MNNLITE_KC) {
            const int kc = min_int(MNNLITE_KC, K - pc);
            pack_b(ctx, pc, kc, jc, nc, kern->nr, work);
            mnnlite_gemm_block(kern, M, nc, kc, ap + (size_t)pc * mpad, work, c + jc, ldc, bias,
                               pc == 0 && !accumulate, pc + kc == K ? act : MNNLITE_ACT_NONE);
        }
    }
    if (K == 0 && !accumulate) {  /* empty sum: C is just act(bias) */
        for (int i = 0; i < M; i++)
            for (int j = n_begin; j < n_end; j++) c[i * ldc + j] = act_scalar(bias ? bias[i] : 0.0f, act);
    }
}

int mnnlite_gemm_work_init(mnnlite_gemm_work *work, const mnnlite_gemm_kernel *kern, int nthreads) {
    nthreads = mnnlite_thread_count(nthreads, 0);
    memset(work, 0, sizeof(*work));
    for (int t = 0; t < nthreads; t++) {
        if (!(work->buf[t] = mnnlite_alloc(mnnlite_gemm_work_size(kern)))) {
            mnnlite_gemm_work_release(work);
            return -1;
        }
        work->nthreads = t + 1;
    }
    return 0;
}

void mnnlite_gemm_work_release(mnnlite_gemm_work *work) {
    for (int t = 0; t < work->nthreads; t++) mnnlite_free(work->buf[t]);
    work->nthreads = 0;
}

typedef struct {
    const mnnlite_gemm_kernel *kern;
    const mnnlite_gemm_work *work;
    int M, N, K, act, accumulate;
    const float *ap, *bias;
    mnnlite_pack_b_fn pack_b;
    const void *ctx;
    float *c;
    ptrdiff_t ldc;
} gemm_job;

/* Tasks are NR-column strips, so every thread's columns start on a panel boundary. */
static void gemm_range(void *arg, int begin, int end, int thread) {
    const gemm_job *g = (const gemm_job *)arg;
    const int nr = g->kern->nr, n0 = begin * nr, n1 = min_int(end * nr, g->N);
    mnnlite_gemm_packed(g->kern, g->M, g->K, g->ap, g->pack_b, g->ctx, n0, n1, g->c, g->ldc, g->bias,
                        g->act, g->accumulate, g->work->buf[thread]);
}

void mnnlite_gemm_threads(const mnnlite_gemm_kernel *kern, const mnnlite_gemm_work *work, int M, int N,
                          int K, const float *ap, mnnlite_pack_b_fn pack_b, const void *ctx, float *c,
                          ptrdiff_t ldc, const float *bias, int act, int accumulate) {
    gemm_job job = {kern, work, M, N, K, act, accumulate, ap, bias, pack_b, ctx, c, ldc};
    mnnlite_parallel_for(mnnlite_threads_for_work(work->nthreads, 2.0 * M * N * K), (N + kern->nr - 1) / kern->nr,
                         gemm_range, &job);
}

/* ---- a few rows: no packing ---------------------------------------------------------------- */

/* sum_k a[k] * b[k] for contiguous a and b. */
static float dot_scalar(int K, const float *a, const float *b) {
    float part[8] = {0}, sum = 0.0f;  /* eight named partial sums, which the compiler may vectorise */
    int k = 0;
    for (; k + 8 <= K; k += 8)
        for (int l = 0; l < 8; l++) part[l] += a[k + l] * b[k + l];
    for (int l = 0; l < 8; l++) sum += part[l];
    for (; k < K; k++) sum += a[k] * b[k];
    return sum;
}

#if defined(__x86_64__)
/* Four accumulators hide the FMA latency of one long chain. */
TARGET_AVX2 static float dot_avx2(int K, const float *a, const float *b) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), s3);
    }
    for (; k + 8 <= K; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    __m256 v = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    q = _mm_add_ps(q, _mm_movehl_ps(q, q));
    float sum = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
    for (; k < K; k++) sum += a[k] * b[k];
    return sum;
}

TARGET_AVX512 static float dot_avx512(int K, const float *a, const float *b) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int k = 0;
    for (; k + 64 <= K; k += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 32), _mm512_loadu_ps(b + k + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 48), _mm512_loadu_ps(b + k + 48), s3);
    }
    for (; k + 16 <= K; k += 16) s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
    if (k < K) {
        const __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}
#endif

/* c[j] += sum_k a[k * csa] * b[k * rsb + j] for j < N (rows of B contiguous). */
static void axpy_rows_scalar(int N, int K, const float *a, ptrdiff_t csa, const float *b, ptrdiff_t rsb,
                             float *c) {
    for (int k = 0; k < K; k++) {
        const float av = a[k * csa], *bk = b + k * rsb;
        for (int j = 0; j < N; j++) c[j] += av * bk[j];
    }
}

#if defined(__x86_64__)
/* A strip of c stays in registers over all k, so B is the only memory stream. */
TARGET_AVX2 static void axpy_rows_avx2(int N, int K, const float *a, ptrdiff_t csa, const float *b,
                                       ptrdiff_t rsb, float *c) {
    int j = 0;
    for (; j + 32 <= N; j += 32) {
        __m256 c0 = _mm256_loadu_ps(c + j), c1 = _mm256_loadu_ps(c + j + 8);
        __m256 c2 = _mm256_loadu_ps(c + j + 16), c3 = _mm256_loadu_ps(c + j + 24);
        for (int k = 0; k < K; k++) {
            const __m256 av = _mm256_set1_ps(a[k * csa]);
            const float *bk = b + k * rsb + j;
            c0 = _mm256_fmadd_ps(av, _mm256_loadu_ps(bk), c0);
            c1 = _mm256_fmadd_ps(av, _mm256_loadu_ps(bk + 8), c1);
            c2 = _mm256_fmadd_ps(av, _mm256_loadu_ps(bk + 16), c2);
            c3 = _mm256_fmadd_ps(av, _mm256_loadu_ps(bk + 24), c3);
        }
        _mm256_storeu_ps(c + j, c0);
        _mm256_storeu_ps(c + j + 8, c1);
        _mm256_storeu_ps(c + j + 16, c2);
        _mm256_storeu_ps(c + j + 24, c3);
    }
    if (j < N) axpy_rows_scalar(N - j, K, a, csa, b + j, rsb, c + j);
}

TARGET_AVX512 static void axpy_rows_avx512(int N, int K, const float *a, ptrdiff_t csa, const float *b,
                                           ptrdiff_t rsb, float *c) {
    int j = 0;
    for (; j + 64 <= N; j += 64) {
        __m512 c0 = _mm512_loadu_ps(c + j), c1 = _mm512_loadu_ps(c + j + 16);
        __m512 c2 = _mm512_loadu_ps(c + j + 32), c3 = _mm512_loadu_ps(c + j + 48);
        for (int k = 0; k < K; k++) {
            const __m512 av = _mm512_set1_ps(a[k * csa]);
            const float *bk = b + k * rsb + j;
            c0 = _mm512_fmadd_ps(av, _mm512_loadu_ps(bk), c0);
            c1 = _mm512_fmadd_ps(av, _mm512_loadu_ps(bk + 16), c1);
            c2 = _mm512_fmadd_ps(av, _mm512_loadu_ps(bk + 32), c2);
            c3 = _mm512_fmadd_ps(av, _mm512_loadu_ps(bk + 48), c3);
        }
        _mm512_storeu_ps(c + j, c0);
        _mm512_storeu_ps(c + j + 16, c1);
        _mm512_storeu_ps(c + j + 32, c2);
        _mm512_storeu_ps(c + j + 48, c3);
    }
    for (; j < N; j += 16) {  /* the last strips one vector at a time, the very last one masked */
        const __mmask16 m = N - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (N - j)) - 1);
        __m512 c0 = _mm512_maskz_loadu_ps(m, c + j);
        for (int k = 0; k < K; k++)
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[k * csa]), _mm512_maskz_loadu_ps(m, b + k * rsb + j), c0);
        _mm512_mask_storeu_ps(c + j, m, c0);
    }
}
#endif

/* c[j] = act((first ? bias : c[j]) + sum_k a[k * csa] * b[k * rsb + j * csb]) for j < N: one pass over
 * B per row of C, where packing B would cost as much as the whole product (M = 1 is a GEMV). */
static inline __attribute__((always_inline)) void gemv_body(int N, int K, const float *a, ptrdiff_t csa,
                                                            const float *b, ptrdiff_t rsb, ptrdiff_t csb,
                                                            float *c, float bias, int first, int act,
                                                            float (*dot)(int, const float *, const float *),
                                                            void (*axpy_rows)(int, int, const float *, ptrdiff_t,
                                                                              const float *, ptrdiff_t, float *)) {
    if (first)
        for (int j = 0; j < N; j++) c[j] = bias;
    if (csb == 1) {  /* rows of B are contiguous: c += a[k] * B[k, :] */
        axpy_rows(N, K, a, csa, b, rsb, c);
    } else if (rsb == 1 && csa == 1) {  /* B transposed (InnerProduct weights): dot products */
        for (int j = 0; j < N; j++) c[j] += dot(K, a, b + j * csb);
    } else {
        for (int j = 0; j < N; j++)
            for (int k = 0; k < K; k++) c[j] += a[k * csa] * b[k * rsb + j * csb];
    }
    if (act != MNNLITE_ACT_NONE)
        for (int j = 0; j < N; j++) c[j] = act_scalar(c[j], act);
}

typedef void (*gemv_fn)(int, int, const float *, ptrdiff_t, const float *, ptrdiff_t, ptrdiff_t, float *,
                        float, int, int);

#define GEMV_VARIANT(suffix, attr)                                                                   \
    attr static void gemv_##suffix(int N, int K, const float *a, ptrdiff_t csa, const float *b,       \
                                   ptrdiff_t rsb, ptrdiff_t csb, float *c, float bias, int first,     \
                                   int act) {                                                         \
        gemv_body(N, K, a, csa, b, rsb, csb, c, bias, first, act, dot_##suffix, axpy_rows_##suffix);  \
    }

GEMV_VARIANT(scalar, )
#if defined(__x86_64__)
GEMV_VARIANT(avx2, TARGET_AVX2)
GEMV_VARIANT(avx512, TARGET_AVX512)
#endif

/* Below this many rows of C the unpacked row-by-row product beats the packed GEMM. */
enum { GEMV_MAX_ROWS = 4 };

static void gemv_rows(int isa, int M, int N, int K, const float *a, ptrdiff_t rsa, ptrdiff_t csa, const float *b,
                      ptrdiff_t rsb, ptrdiff_t csb, float *c, ptrdiff_t ldc, const float *bias, int act,
                      int accumulate) {
    gemv_fn fn = gemv_scalar;
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) fn = gemv_avx512;
    else if (isa & MNNLITE_CPU_AVX2) fn = gemv_avx2;
#endif
    (void)isa;
    for (int i = 0; i < M; i++)
        fn(N, K, a + i * rsa, csa, b, rsb, csb, c + i * ldc, bias ? bias[i] : 0.0f, !accumulate, act);
}

int mnnlite_sgemm(int isa, int nthreads, int M, int N, int K, const float *a, ptrdiff_t rsa,
                  ptrdiff_t csa, const float *b, ptrdiff_t rsb, ptrdiff_t csb, float *c, ptrdiff_t ldc,
                  const float *bias, int act, int accumulate) {
    if (M <= GEMV_MAX_ROWS) {
        gemv_rows(isa, M, N, K, a, rsa, csa, b, rsb, csb, c, ldc, bias, act, accumulate);
        return 0;
    }
    const mnnlite_gemm_kernel *kern = mnnlite_gemm_select(isa);
    float *ap = mnnlite_alloc(mnnlite_packed_a_size(kern, M, K));
    if (!ap) return -1;
    mnnlite_pack_a(kern, M, K, a, rsa, csa, ap);
    mnnlite_gemm_work work;
    if (mnnlite_gemm_work_init(&work, kern, mnnlite_threads_for_work(nthreads, 2.0 * M * N * K)) != 0) {
        mnnlite_free(ap);
        return -1;
    }
    mnnlite_matrix mb = {b, rsb, csb};
    mnnlite_gemm_threads(kern, &work, M, N, K, ap, mnnlite_pack_b_matrix, &mb, c, ldc, bias, act, accumulate);
    mnnlite_gemm_work_release(&work);
    mnnlite_free(ap);
    return 0;
}
