/* Depthwise int8 convolution with MNN's depthwise requantization (integer bias, round, then clamp).
 * The numpy definition is depthwise_int8_ref in mnnlite/ref/int8.py. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "int8_conv.h"
#include "int8_internal.h"
#include "parallel.h"

/* C static_cast<int32_t>(float) as x86 executes it: truncation, INT32_MIN out of range / NaN. */
static int32_t trunc_i32(float v) {
    return (v > -2147483648.0f && v < 2147483648.0f) ? (int32_t)v : INT32_MIN;
}

/* MutableResourceInt8::updateInputOutputScale, mOriginScale branch: ws = alpha (1e-6 if |alpha| < 1e-6),
 * sc = ws * (s_in / s_out), B = int(int(bias / (s_in * ws)) - ksum * (z_in + offset.f) + int(z_out / sc)),
 * the sum in float32.  bc = B + offset * ksum folds the offset of the accumulator in (int32 wrap). */
static void dw_params(const int8_t *w, int c, int kk, const float *alpha, const float *bias,
                      const mnnlite_int8_quant *q, float *sc, int32_t *bc) {
    float div = q->s_in / q->s_out;
    for (int i = 0; i < c; i++) {
        float ws = fabsf(alpha[i]) < 1e-6f ? 1e-6f : alpha[i];
        int32_t sum = 0;
        for (int j = 0; j < kk; j++) sum += w[(size_t)i * kk + j];
        sc[i] = ws * div;
        int32_t t1 = trunc_i32(bias[i] / (q->s_in * ws));
        int32_t t3 = trunc_i32((float)q->z_out / sc[i]);
        float b = (float)t1 - (float)sum * (float)(q->z_in + q->offset);
        b = b + (float)t3;
        bc[i] = (int32_t)((uint32_t)trunc_i32(b) + (uint32_t)q->offset * (uint32_t)sum);
    }
}

enum { DW_C = 16 };   /* channels per vector block (MNN's depthwise runs NC16HW16 too) */

typedef struct {
    const int8_t *x, *w;
    const mnnlite_conv_geom *g;
    const float *sc;
    const int32_t *bc;
    int z_in, lo, hi, hp, wp, cblocks;
    int8_t *y;
    int8_t *work;            /* per thread: weights, padded block [hp][wp][16], output row [ow][16] */
    size_t work_stride;      /* bytes per thread */
} dw_job;

#if defined(__x86_64__)
#include <emmintrin.h>
static void transpose16_full(const int8_t *src, ptrdiff_t ss, int8_t *dst, ptrdiff_t ds);

/* rows x cols (<= 16) of src -> cols x rows of dst, through a full 16 x 16 block for partial ones. */
static void transpose16(const int8_t *src, ptrdiff_t ss, int8_t *dst, ptrdiff_t ds, int rows, int cols) {
    if (rows == 16 && cols == 16) {
        transpose16_full(src, ss, dst, ds);
        return;
    }
    int8_t in[256] = {0}, out[256];
    for (int i = 0; i < rows; i++) memcpy(in + 16 * i, src + i * ss, (size_t)cols);
    transpose16_full(in, 16, out, 16);
    for (int j = 0; j < cols; j++) memcpy(dst + j * ds, out + 16 * j, (size_t)rows);
}

