/* Float kernels bit-compatible with MNN 3.6.1's x86 CPU backend (AVX2 + FMA build, pack 8, eP 24).
 *
 * Facts used (paths under MNN's source/backend/cpu/):
 *  - x86_x64/avxfma/GemmAVX2FMA.cpp: MNNPackedMatMul on an FMA machine.  A full tile of 24 columns
 *    runs _AVX_MNNGemmFloatUnitMainFMA_Fused.S when post parameters are given (convolutions always
 *    give them): the accumulator starts at the bias and takes one FMA per reduction index, in order,
 *    then max/min.  The last E % 24 columns run _AVX_MNNPackednMatMulRemainCommon
 *    (x86_x64/avx/GemmFunction.hpp): tiles of 20, 16, then 5s, 4, 3, 2 columns accumulate from zero
 *    with one FMA chain; a final lone column keeps four chains (k mod 4), adds them as
 *    (c0 + c2) + (c1 + c3), then chains the K % 4 tail; bias is added afterwards
 *    (AVX2GemmPostTreat: bias + sum), then max/min.
 *  - x86_x64/avxfma/MathFunctions.cpp (_AVX_MNNExpC8FMA) and compute/CommonOptFunction.cpp
 *    (MNNExp's scalar tail, MNNSigmoid): sigmoid = 1 / (1 + MNNExp(-x)).  The avxfma sources are
 *    built by GCC with -mfma and its default -ffp-contract=fast, and GCC's _mm256_mul_ps/_add_ps/
 *    _sub_ps are plain vector arithmetic, so a mul feeding an add/sub there becomes one FMA
 *    (measured: x - div * ln2 in _AVX_MNNExpC8FMA rounds once).
 *  - CPUPool.hpp (poolingAvg, window inside the input): a running sum, in row order, of each value
 *    times (1.0f / count) (Vec8 mul then add: x86_x64/avx is built without -mfma).
 * This file is compiled in ISO C mode: no implicit FMA contraction, so every product and sum that
 * is not written as fmaf() rounds on its own, as in MNN's intrinsics. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "mnn_exact.h"

enum { MNN_EP = 24, MNN_HP = 4, MNN_PACK = 8 };

/* The same source twice: with the FMA instruction (x86 with AVX2 + FMA) and portable (libm fmaf). */
#if defined(__x86_64__) || defined(__i386__)
#define MNNX_HAVE_FMA_PATH 1
#define TARGET_FMA __attribute__((target("avx2,fma")))
#else
#define MNNX_HAVE_FMA_PATH 0
#define TARGET_FMA
#endif

/* Index of the column that _AVX_MNNPackednMatMulRemainCommon handles alone, or -1. */
static int lone_column(int E) {
    int r = E % MNN_EP;
    if (r >= 20) r -= 20;
    if (r >= 16) r -= 16;
    while (r >= 5) r -= 5;
    return r == 1 ? E - 1 : -1;
}

#define PACKED_MATMUL_BODY                                                                         \
    const int full = E / MNN_EP * MNN_EP, lone = lone_column(E), kc4 = K / 4 * 4;                  \
    for (int o = 0; o < O; o++) {                                                                  \
        float *yo = y + (size_t)o * E;                                                             \
        const float *wo = w + (size_t)o * K;                                                       \
        const float b = bias ? bias[o] : 0.0f;                                                     \
        for (int e = 0; e < full; e++) yo[e] = b;                                                  \
        for (int e = full; e < E; e++) yo[e] = 0.0f;                                               \
        for (int k = 0; k < K; k++) {                                                              \
            const float wk = wo[k], *ak = a + (size_t)k * E;                                       \
            for (int e = 0; e < E; e++) yo[e] = fmaf(ak[e], wk, yo[e]);                            \
        }                                                                                          \
        if (lone >= 0) {                                                                           \
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};                                                 \
            for (int k = 0; k < kc4; k++)                                                          \
                c[k % 4] = fmaf(a[(size_t)k * E + lone], wo[k], c[k % 4]);                         \
            float s = (c[0] + c[2]) + (c[1] + c[3]);                                               \
            for (int k = kc4; k < K; k++) s = fmaf(a[(size_t)k * E + lone], wo[k], s);             \
            yo[lone] = s;                                                                          \
        }                                                                                          \
        for (int e = full; e < E; e++) yo[e] = b + yo[e];                                          \
        for (int e = 0; e < E; e++) {                                                              \
            float v = yo[e];                                                                       \
            v = v > lo ? v : lo; /* _mm256_max_ps(v, lo) then _mm256_min_ps(v, hi) */              \
            yo[e] = v < hi ? v : hi;                                                               \
        }                                                                                          \
    }

