"""Element-wise ops with MNN 3.6.1's CPU semantics: activations, BinaryOp, UnaryOp, Eltwise, Select,
per-channel Scale/BatchNorm/PReLU and Cast.

Float tensors are float32 and integer tensors int32 (MNN keeps bool and int64 as int32).  An operation
MNN's CPU backend has no kernel for raises UnsupportedOpError instead of guessing; the comments cite the
MNN source (under ``source/``) each rule comes from.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import ShapeError, UnsupportedOpError
from ..format.idst import roundf
from ..kernels import table as kernel_table
from ..format.tables import BinaryOpOperation as B
from ..format.tables import DataFormat, DataType, EltwiseType, OpType
from ..format.tables import UnaryOpOperation as U
from .geometry import channel_axis
from .registry import register, register_plan

_F32, _I32 = np.float32, np.int32
try:                                        # the clip ufunc itself, without np.clip's Python wrapper
    from numpy._core.umath import clip as _clip
except ImportError:                         # numpy < 2
    from numpy.core.umath import clip as _clip
_FLT_MAX = np.finfo(_F32).max


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_


def _name(call) -> str:
    return f"op {call.op.name!r} ({OpType(call.op.type).name})"


def _per_channel(values, x: np.ndarray, fmt, what: str, call) -> np.ndarray:
    """A per-channel vector shaped to broadcast over ``x`` (channel axis 1, or last for NHWC)."""
    v = np.asarray(values, _F32).reshape(-1)
    axis = channel_axis(fmt, x.ndim) if x.ndim > 1 else 0
    if v.size != x.shape[axis]:
        raise ShapeError(f"{_name(call)}: {v.size} {what} for {x.shape[axis]} channels (input {x.shape})")
    shape = [1] * x.ndim
    shape[axis] = v.size
    return v.reshape(shape)


# ------------------------------------------------------------------------------------- activations

@register(OpType.ReLU)
def relu(call):
    """backend/cpu/CPURelu.cpp: x < 0 -> x * slope (slope 0 without a Relu table)."""
    x = call.inputs[0]
    slope = call.params.slope if call.params is not None else 0.0
    if slope == 0:
        return [np.maximum(x, 0).astype(x.dtype, copy=False)]
    return [np.where(x < 0, x * x.dtype.type(slope), x).astype(x.dtype, copy=False)]


@register(OpType.ReLU6)
def relu6(call):
    """CPURelu.cpp CPURelu6: clamp to [minValue, maxValue] (default 0..6)."""
    p = call.params
    lo, hi = (p.minValue, p.maxValue) if p is not None else (0.0, 6.0)
    x = call.inputs[0]
    y = np.maximum(x, x.dtype.type(lo))
    return [np.minimum(y, x.dtype.type(hi), out=y)]


@register_plan(OpType.ReLU6)
def plan_relu6(op, impl: str):
    """relu6 with the bounds of a float32 input converted once (SE blocks run it on tiny tensors,
    where reading the table and converting the bounds cost as much as the clamp)."""
    p = op.main
    lo, hi = (p.minValue, p.maxValue) if p is not None else (0.0, 6.0)
    lo, hi = _F32(lo), _F32(hi)
    clamp = kernel_table.form("clamp", impl)

    def run(call):
        x = call.inputs[0]
        if x.dtype != _F32:
            return relu6(call)
        return [clamp(x, lo, hi)]

    return run


def clamp_ref(x: np.ndarray, lo, hi) -> np.ndarray:
    """The reference form of kernel "clamp": ``relu6``'s maximum then minimum of a float32 array."""
    y = np.maximum(x, lo)
    return np.minimum(y, hi, out=y)


@register(OpType.PReLU)
def prelu(call):
    """CPURelu.cpp: one slope for the whole tensor when slopeCount == 1, else one per channel."""
    x, p = call.inputs[0], call.params
    slope = np.asarray(p.slope, _F32).reshape(-1)
    if p.slopeCount == 1 or slope.size == 1:
        s = slope[:1].reshape(())
    else:
        s = _per_channel(slope, x, call.formats[0], "slopes", call)
    return [np.where(x < 0, x * s, x).astype(_F32, copy=False)]