static void transpose16_full(const int8_t *src, ptrdiff_t ss, int8_t *dst, ptrdiff_t ds) {
    __m128i a[16], b[16];
    for (int i = 0; i < 16; i++) a[i] = _mm_loadu_si128((const __m128i *)(src + i * ss));
    for (int i = 0; i < 8; i++) {   /* four rounds of interleaving: 8, 16, 32, 64 bits */
        b[2 * i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
        b[2 * i + 1] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++) {
            a[4 * i + k] = _mm_unpacklo_epi16(b[4 * i + k], b[4 * i + k + 2]);
            a[4 * i + k + 2] = _mm_unpackhi_epi16(b[4 * i + k], b[4 * i + k + 2]);
        }
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            b[8 * i + k] = _mm_unpacklo_epi32(a[8 * i + k], a[8 * i + k + 4]);
            b[8 * i + k + 4] = _mm_unpackhi_epi32(a[8 * i + k], a[8 * i + k + 4]);
        }
    for (int k = 0; k < 8; k++) {
        a[k] = _mm_unpacklo_epi64(b[k], b[k + 8]);
        a[k + 8] = _mm_unpackhi_epi64(b[k], b[k + 8]);
    }
    /* a[k] now holds column p(k) of src, with p = the bit pattern produced by the rounds above */
    static const int col[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
    for (int k = 0; k < 16; k++) _mm_storeu_si128((__m128i *)(dst + col[k] * ds), a[k]);
}
#else
/* dst[j][i] = src[i][j] for the rows x cols (<= 16) block. */
static void transpose16(const int8_t *src, ptrdiff_t ss, int8_t *dst, ptrdiff_t ds, int rows, int cols) {
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) dst[j * ds + i] = src[i * ss + j];
}
#endif

/* Channels c0 .. c0 + 15 of one image, zero-point padded, channel-interleaved:
 * pad[py][px][c] = x[c0 + c][py - pt][px - pl], z_in outside the input (and for missing channels). */
static void pad_block(const dw_job *J, const int8_t *x, int c0, int8_t *pad) {
    const mnnlite_conv_geom *g = J->g;
    memset(pad, J->z_in, (size_t)J->hp * J->wp * DW_C);
    int cn = g->c - c0 < DW_C ? g->c - c0 : DW_C, len = g->w < J->wp - g->pl ? g->w : J->wp - g->pl;
    size_t hw = (size_t)g->h * g->w;
    for (int iy = 0; iy < g->h && iy + g->pt < J->hp; iy++) {
        int8_t *row = pad + ((size_t)(iy + g->pt) * J->wp + g->pl) * DW_C;
        for (int ix = 0; ix < len; ix += 16) {
            int at = ix + 16 > len && len >= 16 ? len - 16 : ix;   /* a last partial block overlaps the one before */
            transpose16(x + c0 * hw + (size_t)iy * g->w + at, (ptrdiff_t)hw, row + at * DW_C, DW_C, cn,
                        len - at < 16 ? len - at : 16);
        }
    }
}

/* MNN's depthwise requantization of one accumulator sum (acc + B, wrapped to int32): float product,
 * trunc(f +- 0.5), INT32_MIN when out of range (cvttps2dq), clamp.  Clamping the float before the
 * truncation gives the same code and keeps the loop free of branches. */
static inline int8_t dw_requant(uint32_t acc, float sc, float lo, float hi, int ilo) {
    float f = (float)(int32_t)acc;
    f = f * sc;
    float t = f + (f < 0.0f ? -0.5f : 0.5f);
    int in_range = t > -2147483648.0f && t < 2147483648.0f;
    float c = t < lo ? lo : (t > hi ? hi : t);
    return (int8_t)(in_range ? (int32_t)c : ilo);
}

/* One output row of a 16-channel block (_AVX_MNNLineDepthWiseInt8AddBiasScaleUnit): start from the
 * biases, add every tap, requantize.  |q|, |w| <= 128, so each product fits int16.  The portable version
 * keeps the row's accumulators in memory (acc, ow x 16) so the channel loops vectorize. */
typedef void (*dw_row_fn)(const dw_job *J, const int8_t *src, const int16_t *w16, const uint32_t *bc,
                          const float *sc, int8_t *out, uint32_t *acc);