#if MNNX_HAVE_FMA_PATH
#include <immintrin.h>

/* ROWS outputs x NV*8 columns held in registers.  Every y[o][e] still takes its K fused multiply-adds in
 * ascending k from the same start as the loop above (bias[o] in full 24-column tiles; 0 in the remainder
 * columns, where the bias is added at the end), so the bits are that loop's; only the loads and stores
 * of y between two k steps are gone (the loop above is bound by them). */
#define TILE(ROWS, NV, FULL_TILE)                                                                   \
    {                                                                                              \
        __m256 acc[ROWS][NV];                                                                      \
        for (int i = 0; i < ROWS; i++)                                                             \
            for (int j = 0; j < NV; j++)                                                           \
                acc[i][j] = _mm256_set1_ps(FULL_TILE && bias ? bias[o + i] : 0.0f);                \
        for (int k = 0; k < K; k++) {                                                              \
            const float *ak = a + (size_t)k * E + e;                                               \
            __m256 av[NV];                                                                         \
            for (int j = 0; j < NV; j++) av[j] = _mm256_loadu_ps(ak + 8 * j);                      \
            for (int i = 0; i < ROWS; i++) {                                                       \
                const __m256 wk = _mm256_set1_ps(w[(size_t)(o + i) * K + k]);                      \
                for (int j = 0; j < NV; j++) acc[i][j] = _mm256_fmadd_ps(av[j], wk, acc[i][j]);    \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < ROWS; i++)                                                             \
            for (int j = 0; j < NV; j++) {                                                         \
                __m256 v = acc[i][j];                                                              \
                if (!(FULL_TILE) && bias) v = _mm256_add_ps(_mm256_set1_ps(bias[o + i]), v);       \
                _mm256_storeu_ps(y + (size_t)(o + i) * E + e + 8 * j,                              \
                                 _mm256_min_ps(_mm256_max_ps(v, vlo), vhi));                       \
            }                                                                                      \
    }

TARGET_FMA static void packed_matmul_fma(const float *a, const float *w, const float *bias, float *y,
                              int K, int E, int O, float lo, float hi) {
    const int full = E / MNN_EP * MNN_EP, vec_end = full + (E - full) / 8 * 8;
    const int lone = lone_column(E), kc4 = K / 4 * 4;
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    int o = 0;
    for (; o + 4 <= O; o += 4) {
        for (int e = 0; e < full; e += MNN_EP) TILE(4, 3, 1)
        for (int e = full; e < vec_end; e += 8) TILE(4, 1, 0)
    }
    for (; o < O; o++) {
        for (int e = 0; e < full; e += MNN_EP) TILE(1, 3, 1)
        for (int e = full; e < vec_end; e += 8) TILE(1, 1, 0)
    }
    for (int oo = 0; oo < O; oo++) {
        /* the last < 8 remainder columns, then MNN's lone column (its own summation order) */
        float *yo = y + (size_t)oo * E;
        const float *wo = w + (size_t)oo * K;
        const float b = bias ? bias[oo] : 0.0f;
        for (int e = vec_end; e < E; e++) {
            float v = 0.0f;
            for (int k = 0; k < K; k++) v = fmaf(a[(size_t)k * E + e], wo[k], v);
            yo[e] = v;
        }
        if (lone >= 0) {
            float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int k = 0; k < kc4; k++) c[k % 4] = fmaf(a[(size_t)k * E + lone], wo[k], c[k % 4]);
            float sum = (c[0] + c[2]) + (c[1] + c[3]);
            for (int k = kc4; k < K; k++) sum = fmaf(a[(size_t)k * E + lone], wo[k], sum);
            yo[lone] = sum;
        }
        for (int e = lone >= 0 && lone < vec_end ? lone : vec_end; e < E; e++) {
            float v = b + yo[e];
            v = v > lo ? v : lo;
            yo[e] = v < hi ? v : hi;
        }
    }
}
#endif

