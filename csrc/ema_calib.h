/* EMA feature calibration (docs/mnn-quantization.md §9, MNN NN.cpp fakeQuantFeatureWithMinMax): a batch's range
 * and its fake quantization.  Numpy reference: mnnlite.quant.feature.ema.fake_quantize_ref; the results
 * are identical, bit for bit. */
#ifndef MNNLITE_EMA_CALIB_H
#define MNNLITE_EMA_CALIB_H

#include <stddef.h>

/* min and max of the n > 0 values, NaN if any value is NaN (numpy's min/max). */
void emac_range(const float *x, size_t n, float *lo, float *hi);

/* y = s * (clamp(roundf(x / s + z), -c, c) - z) in float32, one rounding per operation; roundf is C's
 * (half away from zero) and a NaN stays NaN through the clamp.  isa: the MNNLITE_CPU_* paths it may use
 * (cpu_features.h); every path gives the same bits. */
void emac_fake_quant(int isa, const float *x, float *y, size_t n, float s, float z, float c);

#endif