@register(OpType.ELU, OpType.Selu)
def elu(call):
    """geometry/GeometryELU.cpp: x > 0 ? x : alpha * expm1(x); Selu scales both sides by ``scale``."""
    x, p = call.inputs[0].astype(_F32, copy=False), call.params
    scale = _F32(p.scale) if call.op.type == OpType.Selu else _F32(1)
    negative = _F32(p.alpha) * scale * np.expm1(np.minimum(x, _F32(0)))
    return [np.where(x > 0, x * scale, negative).astype(_F32, copy=False)]


# ------------------------------------------------------------------------------------------ unary

def _tanh_pade(v: np.ndarray) -> np.ndarray:
    """backend/cpu/x86_x64/avx/MathFunctions.cpp _AVX_MNNGelu: a [7/6] Pade tanh on v clamped to
    [-5, 5], its result clamped to [-1, 1]."""
    v = np.clip(v, _F32(-5), _F32(5))
    v2 = v * v
    num = ((v2 + _F32(378)) * v2 + _F32(17325)) * v2 + _F32(135135)
    den = ((v2 * _F32(28) + _F32(3150)) * v2 + _F32(62370)) * v2 + _F32(135135)
    return np.clip(num * v / den, _F32(-1), _F32(1))


def _gelu(x):
    """compute/CommonOptFunction.cpp MNNGeluCommon: tanh approximation of GELU."""
    inner = (_F32(0.044715) * x * x * x + x) * _F32(0.79788458)
    return (_F32(1) + _tanh_pade(inner)) * x * _F32(0.5)


def _erfinv(x):
    """backend/cpu/UnaryUtils.hpp UnaryErfinv (TensorFlow's polynomial); |x| == 1 gives +FLT_MAX."""
    lo = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
          -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
    hi = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
          -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = -np.log1p(-x * x)
        small = w < _F32(5)
        w = np.where(small, w - _F32(2.5), np.sqrt(w) - _F32(3))
        p = np.where(small, _F32(lo[0]), _F32(hi[0]))
        for a, b in zip(lo[1:], hi[1:]):
            p = np.where(small, _F32(a), _F32(b)) + p * w
        return np.where(np.abs(np.abs(x) - _F32(1)) < _F32(1e-8), _FLT_MAX, p * x).astype(_F32)


def _sign(x):
    """UnaryUtils.hpp UnarySign: 1, -1 or 0 (NaN gives 0)."""
    return np.where(x > 0, 1, np.where(x < 0, -1, 0)).astype(x.dtype)


def _clamp(x, lo, hi):
    """np.clip(x, lo, hi) (NaN stays NaN) without np.clip's per-call overhead."""
    return np.minimum(np.maximum(x, lo), hi)


def _hardswish(x):
    """x * clamp(x + 3, 0, 6) / 6, in that order, in one scratch array (the large early feature maps
    of PP-OCR models make temporaries costly).  The clamp is numpy's clip ufunc: twice as fast as
    np.maximum + np.minimum with scalar bounds, and the same values (x + 3 is never -0.0, and where it
    is NaN so is x, whose NaN the product keeps either way)."""
    t = np.add(x, _F32(3))
    _clip(t, _F32(0), _F32(6), out=t)
    np.multiply(x, t, out=t)
    np.divide(t, _F32(6), out=t)
    return t


def _sigmoid(x):
    """compute/CommonOptFunction.cpp MNNSigmoid: 1 / (1 + exp(-x)), the exponent clamped to +-87."""
    return _F32(1) / (_F32(1) + np.exp(_clamp(-x, _F32(-87), _F32(87))))


