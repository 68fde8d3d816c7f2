/* Float32 element-wise kernels whose numpy definitions the runtime must match bit for bit
 * (mnnlite/kernels/table.py): every path performs the same comparisons and picks the same operand. */
#include "eltwise_f32.h"

/* numpy's maximum then minimum: the first operand when it compares greater (less) or is NaN, else the
 * bound -- so a bound equal to the value (0.0 against -0.0) wins, and a NaN bound gives NaN */
static inline float clamp1(float v, float lo, float hi) {
    v = (v > lo || v != v) ? v : lo;
    return (v < hi || v != v) ? v : hi;
}

static void clamp_scalar(const float *x, float *y, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++) y[i] = clamp1(x[i], lo, hi);
}

/* np.clip(x + 3, 0, 6) compares and leaves a NaN as it is */
static void hardswish_scalar(const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i], t = v + 3.0f;
        t = t < 0.0f ? 0.0f : t;
        t = t > 6.0f ? 6.0f : t;
        y[i] = (v * t) / 6.0f;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

__attribute__((target("avx2,fma")))
static void clamp_avx2(const float *x, float *y, size_t n, float lo, float hi) {
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 keep = _mm256_or_ps(_mm256_cmp_ps(v, vlo, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        v = _mm256_blendv_ps(vlo, v, keep);
        keep = _mm256_or_ps(_mm256_cmp_ps(v, vhi, _CMP_LT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
        _mm256_storeu_ps(y + i, _mm256_blendv_ps(vhi, v, keep));
    }
    clamp_scalar(x + i, y + i, n - i, lo, hi);
}

__attribute__((target("avx2,fma")))
static void hardswish_avx2(const float *x, float *y, size_t n) {
    const __m256 three = _mm256_set1_ps(3.0f), six = _mm256_set1_ps(6.0f), zero = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i), t = _mm256_add_ps(v, three);
        t = _mm256_blendv_ps(t, zero, _mm256_cmp_ps(t, zero, _CMP_LT_OQ));
        t = _mm256_blendv_ps(t, six, _mm256_cmp_ps(t, six, _CMP_GT_OQ));
        _mm256_storeu_ps(y + i, _mm256_div_ps(_mm256_mul_ps(v, t), six));
    }
    hardswish_scalar(x + i, y + i, n - i);
}

__attribute__((target("avx512f")))
static void hardswish_avx512(const float *x, float *y, size_t n) {
    const __m512 three = _mm512_set1_ps(3.0f), six = _mm512_set1_ps(6.0f), zero = _mm512_setzero_ps();
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i), t = _mm512_add_ps(v, three);
        t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ), t, zero);
        t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(t, six, _CMP_GT_OQ), t, six);
        _mm512_mask_storeu_ps(y + i, m, _mm512_div_ps(_mm512_mul_ps(v, t), six));
    }
}

__attribute__((target("avx512f")))
static void clamp_avx512(const float *x, float *y, size_t n, float lo, float hi) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, vlo, _CMP_GT_OQ) | nan, vlo, v);
        nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, vhi, _CMP_LT_OQ) | nan, vhi, v);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}
#endif

void mnnlite_hardswish_f32(const float *x, float *y, size_t n, int isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    int have = mnnlite_cpu_features();
    if ((isa & MNNLITE_CPU_AVX512) && (have & MNNLITE_CPU_AVX512)) {
        hardswish_avx512(x, y, n);
        return;
    }
    if ((isa & MNNLITE_CPU_AVX2) && (have & MNNLITE_CPU_AVX2)) {
        hardswish_avx2(x, y, n);
        return;
    }
#else
    (void)isa;
#endif
    hardswish_scalar(x, y, n);
}

void mnnlite_clamp_f32(const float *x, float *y, size_t n, float lo, float hi, int isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    int have = mnnlite_cpu_features();
    if ((isa & MNNLITE_CPU_AVX512) && (have & MNNLITE_CPU_AVX512)) {
        clamp_avx512(x, y, n, lo, hi);
        return;
    }
    if ((isa & MNNLITE_CPU_AVX2) && (have & MNNLITE_CPU_AVX2)) {
        clamp_avx2(x, y, n, lo, hi);
        return;
    }
#else
    (void)isa;
#endif
    clamp_scalar(x, y, n, lo, hi);
}