static void dw_row_c(const dw_job *J, const int8_t *restrict src, const int16_t *restrict w16,
                     const uint32_t *restrict bc, const float *restrict sc, int8_t *restrict out,
                     uint32_t *restrict acc) {
    const mnnlite_conv_geom *g = J->g;
    int ow = g->ow, step = g->sx * DW_C;
    float flo = (float)J->lo, fhi = (float)J->hi;
    for (int ox = 0; ox < ow; ox++)
        for (int c = 0; c < DW_C; c++) acc[ox * DW_C + c] = bc[c];
    for (int ky = 0; ky < g->kh; ky++)
        for (int kx = 0; kx < g->kw; kx++) {
            const int8_t *restrict s = src + ((size_t)ky * g->dy * J->wp + kx * g->dx) * DW_C;
            const int16_t *restrict wt = w16 + (ky * g->kw + kx) * DW_C;
            for (int ox = 0; ox < ow; ox++, s += step) {
                uint32_t *restrict a = acc + ox * DW_C;
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 1   /* keep the loop for the vectorizer (fully unrolled, GCC gives up on it) */
#endif
                for (int c = 0; c < DW_C; c++) a[c] += (uint32_t)(int32_t)(int16_t)(wt[c] * s[c]);
            }
        }
    for (int ox = 0; ox < ow; ox++) {
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 1
#endif
        for (int c = 0; c < DW_C; c++) out[ox * DW_C + c] = dw_requant(acc[ox * DW_C + c], sc[c], flo, fhi, J->lo);
    }
}

static void dw_blocks(const dw_job *J, int begin, int end, int thread, dw_row_fn row) {
    const mnnlite_conv_geom *g = J->g;
    int kk = g->kh * g->kw, oh = g->oh, ow = g->ow;
    int16_t *w16 = (int16_t *)(J->work + (size_t)thread * J->work_stride);
    int8_t *pad = (int8_t *)(w16 + kk * DW_C);
    int8_t *out = pad + (size_t)J->hp * J->wp * DW_C;
    uint32_t *acc = (uint32_t *)(out + mnnlite_round_up((ow + 16) * DW_C, 64));
    for (int t = begin; t < end; t++) {
        int b = t / J->cblocks, c0 = (t % J->cblocks) * DW_C, cn = g->c - c0 < DW_C ? g->c - c0 : DW_C;
        uint32_t bc[DW_C] = {0};
        float sc[DW_C] = {0};
        for (int c = 0; c < DW_C; c++)
            for (int k = 0; k < kk; k++) w16[k * DW_C + c] = c < cn ? J->w[(size_t)(c0 + c) * kk + k] : 0;
        for (int c = 0; c < cn; c++) {
            bc[c] = (uint32_t)J->bc[c0 + c];
            sc[c] = J->sc[c0 + c];
        }
        pad_block(J, J->x + (size_t)b * g->c * g->h * g->w, c0, pad);
        int8_t *y = J->y + ((size_t)b * g->c + c0) * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            row(J, pad + (size_t)oy * g->sy * J->wp * DW_C, w16, bc, sc, out, acc);
            for (int ox = 0; ox < ow; ox += 16) {   /* back to NCHW */
                int at = ox + 16 > ow && ow >= 16 ? ow - 16 : ox;
                transpose16(out + at * DW_C, DW_C, y + (size_t)oy * ow + at, (ptrdiff_t)oh * ow,
                            ow - at < 16 ? ow - at : 16, cn);
            }
        }
    }
}

static void dw_scalar(void *ctx, int b, int e, int t) { dw_blocks((const dw_job *)ctx, b, e, t, dw_row_c); }


#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define T_AVX2 __attribute__((target("avx2")))
#define T_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

/* dw_requant on 8 lanes: same float steps, blend instead of branches. */
T_AVX2 static inline __m256i dw_requant8(__m256i acc, __m256 sc, __m256 lo, __m256 hi, __m256i ilo) {
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), sc);
    __m256 neg = _mm256_cmp_ps(f, _mm256_setzero_ps(), _CMP_LT_OQ);
    __m256 t = _mm256_add_ps(f, _mm256_blendv_ps(_mm256_set1_ps(0.5f), _mm256_set1_ps(-0.5f), neg));
    __m256 ok = _mm256_and_ps(_mm256_cmp_ps(t, _mm256_set1_ps(-2147483648.0f), _CMP_GT_OQ),
                              _mm256_cmp_ps(t, _mm256_set1_ps(2147483648.0f), _CMP_LT_OQ));
    __m256 c = _mm256_min_ps(_mm256_max_ps(t, lo), hi);
    return _mm256_blendv_epi8(ilo, _mm256_cvttps_epi32(c), _mm256_castps_si256(ok));
}

