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
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(a), scv);
        __mmask16 neg = _mm512_cmp_ps_mask(f, _mm512_setzero_ps(), _CMP_LT_OQ);
        __m512 t = _mm512_add_ps(f, _mm512_mask_blend_ps(neg, _mm512_set1_ps(0.5f), _mm512_set1_ps(-0.5f)));
        __mmask16 ok = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-2147483648.0f), _CMP_GT_OQ) &
                       _mm512_cmp_ps_mask(t, _mm512_set1_ps(2147483648.0f), _CMP_LT_OQ);
        __m512i r = _mm512_mask_blend_epi32(ok, ilo, _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(t, lo), hi)));
        _mm_storeu_si128((__m128i *)(out + ox * DW_C), _mm512_cvtsepi32_epi8(r));
    }
}

static void dw_avx2(void *ctx, int b, int e, int t) { dw_blocks((const dw_job *)ctx, b, e, t, dw_row_avx2); }
static void dw_avx512(void *ctx, int b, int e, int t) { dw_blocks((const dw_job *)ctx, b, e, t, dw_row_avx512); }
#endif

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

int mnnlite_depthwise_int8(const int8_t *x, const int8_t *w, const float *alpha, const float *bias,
                           const mnnlite_conv_geom *g, const mnnlite_int8_quant *q, int8_t *y, int isa,
                           int nthreads) {
    int kk = g->kh * g->kw, threads = nthreads < 1 ? 1 : nthreads;
    dw_job J = {x, w, g, NULL, NULL, q->z_in, q->lo, q->hi, (g->oh - 1) * g->sy + (g->kh - 1) * g->dy + 1,
                (g->ow - 1) * g->sx + (g->kw - 1) * g->dx + 1, (g->c + DW_C - 1) / DW_C, y, NULL, 0};
    /* weights [kk][16] int16, padded block [hp][wp][16], one output row [ow][16] (+ slack), its int32 sums */
    J.work_stride = (size_t)mnnlite_round_up((2 * kk + J.hp * J.wp) * DW_C, 64) +
                    (size_t)mnnlite_round_up((g->ow + 16) * DW_C, 64) + (size_t)4 * g->ow * DW_C;
    float *sc = malloc(sizeof(float) * g->c);
    int32_t *bc = malloc(sizeof(int32_t) * g->c);
    J.work = malloc(J.work_stride * threads);
    if (!sc || !bc || !J.work) {
        free(sc);
        free(bc);
        free(J.work);
        return -1;
    }
    dw_params(w, g->c, kk, alpha, bias, q, sc, bc);
    J.sc = sc;
    J.bc = bc;
    mnnlite_parallel_for(mnnlite_threads_for_work(threads, 2.0 * g->n * g->c * g->oh * g->ow * kk),
                         g->n * J.cblocks, dw_select(isa), &J);
    free(sc);
    free(bc);
    free(J.work);
    return 0;
}
