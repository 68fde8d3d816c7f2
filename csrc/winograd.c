/* Winograd F(4x4, 3x3) convolution (Lavin & Gray 2015, interpolation points 0, +-1, +-2, inf).
 *
 * Y = A^T [ (G g G^T) . (B^T d B) ] A per 6x6 input tile d giving a 4x4 output tile, so a 3x3 conv
 * costs 36 multiplies per 16 outputs instead of 144.  The elementwise products over channels are 36
 * independent GEMMs U[xi] (O x C) * V[xi] (C x tiles), run on the packed GEMM: the weight transform
 * is packed as A once, and the input transform writes V straight into the packed-B layout.
 *
 * The transforms work on 16 tiles at a time in plain C loops over the 16 lanes; compiled inside
 * target("avx2") / target("avx512f") wrappers they become vector code, in the baseline build scalar.
 * Moving tiles in and out is the expensive part: with AVX-512, 16 tiles side by side in a row are
 * deinterleaved / interleaved with permutes, any other 16 with masked hardware gathers / scatters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "winograd.h"

#include "cpu_features.h"
#include "parallel.h"

#define LANES 16
#define INLINE static inline __attribute__((always_inline))

static inline int min_int(int a, int b) { return a < b ? a : b; }
static inline int round_up(int v, int m) { return (v + m - 1) / m * m; }

/* 6-point B^T along one axis: in[i * is + lane] -> out[i * os + lane]. */
INLINE void bt_1d(const float *in, int is, float *out, int os) {
    for (int j = 0; j < LANES; j++) {
        const float d0 = in[j], d1 = in[is + j], d2 = in[2 * is + j];
        const float d3 = in[3 * is + j], d4 = in[4 * is + j], d5 = in[5 * is + j];
        out[j] = 4.0f * d0 - 5.0f * d2 + d4;
        out[os + j] = -4.0f * (d1 + d2) + d3 + d4;
        out[2 * os + j] = 4.0f * (d1 - d2) - d3 + d4;
        out[3 * os + j] = 2.0f * (d3 - d1) - d2 + d4;
        out[4 * os + j] = 2.0f * (d1 - d3) - d2 + d4;
        out[5 * os + j] = 4.0f * d1 - 5.0f * d3 + d5;
    }
}

/* 6 -> 4 point A^T along one axis. */
INLINE void at_1d(const float *in, int is, float *out, int os) {
    for (int j = 0; j < LANES; j++) {
        const float m0 = in[j], m1 = in[is + j], m2 = in[2 * is + j];
        const float m3 = in[3 * is + j], m4 = in[4 * is + j], m5 = in[5 * is + j];
        const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
        out[j] = m0 + s12 + s34;
        out[os + j] = d12 + 2.0f * d34;
        out[2 * os + j] = s12 + 4.0f * s34;
        out[3 * os + j] = d12 + 8.0f * d34 + m5;
    }
}

typedef struct {
    const mnnlite_conv_params *p;
    int tiles_x, tiles;   /* per image */
} wino_geom;

/* d[r][s][lane] = x[iy0 + r][ix0 + s] of the lane's tile, 0 outside the image or past the last tile. */
INLINE void gather_tiles(const wino_geom *g, const float *plane, int t0, int count, float *d) {
    const mnnlite_conv_params *p = g->p;
    for (int j = 0; j < LANES; j++) {
        const int t = t0 + j;
        const int iy0 = t / g->tiles_x * 4 - p->pt, ix0 = t % g->tiles_x * 4 - p->pl;
        const int inside = j < count && iy0 >= 0 && ix0 >= 0 && iy0 + 6 <= p->h && ix0 + 6 <= p->w;
        for (int r = 0; r < 6; r++) {
            const int iy = iy0 + r;
            for (int s = 0; s < 6; s++) {
                const int ix = ix0 + s;
                float v = 0.0f;
                if (inside || (j < count && iy >= 0 && iy < p->h && ix >= 0 && ix < p->w))
                    v = plane[(size_t)iy * p->w + ix];
                d[(r * 6 + s) * LANES + j] = v;
            }
        }
    }
}

/* V[xi] for `count` tiles from t0 of one image, channel by channel, into packed-B layout:
 * V[xi] occupies c * nbpad floats, and (channel k, tiles j..j+15) is contiguous as nr % 16 == 0. */
typedef void (*gather_fn)(const wino_geom *, const float *, int, int, float *);
typedef void (*scatter_fn)(const wino_geom *, const float *, int, int, float *);

INLINE void input_transform(const wino_geom *g, const float *xn, int t0, int count, int nbpad, int nr,
                            float *v, gather_fn gather) {
    const mnnlite_conv_params *p = g->p;
    float d[36 * LANES], tmp[36 * LANES], out[36 * LANES];
    for (int j0 = 0; j0 < count; j0 += LANES) {  /* lanes past count are zero; later panel columns unused */
        for (int k = 0; k < p->c; k++) {
            gather(g, xn + (size_t)k * p->h * p->w, t0 + j0, count - j0, d);
            for (int s = 0; s < 6; s++) bt_1d(d + s * LANES, 6 * LANES, tmp + s * LANES, 6 * LANES);
            for (int r = 0; r < 6; r++) bt_1d(tmp + r * 6 * LANES, LANES, out + r * 6 * LANES, LANES);
            const int pc = k / MNNLITE_KC * MNNLITE_KC, kc = min_int(MNNLITE_KC, p->c - pc);
            const size_t at = (size_t)pc * nbpad + (size_t)(j0 / nr * nr) * kc + (size_t)(k - pc) * nr + j0 % nr;
            for (int xi = 0; xi < 36; xi++)
                memcpy(v + (size_t)xi * p->c * nbpad + at, out + xi * LANES, LANES * sizeof(float));
        }
    }
}

/* y tiles from the GEMM results m[xi][o][tile] (row length ldm), plus bias and act. */
/* plane[oy0 + i][ox0 + u] = out[(i * 4 + u) * LANES + lane] for each lane's tile, inside the image. */
INLINE void scatter_tiles(const wino_geom *g, const float *out, int t0, int count, float *plane) {
    const mnnlite_conv_params *p = g->p;
    for (int j = 0; j < LANES && j < count; j++) {
        const int t = t0 + j, oy0 = t / g->tiles_x * 4, ox0 = t % g->tiles_x * 4;
        for (int i = 0; i < 4 && oy0 + i < p->oh; i++)
            for (int u = 0; u < 4 && ox0 + u < p->ow; u++)
                plane[(size_t)(oy0 + i) * p->ow + ox0 + u] = out[(i * 4 + u) * LANES + j];
    }
}

