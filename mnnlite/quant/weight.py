"""Per-channel weight quantization of the KL/ADMM path (docs/mnn-quantization.md §6.2, §8) and of EMA (§9).

A "channel" is the o-th contiguous chunk of ``weight.size / outputCount`` values in storage order; every
function takes weights shaped ``[O, K]`` (reshape a conv weight to ``(outputCount, -1)``).  All arithmetic
is float32 in MNN's order of operations, so results match MNN to the last bit where MNN's own loops are
order-independent, and to float32 rounding where they are not (ADMM's sequential sums).

Deviation (docs/mnn-quantization.md §14.5): MNN's fake-quant step divides 0/0 on an all-zero channel and writes NaN weights
(then a NaN alpha); here such a channel stays zero and gets alpha 0.
"""
from __future__ import annotations

import numpy as np

from ..format.idst import ALPHA_EPS, roundf

ADMM_WEIGHT_ITERS = 1000          # quantizeWeight.cpp: maxIter
_EPS = np.float32(1e-9)           # quantizeWeight.cpp: eps added to alpha and to sum(q^2)
METHODS = ("MAX_ABS", "ADMM")
RANGE_METHODS = ("max_abs", "mse")  # mnnlite's "weight_range_method" (config.py)
# MSE range search: clipping ratios of max|w| tried per channel, a coarse grid then a fine one around
# the coarse winner.  0.2 is far below any optimum we saw on real weights (heavy-tailed 3x3 channels
# settle around 0.5-0.8); 1.0 (no clipping) is always a candidate, so MSE never loses to MAX_ABS.
MSE_COARSE = np.round(np.arange(0.20, 1.0001, 0.025), 4)
MSE_FINE_STEP = 0.0025


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


def _channel_errors(w: np.ndarray, alpha: np.ndarray, clamp: int) -> np.ndarray:
    """Per channel: sum of squared errors of ``clamp(round(w/alpha), ±clamp) * alpha`` against ``w``.

    Only ranks candidate ranges, so it rounds half to even (``np.rint``, ~20x faster than the encoder's
    ``roundf``; they differ on exact ties only)."""
    a = np.asarray(alpha, np.float32)
    ok = a > 0
    safe = np.where(ok, a, np.float32(1))[:, None]
    q = np.rint(w / safe)
    np.clip(q, -clamp, clamp, out=q)
    q *= safe
    q[~ok] = 0
    q -= w
    return np.einsum("ij,ij->i", q, q, dtype=np.float64)


def mse_alpha(w, clamp: int, start=None) -> np.ndarray:
    """Per channel, the alpha with the smallest squared weight error among ``start`` (default MAX_ABS)
    and ``ratio * max|w| / clamp`` for a grid of clipping ratios (coarse, then fine around the winner).

    A channel keeps ``start`` unless a clipped range is strictly better, so the result is ``start``
    wherever clipping does not help (a channel without outliers), and the file then stays as it was.
    """
    w = _as_channels(w)
    clamp = int(clamp)
    top = np.abs(w).max(axis=1).astype(np.float64) / clamp
    best = max_abs_alpha(w, clamp) if start is None else np.asarray(start, np.float32).copy()
    best_err = _channel_errors(w, best, clamp)
    ratios = np.zeros(w.shape[0])

    def consider(r: np.ndarray) -> None:
        nonlocal best, best_err
        alpha = (top * r).astype(np.float32)
        err = _channel_errors(w, alpha, clamp)
        better = err < best_err
        best = np.where(better, alpha, best).astype(np.float32)
        best_err = np.where(better, err, best_err)
        ratios[better] = r[better]

    for r in MSE_COARSE:
        consider(np.full(w.shape[0], r))
    centre = np.where(ratios > 0, ratios, 1.0)
    for k in range(-9, 10):
        if k:
            consider(np.clip(centre + k * MSE_FINE_STEP, 0.05, 1.0))
    return best


def weight_alpha(w, method: str = "MAX_ABS", clamp: int = 127, range_method: str = "max_abs") -> np.ndarray:
    """Per-channel alpha: the weight method's (MAX_ABS / ADMM), refined by ``range_method`` ("mse":
    the MSE-optimal clipping where it beats the method's own range)."""
    if method not in _ALPHA:
        raise ValueError(f"weight quantization method must be one of {', '.join(METHODS)}, got {method!r}")
    if range_method not in RANGE_METHODS:
        raise ValueError(f"weight_range_method must be one of {', '.join(RANGE_METHODS)}, got {range_method!r}")
    alpha = _ALPHA[method](w, clamp)
    return mse_alpha(w, clamp, alpha) if range_method == "mse" else alpha


def symmetric_codes(w, alpha, bits: int, clamp: int) -> np.ndarray:
    """``clamp(roundf(w / alpha), ±clamp)``, 0 only where alpha is 0.

    Unlike the encoder (``encoder_codes``), a channel with a tiny but positive alpha keeps its codes:
    the int8 conv scales by alpha whatever its size, and zeroing channels with alpha <= 1e-6 (weights
    below ~1.3e-4 after batch-norm folding, e.g. PP-OCRv4 det's head conv2d_497) wipes them out.  A
    clipped range must not produce -2^(b-1) either.
    """
    w = _as_channels(w)
    a = np.asarray(alpha, np.float32)
    ok = a > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = roundf(w / np.where(ok, a, np.float32(1))[:, None])
    q = np.clip(q, -int(clamp), int(clamp))
    return np.where(ok[:, None], q, 0).astype(np.int8)


def quantize_weights(w, method: str = "MAX_ABS", bits: int = 8, clamp: int | None = None,
                     range_method: str = "max_abs"):
    """``(codes int8 [O, K], alpha float32 [O])`` as MNN stores them (§8.2).

    ``w`` are the (fake-quantized) float weights; ``clamp`` defaults to the bits' limit.  The codes are the
    encoder's: ``clamp(roundf(w / alpha), -2^(b-1), 2^(b-1)-1)``, 0 where ``alpha <= 1e-6`` — so ADMM may
    produce -2^(b-1).  ``range_method="mse"`` (mnnlite's): clipped ranges, codes limited to ±clamp.
    """
    limit = bit_limit(bits)
    clamp = limit if clamp is None else int(clamp)
    alpha = weight_alpha(w, method, clamp, range_method)
    codes = encoder_codes(w, alpha, bits) if range_method == "max_abs" else symmetric_codes(w, alpha, bits, clamp)
    return codes, alpha


# the weight methods' alpha, by config name (weight_quantize_method); "mse" refines any of them
_ALPHA = {"MAX_ABS": max_abs_alpha, "ADMM": admm_alpha}


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
