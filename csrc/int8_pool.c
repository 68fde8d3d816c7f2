/* Int8 max / average pooling over in-bounds windows (CPUPoolInt8.cpp).
 * The numpy definitions are maxpool_int8_ref / avgpool_int8_ref in mnnlite/ref/int8.py. */
#include <stdint.h>
#include <stdlib.h>

#include "int8_conv.h"

/* Window [start, start + count) of every output index; the kernel is first clamped to the input
 * (CPUPoolInt8::onResize), windows to the input bounds (poolingAvgNC16HW16Int8 / ...Max...). */
static void windows(int size, int out, int k, int stride, int pad0, int *start, int *count) {
    if (k > size) k = size;
    for (int i = 0; i < out; i++) {
        int s = i * stride - pad0, e = s + k;
        s = s < 0 ? 0 : s;
        e = e > size ? size : e;
        start[i] = s;
        count[i] = e > s ? e - s : 0;
    }
}

typedef struct {
    int *ys, *ny, *xs, *nx;
} pool_windows;

static int windows_init(pool_windows *W, const mnnlite_conv_geom *g) {
    W->ys = malloc(sizeof(int) * 2 * ((size_t)g->oh + g->ow));
    if (!W->ys) return -1;
    W->ny = W->ys + g->oh;
    W->xs = W->ny + g->oh;
    W->nx = W->xs + g->ow;
    windows(g->h, g->oh, g->kh, g->sy, g->pt, W->ys, W->ny);
    windows(g->w, g->ow, g->kw, g->sx, g->pl, W->xs, W->nx);
    return 0;
}

/* MNNMaxPoolInt8_ compares bytes as int8; on x86 the bytes are q + 128, so with x86_max_bug the
 * comparison key is (int8)(q ^ 0x80) and the largest key wins (a negative code beats any code >= 0). */
int mnnlite_maxpool_int8(const int8_t *x, const mnnlite_conv_geom *g, int8_t *y, int x86_max_bug) {
    pool_windows W;
    if (windows_init(&W, g) != 0) return -1;
    int flip = x86_max_bug ? 0x80 : 0;
    for (size_t p = 0; p < (size_t)g->n * g->c; p++) {
        const int8_t *plane = x + p * g->h * g->w;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int best = -128;
                for (int iy = W.ys[oy]; iy < W.ys[oy] + W.ny[oy]; iy++)
                    for (int ix = W.xs[ox]; ix < W.xs[ox] + W.nx[ox]; ix++) {
                        int key = (int8_t)(plane[iy * g->w + ix] ^ flip);
                        best = key > best ? key : best;
                    }
                *y++ = (int8_t)(best ^ flip);
            }
    }
    free(W.ys);
    return 0;
}

/* ((sum (q + offset)) * floor(2^24 / n) >> 24) - offset: MNNAvgPoolUint8 on x86 (offset 128, unsigned),
 * MNNAvgPoolInt8 elsewhere (offset 0, arithmetic shift = floor). */
static int avg_code(int64_t sum, int n, int offset) {
    int64_t v = sum * ((1 << 24) / (n > 0 ? n : 1));
    v = v >= 0 ? v >> 24 : -((-v + (1 << 24) - 1) >> 24);
    return (int)v - offset;
}

/* sum of (q + offset) over n consecutive codes: int32 partial sums (2^23 codes of at most 255 fit) in
 * loops the compiler vectorises -- global and full-row windows (squeeze-excitation pools) are one run */
static int64_t sum_run(const int8_t *p, size_t n, int offset) {
    int64_t sum = 0;
    for (size_t done = 0; done < n;) {
        size_t len = n - done < ((size_t)1 << 23) ? n - done : (size_t)1 << 23;
        int32_t part = 0;
        if (offset == 128) {
            const uint8_t *u = (const uint8_t *)(p + done);
            for (size_t i = 0; i < len; i++) part += u[i] ^ 0x80;     /* (uint8)(q ^ 0x80) = q + 128 */
        } else {
            for (size_t i = 0; i < len; i++) part += p[done + i];
        }
        sum += part;
        done += len;
    }
    return sum;
}

int mnnlite_avgpool_int8(const int8_t *x, const mnnlite_conv_geom *g, int8_t *y, int offset) {
    pool_windows W;
    if (windows_init(&W, g) != 0) return -1;
    for (size_t p = 0; p < (size_t)g->n * g->c; p++) {
        const int8_t *plane = x + p * g->h * g->w;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int64_t sum = 0;
                if (W.nx[ox] == g->w)        /* whole rows: one contiguous run */
                    sum = sum_run(plane + (size_t)W.ys[oy] * g->w, (size_t)W.ny[oy] * g->w, offset);
                else
                    for (int iy = W.ys[oy]; iy < W.ys[oy] + W.ny[oy]; iy++)
                        sum += sum_run(plane + (size_t)iy * g->w + W.xs[ox], (size_t)W.nx[ox], offset);
                *y++ = (int8_t)avg_code(sum, W.ny[oy] * W.nx[ox], offset);
            }
    }
    free(W.ys);
    return 0;
}