INLINE void output_transform(const wino_geom *g, const float *m, int ldm, int t0, int count,
                             const float *bias, float *yn, scatter_fn scatter) {
    const mnnlite_conv_params *p = g->p;
    float in[36 * LANES], tmp[24 * LANES], out[16 * LANES];
    for (int o = 0; o < p->o; o++) {
        const float b = bias ? bias[o] : 0.0f;
        float *plane = yn + (size_t)o * p->oh * p->ow;
        for (int j0 = 0; j0 < count; j0 += LANES) {
            for (int xi = 0; xi < 36; xi++)
                memcpy(in + xi * LANES, m + ((size_t)xi * p->o + o) * ldm + j0, LANES * sizeof(float));
            for (int s = 0; s < 6; s++) at_1d(in + s * LANES, 6 * LANES, tmp + s * LANES, 6 * LANES);
            for (int i = 0; i < 4; i++) at_1d(tmp + i * 6 * LANES, LANES, out + i * 4 * LANES, LANES);
            for (int e = 0; e < 16 * LANES; e++) {
                float v = out[e] + b;
                if (p->act != MNNLITE_ACT_NONE) v = v > 0.0f ? v : 0.0f;
                if (p->act == MNNLITE_ACT_RELU6) v = v < 6.0f ? v : 6.0f;
                out[e] = v;
            }
            scatter(g, out, t0 + j0, count - j0, plane);
        }
    }
}

typedef void (*input_fn)(const wino_geom *, const float *, int, int, int, int, float *);
typedef void (*output_fn)(const wino_geom *, const float *, int, int, int, const float *, float *);

#define WINO_VARIANT(suffix, attr, gather, scatter)                                                   \
    attr static void input_##suffix(const wino_geom *g, const float *xn, int t0, int count, int nbpad, \
                                    int nr, float *v) {                                               \
        input_transform(g, xn, t0, count, nbpad, nr, v, gather);                                     \
    }                                                                                                 \
    attr static void output_##suffix(const wino_geom *g, const float *m, int ldm, int t0, int count,  \
                                     const float *bias, float *yn) {                                  \
        output_transform(g, m, ldm, t0, count, bias, yn, scatter);                                   \
    }

WINO_VARIANT(scalar, , gather_tiles, scatter_tiles)

#if defined(__x86_64__)
#include <immintrin.h>
#define TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))

WINO_VARIANT(avx2, __attribute__((target("avx2,fma"))), gather_tiles, scatter_tiles)

/* Do the 16 tiles from t0 sit side by side in one tile row?  Then the group reads 6 rows of 66
 * consecutive input floats and writes 4 rows of 64 consecutive outputs. */
static inline int one_tile_row(const wino_geom *g, int t0, int count) {
    return count >= LANES && t0 % g->tiles_x + LANES <= g->tiles_x;
}

/* p[s][j] = src[4j + s] for s < 6, j < 16: a deinterleave by 4 in two permute stages. */
TARGET_AVX512 static inline void deinterleave4(const float *src, __m512 p[6]) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 a0 = _mm512_loadu_ps(src), a1 = _mm512_loadu_ps(src + 16);
    const __m512 a2 = _mm512_loadu_ps(src + 32), a3 = _mm512_loadu_ps(src + 48);
    const __m512i a4 = _mm512_castps_si512(_mm512_maskz_loadu_ps(0x3, src + 64));  /* src[64], src[65] */
    const __m512 e0 = _mm512_permutex2var_ps(a0, even, a1), o0 = _mm512_permutex2var_ps(a0, odd, a1);
    const __m512 e1 = _mm512_permutex2var_ps(a2, even, a3), o1 = _mm512_permutex2var_ps(a2, odd, a3);
    p[0] = _mm512_permutex2var_ps(e0, even, e1);
    p[1] = _mm512_permutex2var_ps(o0, even, o1);
    p[2] = _mm512_permutex2var_ps(e0, odd, e1);
    p[3] = _mm512_permutex2var_ps(o0, odd, o1);
    /* src[4j + 4] = p[0][j + 1], the last lane from src[64]; likewise p[5] from p[1] and src[65]. */
    p[4] = _mm512_castsi512_ps(_mm512_alignr_epi32(a4, _mm512_castps_si512(p[0]), 1));
    p[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_alignr_epi32(a4, a4, 1), _mm512_castps_si512(p[1]), 1));
}

/* Per lane j: the top-left corner (4 * tile row - pt, 4 * tile column - pl) of tile t0 + j, and a
 * mask of the lanes below count. */
TARGET_AVX512 static inline __mmask16 tile_origins_avx512(const wino_geom *g, int t0, int count, int pt, int pl,
                                                          __m512i *y0, __m512i *x0) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i t = _mm512_add_epi32(_mm512_set1_epi32(t0), lane);
    /* t / tiles_x through float division: exact while tile counts stay far below 2^23 */
    const __m512i ty = _mm512_cvttps_epi32(_mm512_div_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps((float)g->tiles_x)));
    const __m512i tx = _mm512_sub_epi32(t, _mm512_mullo_epi32(ty, _mm512_set1_epi32(g->tiles_x)));
    *y0 = _mm512_sub_epi32(_mm512_slli_epi32(ty, 2), _mm512_set1_epi32(pt));
    *x0 = _mm512_sub_epi32(_mm512_slli_epi32(tx, 2), _mm512_set1_epi32(pl));
    return _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32(count < LANES ? count : LANES));
}

/* Any 16 tiles: one masked hardware gather per (r, s), the mask cutting off the padding and the
 * lanes past count, which read as 0 like in gather_tiles. */
TARGET_AVX512 static inline void gather_masked_avx512(const wino_geom *g, const float *plane, int t0, int count,
                                                      float *d) {
    const mnnlite_conv_params *p = g->p;
    __m512i iy0, ix0;
    const __mmask16 live = tile_origins_avx512(g, t0, count, p->pt, p->pl, &iy0, &ix0);
    const __m512i h = _mm512_set1_epi32(p->h), w = _mm512_set1_epi32(p->w), zero = _mm512_setzero_si512();
    const __m512i base = _mm512_add_epi32(_mm512_mullo_epi32(iy0, w), ix0);
    for (int r = 0; r < 6; r++) {
        const __m512i iy = _mm512_add_epi32(iy0, _mm512_set1_epi32(r));
        const __mmask16 row_in = live & _mm512_cmpge_epi32_mask(iy, zero) & _mm512_cmplt_epi32_mask(iy, h);
        for (int s = 0; s < 6; s++) {
            const __m512i ix = _mm512_add_epi32(ix0, _mm512_set1_epi32(s));
            const __mmask16 in = row_in & _mm512_cmpge_epi32_mask(ix, zero) & _mm512_cmplt_epi32_mask(ix, w);
            const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(r * p->w + s));
            _mm512_storeu_ps(d + (r * 6 + s) * LANES,
                             _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx, plane, 4));
        }
    }
}