def sigmoid_ref(x, all_simd: bool = False):
    """The reference form of kernel "sigmoid" (mnnlite.kernels.table): ``_sigmoid`` in float32; ``all_simd``
    only matters to the MNN form (which of MNN's code paths each value takes)."""
    y = _sigmoid(x)
    return y if y.dtype == _F32 else np.asarray(y).astype(_F32)


def _silu(x):
    return x / (_F32(1) + np.exp(_clamp(-x, _F32(-87), _F32(87))))


def silu_ref(x, all_simd: bool = False):
    """The reference form of kernel "silu" (mnnlite.kernels.table): ``_silu`` in float32; ``all_simd``
    only matters to the MNN form."""
    y = _silu(x)
    return y if y.dtype == _F32 else np.asarray(y).astype(_F32)


def _tanh(x):
    """MNNTanh: (1 - e^-2x) / (1 + e^-2x), the exponent clamped to +-87."""
    e = np.exp(_clamp(_F32(-2) * x, _F32(-87), _F32(87)))
    return (_F32(1) - e) / (_F32(1) + e)


def tanh_ref(x, all_simd: bool = False):
    """The reference form of kernel "tanh" (mnnlite.kernels.table): ``_tanh`` in float32; ``all_simd``
    only matters to the MNN form."""
    y = _tanh(x)
    return y if y.dtype == _F32 else np.asarray(y).astype(_F32)


def _bnll(x):
    """UnaryUtils.hpp UnaryBNLL: log(1 + exp(x)) computed stably in double."""
    d = x.astype(np.float64)
    return np.where(d > 0, d + np.log1p(np.exp(-d)), np.log1p(np.exp(d)))


# backend/cpu/CPUUnary.cpp selectForFloat (float32 in, float32 out).
_UNARY_FLOAT = {
    U.ABS: np.abs, U.NEG: np.negative, U.FLOOR: np.floor, U.CEIL: np.ceil, U.SQUARE: np.square,
    U.SQRT: np.sqrt, U.RSQRT: lambda x: _F32(1) / np.sqrt(x), U.EXP: np.exp, U.LOG: np.log,
    U.SIN: np.sin, U.COS: np.cos, U.TAN: np.tan, U.ASIN: np.arcsin, U.ACOS: np.arccos,
    U.ATAN: np.arctan, U.RECIPROCAL: lambda x: _F32(1) / x, U.LOG1P: lambda x: np.log(_F32(1) + x),
    U.BNLL: _bnll, U.ACOSH: np.arccosh, U.SINH: np.sinh, U.ASINH: np.arcsinh, U.ATANH: np.arctanh,
    U.SIGN: _sign, U.ROUND: roundf, U.COSH: np.cosh, U.ERF: None, U.ERFC: None,
    U.ERFINV: _erfinv, U.EXPM1: np.expm1, U.SIGMOID: _sigmoid, U.TANH: _tanh,
    U.HARDSWISH: _hardswish,
    U.GELU: _gelu, U.SILU: _silu,
    # MNNGeluStandardCommon: (erf(x * 0.7071067932881648) + 1) * x * 0.5 in double
    U.GELU_STANDARD: None,
}

# CPUUnary.cpp selectForInt: the only integer kernels (ABS goes through fabsf, i.e. float).
_UNARY_INT = {
    U.ABS: lambda x: np.abs(x.astype(_F32)).astype(_I32), U.NEG: np.negative, U.SQUARE: np.square,
    U.SIGN: _sign,
}