static void packed_matmul_any(const float *a, const float *w, const float *bias, float *y,
                              int K, int E, int O, float lo, float hi) {
    PACKED_MATMUL_BODY
}

void mnnx_packed_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                        int K, int E, int O, float lo, float hi) {
    if (MNNX_HAVE_FMA_PATH && (isa & MNNLITE_CPU_AVX2)) packed_matmul_fma(a, w, bias, y, K, E, O, lo, hi);
    else packed_matmul_any(a, w, bias, y, K, E, O, lo, hi);
}

/* Convolution1x1Strassen / StrassenMatrixComputor (compute/StrassenMatmulComputor.cpp): while the
 * estimated saving is positive, C = A B splits into 2 x 2 blocks (E in halves of whole 24-column
 * tiles, O in halves of whole 8-row packs, K in halves) computed by Winograd's Strassen variant with
 * seven sub-products (MNNMatrixAdd/Sub, _AVX_MNNStrassenMergeCFunction); sub-products carry no bias
 * (the non-fused kernel, accumulating from 0); bias and clamp are applied to the four blocks at the
 * end (_AVX_MNNAxByClampBroadcastUnit); leftover rows/columns are plain products with bias. */
#if MNNX_HAVE_FMA_PATH
#define GEMM_SFX _fma
#define GEMM_ATTR TARGET_FMA
#include "mnn_exact_gemm.inc"
#undef GEMM_SFX
#undef GEMM_ATTR
#endif
#define GEMM_SFX _any
#define GEMM_ATTR
#include "mnn_exact_gemm.inc"
#undef GEMM_SFX
#undef GEMM_ATTR

/* Whether StrassenMatrixComputor does anything but one plain product at the top level. */
static int strassen_splits(int K, int E, int O, int max_depth) {
    if (K > 32768 / ((E < MNN_EP ? E : MNN_EP) + MNN_HP)) return 1;
    const int eSub = (E / MNN_EP) / 2 * MNN_EP, hSub = (O / MNN_PACK) / 2 * MNN_PACK;
    if (max_depth <= 0 || eSub == 0 || hSub == 0 || K % (2 * MNN_PACK) != 0) return 0;
    const int lSub = K / 2, bHSub = hSub / MNN_HP;
    const float cost = 4 * ((float)eSub * lSub) + 4 * (float)lSub * bHSub * MNN_HP + 7 * (float)eSub * hSub;
    const float save = (float)((E / MNN_EP) * (MNN_EP * hSub + lSub / MNN_PACK * MNN_EP * MNN_PACK +
                                                lSub * bHSub * MNN_HP));
    return save - cost * 1.5f > 0.0f;
}

int mnnx_strassen_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                         int K, int E, int O, int max_depth, float lo, float hi) {
    if (!strassen_splits(K, E, O, max_depth)) {     /* the same bits, the faster kernel */
        mnnx_packed_matmul(isa, a, w, bias, y, K, E, O, lo, hi);
        return 0;
    }
#if MNNX_HAVE_FMA_PATH
    if (isa & MNNLITE_CPU_AVX2)
        return gemm_strassen_fma(a, (size_t)E, w, (size_t)K, bias, y, (size_t)E, K, E, O, 0, max_depth, 1, lo, hi);
#else
    (void)isa;
#endif
    return gemm_strassen_any(a, (size_t)E, w, (size_t)K, bias, y, (size_t)E, K, E, O, 0, max_depth, 1, lo, hi);
}

