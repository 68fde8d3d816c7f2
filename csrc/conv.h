/* Float32 NCHW convolution, depthwise convolution and transposed convolution on the packed GEMM.
 * Inputs are trusted (the Cython wrapper validates shapes); each entry point returns 0, or -1 when
 * out of memory. */
#ifndef MNNLITE_CONV_H
#define MNNLITE_CONV_H

typedef struct {
    int n, c, h, w;            /* input */
    int o, kh, kw;             /* output channels, kernel size */
    int sy, sx, dy, dx;        /* stride, dilation */
    int pt, pl, pb, pr;        /* padding: top, left, bottom, right */
    int groups, act;           /* act: MNNLITE_ACT_* */
    int oh, ow;                /* output size (the caller computes it) */
} mnnlite_conv_params;

/* Algorithms: AUTO picks depthwise (groups == c == o > 1), Winograd F(4x4, 3x3) (3x3, stride 1,
 * dilation 1, groups 1, enough channels and pixels) or im2col + packed GEMM (anything).
 * WINOGRAD_MNN (3x3, stride 1, dilation 1, groups 1) computes what MNN 3.6.1's x86 CPU backend
 * computes, rounding included: its Winograd unit for the output size, or the GEMM where MNN runs
 * no Winograd (see winograd.h). */
enum { MNNLITE_CONV_AUTO = 0, MNNLITE_CONV_GEMM = 1, MNNLITE_CONV_WINOGRAD = 2, MNNLITE_CONV_DEPTHWISE = 3,
       MNNLITE_CONV_WINOGRAD_MNN = 4 };

/* Whether algo can run p at all (AUTO and GEMM always can). */
int mnnlite_conv_algo_supported(const mnnlite_conv_params *p, int algo);

/* Weights prepared once for many calls: packed GEMM panels and, where it applies, the Winograd
 * transform.  Only p's weight-side fields (c, o, kh, kw, strides, dilations, groups) matter. */
typedef struct mnnlite_conv_plan mnnlite_conv_plan;

/* algo AUTO prepares every supported algorithm; NULL when out of memory. */
mnnlite_conv_plan *mnnlite_conv_plan_new(int isa, const mnnlite_conv_params *p, const float *w, int algo);
void mnnlite_conv_plan_free(mnnlite_conv_plan *plan);

/* Makes ready what a run of algo on p's sizes needs beyond what plan_new prepared: WINOGRAD_MNN
 * transforms the weights for the unit of p's output size on first use.  Not thread-safe: call it
 * before runs that may overlap.  Returns 0, or -1 when out of memory. */
int mnnlite_conv_plan_prepare(mnnlite_conv_plan *plan, int algo, const mnnlite_conv_params *p);

/* y[n,o] = act(bias[o] + sum_{c in group, kh, kw} w[o,c,kh,kw] * x[n,c,oh*sy-pt+kh*dy, ow*sx-pl+kw*dx]);
 * algo must have been prepared (or AUTO); returns -2 when it was not (or, for WINOGRAD_MNN, when
 * mnnlite_conv_plan_prepare was not called for this output size). */
int mnnlite_conv_plan_run(const mnnlite_conv_plan *plan, int nthreads, int algo, const mnnlite_conv_params *p,
                          const float *x, const float *bias, float *y);

/* One call: plan, run, free.  w is [o][c/groups][kh][kw]. */
int mnnlite_conv2d(int isa, int nthreads, int algo, const mnnlite_conv_params *p, const float *x,
                   const float *w, const float *bias, float *y);

/* Transposed conv (ONNX ConvTranspose): y[n,o,ih*sy-pt+kh*dy, iw*sx-pl+kw*dx] += x[n,c,ih,iw] *
 * w[c,o',kh,kw], w is [c][o/groups][kh][kw]; then bias and act.  oh, ow are given. */
int mnnlite_deconv2d(int isa, int nthreads, const mnnlite_conv_params *p, const float *x,
                     const float *w, const float *bias, float *y);

#endif