TARGET_AVX512 static inline __attribute__((always_inline)) void gather_avx512(
        const wino_geom *g, const float *plane, int t0, int count, float *d) {
    const mnnlite_conv_params *p = g->p;
    const int iy0 = t0 / g->tiles_x * 4 - p->pt, ix0 = t0 % g->tiles_x * 4 - p->pl;
    if (!one_tile_row(g, t0, count) || iy0 < 0 || ix0 < 0 || iy0 + 6 > p->h || ix0 + 4 * LANES + 2 > p->w) {
        gather_masked_avx512(g, plane, t0, count, d);
        return;
    }
    for (int r = 0; r < 6; r++) {
        __m512 cols[6];
        deinterleave4(plane + (size_t)(iy0 + r) * p->w + ix0, cols);
        for (int s = 0; s < 6; s++) _mm512_storeu_ps(d + (r * 6 + s) * LANES, cols[s]);
    }
}

/* Any 16 tiles: one masked hardware scatter per (i, u), cutting off what falls outside the image. */
TARGET_AVX512 static inline void scatter_masked_avx512(const wino_geom *g, const float *out, int t0, int count,
                                                       float *plane) {
    const mnnlite_conv_params *p = g->p;
    __m512i oy0, ox0;
    const __mmask16 live = tile_origins_avx512(g, t0, count, 0, 0, &oy0, &ox0);
    const __m512i oh = _mm512_set1_epi32(p->oh), ow = _mm512_set1_epi32(p->ow);
    const __m512i base = _mm512_add_epi32(_mm512_mullo_epi32(oy0, ow), ox0);
    for (int i = 0; i < 4; i++) {
        const __mmask16 row_in = live & _mm512_cmplt_epi32_mask(_mm512_add_epi32(oy0, _mm512_set1_epi32(i)), oh);
        for (int u = 0; u < 4; u++) {
            const __m512i ox = _mm512_add_epi32(ox0, _mm512_set1_epi32(u));
            const __mmask16 in = row_in & _mm512_cmplt_epi32_mask(ox, ow);
            const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(i * p->ow + u));
            _mm512_mask_i32scatter_ps(plane, in, idx, _mm512_loadu_ps(out + (i * 4 + u) * LANES), 4);
        }
    }
}

/* The inverse: row i of the 16 tiles is out[i][u][j] interleaved to 64 floats z[4j + u]. */
TARGET_AVX512 static inline __attribute__((always_inline)) void scatter_avx512(
        const wino_geom *g, const float *out, int t0, int count, float *plane) {
    const mnnlite_conv_params *p = g->p;
    const int oy0 = t0 / g->tiles_x * 4, ox0 = t0 % g->tiles_x * 4;
    if (!one_tile_row(g, t0, count) || oy0 + 4 > p->oh || ox0 + 4 * LANES > p->ow) {
        scatter_masked_avx512(g, out, t0, count, plane);
        return;
    }
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int i = 0; i < 4; i++) {
        const float *oi = out + i * 4 * LANES;
        const __m512 u0 = _mm512_loadu_ps(oi), u1 = _mm512_loadu_ps(oi + LANES);
        const __m512 u2 = _mm512_loadu_ps(oi + 2 * LANES), u3 = _mm512_loadu_ps(oi + 3 * LANES);
        const __m512 l02 = _mm512_permutex2var_ps(u0, lo, u2), h02 = _mm512_permutex2var_ps(u0, hi, u2);
        const __m512 l13 = _mm512_permutex2var_ps(u1, lo, u3), h13 = _mm512_permutex2var_ps(u1, hi, u3);
        float *row = plane + (size_t)(oy0 + i) * p->ow + ox0;
        _mm512_storeu_ps(row, _mm512_permutex2var_ps(l02, lo, l13));
        _mm512_storeu_ps(row + 16, _mm512_permutex2var_ps(l02, hi, l13));
        _mm512_storeu_ps(row + 32, _mm512_permutex2var_ps(h02, lo, h13));
        _mm512_storeu_ps(row + 48, _mm512_permutex2var_ps(h02, hi, h13));
    }
}

WINO_VARIANT(avx512, TARGET_AVX512, gather_avx512, scatter_avx512)
#endif

/* u[xi][lane] = (G g G^T)[xi] for the 3x3 filters g[k][lane], MNNLITE_MAX_MR filters side by side so
 * the loops over lanes vectorise. */