/* MNNExp's constants: parameters[] of CommonOptFunction.cpp, computed in float as there. */
static float exp_param(int i) {
    const float ln2 = (float)logf(2.0f);
    switch (i) {
    case 0: return ln2;
    case 1: return 1.0f / ln2;
    case 4: return 0.5f;
    case 5: return 1.0f / 6.0f;
    case 6: return 1.0f / 24.0f;
    default: return 1.0f / 120.0f;
    }
}

static float from_bits(int32_t i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}

/* One lane of _AVX_MNNExpC8FMA: out = exp(in) by MNN's FMA polynomial, in clamped to [-87, 87] first;
 * needs EXP_PARAMS in scope.  Shared by the sigmoid, softmax and exp kernels below. */
#define EXP_PARAMS                                                                                 \
    const float p0 = exp_param(0), p1 = exp_param(1), p4 = exp_param(4), p5 = exp_param(5);        \
    const float p6 = exp_param(6), p7 = exp_param(7)
#define EXP_C8_LANE(in, out)                                                                       \
    do {                                                                                           \
        float v_ = (in);                                                                           \
        v_ = v_ > -87.0f ? v_ : -87.0f;                                                            \
        v_ = v_ < 87.0f ? v_ : 87.0f;                                                              \
        const int32_t qi_ = (int32_t)nearbyintf(v_ * p1); /* _mm256_cvtps_epi32: nearest even */   \
        const float basic_ = from_bits((int32_t)((uint32_t)(qi_ + 127) << 23));                    \
        const float t_ = fmaf(-(float)qi_, p0, v_) * 0.25f; /* GCC contracts sub(x, mul(div, p0)) */ \
        float c_ = fmaf(p7, t_, p6);                                                               \
        c_ = fmaf(c_, t_, p5);                                                                     \
        c_ = fmaf(c_, t_, p4);                                                                     \
        c_ = fmaf(c_, t_, 1.0f);                                                                   \
        c_ = fmaf(c_, t_, 1.0f);                                                                   \
        c_ = c_ * c_;                                                                              \
        c_ = c_ * c_;                                                                              \
        (out) = fmaf(basic_, c_, 0.0f);                                                            \
    } while (0)

#define SIGMOID_C8_BODY                                                                            \
    EXP_PARAMS;                                                                                    \
    for (size_t i = 0; i < n; i++) {                                                               \
        float e;                                                                                   \
        EXP_C8_LANE(x[i] * -1.0f + 0.0f, e);  /* x * offset[0] + offset[2] */                      \
        y[i] = 1.0f / (1.0f + e);                                                                  \
    }

TARGET_FMA static void sigmoid_c8_fma(const float *x, float *y, size_t n) {
    SIGMOID_C8_BODY
}

static void sigmoid_c8_any(const float *x, float *y, size_t n) {
    SIGMOID_C8_BODY
}

/* MNNExp's scalar tail on one value: truncating float -> int, no FMA; v is x * offset[0] + offset[2]. */
static inline float exp_tail(float v) {
    const float p0 = exp_param(0), p1 = exp_param(1), p4 = exp_param(4), p5 = exp_param(5);
    const float p6 = exp_param(6), p7 = exp_param(7);
    v = v > -87.0f ? v : -87.0f;
    v = v < 87.0f ? v : 87.0f;
    const int q = (int)(v * p1);
    const float basic = from_bits((int32_t)((uint32_t)(q + 127) << 23));
    const float r = v - (float)q * p0;
    const float t = r * 0.25f;
    float e = ((((p7 * t + p6) * t + p5) * t + p4) * t + 1.0f) * t + 1.0f;
    e = e * e;
    e = e * e;
    return basic * e + 0.0f;
}

static void sigmoid_tail(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + exp_tail(x[i] * -1.0f + 0.0f));
}