T_AVX2 static void dw_row_avx2(const dw_job *J, const int8_t *src, const int16_t *w16, const uint32_t *bc,
                               const float *sc, int8_t *out, uint32_t *unused) {
    (void)unused;
    const mnnlite_conv_geom *g = J->g;
    __m256 lo = _mm256_set1_ps((float)J->lo), hi = _mm256_set1_ps((float)J->hi);
    __m256 sc0 = _mm256_loadu_ps(sc), sc1 = _mm256_loadu_ps(sc + 8);
    __m256i ilo = _mm256_set1_epi32(J->lo);
    __m256i b0 = _mm256_loadu_si256((const __m256i *)bc), b1 = _mm256_loadu_si256((const __m256i *)(bc + 8));
    for (int ox = 0; ox < g->ow; ox++) {
        __m256i a0 = b0, a1 = b1;
        for (int ky = 0; ky < g->kh; ky++)
            for (int kx = 0; kx < g->kw; kx++) {
                const int8_t *s = src + ((size_t)ky * g->dy * J->wp + (size_t)ox * g->sx + kx * g->dx) * DW_C;
                __m256i p = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)s)),
                                               _mm256_loadu_si256((const __m256i *)(w16 + (ky * g->kw + kx) * DW_C)));
                a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
                a1 = _mm256_add_epi32(a1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p, 1)));
            }
        __m256i r0 = dw_requant8(a0, sc0, lo, hi, ilo), r1 = dw_requant8(a1, sc1, lo, hi, ilo);
        __m128i r16 = _mm_packs_epi32(_mm256_castsi256_si128(r0), _mm256_extracti128_si256(r0, 1));
        __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(r1), _mm256_extracti128_si256(r1, 1));
        _mm_storeu_si128((__m128i *)(out + ox * DW_C), _mm_packs_epi16(r16, s16));
    }
}

/* dw_requant on 16 lanes, as 16 codes (every code is in [lo, hi], so the saturating pack is exact). */
T_AVX512 static inline __m128i dw_requant16(__m512i acc, __m512 sc, __m512 lo, __m512 hi, __m512i ilo) {
    __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), sc);
    __mmask16 neg = _mm512_cmp_ps_mask(f, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 t = _mm512_add_ps(f, _mm512_mask_blend_ps(neg, _mm512_set1_ps(0.5f), _mm512_set1_ps(-0.5f)));
    __mmask16 ok = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-2147483648.0f), _CMP_GT_OQ) &
                   _mm512_cmp_ps_mask(t, _mm512_set1_ps(2147483648.0f), _CMP_LT_OQ);
    __m512i r = _mm512_mask_blend_epi32(ok, ilo, _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi)));
    return _mm512_cvtsepi32_epi8(r);
}

/* The same with the 16 channels in one zmm. */
T_AVX512 static void dw_row_avx512(const dw_job *J, const int8_t *src, const int16_t *w16, const uint32_t *bc,
                                   const float *sc, int8_t *out, uint32_t *unused) {
    (void)unused;
    const mnnlite_conv_geom *g = J->g;
    __m512 lo = _mm512_set1_ps((float)J->lo), hi = _mm512_set1_ps((float)J->hi), scv = _mm512_loadu_ps(sc);
    __m512i b = _mm512_loadu_si512((const void *)bc), ilo = _mm512_set1_epi32(J->lo);
    for (int ox = 0; ox < g->ow; ox++) {
        __m512i a = b;
        for (int ky = 0; ky < g->kh; ky++)
            for (int kx = 0; kx < g->kw; kx++) {
                const int8_t *s = src + ((size_t)ky * g->dy * J->wp + (size_t)ox * g->sx + kx * g->dx) * DW_C;
                __m256i p = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)s)),
                                               _mm256_loadu_si256((const __m256i *)(w16 + (ky * g->kw + kx) * DW_C)));
                a = _mm512_add_epi32(a, _mm512_cvtepi16_epi32(p));
            }
        _mm_storeu_si128((__m128i *)(out + ox * DW_C), dw_requant16(a, scv, lo, hi, ilo));
    }
}

