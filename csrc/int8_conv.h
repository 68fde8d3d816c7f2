/* Int8 convolution, depthwise convolution and pooling, bit-exact with MNN 3.6.1's CPU backend.
 *
 * The numpy definition is mnnlite/ref/int8.py; every rounding rule here follows it (and MNN's x86
 * build: tensors held as uint8 = q + 128, float32 requantization without FMA, round = trunc(x +- 0.5)).
 * Layouts: activations NCHW int8, dense weights [O][C/groups][KH][KW], depthwise weights [C][KH][KW].
 * Inputs are trusted (the Cython wrapper validates); functions return 0, or -1 when out of memory. */
#ifndef MNNLITE_INT8_CONV_H
#define MNNLITE_INT8_CONV_H
#include <stdint.h>

typedef struct {
    int n, c, h, w;          /* input */
    int o, kh, kw;           /* output channels, kernel */
    int sy, sx, dy, dx;      /* stride, dilation */
    int pt, pl;              /* top/left padding (bottom/right follow from oh/ow) */
    int oh, ow;              /* output size */
    int groups;
} mnnlite_conv_geom;

typedef struct {
    float s_in, s_out;       /* activation scales */
    int z_in, z_out;         /* zero points, in [-128, 127] */
    int lo, hi;              /* output clamp: lo = z_out when a ReLU is fused, else the tensor min */
    int offset;              /* 128 = MNN x86 float order, 0 = ARM (see mnnlite/ref/int8.py) */
} mnnlite_int8_quant;

/* Dense (and grouped / 1x1) convolution with the weights prepared once: packed for the GEMM path chosen
 * from isa (a MNNLITE_CPU_* mask), kernel sums, folded biases.  g gives o, c, kernel, stride, dilation,
 * padding and groups; each run passes the full geometry (n, h, w, oh, ow) of its input. */
typedef struct mnnlite_int8_conv_plan mnnlite_int8_conv_plan;
mnnlite_int8_conv_plan *mnnlite_int8_conv_plan_new(const int8_t *w, const float *alpha, const float *bias,
                                                   const mnnlite_conv_geom *g, const mnnlite_int8_quant *q,
                                                   int isa);
int mnnlite_int8_conv_plan_run(const mnnlite_int8_conv_plan *plan, const int8_t *x, const mnnlite_conv_geom *g,
                               int8_t *y, int nthreads);
void mnnlite_int8_conv_plan_free(mnnlite_int8_conv_plan *plan);
const char *mnnlite_int8_conv_plan_path(const mnnlite_int8_conv_plan *plan);

/* One-shot dense convolution: plan, run, free. */
int mnnlite_conv2d_int8(const int8_t *x, const int8_t *w, const float *alpha, const float *bias,
                        const mnnlite_conv_geom *g, const mnnlite_int8_quant *q, int8_t *y,
                        int isa, int nthreads);

/* Depthwise convolution: g->o == g->c == g->groups. */
int mnnlite_depthwise_int8(const int8_t *x, const int8_t *w, const float *alpha, const float *bias,
                           const mnnlite_conv_geom *g, const mnnlite_int8_quant *q, int8_t *y,
                           int isa, int nthreads);

/* Pooling over in-bounds windows (g->o, groups, dilation unused).  x86_max_bug = 1 reproduces MNN
 * 3.6.1 x86, which compares the uint8 (q + 128) bytes as signed int8. */
int mnnlite_maxpool_int8(const int8_t *x, const mnnlite_conv_geom *g, int8_t *y, int x86_max_bug);
int mnnlite_avgpool_int8(const int8_t *x, const mnnlite_conv_geom *g, int8_t *y, int offset);

/* Per-output-channel requantization of the dense kernel (exposed for tests):
 * bias_f[o] = (bias[o] - float(sum_k w[o,k]) * alpha[o] * float(z_in + offset) * s_in) / s_out + z_out. */
void mnnlite_int8_dense_bias(const int8_t *w, int o, int k, const float *alpha, const float *bias,
                             const mnnlite_int8_quant *q, float *bias_f);

/* Name of the dense GEMM path used for this isa mask ("vnni", "avx512", "avx2", "scalar"). */
const char *mnnlite_int8_path(int isa);

#endif