static void transform_filters(const float g[9][MNNLITE_MAX_MR], float u[36][MNNLITE_MAX_MR]) {
    static const float G[6][3] = {{1.0f / 4, 0, 0},
                                  {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                  {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                  {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                  {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                  {0, 0, 1}};
    float gg[6][3][MNNLITE_MAX_MR];  /* G g */
    for (int a = 0; a < 6; a++)
        for (int k = 0; k < 3; k++)
            for (int l = 0; l < MNNLITE_MAX_MR; l++)
                gg[a][k][l] = G[a][0] * g[k][l] + G[a][1] * g[3 + k][l] + G[a][2] * g[6 + k][l];
    for (int a = 0; a < 6; a++)
        for (int b = 0; b < 6; b++)
            for (int l = 0; l < MNNLITE_MAX_MR; l++)
                u[a * 6 + b][l] = gg[a][0][l] * G[b][0] + gg[a][1][l] * G[b][1] + gg[a][2][l] * G[b][2];
}

typedef struct {
    const mnnlite_gemm_kernel *kern;
    wino_geom g;
    input_fn in_fn;
    output_fn out_fn;
    const float *x, *u, *bias;   /* u: 36 packed A matrices, usize floats apart */
    float *y, **work;            /* per thread: V then M */
    size_t usize;
    int tb, blocks;              /* tiles per block, blocks per image */
} wino_job;

static void wino_block(const wino_job *j, int task, float *work) {
    const mnnlite_conv_params *p = j->g.p;
    const mnnlite_gemm_kernel *kern = j->kern;
    const int n = task / j->blocks, t0 = task % j->blocks * j->tb;
    const int count = min_int(j->tb, j->g.tiles - t0), nbpad = round_up(count, kern->nr);
    const int mpad = round_up(p->o, kern->mr);
    /* Kernels that handle partial panels skip the zero columns up to the next NR. */
    const int ncols = kern->partial_cols ? round_up(count, LANES) : nbpad;
    float *v = work, *m = work + (size_t)36 * p->c * round_up(j->tb, kern->nr);
    j->in_fn(&j->g, j->x + (size_t)n * p->c * p->h * p->w, t0, count, nbpad, kern->nr, v);
    for (int xi = 0; xi < 36; xi++) {
        for (int pc = 0; pc < p->c; pc += MNNLITE_KC) {
            const int kc = min_int(MNNLITE_KC, p->c - pc);
            mnnlite_gemm_block(kern, p->o, ncols, kc, j->u + xi * j->usize + (size_t)pc * mpad,
                               v + (size_t)xi * p->c * nbpad + (size_t)pc * nbpad, m + (size_t)xi * p->o * nbpad,
                               nbpad, NULL, pc == 0, MNNLITE_ACT_NONE);
        }
    }
    j->out_fn(&j->g, m, nbpad, t0, count, j->bias, j->y + (size_t)n * p->o * p->oh * p->ow);
}

static void wino_range(void *arg, int begin, int end, int thread) {
    const wino_job *j = (const wino_job *)arg;
    for (int task = begin; task < end; task++) wino_block(j, task, j->work[thread]);
}

/* Floats from one transformed matrix to the next: one cache line more than a packed matrix, because
 * with power-of-two sizes the 36 matrices written side by side would all fall in the same cache sets. */
static size_t u_stride(const mnnlite_gemm_kernel *kern, int o, int c) {
    return mnnlite_packed_a_size(kern, o, c) + 16;
}

size_t mnnlite_winograd_weights_size(const mnnlite_gemm_kernel *kern, int o, int c) {
    return 36 * u_stride(kern, o, c);
}

/* Writes the transform straight into mnnlite_pack_a's layout for each of the 36 matrices (o x c),
 * one MR-row panel column at a time: no intermediate, and every matrix is written sequentially. */
void mnnlite_winograd_pack_weights(const mnnlite_gemm_kernel *kern, const mnnlite_conv_params *p,
                                   const float *w, float *u) {
    const size_t usize = u_stride(kern, p->o, p->c);
    const int mr = kern->mr, mpad = round_up(p->o, mr);
    float g[9][MNNLITE_MAX_MR], t[36][MNNLITE_MAX_MR];
    for (int pc = 0; pc < p->c; pc += MNNLITE_KC) {
        const int kc = min_int(MNNLITE_KC, p->c - pc);
        for (int o0 = 0; o0 < mpad; o0 += mr) {
            for (int k = 0; k < kc; k++) {
                for (int l = 0; l < MNNLITE_MAX_MR; l++)
                    for (int e = 0; e < 9; e++)
                        g[e][l] = l < mr && o0 + l < p->o ? w[((size_t)(o0 + l) * p->c + pc + k) * 9 + e] : 0.0f;
                transform_filters(g, t);
                const size_t at = (size_t)pc * mpad + (size_t)o0 * kc + (size_t)k * mr;
                for (int xi = 0; xi < 36; xi++)
                    for (int l = 0; l < mr; l++) u[xi * usize + at + l] = t[xi][l];  /* mr floats: no memcpy call */
            }
        }
    }
}

/* Tiles per block: V and M of a block (alpha2 x channels x tb floats) should stay near L2 size;
 * a multiple of LANES and of the GEMM's NR where the budget allows. */
static int tiles_per_block(int nr, int tiles, int alpha2, int channels) {
    const int budget = (1 << 18) / (alpha2 * channels);
    int tb = min_int(round_up(tiles, LANES), round_up(budget > LANES ? budget : LANES, nr > LANES ? nr : LANES));
    return round_up(tb, LANES);
}

int mnnlite_winograd_run(const mnnlite_gemm_kernel *kern, int isa, int nthreads,
                         const mnnlite_conv_params *p, const float *x, const float *u, const float *bias,
                         float *y) {
    wino_job j = {0};
    j.kern = kern;
    j.in_fn = input_scalar, j.out_fn = output_scalar;
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) j.in_fn = input_avx512, j.out_fn = output_avx512;
    else if (isa & MNNLITE_CPU_AVX2) j.in_fn = input_avx2, j.out_fn = output_avx2;
#endif
    (void)isa;
    j.g = (wino_geom){p, (p->ow + 3) / 4, 0};
    j.g.tiles = (p->oh + 3) / 4 * j.g.tiles_x;
    const int nr = kern->nr;
    j.tb = tiles_per_block(nr, j.g.tiles, 36, p->c + p->o);
    j.blocks = (j.g.tiles + j.tb - 1) / j.tb;
    const int tasks = p->n * j.blocks;
    j.x = x, j.y = y, j.bias = bias, j.u = u;
    j.usize = u_stride(kern, p->o, p->c);

    float *work[MNNLITE_MAX_THREADS] = {0};
    nthreads = mnnlite_thread_count(mnnlite_threads_for_work(nthreads, 2.0 * p->n * p->o * p->c * p->oh * p->ow * p->kh * p->kw),
                                    tasks);
    const size_t work_size = (size_t)36 * (p->c + p->o) * round_up(j.tb, nr);
    int ok = 1;
    for (int t = 0; t < nthreads; t++) ok &= (work[t] = mnnlite_alloc(work_size)) != NULL;
    if (ok) {
        j.work = work;
        mnnlite_parallel_for(nthreads, tasks, wino_range, &j);
    }
    for (int t = 0; t < nthreads; t++) mnnlite_free(work[t]);
    return ok ? 0 : -1;
}

/* ==== MNN's Winograd =========================================================================
 *
 * The arithmetic of MNN 3.6.1's CPU backend for a 3x3 stride-1 convolution, reproduced operation by
 * operation, so that a runtime matching MNN's outputs also matches its rounding.  Facts used (paths
 * under MNN's source/):
 *  - backend/cpu/compute/ConvolutionFloatFactory.cpp _createUnit: a square kernel > 1 with stride 1
 *    and dilation 1 goes to Winograd when ConvolutionPackWinograd::bestWinogradUnit finds a unit.
 *    The official x86 wheel has no AVX-512 code, so core->pack is 8 and ConvolutionPackWinograd (not
 *    the PackFree variant) runs, with ePack 24 tiles per group.
 *  - bestWinogradUnit: unit u in {2, 4, 6} (alpha = u + 2 in {4, 6, 8}) up to
 *    clamp((int)sqrtf(oh * ow / threads), 2, 8), the one with the largest float cost ratio (below).
 *  - math/WingoradGenerater.cpp with interp 1 and dividedInG: interpolation points 0, 1, -1, 2, -2,
 *    3, -3 (and infinity); G's rows are divided by fdiag = prod_{i != x} (a_x - a_i) (fdiag[0] made
 *    positive); the weights are transformed as (G K) G^T with Matrix::multi (sum from 0, in order,
 *    mul and add rounded separately).
 *  - backend/cpu/x86_x64/avx/WinogradFunctions.cpp (built with -mavx2, no -mfma: every product and
 *    sum is rounded): the input transform runs along x (_sourceUnrollTransformUnit{4x4,6x6,8x8}), then
 *    along y, with the "Pack24" formula when the tile is in a full group of 24 tiles and the unroll
 *    formula for the last, partial group; the output transform runs along y, then along x
 *    (_destUnrollTransformUnit{4x2,6x4,8x6}); bias and activation follow (MNNAxByClampBroadcastUnit).
 *  - the products over input channels are MNNPackedMatMul (avxfma): one FMA chain per output from
 *    zero, channel by channel, which is what mnnlite_gemm_block does for a single K block. */

/* MNN rounds every product and sum of its transforms: no FMA contraction.  GCC in ISO C mode
 * (-std=c11, setup.py) contracts nothing; clang contracts within an expression unless told. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

enum { MNN_EPACK = 24, MNN_MAX_ALPHA = 8 };

/* The transforms below process LANES tiles side by side; s[k] is point k of the lane's 1-D signal.
 * Written as plain expressions: C evaluates them left to right exactly as MNN's Vec8 code does, and
 * this file is compiled in ISO C mode (no FMA contraction). */

/* _sourceUnrollTransformUnit{4x4,6x6,8x8}: one B^T application. */
INLINE void mnn_src_unroll(int alpha, const float *in, int is, float *out, int os) {
    for (int j = 0; j < LANES; j++) {
        float s[MNN_MAX_ALPHA];
        for (int k = 0; k < alpha; k++) s[k] = in[k * is + j];
        if (alpha == 4) {
            out[j] = s[0] - s[2];
            out[os + j] = s[1] + s[2];
            out[2 * os + j] = s[2] - s[1];
            out[3 * os + j] = s[3] - s[1];
        } else if (alpha == 6) {
            const float mid0 = s[4] + s[2] * -4.0f, mid1 = s[3] + s[1] * -4.0f;
            const float mid2 = s[2] + s[0] * -4.0f, mid3 = s[5] + s[3] * -4.0f;
            const float mid4 = s[4] - s[2], mid5 = (s[3] - s[1]) * 2.0f;
            out[j] = mid0 - mid2;
            out[os + j] = mid0 + mid1;
            out[2 * os + j] = mid0 - mid1;
            out[3 * os + j] = mid4 + mid5;
            out[4 * os + j] = mid4 - mid5;
            out[5 * os + j] = mid3 - mid1;
        } else {
            float mid0 = (s[6] + s[2] * 36.0f) + s[4] * -13.0f;
            float mid1 = (s[4] + s[0] * 36.0f) + s[2] * -13.0f;
            out[j] = mid1 - mid0;
            float mid2 = (s[5] + s[1] * 36.0f) + s[3] * -13.0f;
            out[os + j] = mid0 + mid2;
            out[2 * os + j] = mid0 - mid2;
            mid1 = (s[7] + s[3] * 36.0f) + s[5] * -13.0f;
            out[7 * os + j] = mid1 - mid2;
            mid0 = (s[6] + s[2] * 9.0f) + s[4] * -10.0f;
            mid1 = (s[5] + s[1] * 18.0f) + (s[5] + s[3] * -20.0f);
            mid2 = s[5] * 3.0f + s[1] * 12.0f;
            out[3 * os + j] = mid0 + mid1;
            out[4 * os + j] = mid0 - mid1;
            mid0 = (s[6] + s[2] * 4.0f) + s[4] * -5.0f;
            mid1 = mid2 + s[3] * -15.0f;
            out[5 * os + j] = mid0 + mid1;
            out[6 * os + j] = mid0 - mid1;
        }
    }
}

/* _sourceTransformUnit{4x4,6x6,8x8}Pack24: the same B^T, other operation order. */
INLINE void mnn_src_pack(int alpha, const float *in, int is, float *out, int os) {
    for (int j = 0; j < LANES; j++) {
        float s[MNN_MAX_ALPHA];
        for (int k = 0; k < alpha; k++) s[k] = in[k * is + j];
        if (alpha == 4) {
            out[j] = s[0] - s[2];
            out[os + j] = s[1] + s[2];
            out[2 * os + j] = s[2] - s[1];
            out[3 * os + j] = s[3] - s[1];
        } else if (alpha == 6) {
            out[j] = s[0] * 4.0f - s[2] * 5.0f + s[4];
            out[os + j] = (s[1] + s[2]) * -4.0f + s[3] + s[4];
            out[2 * os + j] = (s[1] - s[2]) * 4.0f + s[4] - s[3];
            out[3 * os + j] = s[1] * -2.0f - s[2] + s[3] * 2.0f + s[4];
            out[4 * os + j] = s[1] * 2.0f - s[2] - s[3] * 2.0f + s[4];
            out[5 * os + j] = s[1] * 4.0f - s[3] * 5.0f + s[5];
        } else {
            out[j] = s[0] * 36.0f - s[2] * 49.0f + s[4] * 14.0f - s[6];
            out[os + j] = (s[1] + s[2]) * 36.0f - (s[3] + s[4]) * 13.0f + (s[5] + s[6]);
            out[2 * os + j] = (s[2] - s[1]) * 36.0f + (s[3] - s[4]) * 13.0f + (s[6] - s[5]);
            out[3 * os + j] = s[1] * 18.0f + s[2] * 9.0f - s[3] * 20.0f - s[4] * 10.0f + s[5] * 2.0f + s[6];
            out[4 * os + j] = s[2] * 9.0f - s[1] * 18.0f + s[3] * 20.0f - s[4] * 10.0f - s[5] * 2.0f + s[6];
            out[5 * os + j] = s[1] * 12.0f + s[2] * 4.0f - s[3] * 15.0f - s[4] * 5.0f + s[5] * 3.0f + s[6];
            out[6 * os + j] = s[2] * 4.0f - s[1] * 12.0f + s[3] * 15.0f - s[4] * 5.0f - s[5] * 3.0f + s[6];
            out[7 * os + j] = s[3] * 49.0f - s[1] * 36.0f - s[5] * 14.0f + s[7];
        }
    }
}

/* _destUnrollTransformUnit{4x2,6x4,8x6}: one A^T application, alpha points to alpha - 2. */
INLINE void mnn_dst(int alpha, const float *in, int is, float *out, int os) {
    for (int j = 0; j < LANES; j++) {
        float s[MNN_MAX_ALPHA];
        for (int k = 0; k < alpha; k++) s[k] = in[k * is + j];
        if (alpha == 4) {
            out[j] = s[0] + s[1] + s[2];
            out[os + j] = (s[1] - s[2]) + s[3];
        } else if (alpha == 6) {
            const float v0 = s[3] + s[4], v1 = s[3] - s[4], v2 = s[1] + s[2], v3 = s[1] - s[2];
            out[j] = s[0] + v2 + v0;
            out[os + j] = v3 + v1 + v1;
            out[2 * os + j] = v2 + v0 * 4.0f;
            out[3 * os + j] = v3 + v1 * 8.0f + s[5];
        } else {
            const float mid0 = s[1] + s[2], mid1 = s[1] - s[2], mid2 = s[3] + s[4];
            const float mid3 = s[3] - s[4], mid4 = s[5] + s[6], mid5 = s[5] - s[6];
            out[j] = s[0] + mid0 + mid2 + mid4;
            out[os + j] = mid1 + mid3 * 2.0f + mid5 * 3.0f;
            out[2 * os + j] = mid0 + mid2 * 4.0f + mid4 * 9.0f;
            out[3 * os + j] = mid1 + mid3 * 8.0f + mid5 * 27.0f;
            out[4 * os + j] = mid0 + mid2 * 16.0f + mid4 * 81.0f;
            out[5 * os + j] = mid1 + mid3 * 32.0f + mid5 * 243.0f + s[7];
        }
    }
}

typedef struct {
    const mnnlite_conv_params *p;
    int alpha, unit, tiles_x, tiles;   /* tiles per image */
    int fused_end;                     /* global tile indices below this use the Pack24 formula */
} wmnn_geom;

/* d[r][s][lane] = x[iy0 + r][ix0 + s] of the lane's tile, 0 in the padding and past count. */
INLINE void wmnn_gather(const wmnn_geom *g, const float *plane, int t0, int count, float *d, int alpha) {
    const mnnlite_conv_params *p = g->p;
    const int u = alpha - 2;
    int off[LANES], inside = count >= LANES;
    for (int j = 0; j < LANES; j++) {
        const int t = t0 + j, iy0 = t / g->tiles_x * u - p->pt, ix0 = t % g->tiles_x * u - p->pl;
        off[j] = iy0 * p->w + ix0;
        inside &= iy0 >= 0 && ix0 >= 0 && iy0 + alpha <= p->h && ix0 + alpha <= p->w;
    }
    if (inside) {   /* the usual case: one gather per point, no bounds (alpha is a constant here) */
        for (int r = 0; r < alpha; r++)
            for (int s = 0; s < alpha; s++)
                for (int j = 0; j < LANES; j++) d[(r * alpha + s) * LANES + j] = plane[off[j] + r * p->w + s];
        return;
    }
    for (int j = 0; j < LANES; j++) {
        const int t = t0 + j;
        const int iy0 = t / g->tiles_x * u - p->pt, ix0 = t % g->tiles_x * u - p->pl;
        for (int r = 0; r < alpha; r++) {
            const int iy = iy0 + r;
            for (int s = 0; s < alpha; s++) {
                const int ix = ix0 + s;
                const int in = j < count && iy >= 0 && iy < p->h && ix >= 0 && ix < p->w;
                d[(r * alpha + s) * LANES + j] = in ? plane[(size_t)iy * p->w + ix] : 0.0f;
            }
        }
    }
}

/* V[xi] (xi = y frequency * alpha + x frequency) of `count` tiles from t0 of image n, in packed-B
 * layout with a single K block: channel k of tiles j..j+15 at (j / nr * nr) * c + k * nr + j % nr. */
INLINE void wmnn_input(const wmnn_geom *g, const float *xn, int n, int t0, int count, int nbpad, int nr,
                       float *v, int alpha) {
    const mnnlite_conv_params *p = g->p;
    float d[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES], t[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES];
    float out[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES], alt[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES];
    const int a2 = alpha * alpha;
    for (int j0 = 0; j0 < count; j0 += LANES) {
        const int first = n * g->tiles + t0 + j0;   /* global index of lane 0 */
        const int fused_lanes = g->fused_end - first;  /* lanes below this one use Pack24 */
        for (int k = 0; k < p->c; k++) {
            wmnn_gather(g, xn + (size_t)k * p->h * p->w, t0 + j0, count - j0, d, alpha);
            for (int r = 0; r < alpha; r++)   /* along x */
                mnn_src_unroll(alpha, d + r * alpha * LANES, LANES, t + r * alpha * LANES, LANES);
            for (int s = 0; s < alpha; s++) { /* along y */
                if (fused_lanes > 0) mnn_src_pack(alpha, t + s * LANES, alpha * LANES, out + s * LANES, alpha * LANES);
                if (fused_lanes < LANES) mnn_src_unroll(alpha, t + s * LANES, alpha * LANES, alt + s * LANES, alpha * LANES);
            }
            if (fused_lanes <= 0) {
                memcpy(out, alt, sizeof(float) * a2 * LANES);
            } else if (fused_lanes < LANES) {
                for (int xi = 0; xi < a2; xi++)
                    for (int j = fused_lanes; j < LANES; j++) out[xi * LANES + j] = alt[xi * LANES + j];
            }
            const size_t at = (size_t)(j0 / nr * nr) * p->c + (size_t)k * nr + j0 % nr;
            for (int xi = 0; xi < a2; xi++)
                memcpy(v + (size_t)xi * p->c * nbpad + at, out + xi * LANES, LANES * sizeof(float));
        }
    }
}

/* y tiles from the products m[xi][o][tile] (row length ldm): A^T along y, then x; bias; act. */
INLINE void wmnn_output(const wmnn_geom *g, const float *m, int ldm, int t0, int count, const float *bias,
                        float *yn, int alpha) {
    const mnnlite_conv_params *p = g->p;
    const int u = alpha - 2, a2 = alpha * alpha;
    float in[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES], mid[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES];
    float out[MNN_MAX_ALPHA * MNN_MAX_ALPHA * LANES];
    for (int o = 0; o < p->o; o++) {
        const float b = bias ? bias[o] : 0.0f;
        float *plane = yn + (size_t)o * p->oh * p->ow;
        for (int j0 = 0; j0 < count; j0 += LANES) {
            for (int xi = 0; xi < a2; xi++)
                memcpy(in + xi * LANES, m + ((size_t)xi * p->o + o) * ldm + j0, LANES * sizeof(float));
            for (int s = 0; s < alpha; s++)   /* along y: mid[oy][x frequency] */
                mnn_dst(alpha, in + s * LANES, alpha * LANES, mid + s * LANES, alpha * LANES);
            for (int r = 0; r < u; r++)       /* along x: out[oy][ox] */
                mnn_dst(alpha, mid + r * alpha * LANES, LANES, out + r * u * LANES, LANES);
            for (int e = 0; e < u * u * LANES; e++) {
                float v = out[e] + b;
                if (p->act != MNNLITE_ACT_NONE) v = v > 0.0f ? v : 0.0f;
                if (p->act == MNNLITE_ACT_RELU6) v = v < 6.0f ? v : 6.0f;
                out[e] = v;
            }
            int off[LANES], inside = count - j0 >= LANES;
            for (int j = 0; j < LANES; j++) {
                const int t = t0 + j0 + j, oy = t / g->tiles_x * u, ox = t % g->tiles_x * u;
                off[j] = oy * p->ow + ox;
                inside &= oy + u <= p->oh && ox + u <= p->ow;
            }
            if (inside) {   /* the usual case: one scatter per point, no bounds */
                for (int i = 0; i < u; i++)
                    for (int q = 0; q < u; q++)
                        for (int j = 0; j < LANES; j++) plane[off[j] + i * p->ow + q] = out[(i * u + q) * LANES + j];
                continue;
            }
            for (int j = 0; j < LANES && j < count - j0; j++) {
                const int tt = t0 + j0 + j, oy0 = tt / g->tiles_x * u, ox0 = tt % g->tiles_x * u;
                for (int i = 0; i < u && oy0 + i < p->oh; i++)
                    for (int q = 0; q < u && ox0 + q < p->ow; q++)
                        plane[(size_t)(oy0 + i) * p->ow + ox0 + q] = out[(i * u + q) * LANES + j];
            }
        }
    }
}

typedef void (*wmnn_input_fn)(const wmnn_geom *, const float *, int, int, int, int, int, float *);
typedef void (*wmnn_output_fn)(const wmnn_geom *, const float *, int, int, int, const float *, float *);

/* One instance per alpha, so the transforms unroll, and per SIMD level, so the lane loops vectorise.
 * No FMA contraction (see the pragma above). */
#define WMNN_VARIANT(suffix, attr, alpha)                                                               \
    attr static void wmnn_input_##suffix##_##alpha(const wmnn_geom *g, const float *xn, int n, int t0, \
                                                   int count, int nbpad, int nr, float *v) {           \
        wmnn_input(g, xn, n, t0, count, nbpad, nr, v, alpha);                                          \
    }                                                                                                  \
    attr static void wmnn_output_##suffix##_##alpha(const wmnn_geom *g, const float *m, int ldm, int t0, \
                                                    int count, const float *bias, float *yn) {         \
        wmnn_output(g, m, ldm, t0, count, bias, yn, alpha);                                            \
    }
#define WMNN_VARIANTS(suffix, attr) WMNN_VARIANT(suffix, attr, 4) WMNN_VARIANT(suffix, attr, 6) \
    WMNN_VARIANT(suffix, attr, 8)

WMNN_VARIANTS(scalar, )
#if defined(__x86_64__)
WMNN_VARIANTS(avx2, __attribute__((target("avx2"))))
WMNN_VARIANTS(avx512, __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))))
#endif