static void dw_avx2(void *ctx, int b, int e, int t) { dw_blocks((const dw_job *)ctx, b, e, t, dw_row_avx2); }
static void dw_avx512(void *ctx, int b, int e, int t) { dw_blocks((const dw_job *)ctx, b, e, t, dw_row_avx512); }

/* Unit stride and dilation along the row, rows of 16 outputs or more: one channel plane at a time, vectors
 * along the row (no channel transposes, which took most of the time of the channel-block kernel on
 * MobileNetV3-style maps of 2-3 rows and 5x5 kernels).  A plane is copied once into a zero-point padded
 * buffer whose rows have slack for the last vector's reads; each tap multiplies a broadcast weight
 * (products fit int16, as above).  When no weight of the call is -128, two taps' products are added in
 * int16 first (|q * w| <= 128 * 127, so a pair stays within 32512) and then widened: the same integer sums,
 * fewer widenings. */
typedef struct {
    const dw_job *J;
    int rows, stride;        /* padded plane: rows x stride bytes */
    int pair;
    const int *tap;          /* [kh * kw]: offset of each tap in the padded plane */
    const int32_t *words;    /* VNNI: [c][kh][groups] four weights of a row as one int32, 0 past the row */
    const int32_t *bias_u8;  /* VNNI: bc - 128 * ksum, the bias for sums over q + 128 */
    int groups;              /* VNNI: ceil(kw / 4) */
    const int *group_at;     /* VNNI: [kh * groups]: offset of each group of four taps in the padded plane */
    int8_t *work;            /* per thread: a padded plane */
    size_t work_stride;
} dwp_job;

static const int8_t *dwp_pad_plane(const dwp_job *P, int plane, int thread) {
    const dw_job *J = P->J;
    const mnnlite_conv_geom *g = J->g;
    int8_t *pad = P->work + (size_t)thread * P->work_stride;
    memset(pad, J->z_in, (size_t)P->rows * P->stride);
    const int8_t *x = J->x + (size_t)plane * g->h * g->w;
    int len = g->w < J->wp - g->pl ? g->w : J->wp - g->pl;
    for (int iy = 0; iy < g->h && iy + g->pt < P->rows; iy++)
        if (len > 0) memcpy(pad + (size_t)(iy + g->pt) * P->stride + g->pl, x + (size_t)iy * g->w, (size_t)len);
    return pad;
}

T_AVX512 static void dwp_avx512(void *ctx, int begin, int end, int thread) {
    const dwp_job *P = (const dwp_job *)ctx;
    const dw_job *J = P->J;
    const mnnlite_conv_geom *g = J->g;
    int kk = g->kh * g->kw, oh = g->oh, ow = g->ow;
    __m512 lo = _mm512_set1_ps((float)J->lo), hi = _mm512_set1_ps((float)J->hi);
    __m512i ilo = _mm512_set1_epi32(J->lo);
    for (int t = begin; t < end; t++) {
        int c = t % g->c;
        const int8_t *pad = dwp_pad_plane(P, t, thread);
        const int8_t *w = J->w + (size_t)c * kk;
        __m512 scv = _mm512_set1_ps(J->sc[c]);
        __m512i bias = _mm512_set1_epi32(J->bc[c]);
        int8_t *y = J->y + (size_t)t * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const int8_t *base = pad + (size_t)oy * g->sy * P->stride;
            for (int ox = 0; ox < ow; ox += 32) {
                __m512i a0 = bias, a1 = bias;
                for (int k = 0; k < kk;) {
                    const int8_t *s = base + P->tap[k] + ox;
                    __m512i p = _mm512_mullo_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)s)),
                                                   _mm512_set1_epi16(w[k]));
                    k++;
                    if (P->pair && k < kk) {
                        s = base + P->tap[k] + ox;
                        p = _mm512_add_epi16(p, _mm512_mullo_epi16(
                                _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)s)), _mm512_set1_epi16(w[k])));
                        k++;
                    }
                    a0 = _mm512_add_epi32(a0, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(p)));
                    a1 = _mm512_add_epi32(a1, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(p, 1)));
                }
                __m256i r = _mm256_set_m128i(dw_requant16(a1, scv, lo, hi, ilo), dw_requant16(a0, scv, lo, hi, ilo));
                int n = ow - ox < 32 ? ow - ox : 32;
                _mm256_mask_storeu_epi8(y + (size_t)oy * ow + ox, n == 32 ? ~0u : (1u << n) - 1u, r);
            }
        }
    }
}

