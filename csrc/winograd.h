/* Winograd F(4x4, 3x3) internals shared by conv.c and winograd.c (not part of the public API). */
#ifndef MNNLITE_WINOGRAD_H
#define MNNLITE_WINOGRAD_H
#include <stddef.h>

#include "conv.h"
#include "gemm.h"

/* Floats of transformed, packed weights for o x c 3x3 filters. */
size_t mnnlite_winograd_weights_size(const mnnlite_gemm_kernel *kern, int o, int c);

/* u (mnnlite_winograd_weights_size floats) = packed G w G^T for the 36 positions. */
void mnnlite_winograd_pack_weights(const mnnlite_gemm_kernel *kern, const mnnlite_conv_params *p,
                                   const float *w, float *u);

/* 3x3 stride-1 conv of x with packed weights u; isa chooses the transform code. */
int mnnlite_winograd_run(const mnnlite_gemm_kernel *kern, int isa, int nthreads,
                         const mnnlite_conv_params *p, const float *x, const float *u, const float *bias,
                         float *y);

/* MNN's Winograd (the second half of winograd.c): the unit u in {2, 4, 6} (F(u x u, 3x3), alpha = u + 2
 * points) MNN 3.6.1's CPU backend picks for a 3x3 stride-1 conv with p's channels and output size on
 * one thread, or 0 when it runs the conv without Winograd. */
int mnnlite_winograd_mnn_unit(const mnnlite_conv_params *p);

size_t mnnlite_winograd_mnn_weights_size(const mnnlite_gemm_kernel *kern, int unit, int o, int c);

/* u = the alpha^2 packed matrices (G K G^T) for unit, with MNN's G and its rounding. */
void mnnlite_winograd_mnn_pack_weights(const mnnlite_gemm_kernel *kern, int unit, const mnnlite_conv_params *p,
                                       const float *w, float *u);

/* y = the conv of x with MNN's transforms and operation order; u from mnnlite_winograd_mnn_pack_weights. */
int mnnlite_winograd_mnn_run(const mnnlite_gemm_kernel *kern, int isa, int nthreads, int unit,
                             const mnnlite_conv_params *p, const float *x, const float *u, const float *bias,
                             float *y);

#endif
