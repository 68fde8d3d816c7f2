/* Dense int8 convolution: input repacking, panel gathering (im2col without the big matrix), GEMM
 * micro-kernels, MNN's requantization.  The numpy definition is conv2d_int8_ref in mnnlite/ref/int8.py. */
#include "int8_conv.h"

#include <stdlib.h>
#include <string.h>

#include "cpu_features.h"
#include "int8_internal.h"
#include "parallel.h"

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

/* ------------------------------------------------------------------------------ requant params */

/* MNN: kernel sum ks = float(sum w) * alpha (_computeReorderQuantInfo); bias_f =
 * (bias - ks * float(z_in + offset) * s_in) / s_out + z_out (MutableResourceInt8::updateInputOutputScale). */
void mnnlite_int8_dense_bias(const int8_t *w, int o, int k, const float *alpha, const float *bias,
                             const mnnlite_int8_quant *q, float *bias_f) {
    float zin = (float)(q->z_in + q->offset);
    for (int i = 0; i < o; i++) {
        int32_t sum = 0;
        for (int j = 0; j < k; j++) sum += w[(size_t)i * k + j];
        float ks = (float)sum * alpha[i];
        float t = ks * zin;
        t = t * q->s_in;
        float b = bias[i] - t;
        b = b / q->s_out;
        bias_f[i] = b + (float)q->z_out;
    }
}

static void weight_sums(const int8_t *w, int o, int k, int offset, int32_t *corr) {
    for (int i = 0; i < o; i++) {
        int32_t sum = 0;
        for (int j = 0; j < k; j++) sum += w[(size_t)i * k + j];
        corr[i] = (offset - 128) * sum;
    }
}

/* ------------------------------------------------------------------------------ scalar kernel */

enum { SC_MR = 4, SC_NR = 16, SC_KG = 4 };

static void store_rows_scalar(const int32_t *acc, int nr, const mnnlite_rq *rq, int o0, int8_t *y,
                              ptrdiff_t ldy, int mr, int nc) {
    for (int m = 0; m < mr; m++) {
        int o = o0 + m;
        for (int j = 0; j < nc; j++)
            y[m * ldy + j] = mnnlite_rq_dense((int32_t)((uint32_t)acc[m * nr + j] + (uint32_t)rq->corr[o]),
                                              rq->alpha[o], rq->scale_x, rq->bias_f[o], rq->lo, rq->hi);
    }
}

static void micro_scalar(int kp, const void *wv, const uint8_t *panel, const mnnlite_rq *rq, int o0,
                         int8_t *y, ptrdiff_t ldy, int mr, int nc) {
    const int8_t *w = (const int8_t *)wv;
    int32_t acc[SC_MR * SC_NR] = {0};
    for (int k = 0; k < kp; k += SC_KG, w += SC_MR * SC_KG, panel += SC_NR * SC_KG)
        for (int m = 0; m < SC_MR; m++) {
            int32_t w0 = w[m * 4], w1 = w[m * 4 + 1], w2 = w[m * 4 + 2], w3 = w[m * 4 + 3];
            for (int j = 0; j < SC_NR; j++)   /* written for the auto-vectorizer (NEON ld4 / SSE shuffles) */
                acc[m * SC_NR + j] += w0 * panel[j * 4] + w1 * panel[j * 4 + 1] + w2 * panel[j * 4 + 2] +
                                      w3 * panel[j * 4 + 3];
        }
    store_rows_scalar(acc, SC_NR, rq, o0, y, ldy, mr, nc);
}

static const mnnlite_int8_kernel k_scalar = {SC_MR, SC_NR, SC_KG, 1, micro_scalar, "scalar"};

static const mnnlite_int8_kernel *select_kernel(int isa) {
    const mnnlite_int8_kernel *k = mnnlite_int8_kernel_x86(isa & mnnlite_cpu_features());
    return k ? k : &k_scalar;
}

const char *mnnlite_int8_path(int isa) { return select_kernel(isa)->name; }

/* ------------------------------------------------------------------------------ packing */

/* K order of the packed GEMM: k = ((cb * kh + ky) * kw + kx) * kg + ci for input channel cb * kg + ci,
 * so one k group is kg consecutive channels of one pixel: a contiguous unit of the repacked input.
 * Weights [og][cg][kh][kw] -> [op/mr][kp/kg][mr][kg], int8 or int16, zero rows/channels added. */
