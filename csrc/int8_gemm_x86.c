/* x86 int8 GEMM micro-kernels (see int8_internal.h for the packing contract).
 *
 *   vnni   : vpdpbusd, uint8 activations x int8 weights, 4 k per lane, 8 x 32 tile
 *   avx512 : vpmovzxbw + vpmaddwd on int16, 2 k per lane, 8 x 32 tile
 *   avx2   : the same on ymm, 4 x 16 tile
 * All three accumulate sum (q + 128) * w in exact int32 and requantize with MNN's float order
 * (_AVX_MNNGemmInt8AddBiasScale_16x4_Unit: *alpha, *s_in/s_out, +bias, min, max, +-0.5, truncate).
 * No FMA is enabled for these functions, so no product can be fused into a sum. */
#include "cpu_features.h"
#include "int8_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <string.h>

#define T_AVX2 __attribute__((target("avx2")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

/* ------------------------------------------------------------------------------ AVX2 */

/* 8 accumulators of one channel -> 8 int8 codes in the low 8 bytes. */
T_AVX2 static inline __m128i rq8_avx2(__m256i acc, const mnnlite_rq *rq, int o) {
    __m256 f = _mm256_cvtepi32_ps(_mm256_add_epi32(acc, _mm256_set1_epi32(rq->corr[o])));
    f = _mm256_mul_ps(f, _mm256_set1_ps(rq->alpha[o]));
    f = _mm256_mul_ps(f, _mm256_set1_ps(rq->scale_x));
    f = _mm256_add_ps(f, _mm256_set1_ps(rq->bias_f[o]));
    f = _mm256_min_ps(f, _mm256_set1_ps(rq->hi));
    f = _mm256_max_ps(f, _mm256_set1_ps(rq->lo));
    __m256 neg = _mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_LT_OQ);
    f = _mm256_add_ps(f, _mm256_blendv_ps(_mm256_set1_ps(0.5f), _mm256_set1_ps(-0.5f), neg));
    __m256i i = _mm256_cvttps_epi32(f);
    __m128i s = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    return _mm_packs_epi16(s, s);
}

T_AVX2 static void store16_avx2(__m256i a0, __m256i a1, const mnnlite_rq *rq, int o, int8_t *y, int nc) {
    __m128i v = _mm_unpacklo_epi64(rq8_avx2(a0, rq, o), rq8_avx2(a1, rq, o));
    if (nc == 16) {
        _mm_storeu_si128((__m128i *)y, v);
        return;
    }
    int8_t tmp[16];
    _mm_storeu_si128((__m128i *)tmp, v);
    memcpy(y, tmp, (size_t)nc);
}

#define MADD2(acc, a, b) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))

T_AVX2 static void micro_avx2(int kp, const void *wv, const uint8_t *panel, const mnnlite_rq *rq, int o0,
                              int8_t *y, ptrdiff_t ldy, int mr, int nc) {
    const int32_t *w = (const int32_t *)wv;   /* 4 rows x (2 int16) per k pair */
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    for (int k = 0; k < kp; k += 2, w += 4, panel += 32) {
        __m256i a0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)panel));
        __m256i a1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(panel + 16)));
        __m256i b = _mm256_set1_epi32(w[0]);
        MADD2(c00, a0, b); MADD2(c01, a1, b);
        b = _mm256_set1_epi32(w[1]);
        MADD2(c10, a0, b); MADD2(c11, a1, b);
        b = _mm256_set1_epi32(w[2]);
        MADD2(c20, a0, b); MADD2(c21, a1, b);
        b = _mm256_set1_epi32(w[3]);
        MADD2(c30, a0, b); MADD2(c31, a1, b);
    }
    store16_avx2(c00, c01, rq, o0, y, nc);
    if (mr > 1) store16_avx2(c10, c11, rq, o0 + 1, y + ldy, nc);
    if (mr > 2) store16_avx2(c20, c21, rq, o0 + 2, y + 2 * ldy, nc);
    if (mr > 3) store16_avx2(c30, c31, rq, o0 + 3, y + 3 * ldy, nc);
}

/* ------------------------------------------------------------------------------ AVX-512 */

/* 16 accumulators of one channel -> 16 int8 codes; same float steps as rq8_avx2. */
T_AVX512 static inline __m128i rq16_512(__m512i acc, const mnnlite_rq *rq, int o) {
    __m512 f = _mm512_cvtepi32_ps(_mm512_add_epi32(acc, _mm512_set1_epi32(rq->corr[o])));
    f = _mm512_mul_ps(f, _mm512_set1_ps(rq->alpha[o]));
    f = _mm512_mul_ps(f, _mm512_set1_ps(rq->scale_x));
    f = _mm512_add_ps(f, _mm512_set1_ps(rq->bias_f[o]));
    f = _mm512_min_ps(f, _mm512_set1_ps(rq->hi));
    f = _mm512_max_ps(f, _mm512_set1_ps(rq->lo));
    __mmask16 neg = _mm512_cmp_ps_mask(f, _mm512_setzero_ps(), _CMP_LT_OQ);
    f = _mm512_add_ps(f, _mm512_mask_blend_ps(neg, _mm512_set1_ps(0.5f), _mm512_set1_ps(-0.5f)));
    return _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(f));
}