int mnnlite_winograd_mnn_unit(const mnnlite_conv_params *p) {
    /* bestWinogradUnit with one thread, in its float arithmetic (ties and near-ties included). */
    const int ow = p->ow, oh = p->oh, ic = p->c, oc = p->o, kernel = 3;
    int max_unit = (int)sqrtf((float)(ow * oh));
    max_unit = max_unit < 8 ? max_unit : 8;
    max_unit = max_unit > 2 ? max_unit : 2;
    const float origin = (float)ow * oh * (2.0 * ic) * oc * kernel * kernel;
    float best_rate = 0.0f;
    int unit = 0;
    for (int u = 2; u <= max_unit; u++) {
        const int sui = u + kernel - 1;
        if (sui != 4 && sui != 6 && sui != 8) continue;
        const float su = (float)sui;
        const float cost = ((2 * su) * su * su * ic + 2 * su * su * ic * oc + ((su + u) * u * (2 * su) * oc)) *
                           (((ow + u - 1) / u) * ((oh + u - 1) / u));
        const float rate = origin / cost;
        if (rate > best_rate) best_rate = rate, unit = u;
    }
    return best_rate < 1.0f ? 0 : unit;
}

/* Floats from one transformed matrix to the next (one packed o x c panel set, single K block). */
static size_t wmnn_stride(const mnnlite_gemm_kernel *kern, int o, int c) {
    return (size_t)round_up(o, kern->mr) * c + 16;
}

