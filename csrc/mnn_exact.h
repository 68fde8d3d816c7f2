/* Float kernels that round exactly like MNN 3.6.1's x86 CPU backend (AVX2 + FMA, pack 8, 1 thread).
 *
 * Each function reproduces the order of MNN's float operations, not just its math, so that a
 * network run with them matches MNN bit for bit (given bit-identical inputs).  The facts each one
 * relies on are cited in mnn_exact.c.  ``isa`` is a MNNLITE_CPU_* mask: with MNNLITE_CPU_AVX2 the
 * fused multiply-adds are compiled to the FMA instruction, otherwise they call fmaf() (also
 * correctly rounded, slower): the results are the same. */
#ifndef MNNLITE_MNN_EXACT_H
#define MNNLITE_MNN_EXACT_H

#include <stddef.h>

/* y[o][e] = act(bias[o] + sum_k w[o][k] * a[k][e]) in MNNPackedMatMul's order; a is K x E
 * (row k = one reduction index, in MNN's order), w is O x K, y is O x E; clamp to [lo, hi]. */
void mnnx_packed_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                        int K, int E, int O, float lo, float hi);

/* The same product as Convolution1x1Strassen computes it with one thread: StrassenMatrixComputor
 * with recursion depth at most ``max_depth`` (a, w, y as for mnnx_packed_matmul).  Returns 0, or -1
 * when out of memory. */
int mnnx_strassen_matmul(int isa, const float *a, const float *w, const float *bias, float *y,
                         int K, int E, int O, int max_depth, float lo, float hi);

/* y = 1 / (1 + exp(-x)) with MNNExp's polynomial: the first ``n8`` * 8 elements through the AVX2
 * path (_AVX_MNNExpC8FMA), the rest through the scalar tail of MNNExp. */
void mnnx_sigmoid(int isa, const float *x, float *y, size_t n, size_t n8);

/* y[c] = x[c][0] / hw + x[c][1] / hw + ... (each a product with 1.0f / hw, summed in order):
 * CPUPool's global average. */
void mnnx_global_avg(const float *x, float *y, int channels, int hw);

/* MNNNorm on x86 with AVX2 (_AVX_MNNNorm): one LayerNorm row of ``size`` values; gamma/beta used only
 * when both are given; ``rms`` skips the mean. */
void mnnx_norm(const float *src, float *dst, const float *gamma, const float *beta, float eps,
               size_t size, int rms);

/* Softmax over each row of ``rows`` x ``C`` values as MNN's x86 CPUSoftmax / _AVX_MNNSoftmax does it. */
void mnnx_softmax_rows(int isa, const float *x, float *y, size_t rows, size_t C);

/* MNNExp with offsets {1, 0, 0, 0}: y = exp(x), n / 8 * 8 values 8-wide, the rest by the scalar tail. */
void mnnx_exp(int isa, const float *x, float *y, size_t n);

/* The UnaryOps MNN's CPUUnary computes with the C library's float functions (UnaryUtils.hpp, MNNSin), per
value: ``op`` is the UnaryOpOperation code (ERF, SIN, COS, TAN, ATAN, LOG, LOG1P, ACOSH, SINH, ASINH, ATANH,
COSH); MNN's binary and this one call the same system libm, which is not correctly rounded. Returns 0, or -1
for another code. */
int mnnx_libm_unary(int op, const float *x, float *y, size_t n);

#endif