#define T_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))

/* With AVX512-VNNI: vpdpbusd sums four u8 x s8 products per int32 lane exactly.  The plane is stored as
 * q + 128 (u8); for 16 outputs, each lane gathers the 4 consecutive bytes of its window row from one
 * 32-byte load (dword permute, then a byte shuffle inside each 128-bit lane), and multiplies them with
 * four weights of the kernel row.  Sum over q + 128 = sum over q + 128 * ksum: bias_u8 takes it back. */
T_VNNI static void dwp_vnni(void *ctx, int begin, int end, int thread) {
    const dwp_job *P = (const dwp_job *)ctx;
    const dw_job *J = P->J;
    const mnnlite_conv_geom *g = J->g;
    int oh = g->oh, ow = g->ow, G = P->groups, rows = g->kh;
    __m512 lo = _mm512_set1_ps((float)J->lo), hi = _mm512_set1_ps((float)J->hi);
    __m512i ilo = _mm512_set1_epi32(J->lo);
    const __m512i dwords = _mm512_set_epi32(4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0);
    const __m512i windows = _mm512_broadcast_i32x4(_mm_set_epi8(6, 5, 4, 3, 5, 4, 3, 2, 4, 3, 2, 1, 3, 2, 1, 0));
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    for (int t = begin; t < end; t++) {
        int c = t % g->c;
        uint8_t *pad = (uint8_t *)dwp_pad_plane(P, t, thread);
        for (size_t i = 0; i < (size_t)P->rows * P->stride; i += 64) {     /* q -> q + 128 */
            __m512i v = _mm512_loadu_si512((const void *)(pad + i));
            _mm512_storeu_si512((void *)(pad + i), _mm512_xor_si512(v, flip));
        }
        const int32_t *w = P->words + (size_t)c * rows * G;
        __m512 scv = _mm512_set1_ps(J->sc[c]);
        __m512i bias = _mm512_set1_epi32(P->bias_u8[c]);
        int8_t *y = J->y + (size_t)t * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const uint8_t *base = pad + (size_t)oy * g->sy * P->stride;
            for (int ox = 0; ox < ow; ox += 16) {
                __m512i a0 = bias, a1 = _mm512_setzero_si512();     /* two chains: vpdpbusd's latency */
                for (int k = 0; k < rows * G; k++) {
                    const uint8_t *s = base + P->group_at[k] + ox;
                    __m512i v = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)s));
                    v = _mm512_shuffle_epi8(_mm512_permutexvar_epi32(dwords, v), windows);
                    if (k & 1) a1 = _mm512_dpbusd_epi32(a1, v, _mm512_set1_epi32(w[k]));
                    else a0 = _mm512_dpbusd_epi32(a0, v, _mm512_set1_epi32(w[k]));
                }
                __m128i r = dw_requant16(_mm512_add_epi32(a0, a1), scv, lo, hi, ilo);
                int n = ow - ox < 16 ? ow - ox : 16;
                _mm_mask_storeu_epi8(y + (size_t)oy * ow + ox, (__mmask16)(n == 16 ? 0xFFFFu : (1u << n) - 1u), r);
            }
        }
    }
}