size_t mnnlite_winograd_mnn_weights_size(const mnnlite_gemm_kernel *kern, int unit, int o, int c) {
    return (size_t)(unit + 2) * (unit + 2) * wmnn_stride(kern, o, c);
}

/* WinogradGenerater's G for alpha points (alpha x 3), in its float arithmetic. */
static void wmnn_g(int alpha, float G[MNN_MAX_ALPHA][3]) {
    float a[MNN_MAX_ALPHA], fdiag[MNN_MAX_ALPHA];
    a[0] = 0.0f;
    for (int i = 0, sign = 1; i < alpha - 1; i++, sign = -sign) a[i + 1] = (float)(sign * (1 + i / 2)) * 1.0f;
    for (int x = 0; x < alpha - 1; x++) {
        float product = 1.0f;
        for (int i = 0; i < alpha - 1; i++)
            if (i != x) product *= a[x] - a[i];
        fdiag[x] = product;
    }
    fdiag[alpha - 1] = 1.0f;
    if (fdiag[0] < 0) fdiag[0] = -fdiag[0];
    for (int x = 0; x < alpha; x++)
        for (int y = 0; y < 3; y++) {
            float v;  /* computeA: a_x^y (powf of small integers is exact), the last column (y == 2) */
            if (x == alpha - 1) v = y == 2 ? 1.0f : 0.0f;
            else v = y == 0 ? 1.0f : y == 1 ? a[x] : a[x] * a[x];
            G[x][y] = v / fdiag[x];
        }
}

