/* 256-entry int8 table lookups (csrc/int8_lut.c). */
#ifndef MNNLITE_INT8_LUT_H
#define MNNLITE_INT8_LUT_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"

/* y[i] = table[q[i] + 128] for i < n; isa: the MNNLITE_CPU_* paths allowed (VBMI: 64 bytes at a time). */
void mnnlite_lut256(const int8_t *table, const int8_t *q, int8_t *y, size_t n, int isa);

#endif
