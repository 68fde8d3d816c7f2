"""numpy reference of MNN's int8 CPU kernels: the definition the C kernels in mnnlite.kernels.int8 match.

int8 = the float math on int32 data, plus one requantization rule per kernel.  Every rule below is the
float32 arithmetic of MNN 3.6.1's CPU backend, in MNN's order, so the rounding is the same bit for bit
(no FMA anywhere: MNN builds its x86 int8 code without -mfma).

The ``offset`` argument: MNN's x86 build (``MNN_USE_SSE``) stores every int8 tensor as uint8 = q + 128
and folds the 128 into the accumulators and biases; ARM builds use q itself.  The integer sums are the
same, but the float rounding of the dense requantization is not (about one output in 10^6 differs by
one code) and the average pool's fixed-point division is not (a few % of outputs), so
``offset=X86_OFFSET`` reproduces the x86 runtime and ``offset=ARM_OFFSET`` the signed formulas of the
docs/mnn-quantization.md §13.2-13.4 (rounding stays MNN's x86 rule).  The x86 max pool compares the stored
bytes as signed: ``maxpool_int8_ref(..., x86_max_bug=True)``.  Everything here is checked against the
x86 wheel in tests/int8/test_vs_mnn.py.

Conventions: activations are NCHW int8 codes, weights ``[O, C/groups, KH, KW]`` int8 codes,
``pad = (top, left, bottom, right)``, ``stride``/``dilation`` an int or ``(y, x)``.
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
X86_OFFSET = 128   # MNN_USE_SSE: tensors hold uint8 = q + 128
ARM_OFFSET = 0
INT_MIN = np.int64(-2 ** 31)

__all__ = [
    "X86_OFFSET", "ARM_OFFSET", "mnn_round", "clamp", "quantize", "dequantize", "conv2d_int32",
    "dense_requant_params", "conv2d_int8_ref", "depthwise_requant_params", "depthwise_int8_ref",
    "maxpool_int8_ref", "avgpool_int8_ref", "unary_table_ref", "requantize", "float_op_int8_ref",
    "binary_int8_ref", "scale_int8_ref",
]


# ------------------------------------------------------------------------------------------ rounding

def mnn_round(x) -> np.ndarray:
    """float32 -> int64: trunc(x + (x < 0 ? -0.5 : 0.5)) in float32, as MNN's x86 kernels round.

    Half away from zero like roundf, except x = ±0.49999997 (0.5 - 2^-25), where the float32 sum is
    1 - 2^-25 rounded to 1.0: MNN gives ±1, roundf ±0 (``POSTTREAT`` in avx/GemmInt8.cpp).
    Values outside the int32 range (and NaN) give INT_MIN, as ``cvttps2dq`` does.
    """
    x = np.asarray(x, F32)
    half = np.where(x < 0, F32(-0.5), F32(0.5))
    t = np.trunc(x + half)
    ok = np.abs(t) < F32(2.0 ** 31)   # False for NaN
    return np.where(ok, np.where(ok, t, 0).astype(np.int64), INT_MIN)


def clamp(x, lo, hi) -> np.ndarray:
    """min then max with x86 ``minps``/``maxps`` semantics (a NaN ends up as ``hi``)."""
    x = np.asarray(x, F32)
    x = np.where(x < F32(hi), x, F32(hi))
    return np.where(x > F32(lo), x, F32(lo)).astype(F32)


# ------------------------------------------------------------------------------------------ casts

def quantize(x, scale, zero=0, qmin=-128, qmax=127) -> np.ndarray:
    """float -> int8 cast (docs/mnn-quantization.md §13.1): reciprocal first, ``x * (1/s) + z``, clamp, round half away.

    MNN: CPUCast (scale 0 -> reciprocal 0), _AVX_MNNFloat2Int8 (clamp in float, then round).
    """
    inv = F32(0.0) if F32(scale) == 0 else F32(1.0) / F32(scale)
    f = np.asarray(x, F32) * inv
    f = (f + F32(zero)).astype(F32)
    return mnn_round(clamp(f, qmin, qmax)).astype(np.int8)


def dequantize(q, scale, zero=0) -> np.ndarray:
    """int8 -> float cast: ``(q - z) * s`` (exact integer difference, one float32 product)."""
    diff = np.asarray(q, np.int32).astype(F32) - F32(zero)
    return (diff * F32(scale)).astype(F32)


# ------------------------------------------------------------------------------------------ int conv

def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, k: int, stride: int, pad0: int, pad1: int, dilation: int) -> int:
    return (size + pad0 + pad1 - dilation * (k - 1) - 1) // stride + 1


def conv2d_int32(x, w, stride=1, pad=(0, 0, 0, 0), dilation=1, groups=1, pad_value=0) -> np.ndarray:
    """acc[n,o,i,j] = sum_{c,kh,kw} w[o,c,kh,kw] * xpad[n, g*C/G + c, i*sy + kh*dy, j*sx + kw*dx] (int64).

    The float convolution on integer data; padding positions hold ``pad_value``.
    """
    (sy, sx), (dy, dx), (pt, pl, pb, pr) = _pair(stride), _pair(dilation), pad
    o, cg, kh, kw = w.shape
    x = np.asarray(x, np.int64)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    oh = conv_output_size(x.shape[2], kh, sy, pt, pb, dy)
    ow = conv_output_size(x.shape[3], kw, sx, pl, pr, dx)
    og = o // groups
    acc = np.zeros((x.shape[0], o, oh, ow), np.int64)
    w = np.asarray(w, np.int64)
    for g in range(groups):
        xg, wg = xp[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xg[:, :, i * dy:i * dy + sy * (oh - 1) + 1:sy, j * dx:j * dx + sx * (ow - 1) + 1:sx]
                acc[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, wg[:, :, i, j])
    return acc


# ------------------------------------------------------------------------------------------ dense conv

def dense_requant_params(wq, alpha, bias, s_in, z_in, s_out, z_out, offset=X86_OFFSET):
    """(alpha, scale_x, bias_f) of the dense requantization, float32, computed as MNN does.

    ``_AVX_MNNSumWeightInt8`` + ``_computeReorderQuantInfo``: kernel sum ``ks = float(sum q_w) * alpha``;
    ``MutableResourceInt8::updateInputOutputScale``:
    ``bias_f = (bias - ks * float(z_in + offset) * s_in) / s_out + z_out``;
    ``DenseConvInt8TiledExecutor::onExecute``: ``scale_x = s_in / s_out``.
    """
    wsum = np.asarray(wq, np.int64).reshape(len(wq), -1).sum(1)
    alpha = np.asarray(alpha, F32)
    ks = wsum.astype(F32) * alpha
    t = ks * F32(z_in + offset)
    t = t * F32(s_in)
    bias_f = (np.asarray(bias, F32) - t) / F32(s_out)
    bias_f = (bias_f + F32(z_out)).astype(F32)
    return alpha, F32(F32(s_in) / F32(s_out)), bias_f


def requant_dense(acc, alpha, scale_x, bias_f, lo, hi) -> np.ndarray:
    """q = round(clamp(float(acc) * alpha * scale_x + bias_f, lo, hi)); acc already holds the offset.

    Order of ``_AVX_MNNGemmInt8AddBiasScale_16x4_Unit`` (and the generic C one): multiply by the weight
    scale, then by s_in/s_out, then add the bias, clamp in float, round (POSTTREAT).
    """
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    f = acc.astype(F32) * alpha.reshape(shape)
    f = f * scale_x
    f = f + bias_f.reshape(shape)
    return mnn_round(clamp(f, lo, hi)).astype(np.int8)


def conv2d_int8_ref(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127,
                    stride=1, pad=(0, 0, 0, 0), dilation=1, groups=1, relu=False,
                    offset=X86_OFFSET) -> np.ndarray:
    """Dense int8 convolution (docs/mnn-quantization.md §13.2, with MNN's x86 ``+offset`` float order).

    acc = sum (q_x + offset) * q_w with padding = z_in (int); y = acc * alpha[o] * (s_in/s_out) +
    bias_f[o]; lo = z_out if relu else out_min (relu6 too: its upper bound is not applied in int8).
    """
    acc = conv2d_int32(np.asarray(xq, np.int64) + offset, wq, stride, pad, dilation, groups, z_in + offset)
    alpha_, scale_x, bias_f = dense_requant_params(wq, alpha, bias, s_in, z_in, s_out, z_out, offset)
    lo = z_out if relu else out_min
    return requant_dense(acc, alpha_, scale_x, bias_f, lo, out_max)


class Conv2dInt8Ref:
    """``conv2d_int8_ref`` with the layer's arguments bound: the reference form of
    ``mnnlite.kernels.int8.Conv2dInt8`` (same arguments, ``__call__(xq)``)."""

    def __init__(self, wq, alpha, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127, stride=1,
                 pad=(0, 0, 0, 0), dilation=1, groups=1, relu=False, offset=X86_OFFSET):
        self.args = (wq, alpha, bias, s_in, z_in, s_out, z_out, out_min, out_max, stride, pad, dilation, groups,
                     relu, offset)

    def __call__(self, xq):
        return conv2d_int8_ref(xq, *self.args)


# ------------------------------------------------------------------------------------------ depthwise

def depthwise_requant_params(wq, alpha, bias, s_in, z_in, s_out, z_out, offset=X86_OFFSET):
    """(sc, B) of the depthwise requantization: float32 scale and int32 bias (docs/mnn-quantization.md §13.3).

    ``MutableResourceInt8::updateInputOutputScale`` (the mOriginScale branch): ws = alpha, or 1e-6 when
    |alpha| < 1e-6; sc = ws * (s_in / s_out);
    B = int(int(bias / (s_in * ws)) - ksum * float(z_in + offset) + int(z_out / sc)), evaluated in float32
    because ksum * (z_in + 128.f) is float; every int() truncates toward zero.
    """
    wsum = np.asarray(wq, np.int64).reshape(len(wq), -1).sum(1)
    ws = np.asarray(alpha, F32)
    ws = np.where(np.abs(ws) < F32(1e-6), F32(1e-6), ws).astype(F32)
    sc = (ws * (F32(s_in) / F32(s_out))).astype(F32)
    t1 = _trunc_i32(np.asarray(bias, F32) / (F32(s_in) * ws))
    t3 = _trunc_i32(F32(z_out) / sc)
    b = t1.astype(F32) - (wsum.astype(F32) * F32(z_in + offset))
    b = (b + t3.astype(F32)).astype(F32)
    return sc, _trunc_i32(b)


def _trunc_i32(x) -> np.ndarray:
    """C ``static_cast<int32_t>(float)`` on x86: truncation, INT_MIN when out of range or NaN."""
    x = np.asarray(x, F32)
    ok = np.abs(x) < F32(2.0 ** 31)
    return np.where(ok, np.trunc(np.where(ok, x, 0)), INT_MIN).astype(np.int64)


def requant_depthwise(acc, sc, b, lo, hi) -> np.ndarray:
    """q = clamp(round(float(acc + B) * sc), lo, hi): round first, then clamp as integers.

    ``_AVX_MNNLineDepthWiseInt8AddBiasScaleUnit``: int32 add, one float product, POSTTREAT rounding,
    int16 saturation (an out-of-range float became INT_MIN there, so it ends at ``lo``), then the clamp.
    """
    shape = (1, -1) + (1,) * (acc.ndim - 2)
    s = (acc + b.reshape(shape)).astype(np.int64)
    s = ((s + 2 ** 31) % 2 ** 32 - 2 ** 31)              # int32 wrap-around of the sum
    r = mnn_round(s.astype(F32) * sc.reshape(shape))
    return np.clip(r, lo, hi).astype(np.int8)


def depthwise_int8_ref(xq, wq, alpha, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127,
                       stride=1, pad=(0, 0, 0, 0), dilation=1, relu=False, offset=X86_OFFSET) -> np.ndarray:
    """Depthwise int8 convolution (ConvolutionDepthwise, one filter ``wq[c, 0]`` per channel)."""
    c = wq.shape[0]
    acc = conv2d_int32(np.asarray(xq, np.int64) + offset, wq, stride, pad, dilation, c, z_in + offset)
    sc, b = depthwise_requant_params(wq, alpha, bias, s_in, z_in, s_out, z_out, offset)
    lo = z_out if relu else out_min
    return requant_depthwise(acc, sc, b, lo, out_max)


# ------------------------------------------------------------------------------------------ pooling

def _windows(size: int, out: int, k: int, stride: int, pad0: int):
    """Per output index: (start, count) of the in-bounds window (CPUPoolInt8: clamped to the input)."""
    k = min(k, size)                    # CPUPoolInt8::onResize: kernel = min(kernel, input)
    starts = np.arange(out) * stride - pad0
    lo = np.maximum(starts, 0)
    hi = np.minimum(starts + k, size)
    return lo, hi - lo


def _pool_reduce(xq, kernel, stride, pad, reduce):
    (kh, kw), (sy, sx), (pt, pl, pb, pr) = _pair(kernel), _pair(stride), pad
    n, c, h, w = xq.shape
    oh = conv_output_size(h, kh, sy, pt, pb, 1)
    ow = conv_output_size(w, kw, sx, pl, pr, 1)
    ys, ny = _windows(h, oh, kh, sy, pt)
    xs, nx = _windows(w, ow, kw, sx, pl)
    out = np.zeros((n, c, oh, ow), np.int64)
    for i in range(oh):
        for j in range(ow):
            win = xq[:, :, ys[i]:ys[i] + ny[i], xs[j]:xs[j] + nx[j]].astype(np.int64)
            out[:, :, i, j] = reduce(win.reshape(n, c, -1), int(ny[i] * nx[j]))
    return out


def maxpool_int8_ref(xq, kernel, stride=1, pad=(0, 0, 0, 0), x86_max_bug=False) -> np.ndarray:
    """Max of the codes over the in-bounds window (MNNMaxPoolInt8; padding never wins).

    ``x86_max_bug``: MNN 3.6.1's x86 ``MNNMaxPoolInt8_`` takes the signed max of the stored uint8 bytes
    q + 128, i.e. the max of q ^ 0x80 as int8: in a window mixing negative and non-negative codes the
    largest negative code wins (windows of one sign, e.g. after a ReLU, are right).  Observed on the wheel.
    """
    flip = 0x80 if x86_max_bug else 0
    key = (np.asarray(xq, np.int8).view(np.uint8) ^ flip).view(np.int8)
    best = _pool_reduce(key, kernel, stride, pad, lambda v, n: v.max(-1)).astype(np.int8)
    return (best.view(np.uint8) ^ flip).view(np.int8)


def avgpool_int8_ref(xq, kernel, stride=1, pad=(0, 0, 0, 0), offset=X86_OFFSET) -> np.ndarray:
    """``((sum (q + offset)) * floor(2^24 / n)) >> 24 - offset``, n = in-bounds window size.

    CPUPoolInt8 ``poolingAvgNC16HW16Int8``; x86 runs ``MNNAvgPoolUint8`` on the uint8 (q + 128) data,
    so it can differ by one code from the signed ARM formula (offset 0: an arithmetic shift = floor).
    """
    def avg(v, n):
        factor = (1 << 24) // max(n, 1)
        return ((v + offset).sum(-1) * factor >> 24) - offset
    return _pool_reduce(xq, kernel, stride, pad, avg).astype(np.int8)


# ------------------------------------------------------------------------------------------ other ops

def unary_table_ref(q, table) -> np.ndarray:
    """``table[q + 127]`` (CPUUnary with tableInt8).  MNN reads table[-1] for q = -128 (out of bounds);
    here that code maps to table[0]."""
    table = np.asarray(table, np.int8)
    return table[np.clip(np.asarray(q, np.int64) + 127, 0, 254)]


class UnaryTableRef:
    """``unary_table_ref`` with the table bound: the reference form of ``mnnlite.int8.fastq.UnaryTable``."""

    def __init__(self, table):
        self.table = np.asarray(table).astype(np.int8)

    def __call__(self, q) -> np.ndarray:
        return unary_table_ref(q, self.table)


class CodeFunction2:
    """An int8 binary function of two code arrays, evaluated as it is: the reference form of
    ``mnnlite.int8.fastq.BinaryTable`` (which tabulates it once and gathers)."""

    def __init__(self, fn, arithmetic=None):
        self.fn = fn           # ``arithmetic``: the fast form's shortcut, not needed here

    def __call__(self, qa, qb) -> np.ndarray:
        return self.fn(qa, qb)


def requantize(y, scale, zero=0, qmin=-128, qmax=127) -> np.ndarray:
    """float -> codes the way CPUBinaryInt8 does: ``roundf(y * (1/s)) + z``, then clamp as integers.

    (The zero point is added after rounding, unlike the cast in ``quantize``: the two differ at ties.)
    """
    inv = F32(0.0) if F32(scale) == 0 else F32(1.0) / F32(scale)
    v = (np.asarray(y, F32) * inv).astype(F32)
    r = _roundf(v) + int(zero)
    return np.clip(r, qmin, qmax).astype(np.int8)


def float_op_int8_ref(fn, inputs, in_params, out_param):
    """Dequantize every input with its (scale, zero), run ``fn`` in float32, requantize with
    ``out_param = (scale, zero, qmin, qmax)``.

    Exact for MNN's int8 BinaryOp (MNNBinary*Int8, float ``fn``).  PReLU (MNNReluWithSlopeChannelInt8)
    adds the zero point before rounding (use ``quantize`` there), Scale is fixed point
    (``scale_int8_ref``); Interp/Softmax/LayerNorm follow the same dequantize-compute-requantize shape.
    """
    floats = [dequantize(q, s, z) for q, (s, z) in zip(inputs, in_params)]
    return requantize(np.asarray(fn(*floats), F32), *out_param)


def binary_int8_ref(fn, qa, qb, a_param, b_param, out_param, relu=False) -> np.ndarray:
    """MNN's int8 BinaryOp: ``float_op_int8_ref`` with (scale, zero) per input and
    ``out_param = (scale, zero, qmin, qmax)``.

    A fused ReLU (BinaryOp.activationType 1) clamps the output *codes* at 0, not at the zero point:
    CPUBinaryInt8::onResize sets the lower bound to 0 when the output type is float, which int8 tensors
    still report.  Same as ReLU for zero point 0 (KL models); observed on the wheel with z != 0.
    """
    s, z, qmin, qmax = out_param
    return float_op_int8_ref(fn, [qa, qb], [a_param, b_param], (s, z, 0 if relu else qmin, qmax))


def scale_int8_ref(xq, scale, bias, s_in, z_in, s_out, z_out, out_min=-128, out_max=127) -> np.ndarray:
    """Int8 Scale op: fixed point with 15 fractional bits, not float (CPUScaleInt8 + MNNScaleAndAddBiasInt8).

    a[c] = int(roundf(scale[c] * s_in * (1/s_out) * 2^15)), b[c] = int(roundf(bias[c] * (1/s_out) * 2^15));
    v = (q - z_in) * a + b;  q_out = (v ± 2^14) / 2^15 (C division, toward zero) + z_out, clamped.
    """
    inv = F32(0.0) if F32(s_out) == 0 else F32(1.0) / F32(s_out)
    a = np.asarray(scale, F32) * F32(s_in) * inv * F32(1 << 15)
    b = np.asarray(bias, F32) * inv * F32(1 << 15)
    a, b = _roundf(a), _roundf(b)
    shape = (1, -1) + (1,) * (np.ndim(xq) - 2)
    v = (np.asarray(xq, np.int64) - z_in) * a.reshape(shape) + b.reshape(shape)
    r = np.where(v < 0, -((-v + (1 << 14)) >> 15), (v + (1 << 14)) >> 15) + z_out
    return np.clip(r, out_min, out_max).astype(np.int8)


def _roundf(x) -> np.ndarray:
    """C ``roundf`` (half away from zero), exact: float32 values are evaluated in float64."""
    x = np.asarray(x, np.float64)
    return np.where(x < 0, -np.floor(-x + 0.5), np.floor(x + 0.5)).astype(np.int64)