void mnnlite_winograd_mnn_pack_weights(const mnnlite_gemm_kernel *kern, int unit, const mnnlite_conv_params *p,
                                       const float *w, float *u) {
    const int alpha = unit + 2, mr = kern->mr;
    const size_t stride = wmnn_stride(kern, p->o, p->c);
    float G[MNN_MAX_ALPHA][3];
    wmnn_g(alpha, G);
    memset(u, 0, mnnlite_winograd_mnn_weights_size(kern, unit, p->o, p->c) * sizeof(float));
    for (int o = 0; o < p->o; o++) {
        for (int c = 0; c < p->c; c++) {
            const float *k = w + ((size_t)o * p->c + c) * 9;
            float m[MNN_MAX_ALPHA][3];
            for (int i = 0; i < alpha; i++)       /* M = G K */
                for (int x = 0; x < 3; x++) {
                    float sum = 0.0f;
                    for (int e = 0; e < 3; e++) sum += G[i][e] * k[e * 3 + x];
                    m[i][x] = sum;
                }
            const size_t at = (size_t)(o / mr * mr) * p->c + (size_t)c * mr + o % mr;
            for (int i = 0; i < alpha; i++)       /* U = M G^T */
                for (int jx = 0; jx < alpha; jx++) {
                    float sum = 0.0f;
                    for (int e = 0; e < 3; e++) sum += m[i][e] * G[jx][e];
                    u[(size_t)(i * alpha + jx) * stride + at] = sum;
                }
        }
    }
}

/* The tile (global index) whose products MNN sums in another order, or -1.  Tiles of the last,
 * partial group of xC < 24 go through _AVX_MNNPackednMatMulRemainCommon (avx/GemmFunction.hpp),
 * which takes them 20, 16, then 5 at a time, then 4, 3 or 2 (all one FMA chain per output, like the
 * full groups), and a last single one with four chains (below). */