T_AVX2 static void dwp_avx2(void *ctx, int begin, int end, int thread) {
    const dwp_job *P = (const dwp_job *)ctx;
    const dw_job *J = P->J;
    const mnnlite_conv_geom *g = J->g;
    int kk = g->kh * g->kw, oh = g->oh, ow = g->ow;
    __m256 lo = _mm256_set1_ps((float)J->lo), hi = _mm256_set1_ps((float)J->hi);
    __m256i ilo = _mm256_set1_epi32(J->lo);
    for (int t = begin; t < end; t++) {
        int c = t % g->c;
        const int8_t *pad = dwp_pad_plane(P, t, thread);
        const int8_t *w = J->w + (size_t)c * kk;
        __m256 scv = _mm256_set1_ps(J->sc[c]);
        __m256i bias = _mm256_set1_epi32(J->bc[c]);
        int8_t *y = J->y + (size_t)t * oh * ow;
        for (int oy = 0; oy < oh; oy++) {
            const int8_t *base = pad + (size_t)oy * g->sy * P->stride;
            for (int ox = 0; ox < ow; ox += 16) {
                __m256i a0 = bias, a1 = bias;
                for (int k = 0; k < kk;) {
                    const int8_t *s = base + P->tap[k] + ox;
                    __m256i p = _mm256_mullo_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)s)),
                                                   _mm256_set1_epi16(w[k]));
                    k++;
                    if (P->pair && k < kk) {
                        s = base + P->tap[k] + ox;
                        p = _mm256_add_epi16(p, _mm256_mullo_epi16(
                                _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)s)), _mm256_set1_epi16(w[k])));
                        k++;
                    }
                    a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(p)));
                    a1 = _mm256_add_epi32(a1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(p, 1)));
                }
                __m256i r0 = dw_requant8(a0, scv, lo, hi, ilo), r1 = dw_requant8(a1, scv, lo, hi, ilo);
                __m128i r16 = _mm_packs_epi32(_mm256_castsi256_si128(r0), _mm256_extracti128_si256(r0, 1));
                __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(r1), _mm256_extracti128_si256(r1, 1));
                __m128i r = _mm_packs_epi16(r16, s16);
                int n = ow - ox < 16 ? ow - ox : 16;
                if (n == 16) {
                    _mm_storeu_si128((__m128i *)(y + (size_t)oy * ow + ox), r);
                } else {
                    int8_t tail[16];
                    _mm_storeu_si128((__m128i *)tail, r);
                    memcpy(y + (size_t)oy * ow + ox, tail, (size_t)n);
                }
            }
        }
    }
}
#endif

/* The plane kernels (unit stride and dilation along the row, any along the column -- PP-OCR's (2, 1)
 * strides -- rows of 16 outputs or more, an AVX2 / AVX-512 machine), or NULL. */
static mnnlite_range_fn dwp_select(int isa, const mnnlite_conv_geom *g) {
    if (g->sx != 1 || g->dx != 1 || g->ow < 16) return NULL;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    isa &= mnnlite_cpu_features();
    if ((isa & MNNLITE_CPU_VNNI) && (isa & MNNLITE_CPU_AVX512)) return dwp_vnni;
    if (isa & MNNLITE_CPU_AVX512) return dwp_avx512;
    if (isa & MNNLITE_CPU_AVX2) return dwp_avx2;
#else
    (void)isa;
#endif
    return NULL;
}

static mnnlite_range_fn dw_select(int isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    isa &= mnnlite_cpu_features();
    if (isa & MNNLITE_CPU_AVX512) return dw_avx512;
    if (isa & MNNLITE_CPU_AVX2) return dw_avx2;
#else
    (void)isa;
#endif
    return dw_scalar;
}