T_AVX512 static inline void store32_512(__m512i a0, __m512i a1, const mnnlite_rq *rq, int o, int8_t *y, int nc) {
    __m128i lo = rq16_512(a0, rq, o), hi = rq16_512(a1, rq, o);
    if (nc == 32) {
        _mm_storeu_si128((__m128i *)y, lo);
        _mm_storeu_si128((__m128i *)(y + 16), hi);
        return;
    }
    __mmask16 m0 = (__mmask16)(nc >= 16 ? 0xFFFF : (1u << nc) - 1);
    __mmask16 m1 = (__mmask16)(nc <= 16 ? 0 : (1u << (nc - 16)) - 1);
    _mm_mask_storeu_epi8(y, m0, lo);
    _mm_mask_storeu_epi8(y + 16, m1, hi);
}

/* Rows 0..7 of a tile, two 16-pixel vectors each: C(r, 0) and C(r, 1). */
#define DECL8 __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, \
    c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00
#define STORE8                                                                   \
    do {                                                                         \
        store32_512(c00, c01, rq, o0, y, nc);                                    \
        if (mr > 1) store32_512(c10, c11, rq, o0 + 1, y + ldy, nc);              \
        if (mr > 2) store32_512(c20, c21, rq, o0 + 2, y + 2 * ldy, nc);          \
        if (mr > 3) store32_512(c30, c31, rq, o0 + 3, y + 3 * ldy, nc);          \
        if (mr > 4) store32_512(c40, c41, rq, o0 + 4, y + 4 * ldy, nc);          \
        if (mr > 5) store32_512(c50, c51, rq, o0 + 5, y + 5 * ldy, nc);          \
        if (mr > 6) store32_512(c60, c61, rq, o0 + 6, y + 6 * ldy, nc);          \
        if (mr > 7) store32_512(c70, c71, rq, o0 + 7, y + 7 * ldy, nc);          \
    } while (0)

#define MADD16(r, a0, a1, w)                                                     \
    do {                                                                         \
        __m512i b_ = _mm512_set1_epi32(w);                                       \
        c##r##0 = _mm512_add_epi32(c##r##0, _mm512_madd_epi16(a0, b_));          \
        c##r##1 = _mm512_add_epi32(c##r##1, _mm512_madd_epi16(a1, b_));          \
    } while (0)

T_AVX512 static void micro_avx512(int kp, const void *wv, const uint8_t *panel, const mnnlite_rq *rq, int o0,
                                  int8_t *y, ptrdiff_t ldy, int mr, int nc) {
    const int32_t *w = (const int32_t *)wv;   /* 8 rows x (2 int16) per k pair */
    DECL8;
    for (int k = 0; k < kp; k += 2, w += 8, panel += 64) {
        __m512i a0 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)panel));
        __m512i a1 = _mm512_cvtepu8_epi16(_mm256_loadu_si256((const __m256i *)(panel + 32)));
        MADD16(0, a0, a1, w[0]); MADD16(1, a0, a1, w[1]); MADD16(2, a0, a1, w[2]); MADD16(3, a0, a1, w[3]);
        MADD16(4, a0, a1, w[4]); MADD16(5, a0, a1, w[5]); MADD16(6, a0, a1, w[6]); MADD16(7, a0, a1, w[7]);
    }
    STORE8;
}

/* ------------------------------------------------------------------------------ AVX-512 VNNI */

#define DPBUSD(r, a0, a1, w)                                                     \
    do {                                                                         \
        __m512i b_ = _mm512_set1_epi32(w);                                       \
        c##r##0 = _mm512_dpbusd_epi32(c##r##0, a0, b_);                          \
        c##r##1 = _mm512_dpbusd_epi32(c##r##1, a1, b_);                          \
    } while (0)

T_VNNI static void micro_vnni(int kp, const void *wv, const uint8_t *panel, const mnnlite_rq *rq, int o0,
                              int8_t *y, ptrdiff_t ldy, int mr, int nc) {
    const int32_t *w = (const int32_t *)wv;   /* 8 rows x (4 int8) per k quad */
    DECL8;
    for (int k = 0; k < kp; k += 4, w += 8, panel += 128) {
        __m512i a0 = _mm512_loadu_si512((const void *)panel);
        __m512i a1 = _mm512_loadu_si512((const void *)(panel + 64));
        DPBUSD(0, a0, a1, w[0]); DPBUSD(1, a0, a1, w[1]); DPBUSD(2, a0, a1, w[2]); DPBUSD(3, a0, a1, w[3]);
        DPBUSD(4, a0, a1, w[4]); DPBUSD(5, a0, a1, w[5]); DPBUSD(6, a0, a1, w[6]); DPBUSD(7, a0, a1, w[7]);
    }
    STORE8;
}

/* T_VNNI includes T_AVX512 (MNNLITE_CPU_VNNI implies MNNLITE_CPU_AVX512), so the epilogue inlines. */

static const mnnlite_int8_kernel k_vnni = {8, 32, 4, 1, micro_vnni, "vnni"};
static const mnnlite_int8_kernel k_avx512 = {8, 32, 2, 2, micro_avx512, "avx512"};
static const mnnlite_int8_kernel k_avx2 = {4, 16, 2, 2, micro_avx2, "avx2"};

const mnnlite_int8_kernel *mnnlite_int8_kernel_x86(int isa) {
    if (isa & MNNLITE_CPU_VNNI) return &k_vnni;
    if (isa & MNNLITE_CPU_AVX512) return &k_avx512;
    if (isa & MNNLITE_CPU_AVX2) return &k_avx2;
    return 0;
}

#else
const mnnlite_int8_kernel *mnnlite_int8_kernel_x86(int isa) {
    (void)isa;
    return 0;
}
#endif