def _erf_series(xs: np.ndarray) -> np.ndarray:
    """erf's Maclaurin sum (before the 2/sqrt(pi) factor) of float64 values |x| < 2.5, 63 terms.

    A value leaves the loop once its sum is final, with the bits all 63 terms give: from term 20 on
    (x^2 < 6.25) each term is under 0.3 of the one before, so once a term is under |sum| * 2^-55 (a quarter
    of the sum's ulp) every later one rounds away.  MiniLM's GELU values stop near term 20, which makes the
    float runs of accurate control ~3x faster on them (tests/ops/test_ops_elementwise.py: same bits)."""
    m = -xs * xs
    term, total = xs.copy(), xs.copy()
    step = np.empty_like(xs)
    out = np.empty_like(xs)
    left = np.arange(xs.size)
    for n in range(1, 64):
        np.multiply(term, m, out=term)
        np.divide(term, n, out=term)
        np.divide(term, 2 * n + 1, out=step)
        np.add(total, step, out=total)
        if n in _ERF_CHECKS:
            done = np.abs(step) < np.abs(total) * 2.0 ** -55
            if done.any():
                out[left[done]] = total[done]
                keep = ~done
                left, m, term, total, step = left[keep], m[keep], term[keep], total[keep], step[keep]
    out[left] = total
    return out


_ERF_CHECKS = (20, 28, 36, 44)      # terms after which converged values leave the sum (n >= 20, see above)


def _erf_erfc(x: np.ndarray):
    """(erf, erfc) in double precision: the Maclaurin series below |x| = 2.5, Laplace's continued
    fraction for erfc above (both converge to double accuracy with the fixed term counts used).  Each
    value is computed on its own: only the small values run the series, only the others the fraction."""
    d = np.asarray(x, np.float64)
    shape = d.shape
    d = d.reshape(-1)
    small = np.abs(d) < 2.5
    erf, erfc = np.empty_like(d), np.empty_like(d)
    if small.any():
        erf_small = _erf_series(d[small]) * (2.0 / np.sqrt(np.pi))
        erf[small] = erf_small
        erfc[small] = 1.0 - erf_small
    large = ~small                                         # NaN goes here, as in the fraction
    if large.any():
        d_large = d[large]
        al = np.abs(d_large)
        t = al.copy()
        for k in range(60, 0, -1):
            t = al + (0.5 * k) / t
        tail = np.exp(-al * al) / (np.sqrt(np.pi) * t)      # erfc(|x|) for |x| >= 2.5
        erf[large] = np.copysign(1.0 - tail, d_large)
        erfc[large] = np.where(d_large > 0, tail, 2.0 - tail)
    return erf.reshape(shape), erfc.reshape(shape)


# CPUUnary.cpp / UnaryUtils.hpp: the UnaryOps MNN computes with a libm float function (kernel "libm_unary")
LIBM_UNARY = frozenset({U.ERF, U.SIN, U.COS, U.TAN, U.ATAN, U.LOG, U.LOG1P, U.ACOSH, U.SINH, U.ASINH, U.ATANH,
                        U.COSH})


def libm_unary_ref(op: int, x):
    """The reference form of kernel "libm_unary" (mnnlite.kernels.table): numpy's float32 function (erf in
    double, rounded to float32)."""
    x = np.asarray(x, _F32)
    fn = _UNARY_FLOAT.get(op)
    y = _unary_special(op, x) if fn is None else fn(x)
    return np.asarray(y).astype(_F32, copy=False)


def exp_ref(x, all_simd: bool = False):
    """The reference form of kernel "exp": numpy's float32 exp; ``all_simd`` only matters to the MNN form."""
    return np.exp(np.asarray(x, _F32))


def _unary_special(op: int, x: np.ndarray) -> np.ndarray:
    if op == U.ERF:
        return _erf_erfc(x)[0]
    if op == U.ERFC:
        return _erf_erfc(x)[1]
    # CommonOptFunction.cpp MNNGeluStandardCommon: (erf(x * 0.7071067932881648) + 1) * x * 0.5, double
    return (_erf_erfc(x.astype(np.float64) * 0.7071067932881648)[0] + 1.0) * x.astype(np.float64) * 0.5


