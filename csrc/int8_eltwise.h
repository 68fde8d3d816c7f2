/* Int8 element-wise kernels (csrc/int8_eltwise.c): 256-entry table lookups, CPUBinaryInt8's arithmetic. */
#ifndef MNNLITE_INT8_ELTWISE_H
#define MNNLITE_INT8_ELTWISE_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"

/* y[i] = table[q[i] + 128] for i < n; isa: the MNNLITE_CPU_* paths allowed (VBMI: 64 bytes at a time). */
void mnnlite_lut256(const int8_t *table, const int8_t *q, int8_t *y, size_t n, int isa);

/* CPUBinaryInt8 (BinaryUtils.hpp) on two code arrays of one shape, op 0 ADD, 1 SUB, 2 MUL: a' = (qa - za) * sa
 * and b' likewise in float32, y = a' op b', v = roundf(y * inv) + z_out (float32), clamped to [lo, hi]
 * (NaN to lo).  Returns -1 for another op. */
int mnnlite_binary_int8(int op, const int8_t *a, const int8_t *b, int8_t *y, size_t n, float sa, float za,
                        float sb, float zb, float inv, float z_out, float lo, float hi, int isa);

#endif
