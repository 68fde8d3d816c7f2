/* KL feature calibration (docs/mnn-quantization.md §6.3-6.5, MNN TensorStatistic.cpp): range, |x| histogram
 * and threshold search.  Numpy references: mnnlite.quant.feature.kl (range_ref, histogram_ref,
 * kl_threshold_ref); the results are identical, bit for bit. */
#ifndef MNNLITE_KL_CALIB_H
#define MNNLITE_KL_CALIB_H

#include <stddef.h>
#include <stdint.h>

#include "cpu_features.h"

/* lo = min(lo, x[k]), hi = max(hi, x[k]) over the n values; NaNs are ignored. */
void klc_range(const float *x, size_t n, float *lo, float *hi);

/* counts[min((int)(|x| * interval), bins - 1)] += 1 for every |x| > 1e-6 (float32 arithmetic; NaN is
 * not counted; a NaN product, inf * 0, goes to the last bin).  1 <= bins <= 2^24. */
void klc_histogram(const float *x, size_t n, float interval, int64_t *counts, int bins);

/* The threshold bin of the normalised histogram (MNN's first strict minimum of the float32 KL
 * divergence over candidates target..bins-1), screened like kl_threshold_ref: every candidate it
 * evaluates exactly is evaluated here too.  1 <= target < bins.  isa: the MNNLITE_CPU_* paths it may
 * use (cpu_features.h); every path returns the same bin.  Returns -1 if out of memory. */
int klc_threshold(const float *hist, int bins, int target, int exact_top, int isa);

#endif
