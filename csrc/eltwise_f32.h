/* Float32 element-wise kernels (csrc/eltwise_f32.c). */
#ifndef MNNLITE_ELTWISE_F32_H
#define MNNLITE_ELTWISE_F32_H

#include <stddef.h>

#include "cpu_features.h"

/* y = minimum(maximum(x, lo), hi) with numpy's semantics (ReLU6, kernel "clamp"): maximum(a, b) is
 * a > b ? a : b, minimum a < b ? a : b, and a NaN operand gives NaN.  isa: the MNNLITE_CPU_* paths allowed. */
void mnnlite_clamp_f32(const float *x, float *y, size_t n, float lo, float hi, int isa);

/* y = x * clamp(x + 3, 0, 6) / 6 in float32, in that order (ops/elementwise.py _hardswish; a NaN stays). */
void mnnlite_hardswish_f32(const float *x, float *y, size_t n, int isa);

#endif