static void pack_weights(const mnnlite_int8_kernel *kern, const int8_t *w, int og, int cg, int kh, int kw,
                         int op, int kp, void *dst) {
    int mr = kern->mr, kg = kern->kg, cbn = kp / (kg * kh * kw);
    for (int r = 0; r < op; r++) {
        size_t base = (size_t)(r / mr) * kp * mr + (r % mr) * kg, step = (size_t)mr * kg, i = base;
        for (int cb = 0; cb < cbn; cb++)
            for (int ky = 0; ky < kh; ky++)
                for (int kx = 0; kx < kw; kx++, i += step)
                    for (int ci = 0; ci < kg; ci++) {
                        int c = cb * kg + ci;
                        int8_t v = (r < og && c < cg) ? w[(((size_t)r * cg + c) * kh + ky) * kw + kx] : 0;
                        if (kern->wbytes == 2) ((int16_t *)dst)[i + ci] = v;
                        else ((int8_t *)dst)[i + ci] = v;
                    }
    }
}

/* NCHW channels of one group -> [ceil(cg/kg)][hw][kg] uint8 (q ^ 0x80); missing channels 0x80 (q = 0). */
static void repack_block_c(const int8_t *x, int cg, int hw, int kg, int cb, int p0, uint8_t *dst) {
    for (int p = p0; p < hw; p++)
        for (int ci = 0; ci < kg; ci++) {
            int c = cb * kg + ci;
            dst[((size_t)cb * hw + p) * kg + ci] = c < cg ? (uint8_t)x[(size_t)c * hw + p] ^ 0x80 : 0x80;
        }
}

#if defined(__x86_64__)
/* 16 pixels of 4 channel rows -> [16][4] (64 bytes), SSE2. */
static void interleave16x4(const int8_t *s, ptrdiff_t ld, uint8_t *d) {
    const __m128i flip = _mm_set1_epi8((char)0x80);
    __m128i r0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)s), flip);
    __m128i r1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + ld)), flip);
    __m128i r2 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + 2 * ld)), flip);
    __m128i r3 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + 3 * ld)), flip);
    __m128i a = _mm_unpacklo_epi8(r0, r1), b = _mm_unpackhi_epi8(r0, r1);
    __m128i c = _mm_unpacklo_epi8(r2, r3), e = _mm_unpackhi_epi8(r2, r3);
    _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi16(a, c));
    _mm_storeu_si128((__m128i *)(d + 16), _mm_unpackhi_epi16(a, c));
    _mm_storeu_si128((__m128i *)(d + 32), _mm_unpacklo_epi16(b, e));
    _mm_storeu_si128((__m128i *)(d + 48), _mm_unpackhi_epi16(b, e));
}

/* 16 pixels of 2 channel rows -> [16][2] (32 bytes), SSE2. */
static void interleave16x2(const int8_t *s, ptrdiff_t ld, uint8_t *d) {
    const __m128i flip = _mm_set1_epi8((char)0x80);
    __m128i r0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)s), flip);
    __m128i r1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + ld)), flip);
    _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi8(r0, r1));
    _mm_storeu_si128((__m128i *)(d + 16), _mm_unpackhi_epi8(r0, r1));
}
#endif

static void repack_input(const int8_t *x, int cg, int hw, int kg, uint8_t *dst) {
    int cbn = (cg + kg - 1) / kg;
    for (int cb = 0; cb < cbn; cb++) {
        int p = 0;
#if defined(__x86_64__)
        if ((cb + 1) * kg <= cg && (kg == 2 || kg == 4))
            for (; p + 16 <= hw; p += 16) {
                const int8_t *s = x + (size_t)cb * kg * hw + p;
                uint8_t *d = dst + ((size_t)cb * hw + p) * kg;
                if (kg == 4) interleave16x4(s, hw, d);
                else interleave16x2(s, hw, d);
            }
#endif
        repack_block_c(x, cg, hw, kg, cb, p, dst);
    }
}

/* A panel's output pixels as runs along one output row: pixels j0 .. j0 + cnt - 1 = (oy, ox0 ..). */
typedef struct {
    int oy, ox0, cnt, j0;
} pixel_run;

static int panel_runs(const mnnlite_conv_geom *g, int n0, int nc, pixel_run *runs) {
    int count = 0;
    for (int j = 0; j < nc;) {
        int n = n0 + j, ox = n % g->ow, cnt = g->ow - ox < nc - j ? g->ow - ox : nc - j;
        runs[count++] = (pixel_run){n / g->ow, ox, cnt, j};
        j += cnt;
    }
    return count;
}