static int wmnn_odd_tile(int total) {
    const int xc = total % MNN_EPACK;
    int rem = xc;
    if (rem >= 20) rem -= 20;
    if (rem >= 16) rem -= 16;
    while (rem >= 5) rem -= 5;
    return xc > 0 && rem == 1 ? total - 1 : -1;
}

/* MNN's single-tile sum: chains over channels k = 0, 1, 2, 3 (mod 4) up to the last multiple of 4,
 * added as (c0 + c2) + (c1 + c3), then the remaining channels one FMA at a time. */
#if defined(__x86_64__)
__attribute__((target("fma")))
#endif
static float wmnn_odd_sum(const float *u, int mr, const float *v, int nr, int c) {
    float chain[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const int c4 = c / 4 * 4;
    for (int k = 0; k < c4; k++) chain[k % 4] = __builtin_fmaf(v[(size_t)k * nr], u[(size_t)k * mr], chain[k % 4]);
    float sum = (chain[0] + chain[2]) + (chain[1] + chain[3]);
    for (int k = c4; k < c; k++) sum = __builtin_fmaf(v[(size_t)k * nr], u[(size_t)k * mr], sum);
    return sum;
}

/* Redo column col of every product matrix in that order. */
static void wmnn_odd_column(const mnnlite_gemm_kernel *kern, const mnnlite_conv_params *p, int a2, const float *u,
                            size_t ustride, const float *v, int nbpad, int col, float *m) {
    const int mr = kern->mr, nr = kern->nr;
    for (int xi = 0; xi < a2; xi++) {
        const float *vx = v + (size_t)xi * p->c * nbpad + (size_t)(col / nr * nr) * p->c + col % nr;
        for (int o = 0; o < p->o; o++) {
            const float *ux = u + xi * ustride + (size_t)(o / mr * mr) * p->c + o % mr;
            m[((size_t)xi * p->o + o) * nbpad + col] = wmnn_odd_sum(ux, mr, vx, nr, p->c);
        }
    }
}

typedef struct {
    const mnnlite_gemm_kernel *kern;
    wmnn_geom g;
    wmnn_input_fn in_fn;
    wmnn_output_fn out_fn;
    const float *x, *u, *bias;
    float *y, **work;
    size_t ustride;
    int tb, blocks;
} wmnn_job;

static void wmnn_block(const wmnn_job *j, int task, float *work) {
    const mnnlite_conv_params *p = j->g.p;
    const mnnlite_gemm_kernel *kern = j->kern;
    const int a2 = j->g.alpha * j->g.alpha;
    const int n = task / j->blocks, t0 = task % j->blocks * j->tb;
    const int count = min_int(j->tb, j->g.tiles - t0), nbpad = round_up(count, kern->nr);
    const int ncols = kern->partial_cols ? round_up(count, LANES) : nbpad;
    float *v = work, *m = work + (size_t)a2 * p->c * round_up(j->tb, kern->nr);
    j->in_fn(&j->g, j->x + (size_t)n * p->c * p->h * p->w, n, t0, count, nbpad, kern->nr, v);
    for (int xi = 0; xi < a2; xi++)
        mnnlite_gemm_block(kern, p->o, ncols, p->c, j->u + xi * j->ustride, v + (size_t)xi * p->c * nbpad,
                           m + (size_t)xi * p->o * nbpad, nbpad, NULL, 1, MNNLITE_ACT_NONE);
    const int odd = wmnn_odd_tile(p->n * j->g.tiles) - n * j->g.tiles - t0;
    if (odd >= 0 && odd < count) wmnn_odd_column(kern, p, a2, j->u, j->ustride, v, nbpad, odd, m);
    j->out_fn(&j->g, m, nbpad, t0, count, j->bias, j->y + (size_t)n * p->o * p->oh * p->ow);
}

static void wmnn_range(void *arg, int begin, int end, int thread) {
    const wmnn_job *j = (const wmnn_job *)arg;
    for (int task = begin; task < end; task++) wmnn_block(j, task, j->work[thread]);
}

static void wmnn_select(wmnn_job *j, int isa, int alpha) {
#define WMNN_PICK(suffix)                                                                        \
    j->in_fn = alpha == 4 ? wmnn_input_##suffix##_4 : alpha == 6 ? wmnn_input_##suffix##_6 : wmnn_input_##suffix##_8; \
    j->out_fn = alpha == 4 ? wmnn_output_##suffix##_4 : alpha == 6 ? wmnn_output_##suffix##_6 : wmnn_output_##suffix##_8;
    WMNN_PICK(scalar)
#if defined(__x86_64__)
    if (isa & MNNLITE_CPU_AVX512) {
        WMNN_PICK(avx512)
    } else if (isa & MNNLITE_CPU_AVX2) {
        WMNN_PICK(avx2)
    }
#endif
#undef WMNN_PICK
    (void)isa;
}

int mnnlite_winograd_mnn_run(const mnnlite_gemm_kernel *kern, int isa, int nthreads, int unit,
                             const mnnlite_conv_params *p, const float *x, const float *u, const float *bias,
                             float *y) {
    wmnn_job j = {0};
    const int alpha = unit + 2, a2 = alpha * alpha;
    j.kern = kern;
    wmnn_select(&j, isa, alpha);
    j.g = (wmnn_geom){p, alpha, unit, (p->ow + unit - 1) / unit, 0, 0};
    j.g.tiles = (p->oh + unit - 1) / unit * j.g.tiles_x;
    j.g.fused_end = p->n * j.g.tiles / MNN_EPACK * MNN_EPACK;
    const int nr = kern->nr;
    j.tb = tiles_per_block(nr, j.g.tiles, a2, p->c + p->o);
    j.blocks = (j.g.tiles + j.tb - 1) / j.tb;
    const int tasks = p->n * j.blocks;
    j.x = x, j.y = y, j.bias = bias, j.u = u;
    j.ustride = wmnn_stride(kern, p->o, p->c);

    float *work[MNNLITE_MAX_THREADS] = {0};
    nthreads = mnnlite_thread_count(mnnlite_threads_for_work(nthreads, 2.0 * p->n * p->o * p->c * p->oh * p->ow * p->kh * p->kw),
                                    tasks);
    const size_t work_size = (size_t)a2 * (p->c + p->o) * round_up(j.tb, nr);
    int ok = 1;
    for (int t = 0; t < nthreads; t++) ok &= (work[t] = mnnlite_alloc(work_size)) != NULL;
    if (ok) {
        j.work = work;
        mnnlite_parallel_for(nthreads, tasks, wmnn_range, &j);
    }
    for (int t = 0; t < nthreads; t++) mnnlite_free(work[t]);
    return ok ? 0 : -1;
}