void mnnx_sigmoid(int isa, const float *x, float *y, size_t n, size_t n8) {
    const size_t head = n8 * 8 < n ? n8 * 8 : n;
    if (MNNX_HAVE_FMA_PATH && (isa & MNNLITE_CPU_AVX2)) sigmoid_c8_fma(x, y, head);
    else sigmoid_c8_any(x, y, head);
    sigmoid_tail(x + head, y + head, n - head);
}

void mnnx_global_avg(const float *x, float *y, int channels, int hw) {
    const float scale = 1.0f / (float)hw;
    for (int c = 0; c < channels; c++) {
        const float *xc = x + (size_t)c * hw;
        float s = 0.0f;
        for (int i = 0; i < hw; i++) s = s + xc[i] * scale;
        y[c] = s;
    }
}

/* x86_x64/avx/MathFunctions.cpp _AVX_MNNNorm (the x86 MNNNorm with AVX2; built without -mfma): the
 * mean from eight lane sums over the first size / 8 * 8 values, the lanes added in order, then the
 * tail; the squared deviations likewise (mul, then add); y = ((x - mean) * gamma) * (1 / sqrt(var +
 * eps)) + beta, or (x - mean) * (1 / sqrt(...)) without gamma/beta. */
void mnnx_norm(const float *src, float *dst, const float *gamma, const float *beta, float eps,
               size_t size, int rms) {
    const size_t count = size / 8, remain = count * 8;
    float mean = 0.0f;
    if (!rms) {
        float sum = 0.0f;
        if (count > 0) {
            float lane[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
            for (size_t i = 0; i < count; i++)
                for (int l = 0; l < 8; l++) lane[l] = lane[l] + src[i * 8 + l];
            for (int l = 0; l < 8; l++) sum += lane[l];
        }
        for (size_t i = remain; i < size; i++) sum += src[i];
        mean = sum / (float)size;
    }
    float square_sum = 0.0f;
    if (count > 0) {
        float lane[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (size_t i = 0; i < count; i++)
            for (int l = 0; l < 8; l++) {
                const float x = src[i * 8 + l] - mean;
                const float xx = x * x;
                lane[l] = lane[l] + xx;
            }
        for (int l = 0; l < 8; l++) square_sum += lane[l];
    }
    for (size_t i = remain; i < size; i++) {
        const float x = src[i] - mean;
        const float xx = x * x;
        square_sum += xx;
    }
    float variable = square_sum / (float)size;
    variable = 1.0f / sqrtf(variable + eps);
    if (gamma && beta) {
        for (size_t i = 0; i < size; i++) {
            const float xg = (src[i] - mean) * gamma[i];
            const float xv = xg * variable;
            dst[i] = xv + beta[i];
        }
    } else {
        for (size_t i = 0; i < size; i++) dst[i] = (src[i] - mean) * variable;
    }
}

/* CPUSoftmax (inside 1, or the axis moved last) -> _AVX_MNNSoftmax (x86_x64/avx/MathFunctions.cpp)
 * per row of C values: m = max; each whole group of 8 through MNNExp -> _AVX_MNNExpC8FMA on
 * x * 1 + (-m) (the FMA polynomial, as for the sigmoid), the group's results added to the running
 * sum one by one in order; the last C % 8 through libm expf(x - m), added likewise; then every value
 * times 1 / (sum + 1e-20f). */
#define SOFTMAX_ROWS_BODY                                                                          \
    EXP_PARAMS;                                                                                    \
    for (size_t r = 0; r < rows; r++) {                                                            \
        const float *xr = x + r * C;                                                               \
        float *yr = y + r * C;                                                                     \
        const size_t c8 = C / 8 * 8;                                                               \
        float m = -FLT_MAX;                                                                        \
        for (size_t i = 0; i < C; i++) m = xr[i] > m ? xr[i] : m;                                  \
        float sum = 0.0f;                                                                          \
        for (size_t i = 0; i < c8; i++) {                                                          \
            float e;                                                                               \
            EXP_C8_LANE(xr[i] - m, e);                                                             \
            yr[i] = e;                                                                             \
            sum += e;                                                                              \
        }                                                                                          \
        for (size_t i = c8; i < C; i++) {                                                          \
            const float e = expf(xr[i] - m);                                                       \
            sum += e;                                                                              \
            yr[i] = e;                                                                             \
        }                                                                                          \
        const float scale = 1.0f / (sum + 1e-20f);                                                 \
        for (size_t i = 0; i < C; i++) yr[i] = yr[i] * scale;                                      \
    }

#if MNNX_HAVE_FMA_PATH
TARGET_FMA static void softmax_rows_fma(const float *x, float *y, size_t rows, size_t C) {
    SOFTMAX_ROWS_BODY
}
#endif

static void softmax_rows_any(const float *x, float *y, size_t rows, size_t C) {
    SOFTMAX_ROWS_BODY
}

void mnnx_softmax_rows(int isa, const float *x, float *y, size_t rows, size_t C) {
#if MNNX_HAVE_FMA_PATH
    if (isa & MNNLITE_CPU_AVX2) {
        softmax_rows_fma(x, y, rows, C);
        return;
    }
#else
    (void)isa;
#endif
    softmax_rows_any(x, y, rows, C);
}

/* MNNExp(dst, src, {1, 0, 0, 0}, n): exp(x), the first n / 8 * 8 values through _AVX_MNNExpC8FMA, the
 * rest through the scalar tail (truncating float -> int, no FMA). */
#define EXP_C8_BODY                                                                                \
    EXP_PARAMS;                                                                                    \
    for (size_t i = 0; i < n; i++) EXP_C8_LANE(x[i], y[i]);

#if MNNX_HAVE_FMA_PATH
TARGET_FMA static void exp_c8_fma(const float *x, float *y, size_t n) {
    EXP_C8_BODY
}
#endif

static void exp_c8_any(const float *x, float *y, size_t n) {
    EXP_C8_BODY
}

void mnnx_exp(int isa, const float *x, float *y, size_t n) {
    const size_t head = n / 8 * 8;
#if MNNX_HAVE_FMA_PATH
    if (isa & MNNLITE_CPU_AVX2) exp_c8_fma(x, y, head);
    else exp_c8_any(x, y, head);
#else
    (void)isa;
    exp_c8_any(x, y, head);
#endif
    for (size_t i = head; i < n; i++) y[i] = exp_tail(x[i] * 1.0f + 0.0f);
}

/* UnaryOpOperation codes (schema): the ones computed by a libm float function */
enum { U_SIN = 9, U_COS = 10, U_TAN = 11, U_ATAN = 14, U_LOG1P = 16, U_LOG = 8, U_ACOSH = 18, U_SINH = 19,
       U_ASINH = 20, U_ATANH = 21, U_COSH = 24, U_ERF = 25 };

int mnnx_libm_unary(int op, const float *x, float *y, size_t n) {
    float (*fn)(float);
    switch (op) {
        case U_ERF: fn = erff; break;
        case U_SIN: fn = sinf; break;
        case U_COS: fn = cosf; break;
        case U_TAN: fn = tanf; break;
        case U_ATAN: fn = atanf; break;
        case U_LOG: fn = logf; break;
        case U_ACOSH: fn = acoshf; break;
        case U_SINH: fn = sinhf; break;
        case U_ASINH: fn = asinhf; break;
        case U_ATANH: fn = atanhf; break;
        case U_COSH: fn = coshf; break;
        case U_LOG1P:       /* UnaryLog1p: logf((T)1 + x), the sum rounded to float first */
            for (size_t i = 0; i < n; ++i) y[i] = logf(1.0f + x[i]);
            return 0;
        default: return -1;
    }
    for (size_t i = 0; i < n; ++i) y[i] = fn(x[i]);
    return 0;
}