def unary(op: int, x: np.ndarray, call=None) -> np.ndarray:
    """One UnaryOpOperation on a float32 or int32 array, MNN CPU semantics."""
    if _is_int(x):
        fn = _UNARY_INT.get(op)
        if fn is None:
            raise UnsupportedOpError(f"{_name(call) if call else 'UnaryOp'}: {U(op).name} has no integer "
                                     f"kernel in MNN (supported: {sorted(u.name for u in _UNARY_INT)})")
        return fn(x.astype(_I32, copy=False)).astype(_I32, copy=False)
    x = x.astype(_F32, copy=False)
    if op not in _UNARY_FLOAT:
        raise UnsupportedOpError(f"{_name(call) if call else 'UnaryOp'}: unknown UnaryOpOperation {op}")
    fn = _UNARY_FLOAT[op]
    with np.errstate(all="ignore"):
        y = _unary_special(op, x) if fn is None else fn(x)
    return np.asarray(y).astype(_F32, copy=False)


@register(OpType.UnaryOp)
def unary_op(call):
    op = call.params.opType if call.params is not None else U.ABS
    return [unary(int(op), call.inputs[0], call)]


@register_plan(OpType.UnaryOp)
def plan_unary_op(op, impl: str):
    """A float32 input goes straight to the operation's function (the runtime has set np.errstate)."""
    code = int(op.main.opType) if op.main is not None else int(U.ABS)
    if code in _EXP_KERNELS:
        return _plan_sigmoid(impl, unary_op, _EXP_KERNELS[code])
    fn = functools.partial(kernel_table.form("libm_unary", impl), code) if code in LIBM_UNARY \
        else _UNARY_FLOAT.get(code)
    if fn is None or code == U.BNLL:     # erfc, GELU_STANDARD and BNLL compute in double: the generic path
        return unary_op
    if code == U.HARDSWISH:
        fn = kernel_table.form("hardswish", impl)

    def run(call):
        x = call.inputs[0]
        if x.dtype != _F32:
            return unary_op(call)
        y = fn(x)
        return [y if y.dtype == _F32 else np.asarray(y).astype(_F32)]

    return run


# UnaryOps whose MNN kernel is built on MNNExp, by the kernel-table entry that computes them
_EXP_KERNELS = {U.SIGMOID: "sigmoid", U.SILU: "silu", U.TANH: "tanh", U.EXP: "exp"}


def _plan_sigmoid(impl: str, generic, kernel: str = "sigmoid"):
    """A float32 sigmoid (SiLU, tanh, exp) through kernel "sigmoid" ("silu", "tanh", "exp"; ``generic``
    takes other types).  MNN runs MNNSigmoid / MNNSiLu / MNNTanh / MNNExp over the tensor's memory: an NC4HW4 tensor has channels
    padded to 8, so every value takes the 8-wide path (``all_simd``); NCHW / NHWC tensors hold our arrays'
    order, so the scalar tail is their last n % 8."""
    sigmoid = kernel_table.form(kernel, impl)

    def run(call):
        x = call.inputs[0]
        if x.dtype != _F32:
            return generic(call)
        return [sigmoid(x, call.formats[0] == DataFormat.NC4HW4)]
    return run


@register(OpType.Sigmoid, OpType.TanH)
def sigmoid_tanh(call):
    """geometry/GeometryUnary.cpp: the Sigmoid and TanH op types run as UnaryOp SIGMOID / TANH."""
    op = U.SIGMOID if call.op.type == OpType.Sigmoid else U.TANH
    return [unary(op, call.inputs[0], call)]


@register_plan(OpType.Sigmoid, OpType.TanH)
def plan_sigmoid_tanh(op, impl: str):
    return _plan_sigmoid(impl, sigmoid_tanh, "sigmoid" if op.type == OpType.Sigmoid else "tanh")


# ----------------------------------------------------------------------------------------- binary

def _c_div(a, b):
    """C integer division (truncation toward zero); division by zero gives 0 instead of a crash."""
    with np.errstate(all="ignore"):
        q = np.floor_divide(a, b)
        fix = (np.remainder(a, b) != 0) & ((a < 0) != (b < 0))
        return np.where(b == 0, 0, q + fix).astype(_I32)


def _shift(fn):
    return lambda a, b: fn(a, np.bitwise_and(b, 31))      # x86 masks the shift count to 5 bits


