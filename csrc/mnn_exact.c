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
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu_features.h"
#include "mnn_exact.h"

enum { MNN_EP = 24 };

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

TARGET_FMA static void packed_matmul_fma(const float *a, const float *w, const float *bias, float *y,
                              int K, int E, int O, float lo, float hi) {
    PACKED_MATMUL_BODY
}

static void packed_matmul_any(const float *a, const float *w, const float *bias, float *y,
                              int K, int E, int O, float lo, float hi) {
    PACKED_MATMUL_BODY
}

void mnnx_packed_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                        int K, int E, int O, float lo, float hi) {
    if (MNNX_HAVE_FMA_PATH && (isa & MNNLITE_CPU_AVX2)) packed_matmul_fma(a, w, bias, y, K, E, O, lo, hi);
    else packed_matmul_any(a, w, bias, y, K, E, O, lo, hi);
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

#define SIGMOID_C8_BODY                                                                            \
    const float p0 = exp_param(0), p1 = exp_param(1), p4 = exp_param(4), p5 = exp_param(5);        \
    const float p6 = exp_param(6), p7 = exp_param(7);                                              \
    for (size_t i = 0; i < n; i++) {                                                               \
        float v = x[i] * -1.0f + 0.0f;  /* x * offset[0] + offset[2] */                            \
        v = v > -87.0f ? v : -87.0f;                                                               \
        v = v < 87.0f ? v : 87.0f;                                                                 \
        const float q = v * p1;                                                                    \
        const int32_t qi = (int32_t)nearbyintf(q); /* _mm256_cvtps_epi32: round to nearest even */ \
        const float qf = (float)qi;                                                                \
        const float basic = from_bits((int32_t)((uint32_t)(qi + 127) << 23));                      \
        const float t = fmaf(-qf, p0, v) * 0.25f; /* GCC contracts sub(x, mul(div, p0)) */          \
        float c = fmaf(p7, t, p6);                                                                 \
        c = fmaf(c, t, p5);                                                                        \
        c = fmaf(c, t, p4);                                                                        \
        c = fmaf(c, t, 1.0f);                                                                      \
        c = fmaf(c, t, 1.0f);                                                                      \
        c = c * c;                                                                                 \
        c = c * c;                                                                                 \
        y[i] = 1.0f / (1.0f + fmaf(basic, c, 0.0f));                                               \
    }

TARGET_FMA static void sigmoid_c8_fma(const float *x, float *y, size_t n) {
    SIGMOID_C8_BODY
}

static void sigmoid_c8_any(const float *x, float *y, size_t n) {
    SIGMOID_C8_BODY
}

/* MNNExp's scalar tail: truncating float -> int, no FMA. */
static void sigmoid_tail(const float *x, float *y, size_t n) {
    const float p0 = exp_param(0), p1 = exp_param(1), p4 = exp_param(4), p5 = exp_param(5);
    const float p6 = exp_param(6), p7 = exp_param(7);
    for (size_t i = 0; i < n; i++) {
        float v = x[i] * -1.0f + 0.0f;
        v = v > -87.0f ? v : -87.0f;
        v = v < 87.0f ? v : 87.0f;
        const int q = (int)(v * p1);
        const float basic = from_bits((int32_t)((uint32_t)(q + 127) << 23));
        const float r = v - (float)q * p0;
        const float t = r * 0.25f;
        float e = ((((p7 * t + p6) * t + p5) * t + p4) * t + 1.0f) * t + 1.0f;
        e = e * e;
        e = e * e;
        y[i] = 1.0f / (1.0f + (basic * e + 0.0f));
    }
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
