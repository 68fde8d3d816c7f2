# distutils: sources = csrc/gemm.c csrc/parallel.c
"""Float32 matrix product (MatMul, BatchMatMul, InnerProduct, Gemm) on the packed GEMM of csrc/gemm.c.

Validates and raises ValueError; the C core trusts.  Reference: mnnlite.ref.matmul.matmul_ref.
"""
import math

import numpy as np

from mnnlite.kernels._select import isa_mask, num_threads
include "parallel_pool.pxi"

cdef extern from "gemm.h":
    int mnnlite_sgemm(int isa, int nthreads, int M, int N, int K, const float *a, Py_ssize_t rsa,
                      Py_ssize_t csa, const float *b, Py_ssize_t rsb, Py_ssize_t csb, float *c,
                      Py_ssize_t ldc, const float *bias, int act, int accumulate) nogil


def _check(name, a):
    if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
        found = type(a).__name__ if not isinstance(a, np.ndarray) else f"{a.dtype}, contiguous={a.flags.c_contiguous}"
        raise ValueError(f"{name}: expected a C-contiguous float32 array, got {found}")
    if a.ndim < 1:
        raise ValueError(f"{name}: expected at least 1 dimension, got a scalar")


def _batch_offsets(batch, shape, matrix_size):
    """Element offset of each broadcast batch entry's matrix, in C order of the output batch."""
    index = np.arange(math.prod(shape), dtype=np.int64)
    if shape != batch:  # broadcast (slow path: numpy works out which matrix each entry reuses)
        index = np.broadcast_to(index.reshape(shape), batch).reshape(-1)
    return index * matrix_size


def matmul(a, b, transpose_a=False, transpose_b=False, bias=None):
    """c = op(a) @ op(b) + bias, like np.matmul (1-D operands and broadcast batch axes included);
    op swaps the last two axes when transpose_* is set; bias is one value per output column."""
    _check("a", a)
    _check("b", b)
    # A 1-D operand becomes a 1-row (a) or 1-column (b) matrix, and that axis is dropped at the end.
    a_vector, b_vector = a.ndim == 1, b.ndim == 1
    if a_vector:
        a, transpose_a = a.reshape(1, -1), False
    if b_vector:
        b, transpose_b = b.reshape(-1, 1), False
    # Positive indices only: this module is compiled with wraparound off.
    batch_a, batch_b = a.shape[:a.ndim - 2], b.shape[:b.ndim - 2]
    m, k = a.shape[a.ndim - 2], a.shape[a.ndim - 1]
    kb, n = b.shape[b.ndim - 2], b.shape[b.ndim - 1]
    if transpose_a:
        m, k = k, m
    if transpose_b:
        kb, n = n, kb
    if k != kb:
        raise ValueError(f"matmul: inner dimensions differ: a gives {m}x{k}, b gives {kb}x{n} "
                         f"(transpose_a={transpose_a}, transpose_b={transpose_b})")
    try:
        batch = batch_a if batch_a == batch_b else np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise ValueError(f"matmul: batch shapes {batch_a} and {batch_b} do not broadcast") from None
    if bias is not None:
        _check("bias", bias)
        if bias.shape != (n,):
            raise ValueError(f"bias: expected shape ({n},) (one per output column), got {bias.shape}")
    c = np.empty(batch + (m, n), dtype=np.float32)
    if c.size:
        if bias is not None:
            c[...] = bias
        _run(a, b, c, m, n, k, transpose_a, transpose_b, bias is not None,
             _batch_offsets(batch, batch_a, m * k), _batch_offsets(batch, batch_b, k * n))
    return c.reshape(batch + (() if a_vector else (m,)) + (() if b_vector else (n,)))


cdef _run(a, b, c, int m, int n, int k, bint ta, bint tb, bint accumulate, off_a, off_b):
    cdef const float[::1] av = a.reshape(-1), bv = b.reshape(-1)
    cdef float[::1] cv = c.reshape(-1)
    cdef const long long[::1] oa = off_a, ob = off_b
    # Element (row, col) of op(a) is a[row * rsa + col * csa]; likewise for b.
    cdef Py_ssize_t rsa = 1 if ta else k, csa = m if ta else 1
    cdef Py_ssize_t rsb = 1 if tb else n, csb = k if tb else 1
    cdef int isa = isa_mask(), nthreads = num_threads(), rc = 0
    cdef Py_ssize_t i
    cdef const float *ap = &av[0] if av.shape[0] else NULL
    cdef const float *bp = &bv[0] if bv.shape[0] else NULL
    with nogil:
        for i in range(oa.shape[0]):
            rc |= mnnlite_sgemm(isa, nthreads, m, n, k, ap + oa[i], rsa, csa, bp + ob[i], rsb, csb,
                                &cv[0] + i * m * n, n, NULL, 0, accumulate)
    if rc != 0:
        raise MemoryError("matmul kernel: out of memory for its workspace")