def _floordiv_f(a, b):
    with np.errstate(all="ignore"):
        return np.floor(a.astype(np.float64) / b)


def _floormod_f(a, b):
    return a - np.floor(a / b) * b


# backend/cpu/CPUBinary.cpp selectForFloat + BinaryUtils.hpp (float32 inputs).
_BINARY_FLOAT = {
    B.ADD: np.add, B.SUB: np.subtract, B.MUL: np.multiply, B.REALDIV: np.divide,
    B.MINIMUM: lambda a, b: np.where(a < b, a, b),          # minps/maxps: the second operand wins
    B.MAXIMUM: lambda a, b: np.where(a > b, a, b),          # ties and NaNs
    B.POW: np.power, B.ATAN2: np.arctan2,
    B.SquaredDifference: lambda a, b: (a - b) * (a - b),
    B.FLOORDIV: _floordiv_f,                    # floor((double)x / y)
    B.FLOORMOD: _floormod_f,                    # x - floor(x / y) * y   (sign of the divisor)
    B.MOD: np.fmod,                             # fmodf                  (sign of the dividend)
    B.GREATER: np.greater, B.GREATER_EQUAL: np.greater_equal, B.LESS_EQUAL: np.less_equal,
    B.NOTEQUAL: np.not_equal,
    # math/Vec.hpp, SSE Vec<float, 4> (the kernel the x86 CPU backend runs): == and < compare the
    # float bit patterns as int32, so -0.0 != 0.0, equal NaNs are equal and two negatives order
    # backwards under LESS; <=, > and >= are true float comparisons.
    B.EQUAL: lambda a, b: a.view(_I32) == b.view(_I32),
    B.LESS: lambda a, b: a.view(_I32) < b.view(_I32),
}

# CPUBinary.cpp selectForInt (int32 inputs).  Note MOD and FLOORMOD swap meaning relative to float:
# FLOORMOD computes x - (x / y) * y with C division (sign of the dividend), MOD the floored modulus.
_BINARY_INT = {
    B.ADD: np.add, B.SUB: np.subtract, B.MUL: np.multiply, B.MINIMUM: np.minimum,
    B.MAXIMUM: np.maximum, B.SquaredDifference: lambda a, b: (a - b) * (a - b),
    B.REALDIV: _c_div,
    B.FLOORDIV: lambda a, b: np.floor(_floordiv_f(a, b)),
    B.FLOORMOD: lambda a, b: a - _c_div(a, b) * b,
    B.MOD: lambda a, b: np.where(b == 0, 0, np.mod(a, np.where(b == 0, 1, b))),
    B.POW: lambda a, b: np.power(a.astype(np.float64), b),
    B.LOGICALOR: lambda a, b: (a != 0) | (b != 0),
    B.LOGICALXOR: lambda a, b: np.bitwise_xor(a, b) != 0,     # (x ^ y) ? 1 : 0, bitwise
    B.BITWISE_AND: np.bitwise_and, B.BITWISE_OR: np.bitwise_or, B.BITWISE_XOR: np.bitwise_xor,
    B.LEFTSHIFT: _shift(np.left_shift), B.RIGHTSHIFT: _shift(np.right_shift),
    B.GREATER: np.greater, B.GREATER_EQUAL: np.greater_equal, B.LESS: np.less,
    B.LESS_EQUAL: np.less_equal, B.EQUAL: np.equal, B.NOTEQUAL: np.not_equal,
}


# int32 operations whose numpy result is already binary()'s (int32, wrapping like MNN's int math)
_INT_EXACT = frozenset((B.ADD, B.SUB, B.MUL, B.MINIMUM, B.MAXIMUM))


def _to_int32(y) -> np.ndarray:
    """C conversion of a double/float result to int32 (truncation; NaN and overflow to INT_MIN)."""
    y = np.asarray(y)
    if _is_int(y):
        return y.astype(_I32)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(y) | (y >= 2.0 ** 31) | (y < -(2.0 ** 31))
        return np.where(bad, np.iinfo(_I32).min, np.trunc(np.where(bad, 0, y))).astype(_I32)


