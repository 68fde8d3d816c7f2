/* Shared by the int8 kernels: the GEMM micro-kernel contract and the scalar rounding rules.
 *
 * Dense conv: the input is repacked to [C/KG][H*W][KG] uint8 = q + 128 (the u8 x s8 form of vpdpbusd;
 * MNN's x86 build stores tensors this way), each panel of NR output pixels is gathered from it as
 * [Kp/KG][NR][KG] (one k group = KG channels of one pixel), and multiplied by weights packed
 * [Op/MR][Kp/KG][MR][KG].  The accumulators hold sum (q + 128) * w; adding corr[o] =
 * (offset - 128) * sum w gives MNN's sum (q + offset) * w exactly, whatever the path. */
#ifndef MNNLITE_INT8_INTERNAL_H
#define MNNLITE_INT8_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF   /* a fused multiply-add would change MNN's float32 rounding */
#endif

/* Requantization parameters of one group's output channels (indexed by channel in the group). */
typedef struct {
    const int32_t *corr;
    const float *alpha, *bias_f;
    float scale_x;           /* s_in / s_out */
    float lo, hi;
} mnnlite_rq;

/* One MR x NR tile over the whole K: requantize rows m < mr and columns j < nc into y + m * ldy + j.
 * w: this tile's packed weights, panel: [kp/KG][NR][KG] uint8, o0: first channel of the tile. */
typedef void (*mnnlite_int8_micro)(int kp, const void *w, const uint8_t *panel, const mnnlite_rq *rq,
                                   int o0, int8_t *y, ptrdiff_t ldy, int mr, int nc);

typedef struct {
    int mr, nr, kg, wbytes;  /* rows, panel width, k group, bytes per packed weight (1 or 2) */
    mnnlite_int8_micro micro;
    const char *name;
} mnnlite_int8_kernel;

/* The x86 micro-kernels (NULL where the build or the CPU has none). */
const mnnlite_int8_kernel *mnnlite_int8_kernel_x86(int isa);

/* MNN's dense requantization of one accumulator (POSTTREAT in avx/GemmInt8.cpp): two products,
 * one sum, clamp with minps/maxps semantics (NaN -> hi), then trunc(f +- 0.5). */
static inline int8_t mnnlite_rq_dense(int32_t acc, float alpha, float scale_x, float bias_f, float lo, float hi) {
    float f = (float)acc;
    f = f * alpha;
    f = f * scale_x;
    f = f + bias_f;
    f = f < hi ? f : hi;
    f = f > lo ? f : lo;
    float half = f < 0.0f ? -0.5f : 0.5f;
    f = f + half;
    return (int8_t)(int32_t)f;   /* |f| <= 128.5 after the clamp */
}

/* trunc(f +- 0.5) to int32 with cvttps2dq's answer (INT32_MIN) out of range or for NaN. */
static inline int32_t mnnlite_round_i32(float f) {
    float half = f < 0.0f ? -0.5f : 0.5f;
    float t = f + half;
    return (t > -2147483648.0f && t < 2147483648.0f) ? (int32_t)t : INT32_MIN;
}

static inline int mnnlite_round_up(int v, int m) { return (v + m - 1) / m * m; }

#endif
