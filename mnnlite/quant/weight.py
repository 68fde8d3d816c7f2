"""Per-channel weight quantization of the KL/ADMM path (quantization doc §6.2, §8) and of EMA (§9).

A "channel" is the o-th contiguous chunk of ``weight.size / outputCount`` values in storage order; every
function takes weights shaped ``[O, K]`` (reshape a conv weight to ``(outputCount, -1)``).  All arithmetic
is float32 in MNN's order of operations, so results match MNN to the last bit where MNN's own loops are
order-independent, and to float32 rounding where they are not (ADMM's sequential sums).

Deviation (doc §14.5): MNN's fake-quant step divides 0/0 on an all-zero channel and writes NaN weights
(then a NaN alpha); here such a channel stays zero and gets alpha 0.
"""
from __future__ import annotations

import numpy as np

from ..format.idst import ALPHA_EPS, roundf

ADMM_WEIGHT_ITERS = 1000          # quantizeWeight.cpp: maxIter
_EPS = np.float32(1e-9)           # quantizeWeight.cpp: eps added to alpha and to sum(q^2)
METHODS = ("MAX_ABS", "ADMM")


def bit_limit(bits: int) -> int:
    """Largest positive code of a ``bits``-wide symmetric range: 2^(bits-1) - 1."""
    if not 2 <= bits <= 8:
        raise ValueError(f"quant_bits must be 2..8, got {bits}")
    return (1 << (bits - 1)) - 1


def _as_channels(w) -> np.ndarray:
    w = np.asarray(w, np.float32)
    if w.ndim != 2 or w.size == 0:
        raise ValueError(f"weights must be a non-empty [outputCount, kernelSize] array, got shape {w.shape}")
    return w


def fake_quant_weights(w, clamp: int) -> np.ndarray:
    """§6.2: ``s = max|w|/clamp`` per channel (``s = max|w|`` when that is < 1e-6), ``w <- clamp(round(w/s))*s``.

    Runs before calibration on the convs that will be quantized; §8 then quantizes these weights.
    """
    w = _as_channels(w)
    m = np.abs(w).max(axis=1)
    s = np.where(m < np.float32(1e-6), m, m / np.float32(clamp))
    safe = np.where(s == 0, np.float32(1), s)[:, None]            # all-zero channel: keep zeros (§14.5)
    c = np.float32(clamp)
    out = np.clip(roundf(w / safe), -c, c) * safe
    return np.where(s[:, None] == 0, w, out).astype(np.float32)


def max_abs_alpha(w, clamp: int) -> np.ndarray:
    """MAX_ABS (``SymmetricQuantizeWeight``): ``alpha[o] = max|w[o]| / clamp``, 0 for an all-zero channel."""
    w = _as_channels(w)
    return (np.abs(w).max(axis=1) / np.float32(int(clamp))).astype(np.float32)


def _admm_step(w: np.ndarray, alpha: np.ndarray, clamp: np.float32) -> np.ndarray:
    """One ADMM update: codes for ``alpha``, then the least-squares alpha for those codes (float32 sums)."""
    q = np.clip(roundf(w / (alpha + _EPS)[:, None]), -clamp, clamp)
    # MNN sums sequentially in float32; cumsum reproduces that order exactly.
    sum1 = np.cumsum(w * q, axis=1, dtype=np.float32)[:, -1]
    sum2 = np.cumsum(q * q, axis=1, dtype=np.float32)[:, -1]
    return (sum1 / (sum2 + _EPS)).astype(np.float32)


def admm_alpha(w, clamp: int, iters: int = ADMM_WEIGHT_ITERS) -> np.ndarray:
    """ADMM (``QuantizeWeightADMM``): ``iters`` alternations of codes and least-squares alpha per channel.

    The update is a deterministic map alpha -> alpha, so once a channel's alpha repeats an earlier value
    the remaining iterations are a known cycle: we stop there and pick the value MNN reaches at ``iters``
    (identical result, usually after a handful of iterations instead of 1000).
    """
    w = _as_channels(w)
    absw = np.abs(w)
    if clamp > 1:   # init: max / (clamp * 1.25), computed in double as MNN does
        alpha = (absw.max(axis=1).astype(np.float64) / (float(clamp) * 1.25)).astype(np.float32)
    else:
        alpha = (np.cumsum(absw, axis=1, dtype=np.float32)[:, -1] / np.float32(w.shape[1])).astype(np.float32)
    return _run_iterations(lambda a: _admm_step(w, a, np.float32(clamp)), alpha, iters)


def _run_iterations(step, start: np.ndarray, iters: int) -> np.ndarray:
    """``step`` applied ``iters`` times element-wise, short-cut once every element has entered a cycle."""
    history = np.empty((iters + 1, start.size), np.float32)
    history[0] = start
    final = history[0].copy()
    todo = np.ones(start.size, bool)
    for k in range(1, iters + 1):
        history[k] = step(history[k - 1])
        cols = np.flatnonzero(todo)
        seen = history[:k, cols] == history[k, cols]               # alpha_k == alpha_j for some j < k
        for c in np.flatnonzero(seen.any(axis=0)):
            first = int(np.argmax(seen[:, c]))
            o = cols[c]
            final[o] = history[first + (iters - first) % (k - first), o]
            todo[o] = False
        if not todo.any():
            return final
    final[todo] = history[iters, todo]
    return final


def quantize_weights(w, method: str = "MAX_ABS", bits: int = 8, clamp: int | None = None):
    """``(codes int8 [O, K], alpha float32 [O])`` as MNN stores them (§8.2).

    ``w`` are the (fake-quantized) float weights; ``clamp`` defaults to the bits' limit.  The codes are the
    encoder's: ``clamp(roundf(w / alpha), -2^(b-1), 2^(b-1)-1)``, 0 where ``alpha <= 1e-6`` — so ADMM may
    produce -2^(b-1).
    """
    limit = bit_limit(bits)
    clamp = limit if clamp is None else int(clamp)
    if method == "MAX_ABS":
        alpha = max_abs_alpha(w, clamp)
    elif method == "ADMM":
        alpha = admm_alpha(w, clamp)
    else:
        raise ValueError(f"weight quantization method must be one of {', '.join(METHODS)}, got {method!r}")
    return encoder_codes(w, alpha, bits), alpha


def encoder_codes(w, alpha, bits: int) -> np.ndarray:
    """Codes ``IDSTEncoder`` derives from float weights and alpha (dense writer, LINEAR_WEIGHT_SET)."""
    w = _as_channels(w)
    alpha = np.asarray(alpha, np.float32)
    ok = alpha > np.float32(ALPHA_EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = roundf(w / np.where(ok, alpha, np.float32(1))[:, None])
    q = np.clip(q, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return np.where(ok[:, None], q, 0).astype(np.int8)


def ema_weight_quant(w, bits: int = 8):
    """EMA path (§9, NN.cpp): ``s = max(max|w[o]|, 1e-6) * (1/L)``, ``q = clamp(round(w * (1/s)), ±L)``.

    Returns ``(codes int8 [O, K], scale float32 [O])``; the fake-quantized weights are ``codes * scale``.
    MNN multiplies by reciprocals here (not divides), which we keep for bit-equality.
    """
    w = _as_channels(w)
    limit = np.float32(bit_limit(bits))
    s = np.maximum(np.abs(w).max(axis=1), np.float32(1e-6)) * (np.float32(1) / limit)
    q = np.clip(roundf(w * (np.float32(1) / s)[:, None]), -limit, limit)
    return q.astype(np.int8), s.astype(np.float32)