/* cnt units of kg bytes: unit i = row[(ix0 + i * sx) * kg ..] inside the row, the pad byte outside. */
static void copy_run(uint8_t *d, const uint8_t *row, int cnt, int ix0, int sx, int w, int kg, uint8_t zb) {
    int lo = ix0 >= 0 ? 0 : (-ix0 + sx - 1) / sx;          /* first unit with ix >= 0 */
    int hi = w - ix0 <= 0 ? 0 : (w - ix0 + sx - 1) / sx;   /* first unit with ix >= w */
    lo = lo > cnt ? cnt : lo;
    hi = hi > cnt ? cnt : (hi < lo ? lo : hi);
    memset(d, zb, (size_t)lo * kg);
    if (sx == 1) memcpy(d + lo * kg, row + (size_t)(ix0 + lo) * kg, (size_t)(hi - lo) * kg);
    else if (kg == 4)   /* fixed-size copies compile to single moves */
        for (int i = lo; i < hi; i++) memcpy(d + i * 4, row + (size_t)(ix0 + i * sx) * 4, 4);
    else
        for (int i = lo; i < hi; i++) memcpy(d + i * 2, row + (size_t)(ix0 + i * sx) * 2, 2);
    memset(d + hi * kg, zb, (size_t)(cnt - hi) * kg);
}

/* The [kp/kg][nr][kg] panel of output pixels n0 .. n0 + nc - 1 straight from the repacked input
 * (im2col without the big matrix); padding positions get the input zero point. */
static void pack_panel(const uint8_t *xb, const mnnlite_conv_geom *g, int cbn, int kg, int nr, int n0, int nc,
                       uint8_t zb, pixel_run *runs, uint8_t *dst) {
    size_t hw = (size_t)g->h * g->w;
    int direct = g->kh == 1 && g->kw == 1 && g->sy == 1 && g->sx == 1 && g->pt == 0 && g->pl == 0 &&
                 g->oh == g->h && g->ow == g->w;
    if (direct) {
        for (int cb = 0; cb < cbn; cb++) memcpy(dst + (size_t)cb * nr * kg, xb + (cb * hw + n0) * kg, (size_t)nc * kg);
        return;
    }
    int nrun = panel_runs(g, n0, nc, runs);
    for (int cb = 0; cb < cbn; cb++)
        for (int ky = 0; ky < g->kh; ky++)
            for (int kx = 0; kx < g->kw; kx++, dst += (size_t)nr * kg)
                for (int r = 0; r < nrun; r++) {
                    uint8_t *d = dst + runs[r].j0 * kg;
                    int iy = runs[r].oy * g->sy - g->pt + ky * g->dy;
                    if (iy < 0 || iy >= g->h) memset(d, zb, (size_t)runs[r].cnt * kg);
                    else copy_run(d, xb + (cb * hw + (size_t)iy * g->w) * kg, runs[r].cnt,
                                  runs[r].ox0 * g->sx - g->pl + kx * g->dx, g->sx, g->w, kg, zb);
                }
}

/* ------------------------------------------------------------------------------ plan */

struct mnnlite_int8_conv_plan {
    const mnnlite_int8_kernel *kern;
    mnnlite_conv_geom g;     /* weights and geometry; n, h, w, oh, ow come with each run */
    int cg, og, cbn, kp, op;
    size_t wgroup;           /* packed weight bytes per group */
    uint8_t zb;              /* padding byte: z_in ^ 0x80 */
    float scale_x, lo, hi;
    uint8_t *wpack;
    float *alpha, *bias_f;
    int32_t *corr;
};

void mnnlite_int8_conv_plan_free(mnnlite_int8_conv_plan *P) {
    if (!P) return;
    free(P->wpack);
    free(P->alpha);
    free(P->bias_f);
    free(P->corr);
    free(P);
}

mnnlite_int8_conv_plan *mnnlite_int8_conv_plan_new(const int8_t *w, const float *alpha, const float *bias,
                                                   const mnnlite_conv_geom *g, const mnnlite_int8_quant *q,
                                                   int isa) {
    mnnlite_int8_conv_plan *P = calloc(1, sizeof(*P));
    if (!P) return NULL;
    const mnnlite_int8_kernel *K = P->kern = select_kernel(isa);
    P->g = *g;
    P->cg = g->c / g->groups;
    P->og = g->o / g->groups;
    P->cbn = (P->cg + K->kg - 1) / K->kg;
    P->kp = P->cbn * K->kg * g->kh * g->kw;
    P->op = mnnlite_round_up(P->og, K->mr);
    P->wgroup = (size_t)P->op * P->kp * K->wbytes;
    P->zb = (uint8_t)(q->z_in ^ 0x80);
    P->scale_x = q->s_in / q->s_out;   /* DenseConvInt8TiledExecutor::onExecute: scalein / scaleou */
    P->lo = (float)q->lo;
    P->hi = (float)q->hi;
    P->wpack = malloc(P->wgroup * g->groups);
    P->alpha = malloc(sizeof(float) * g->o);
    P->bias_f = malloc(sizeof(float) * g->o);
    P->corr = malloc(sizeof(int32_t) * g->o);
    if (!P->wpack || !P->alpha || !P->bias_f || !P->corr) {
        mnnlite_int8_conv_plan_free(P);
        return NULL;
    }
    int k = P->cg * g->kh * g->kw;
    memcpy(P->alpha, alpha, sizeof(float) * g->o);
    mnnlite_int8_dense_bias(w, g->o, k, alpha, bias, q, P->bias_f);
    weight_sums(w, g->o, k, q->offset, P->corr);
    for (int gi = 0; gi < g->groups; gi++)
        pack_weights(K, w + (size_t)gi * P->og * k, P->og, P->cg, g->kh, g->kw, P->op, P->kp,
                     P->wpack + gi * P->wgroup);
    return P;
}

