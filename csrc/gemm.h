/* Packed single-precision GEMM: C[M,N] = act(bias[m] + A[M,K] * B[K,N]).
 *
 * BLIS-style: A is packed once into MR-row panels, B is packed per KC x NC block into NR-column panels
 * by a caller-supplied function (a plain matrix, or im2col straight from a conv input), and a register
 * micro-kernel computes one MR x NR tile of C per call.  Inputs are trusted: no checks here. */
#ifndef MNNLITE_GEMM_H
#define MNNLITE_GEMM_H
#include <stddef.h>

#include "parallel.h"

enum { MNNLITE_ACT_NONE = 0, MNNLITE_ACT_RELU = 1, MNNLITE_ACT_RELU6 = 2 };

/* K and N block sizes.  A KC x NC block of packed B (480 KiB) stays in L2 while the MR x KC panel of
 * A (8 KiB) stays in L1 and the micro-kernel streams B panels past it. */
enum { MNNLITE_KC = 256, MNNLITE_NC = 480, MNNLITE_MAX_MR = 8, MNNLITE_MAX_NR = 48 };

/* One MR x NR tile: c = (first ? bias[i] or 0 : c) + sum_k a[k][i] * b[k][j], then act.  Kernels
 * with partial_cols set write only columns j < cols (and skip work past them); others write all NR. */
typedef void (*mnnlite_micro_fn)(int kc, const float *a, const float *b, float *c, ptrdiff_t ldc,
                                 const float *bias, int first, int act, int cols);

typedef struct {
    int mr, nr, partial_cols;
    mnnlite_micro_fn micro;
    const char *name;
} mnnlite_gemm_kernel;

/* Fill dst with the packed kc x nc block of B at (k0, n0): NR-column panels, each kc x nr, zero-padded. */
typedef void (*mnnlite_pack_b_fn)(const void *ctx, int k0, int kc, int n0, int nc, int nr, float *dst);

typedef struct {
    const float *b;
    ptrdiff_t rs, cs;   /* element (k, n) is b[k * rs + n * cs] */
} mnnlite_matrix;

/* The fastest micro-kernel allowed by the MNNLITE_CPU_* mask isa. */
const mnnlite_gemm_kernel *mnnlite_gemm_select(int isa);

/* Packed A: for each K block, ceil(M/MR) panels of kc x MR. */
size_t mnnlite_packed_a_size(const mnnlite_gemm_kernel *kern, int M, int K);
void mnnlite_pack_a(const mnnlite_gemm_kernel *kern, int M, int K, const float *a, ptrdiff_t rs,
                    ptrdiff_t cs, float *dst);

/* The mnnlite_pack_b_fn for a strided matrix (ctx is a mnnlite_matrix). */
void mnnlite_pack_b_matrix(const void *ctx, int k0, int kc, int n0, int nc, int nr, float *dst);

/* Packed-B workspace one thread needs for mnnlite_gemm_packed, in floats. */
size_t mnnlite_gemm_work_size(const mnnlite_gemm_kernel *kern);

/* C[:, n_begin:n_end] for a packed A; work holds mnnlite_gemm_work_size floats (64-byte aligned).
 * accumulate adds to C instead of starting from bias. */
void mnnlite_gemm_packed(const mnnlite_gemm_kernel *kern, int M, int K, const float *ap,
                         mnnlite_pack_b_fn pack_b, const void *ctx, int n_begin, int n_end, float *c,
                         ptrdiff_t ldc, const float *bias, int act, int accumulate, float *work);

/* One K block of an already packed B (kc x nc, NR panels): the inner two loops of the GEMM. */
void mnnlite_gemm_block(const mnnlite_gemm_kernel *kern, int M, int nc, int kc, const float *ap_block,
                        const float *bp, float *c, ptrdiff_t ldc, const float *bias, int first, int act);

/* Packed-B buffers for up to nthreads threads, allocated once and reused by many GEMMs. */
typedef struct {
    int nthreads;
    float *buf[MNNLITE_MAX_THREADS];
} mnnlite_gemm_work;

/* Returns 0, or -1 when out of memory (then nothing is left to release). */
int mnnlite_gemm_work_init(mnnlite_gemm_work *work, const mnnlite_gemm_kernel *kern, int nthreads);
void mnnlite_gemm_work_release(mnnlite_gemm_work *work);

/* Whole GEMM, split along N over the workspace's threads. */
void mnnlite_gemm_threads(const mnnlite_gemm_kernel *kern, const mnnlite_gemm_work *work, int M, int N,
                          int K, const float *ap, mnnlite_pack_b_fn pack_b, const void *ctx, float *c,
                          ptrdiff_t ldc, const float *bias, int act, int accumulate);

/* Convenience: strided A and B, packs A itself (or, for up to 4 rows of C, multiplies row by row
 * without packing, single-threaded).  Returns 0, or -1 when out of memory. */
int mnnlite_sgemm(int isa, int nthreads, int M, int N, int K, const float *a, ptrdiff_t rsa,
                  ptrdiff_t csa, const float *b, ptrdiff_t rsb, ptrdiff_t csb, float *c, ptrdiff_t ldc,
                  const float *bias, int act, int accumulate);

/* 64-byte aligned scratch memory (free with mnnlite_free). */
float *mnnlite_alloc(size_t nfloats);
void mnnlite_free(float *p);

#endif