def binary(op: int, a: np.ndarray, b: np.ndarray, call=None) -> np.ndarray:
    """One BinaryOpOperation with numpy broadcasting and MNN CPU semantics.  The element type is
    input 0's (MNN picks the kernel from it); comparisons return int32."""
    if op == B.MUL_SILU:                 # CPUBinary.cpp MulSilu: x0 * silu(x1)
        return (a.astype(_F32) * _silu(b.astype(_F32))).astype(_F32)
    integer = _is_int(a)
    table = _BINARY_INT if integer else _BINARY_FLOAT
    fn = table.get(op)
    if fn is None:
        kind = "integer" if integer else "float"
        label = B(op).name if op in set(B) else str(op)
        raise UnsupportedOpError(f"{_name(call) if call else 'BinaryOp'}: {label} has no {kind} kernel in MNN "
                                 f"(supported: {sorted(o.name for o in table)})")
    dtype = _I32 if integer else _F32
    a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    with np.errstate(all="ignore"):
        y = fn(a, b)
    if y.dtype == np.bool_:
        return y.astype(_I32)
    return _to_int32(y) if integer else np.asarray(y).astype(_F32, copy=False)


@register_plan(OpType.BinaryOp)
def plan_binary_op(op, impl: str):
    """Two float32 inputs go straight to the operation's function (numpy raises on shapes that do
    not broadcast, which the runtime reports as a ShapeError naming the op)."""
    p = op.main
    code, act = (int(p.opType), p.activationType) if p is not None else (int(B.ADD), 0)
    fn = _BINARY_FLOAT.get(code)
    if fn is None or act != 0:
        return binary_op
    int_fn = _BINARY_INT.get(code) if code in _INT_EXACT else None

    def run(call):
        a, b = call.inputs[0], call.inputs[1]
        if a.dtype != _F32 or b.dtype != _F32:
            if int_fn is not None and a.dtype == _I32 and b.dtype == _I32:
                # shape arithmetic (int32 scalars): binary()'s result without its conversions
                y = int_fn(a, b)
                return [y if type(y) is np.ndarray else np.asarray(y)]
            return binary_op(call)
        y = fn(a, b)
        if y.dtype == _F32:
            return [y]
        return [y.astype(_I32) if y.dtype == np.bool_ else np.asarray(y).astype(_F32)]

    return run


@register(OpType.BinaryOp)
def binary_op(call):
    p = call.params
    op, act = (int(p.opType), p.activationType) if p is not None else (B.ADD, 0)
    a, b = call.inputs[0], call.inputs[1]
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"{_name(call)}: inputs {a.shape} and {b.shape} do not broadcast") from None
    y = binary(op, a, b, call)
    if act == 1:                         # CPUBinary.cpp: fused ReLU
        y = np.maximum(y, y.dtype.type(0))
    return [y]


@register(OpType.Eltwise)
def eltwise(call):
    """backend/cpu/CPUEltwise.cpp: fold PROD/SUM/MAXIMUM/SUB over the inputs (same shapes).  Two or
    more coefficients are only accepted as [1, 0] (copy of input 0), as in MNN."""
    p = call.params
    coeff = [] if p is None or p.coeff is None else [float(c) for c in p.coeff]
    if len(coeff) >= 2:
        if coeff[:2] == [1.0, 0.0]:
            return [call.inputs[0]]
        raise UnsupportedOpError(f"{_name(call)}: coefficients {coeff} (MNN accepts only [1, 0])")
    kind = p.type if p is not None else EltwiseType.PROD
    op = {EltwiseType.PROD: B.MUL, EltwiseType.SUM: B.ADD, EltwiseType.MAXIMUM: B.MAXIMUM, EltwiseType.SUB: B.SUB}.get(kind)
    if op is None:
        raise UnsupportedOpError(f"{_name(call)}: EltwiseType {kind}")
    shapes = {x.shape for x in call.inputs}
    if len(shapes) != 1:
        raise ShapeError(f"{_name(call)}: inputs must share one shape, got {sorted(shapes)}")
    y = call.inputs[0].astype(_F32)
    for x in call.inputs[1:]:
        y = binary(op, y, x, call)
    return [y]