const char *mnnlite_int8_conv_plan_path(const mnnlite_int8_conv_plan *P) { return P->kern->name; }

/* ------------------------------------------------------------------------------ run */

typedef struct {
    const mnnlite_int8_conv_plan *P;
    const mnnlite_conv_geom *g;
    int n, npanels;
    const uint8_t *xb;       /* this image, repacked group by group */
    int8_t *y;               /* this image's output, [o][n] */
    uint8_t *panels;         /* one panel (+ its pixel runs) per thread */
    size_t panel_bytes, xb_group;
} gemm_job;

/* Tasks are (group, panel) pairs: pack the panel once, then run every row tile of the group over it. */
static void run_panels(void *ctx, int begin, int end, int thread) {
    const gemm_job *J = (const gemm_job *)ctx;
    const mnnlite_int8_conv_plan *P = J->P;
    const mnnlite_int8_kernel *K = P->kern;
    uint8_t *panel = J->panels + (size_t)thread * J->panel_bytes;
    pixel_run *runs = (pixel_run *)(panel + (size_t)mnnlite_round_up(P->kp * K->nr, 64));
    size_t wtile = (size_t)K->mr * P->kp * K->wbytes;
    for (int t = begin; t < end; t++) {
        int gi = t / J->npanels, n0 = (t % J->npanels) * K->nr, nc = J->n - n0 < K->nr ? J->n - n0 : K->nr;
        int o = gi * P->og;
        mnnlite_rq rq = {P->corr + o, P->alpha + o, P->bias_f + o, P->scale_x, P->lo, P->hi};
        pack_panel(J->xb + gi * J->xb_group, J->g, P->cbn, K->kg, K->nr, n0, nc, P->zb, runs, panel);
        const uint8_t *wg = P->wpack + gi * P->wgroup;
        for (int r0 = 0; r0 < P->op; r0 += K->mr) {
            int mr = P->og - r0 < K->mr ? P->og - r0 : K->mr;
            K->micro(P->kp, wg + (r0 / K->mr) * wtile, panel, &rq, r0, J->y + ((size_t)o + r0) * J->n + n0, J->n,
                     mr, nc);
        }
    }
}

int mnnlite_int8_conv_plan_run(const mnnlite_int8_conv_plan *P, const int8_t *x, const mnnlite_conv_geom *g,
                               int8_t *y, int nthreads) {
    const mnnlite_int8_kernel *K = P->kern;
    gemm_job J = {P, g, g->oh * g->ow, 0, NULL, NULL, NULL, 0, 0};
    J.npanels = (J.n + K->nr - 1) / K->nr;
    J.xb_group = (size_t)P->cbn * K->kg * g->h * g->w;
    J.panel_bytes = (size_t)mnnlite_round_up(P->kp * K->nr, 64) + sizeof(pixel_run) * K->nr;
    int threads = nthreads < 1 ? 1 : nthreads;
    uint8_t *xb = malloc(J.xb_group * g->groups), *panels = malloc(J.panel_bytes * threads);
    if (!xb || !panels) {
        free(xb);
        free(panels);
        return -1;
    }
    J.xb = xb;
    J.panels = panels;
    size_t hw = (size_t)g->h * g->w;
    for (int b = 0; b < g->n; b++) {
        for (int gi = 0; gi < g->groups; gi++)
            repack_input(x + ((size_t)b * g->c + (size_t)gi * P->cg) * hw, P->cg, (int)hw, K->kg, xb + gi * J.xb_group);
        J.y = y + (size_t)b * g->o * J.n;
        mnnlite_parallel_for(mnnlite_threads_for_work(threads, 2.0 * g->o * J.n * P->cg * g->kh * g->kw), g->groups * J.npanels,
                             run_panels, &J);
    }
    free(xb);
    free(panels);
    return 0;
}

int mnnlite_conv2d_int8(const int8_t *x, const int8_t *w, const float *alpha, const float *bias,
                        const mnnlite_conv_geom *g, const mnnlite_int8_quant *q, int8_t *y, int isa,
                        int nthreads) {
    mnnlite_int8_conv_plan *P = mnnlite_int8_conv_plan_new(w, alpha, bias, g, q, isa);
    if (!P) return -1;
    int rc = mnnlite_int8_conv_plan_run(P, x, g, y, nthreads);
    mnnlite_int8_conv_plan_free(P);
    return rc;
}