/* Runs a plane kernel over every (image, channel) plane; -1 when its buffers cannot be had. */
static int dwp_run(const dw_job *J, mnnlite_range_fn plane_fn, int threads) {
    const mnnlite_conv_geom *g = J->g;
    const int8_t *w = J->w;
    int kk = g->kh * g->kw;
    dwp_job P = {.J = J, .rows = J->hp, .stride = mnnlite_round_up(J->wp + 64, 64), .pair = 1,
                 .groups = (g->kw + 3) / 4};
    for (size_t i = 0; i < (size_t)g->c * kk; i++) P.pair &= w[i] != -128;
    int *tap = malloc(sizeof(int) * (kk + (size_t)g->kh * P.groups));
    int32_t *words = malloc(sizeof(int32_t) * ((size_t)g->c * g->kh * P.groups + g->c));
    P.work_stride = (size_t)P.rows * P.stride;
    P.work = malloc(P.work_stride * mnnlite_thread_count(threads, g->n * g->c));
    int ok = tap && words && P.work;
    if (ok) {
        for (int k = 0; k < kk; k++) tap[k] = (k / g->kw) * g->dy * P.stride + k % g->kw;
        int *group_at = tap + kk;
        for (int k = 0; k < g->kh * P.groups; k++)
            group_at[k] = (k / P.groups) * g->dy * P.stride + 4 * (k % P.groups);
        int32_t *bias_u8 = words + (size_t)g->c * g->kh * P.groups;
        for (int c = 0; c < g->c; c++) {
            uint32_t ksum = 0;
            for (int ky = 0; ky < g->kh; ky++)
                for (int gi = 0; gi < P.groups; gi++) {
                    uint32_t word = 0;
                    for (int j = 0; j < 4; j++) {
                        int kx = 4 * gi + j;
                        int8_t v = kx < g->kw ? w[(size_t)c * kk + ky * g->kw + kx] : 0;
                        word |= (uint32_t)(uint8_t)v << (8 * j);
                        ksum += (uint32_t)(int32_t)v;
                    }
                    words[((size_t)c * g->kh + ky) * P.groups + gi] = (int32_t)word;
                }
            bias_u8[c] = (int32_t)((uint32_t)J->bc[c] - 128u * ksum);
        }
        P.tap = tap;
        P.group_at = group_at;
        P.words = words;
        P.bias_u8 = bias_u8;
        mnnlite_parallel_for(threads, g->n * g->c, plane_fn, &P);
    }
    free(tap);
    free(words);
    free(P.work);
    return ok ? 0 : -1;
}

int mnnlite_depthwise_int8(const int8_t *x, const int8_t *w, const float *alpha, const float *bias,
                           const mnnlite_conv_geom *g, const mnnlite_int8_quant *q, int8_t *y, int isa,
                           int nthreads) {
    int kk = g->kh * g->kw;
    dw_job J = {x, w, g, NULL, NULL, q->z_in, q->lo, q->hi, (g->oh - 1) * g->sy + (g->kh - 1) * g->dy + 1,
                (g->ow - 1) * g->sx + (g->kw - 1) * g->dx + 1, (g->c + DW_C - 1) / DW_C, y, NULL, 0};
    float *sc = malloc(sizeof(float) * g->c);
    int32_t *bc = malloc(sizeof(int32_t) * g->c);
    if (!sc || !bc) {
        free(sc);
        free(bc);
        return -1;
    }
    dw_params(w, g->c, kk, alpha, bias, q, sc, bc);
    J.sc = sc;
    J.bc = bc;
    int threads = mnnlite_threads_for_work(nthreads, 2.0 * g->n * g->c * g->oh * g->ow * kk);
    mnnlite_range_fn plane_fn = dwp_select(isa, g);
    int rc = plane_fn != NULL ? dwp_run(&J, plane_fn, threads) : -1;
    if (rc != 0) {      /* the channel-block kernel */
        /* weights [kk][16] int16, padded block [hp][wp][16], an output row [ow][16] (+ slack), its sums */
        J.work_stride = (size_t)mnnlite_round_up((2 * kk + J.hp * J.wp) * DW_C, 64) +
                        (size_t)mnnlite_round_up((g->ow + 16) * DW_C, 64) + (size_t)4 * g->ow * DW_C;
        J.work = malloc(J.work_stride * mnnlite_thread_count(threads, g->n * J.cblocks));
        if (J.work) {
            mnnlite_parallel_for(threads, g->n * J.cblocks, dw_select(isa), &J);
            rc = 0;
        }
    }
    free(sc);
    free(bc);
    free(J.work);
    return rc;
}
