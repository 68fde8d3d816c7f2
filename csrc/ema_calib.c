/* EMA fake quantization kernels (see ema_calib.h).  Compiled in ISO C mode (setup.py: -std=c11), so
 * GCC fuses no multiply-add: every float32 operation rounds on its own, as numpy's do. */
#include <math.h>

#include "cpu_features.h"
#include "ema_calib.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

void emac_range(const float *x, size_t n, float *lo, float *hi) {
    /* independent lanes keep several comparisons in flight; NaN is tracked apart, since a comparison
     * with NaN is false and would hide it */
    float l[8], h[8];
    int nan = 0;
    for (int j = 0; j < 8; j++) l[j] = h[j] = x[0];
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int j = 0; j < 8; j++) {
            const float v = x[k + j];
            nan |= v != v;
            l[j] = v < l[j] ? v : l[j];
            h[j] = v > h[j] ? v : h[j];
        }
    for (; k < n; k++) {
        const float v = x[k];
        nan |= v != v;
        l[0] = v < l[0] ? v : l[0];
        h[0] = v > h[0] ? v : h[0];
    }
    float lo_ = l[0], hi_ = h[0];
    for (int j = 1; j < 8; j++) {
        lo_ = l[j] < lo_ ? l[j] : lo_;
        hi_ = h[j] > hi_ ? h[j] : hi_;
    }
    *lo = nan ? NAN : lo_;
    *hi = nan ? NAN : hi_;
}

/* C roundf without a libm call: floor by truncation below 2^23 (every float from there on is whole), then
 * half away from zero; NaN and infinities pass through as roundf's do.  Written with selects only, so
 * the loop below vectorises. */
static inline float round_half_away(float t) {
    const float mag = fabsf(t);
    const int small = mag < 8388608.0f;                       /* false for NaN */
    const float whole = small ? (float)(int)(small ? mag : 0.0f) : mag;
    const float r = whole + (mag - whole >= 0.5f ? 1.0f : 0.0f);
    return copysignf(r, t);
}

#define FAKE_QUANT_BODY                                                                            \
    for (size_t k = 0; k < n; k++) {                                                               \
        float q = round_half_away(x[k] / s + z);                                                   \
        q = q < -c ? -c : q;                                                                       \
        q = q > c ? c : q;                                                                         \
        y[k] = s * (q - z);                                                                        \
    }

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/* The body above, eight values at a time (GCC does not vectorise it by itself): the same operations,
 * each IEEE-rounded the same way, selects written as blends. */
__attribute__((target("avx2"))) static void fake_quant_avx2(const float *x, float *y, size_t n, float s,
                                                             float z, float c) {
    const __m256 vs = _mm256_set1_ps(s), vz = _mm256_set1_ps(z), vc = _mm256_set1_ps(c),
                 vnc = _mm256_set1_ps(-c), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f),
                 big = _mm256_set1_ps(8388608.0f), sign = _mm256_set1_ps(-0.0f);
    size_t k = 0;
    for (; k + 8 <= n; k += 8) {
        const __m256 t = _mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(x + k), vs), vz);
        const __m256 mag = _mm256_andnot_ps(sign, t);
        const __m256 small = _mm256_cmp_ps(mag, big, _CMP_LT_OQ);
        const __m256 cut = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_and_ps(mag, small)));
        const __m256 whole = _mm256_blendv_ps(mag, cut, small);
        const __m256 up = _mm256_and_ps(_mm256_cmp_ps(_mm256_sub_ps(mag, whole), half, _CMP_GE_OQ), one);
        __m256 q = _mm256_or_ps(_mm256_add_ps(whole, up), _mm256_and_ps(t, sign));     /* copysignf */
        q = _mm256_blendv_ps(q, vnc, _mm256_cmp_ps(q, vnc, _CMP_LT_OQ));
        q = _mm256_blendv_ps(q, vc, _mm256_cmp_ps(q, vc, _CMP_GT_OQ));
        _mm256_storeu_ps(y + k, _mm256_mul_ps(vs, _mm256_sub_ps(q, vz)));
    }
    x += k, y += k, n -= k;
    FAKE_QUANT_BODY
}
#endif

static void fake_quant_any(const float *x, float *y, size_t n, float s, float z, float c) {
    FAKE_QUANT_BODY
}

void emac_fake_quant(int isa, const float *x, float *y, size_t n, float s, float z, float c) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa & MNNLITE_CPU_AVX2) {
        fake_quant_avx2(x, y, n, s, z, c);
        return;
    }
#endif
    (void)isa;
    fake_quant_any(x, y, n, s, z, c);
}
