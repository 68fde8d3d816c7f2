"""numpy emulation of MNN 3.6.1's ``_AVX_MNNSoftmax`` (backend/cpu/x86_x64/avx/MathFunctions.cpp) with every
float32 operation rounded on its own (no FMA), as MNN's int8 code is built (``mnnlite.ref.int8``).

The int8 Softmax runs it (``mnnlite.int8.ops.softmax``).  Its twin ``mnnlite.kernels.mnn_exact.softmax_rows``
(C, csrc/mnn_exact.c) emulates the same function as MNN's avxfma build compiles it -- ``x - n*ln2`` contracted
into one FMA -- and is what the float runtime runs with ``impl="mnn"``.  The kernel table pairs them
(``mnnlite.kernels.table``, entry "softmax_rows") and tests/kernels/test_table.py bounds their distance.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32

_LN2 = F32(np.log(np.float32(2.0)))            # (float)logf(2.0f)
_EXP_P = (_LN2, F32(1) / _LN2, None, None, F32(0.5), F32(1.0 / 6.0), F32(1.0 / 24.0), F32(1.0 / 120.0))


def _avx_exp(x: np.ndarray) -> np.ndarray:
    """_AVX_MNNExpC8 with offset {1, 0, -max}: range reduction by ln2 (cvtps_epi32 rounds to even),
    degree-5 polynomial of (x - n ln2) / 4, raised to the 4th power, times 2^n; float32, no FMA."""
    x = np.clip(x, F32(-87), F32(87)).astype(F32)
    n = np.rint((x * _EXP_P[1]).astype(F32)).astype(np.int32)
    basic = ((n + 127) << 23).view(F32)
    t = ((x - (n.astype(F32) * _EXP_P[0]).astype(F32)) * F32(0.25)).astype(F32)
    c = (_EXP_P[7] * t).astype(F32)
    for coef in (_EXP_P[6], _EXP_P[5], _EXP_P[4], F32(1)):
        c = ((c + coef).astype(F32) * t).astype(F32)
    c = (c + F32(1)).astype(F32)
    c = (c * c).astype(F32)
    c = (c * c).astype(F32)
    return ((basic * c).astype(F32) + F32(0)).astype(F32)


def _expf(x: np.ndarray) -> np.ndarray:
    """The C library's expf, element by element (MNN's scalar tail calls it)."""
    import ctypes
    import ctypes.util

    global _LIBM_EXPF
    if _LIBM_EXPF is None:
        try:
            libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
            _LIBM_EXPF = libm.expf
            _LIBM_EXPF.restype, _LIBM_EXPF.argtypes = ctypes.c_float, [ctypes.c_float]
        except (OSError, AttributeError):         # no C library to call: numpy's exp (ulps apart)
            _LIBM_EXPF = False
    if _LIBM_EXPF is False:
        return np.exp(x).astype(F32)
    return np.array([_LIBM_EXPF(float(v)) for v in x.reshape(-1)], F32).reshape(x.shape)


_LIBM_EXPF = None


def softmax_rows(x: np.ndarray) -> np.ndarray:
    """_AVX_MNNSoftmax on every row of x [rows, n] (float32): max, blocks of 8 through the AVX exp,
    the n % 8 tail through expf, one sequential float32 sum, then ``* (1 / (sum + 1e-20))``."""
    x = np.asarray(x, F32)
    n = x.shape[1]
    body = n - n % 8
    neg_max = (-x.max(axis=1, keepdims=True)).astype(F32)
    e = np.empty_like(x)
    e[:, :body] = _avx_exp((x[:, :body] + neg_max).astype(F32))
    if body < n:
        e[:, body:] = _expf((x[:, body:] - (-neg_max)).astype(F32))
    total = np.cumsum(e, axis=1, dtype=F32)[:, -1:]
    scale = (F32(1) / (total + F32(1e-20)).astype(F32)).astype(F32)
    return (e * scale).astype(F32)