@register(OpType.Select)
def select(call):
    """backend/cpu/CPUSelect.cpp: out = cond ? x : y with the condition read as int32 bits
    (a float condition is true for any nonzero bit pattern, -0.0 included); numpy broadcasting."""
    cond, x, y = call.inputs[:3]
    c = cond.view(_I32) if cond.dtype == _F32 else cond
    return [np.where(c != 0, x, y).astype(np.result_type(x, y), copy=False)]


# -------------------------------------------------------------------------------- per-channel affine

@register(OpType.Scale)
def scale(call):
    """backend/cpu/CPUScale.cpp: y = x * scale[c] + bias[c] (bias 0 when absent)."""
    x, p, fmt = call.inputs[0].astype(_F32, copy=False), call.params, call.formats[0]
    y = x * _per_channel(p.scaleData, x, fmt, "scales", call)
    if p.biasData is not None and len(p.biasData):
        y = y + _per_channel(p.biasData, x, fmt, "biases", call)
    return [y.astype(_F32, copy=False)]


@register(OpType.BatchNorm)
def batch_norm(call):
    """Inference BatchNorm (``--forTraining`` files keep it; MNN turns it into Scale):
    y = (x - mean[c]) / sqrt(var[c] + eps) * slope[c] + bias[c]."""
    x, p, fmt = call.inputs[0].astype(_F32, copy=False), call.params, call.formats[0]
    mean = _per_channel(p.meanData, x, fmt, "means", call)
    inv = _F32(1) / np.sqrt(_per_channel(p.varData, x, fmt, "variances", call) + _F32(p.epsilon))
    slope = _per_channel(p.slopeData, x, fmt, "slopes", call) if p.slopeData is not None else _F32(1)
    bias = _per_channel(p.biasData, x, fmt, "biases", call) if p.biasData is not None else _F32(0)
    return [((x - mean) * inv * slope + bias).astype(_F32, copy=False)]


# ------------------------------------------------------------------------------------------- cast

def _cast_dtype(dst: int):
    """core/Tensor.cpp setType: the storage type of each DataType."""
    if dst in (DataType.DT_FLOAT, DataType.DT_DOUBLE):
        return _F32
    if dst in (DataType.DT_INT32, DataType.DT_BOOL, DataType.DT_INT64, DataType.DT_QINT32):
        return _I32
    table = {DataType.DT_INT8: np.int8, DataType.DT_QINT8: np.int8, DataType.DT_UINT8: np.uint8,
             DataType.DT_QUINT8: np.uint8, DataType.DT_INT16: np.int16, DataType.DT_QINT16: np.int16,
             DataType.DT_UINT16: np.uint16, DataType.DT_QUINT16: np.uint16}
    if dst not in table:
        raise UnsupportedOpError(f"Cast: destination type {dst} is not supported")
    return table[dst]


@register(OpType.Cast)
def cast(call):
    """backend/cpu/CPUCast.cpp: to BOOL from a 4-byte type is ``bits != 0``; otherwise a C
    static_cast (float -> int truncates toward zero, narrower ints wrap)."""
    x, p = call.inputs[0], call.params
    dst = int(p.dstT)
    if dst == DataType.DT_BOOL and x.dtype.itemsize == 4:
        return [(x.view(_I32) != 0).astype(_I32)]
    out = _cast_dtype(dst)
    if x.dtype == out:
        return [x]
    if np.issubdtype(out, np.integer) and not _is_int(x):
        return [_to_int32(x).astype(out)]
    return [x.astype(out)]

