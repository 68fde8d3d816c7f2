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

#endif
