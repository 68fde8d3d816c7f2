"""Int8 kernels of the ops MNN 3.6.1's CPU backend runs on int8 codes, with its x86 semantics.

One function per MNN op type, ``fn(call: Int8Call) -> list[np.ndarray]`` of int8 codes.  Each cites
the MNN source it follows (paths under ``source/backend/cpu/``).  Convolution, depthwise convolution
and pooling, the int8 conversions and the code tables of the elementwise ops run the form of their kernel
(``mnnlite.kernels.table``) that ``call.impl`` names: the C kernels of ``mnnlite.kernels.int8`` and the
gathers of ``fastq``, or the numpy references of ``mnnlite.ref.int8``; Winograd convs run
``mnnlite.int8.winograd``.

Requantization comes in MNN's flavours, and the kernels keep each one:
* the FloatToInt8 cast ``roundf(clamp(y / s + z))`` (casts, CPUSoftmax, CPULayerNorm, PReLU);
* ``roundf(y / s) + z`` then clamp (CPUBinaryInt8) -- MIN/MAX instead use 16-bit fixed point and never
  divide by the output scale;
* C truncation instead of rounding (UnaryOp NEG/ABS/SIGN without a table);
* none at all: Interp resamples codes as they are (the output scale only relabels them).
Where MNN's x86 build depends on memory order (a comparison's int8 result read as int32, the tail of
the int8 ReLU) the layout is NC4HW4 with ``X86_PACK`` channels, as in the official wheel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..backend.rules import UNARY_INT8_WITHOUT_TABLE
from ..errors import UnsupportedOpError
from ..format import idst
from ..format.tables import BinaryOpOperation as B
from ..format.tables import DataFormat, OpType, PoolPadType, PoolType
from ..format.tables import UnaryOpOperation as U
from ..kernels import table as kernel_table
from ..ops import geometry, resize
from ..ops.registry import OpCall
from ..ref import int8 as R

_F32 = np.float32
NHWC = DataFormat.NHWC


class Int8Call:
    """One int8 kernel call: the node, its inputs (int8 codes where the op reads codes) and what the plan
    fixed for them.  A plain slotted class, made once per op and run: the executor's per-op cost."""

    __slots__ = ("op", "inputs", "formats", "in_attrs", "out_attrs", "impl", "cache", "out_is_float", "target",
                 "_float_kernel", "_float_step")

    def __init__(self, op, inputs: list, formats: list, in_attrs: list, out_attrs: list, impl: str = "fast",
                 cache: dict | None = None, out_is_float: list | None = None, target: str = "x86",
                 float_step: tuple | None = None):
        self.op, self.inputs, self.formats = op, inputs, formats
        self.in_attrs = in_attrs               # QuantAttr per input (None for inputs read without one)
        self.out_attrs, self.impl = out_attrs, impl
        self.cache = {} if cache is None else cache
        self.out_is_float = [True] if out_is_float is None else out_is_float
        self.target = target                   # "arm": no x86 max-pool quirk
        self._float_step = float_step          # (program, step): the float kernel, bound when first asked
        self._float_kernel = None

    @property
    def float_kernel(self) -> Callable | None:
        """Runs the op's float kernel on arrays in this call's formats: fn(arrays) -> arrays."""
        if self._float_kernel is None and self._float_step is not None:
            program, step = self._float_step
            formats = self.formats
            self._float_kernel = lambda xs: [a for a, _ in program.call(step, list(zip(xs, formats)))]
        return self._float_kernel

    @property
    def params(self):
        return self.op.main

    @property
    def name(self) -> str:
        return f"op {self.op.name!r} ({OpType(self.op.type).name}, int8)"


INT8_KERNELS: dict[OpType, Callable] = {}


def register(*types):
    def wrap(fn):
        for t in types:
            INT8_KERNELS[t] = fn
        return fn
    return wrap


def _sz(attr) -> tuple:
    return _F32(attr.scale), int(attr.zero)


# ------------------------------------------------------------------------------------ convolution

@dataclass(frozen=True)
class ConvWeights:
    codes: np.ndarray          # [O, C/g, KH, KW] int8
    alpha: np.ndarray          # [O] float32
    bias: np.ndarray           # [O] float32


def conv_weights_int8(op) -> ConvWeights:
    """Integer weight codes and per-channel alpha of a quantized conv (ConvolutionCommon::
    getConvInt8Parameters: symmetric IDSTQuan codes, ``scale = alpha``; float bias kept)."""
    conv, common = op.main, op.main.common
    quan = conv.quanParameter
    if quan is None or quan.buffer is None:
        raise UnsupportedOpError(f"op {op.name!r}: int8 convolution without quantized weights (quanParameter)")
    asym, _ = idst.weight_mode(quan.type, quan.readType, quan.aMin, quan.quantScale)
    if asym:
        raise UnsupportedOpError(f"op {op.name!r}: int8 convolution with asymmetric weight codes")
    _, codes = idst.decode_codes(quan.buffer, quan.type, shape_int32=bool(quan.shapeInt32), alpha=quan.alpha)
    out_c = common.outputCount
    codes = codes.reshape(out_c, -1, common.kernelY, common.kernelX)
    alpha = np.ascontiguousarray(np.asarray(quan.alpha, _F32).reshape(-1)[:out_c])
    bias = conv.bias
    bias = np.zeros(out_c, _F32) if bias is None or len(bias) == 0 else np.asarray(bias, _F32)
    return ConvWeights(np.ascontiguousarray(codes), alpha, np.ascontiguousarray(bias))


def _crop_to_pads(x, pad):
    """Negative bottom/right pads (inputs longer than the windows need) become crops."""
    pt, pl, pb, pr = pad
    if pb < 0:
        x = x[:, :, :x.shape[2] + pb]
    if pr < 0:
        x = x[:, :, :, :x.shape[3] + pr]
    return np.ascontiguousarray(x), (pt, pl, max(pb, 0), max(pr, 0))


@register(OpType.Convolution, OpType.ConvolutionDepthwise)
def convolution(call: Int8Call):
    """ConvInt8 / DepthwiseConvInt8 (docs/mnn-quantization.md §13.2-13.3): input/output scale and zero from the tensors;
    relu and relu6 both only raise the lower bound to z_out.  What depends on the input shape and the
    two attributes only (geometry, crop, the prepared kernel) is fixed on the first call and cached."""
    x = geometry.to_nchw(call.inputs[0], call.formats[0])
    in_attr, out_attr = call.in_attrs[0], call.out_attrs[0]
    key = ("run", x.shape, in_attr.key, out_attr.key, out_attr.qrange, call.impl)
    run = call.cache.get(key)
    if run is None:
        run = call.cache[key] = _conv_runner(call.op, call.cache, x.shape, in_attr, out_attr, call.impl)
    return [geometry.from_nchw(run(x), call.formats[0])]


def _conv_runner(op, cache: dict, shape: tuple, in_attr, out_attr, impl: str):
    """``run(x) -> y`` for one input shape of one int8 conv node: the geometry, the crop of rows and
    columns no window reads, and the kernel with its bound arguments."""
    common = op.main.common
    wts = cache.get("weights")
    if wts is None:
        wts = cache["weights"] = conv_weights_int8(op)
    kh, kw = wts.codes.shape[2:]
    stride, pad, dilation, _ = geometry.conv_window(common, shape[2], shape[3], kh, kw)
    pt, pl, pb, pr = pad
    crop_h, crop_w = (shape[2] + pb if pb < 0 else None), (shape[3] + pr if pr < 0 else None)
    pad = (pt, pl, max(pb, 0), max(pr, 0))
    # the Winograd path sizes its output from the cropped input, as before the cache
    out_hw = geometry.conv_window(common, shape[2] if crop_h is None else crop_h, shape[3] if crop_w is None else crop_w,
                                  kh, kw)[3]

    def cropped(x):       # _crop_to_pads with the shape's decisions taken
        if crop_h is not None:
            x = x[:, :, :crop_h]
        if crop_w is not None:
            x = x[:, :, :, :crop_w]
        return np.ascontiguousarray(x)

    (s_in, z_in), (s_out, z_out) = _sz(in_attr), _sz(out_attr)
    lo, hi = out_attr.qrange
    relu = bool(common.relu or common.relu6)
    depthwise = op.type == OpType.ConvolutionDepthwise
    wino = getattr(op.main.symmetricQuan, "winogradAttr", None)
    if wino is not None and len(wino) and not depthwise:
        return lambda x: _winograd(op, cache, cropped(x), wts, pad, out_hw, in_attr, out_attr, lo, hi, relu)
    if depthwise:
        fn = kernel_table.form("depthwise_int8", impl)
        return lambda x: fn(cropped(x), wts.codes, wts.alpha, wts.bias, s_in, z_in, s_out, z_out, lo, hi, stride,
                            pad, dilation, relu=relu)
    groups = shape[1] // wts.codes.shape[1]
    key = (impl, shape[1], stride, pad, dilation, float(s_in), z_in, float(s_out), z_out, lo, hi, relu)
    kernel = cache.get(key)
    if kernel is None:
        kernel = cache[key] = kernel_table.form("conv2d_int8_layer", impl)(
            wts.codes, wts.alpha, wts.bias, s_in, z_in, s_out, z_out, lo, hi, stride, pad, dilation, groups, relu)
    return lambda x: kernel(cropped(x))


def _winograd(op, cache: dict, x, wts: ConvWeights, pad, out_hw, in_attr, out_attr, lo, hi, relu):
    """ConvInt8Winograd (mnnlite.int8.winograd): MNN runs it whenever ``winogradAttr`` is present."""
    from .winograd import conv2d_int8_winograd, parse_units

    units = cache.get("winograd")
    if units is None:
        units = cache["winograd"] = parse_units(op.main.symmetricQuan.winogradAttr, wts.codes, wts.alpha)
    quan, sq = op.main.quanParameter, op.main.symmetricQuan
    (s_in, z_in), z_tensor = _sz(in_attr), int(out_attr.zero)
    lo = z_tensor if relu else lo          # relu: the output tensor's zero point (outputQuant[1])
    return conv2d_int8_winograd(x, units, wts.bias, s_in, z_in, quan.scaleOut, int(sq.outputZeroPoint), lo, hi,
                                pad[:2], out_hw)


# ---------------------------------------------------------------------------------------- pooling

def _pool_window(p, x):
    """CPUPoolInt8::onResize: kernel clamped to the input, global = whole plane, SAME halves the
    need, explicit pads[4] only for CAFFE; output size from the float shape rules."""
    h, w = x.shape[2:]
    if p.isGlobal:
        return (h, w), (h, w), (0, 0, 0, 0)
    kh, kw = min(p.kernelY, h), min(p.kernelX, w)
    sy, sx = p.strideY, p.strideX
    oh, ow = geometry.pool_output_size(p, h, w)
    pt, pl = p.padY, p.padX
    if p.padType == PoolPadType.SAME:
        need_h, need_w = (oh - 1) * sy + kh - h, (ow - 1) * sx + kw - w
        pt, pl = max(need_h, 0) // 2, max(need_w, 0) // 2
    if p.pads is not None and len(p.pads) == 4 and p.padType == PoolPadType.CAFFE:
        pt, pl = int(p.pads[0]), int(p.pads[1])
    pb, pr = (oh - 1) * sy + kh - h - pt, (ow - 1) * sx + kw - w - pl
    return (kh, kw), (sy, sx), (pt, pl, pb, pr)


@register(OpType.Pooling, OpType.Pooling3D)
def pooling(call: Int8Call):
    """CPUPoolInt8: max of codes (with MNN 3.6.1's x86 signed-byte comparison of q + 128), or
    ``(sum (q + 128) * floor(2^24 / n)) >> 24 - 128`` over the in-bounds window."""
    p = call.params
    x = geometry.to_nchw(call.inputs[0], call.formats[0])
    key = ("pool", x.shape)
    window = call.cache.get(key)
    if window is None:
        window = call.cache[key] = _pool_window(p, x)
    kernel, stride, pad = window
    x, pad = _crop_to_pads(x, pad)
    if p.type == PoolType.MAXPOOL:
        y = kernel_table.form("maxpool_int8", call.impl)(x, kernel, stride, pad, x86_max_bug=call.target == "x86")
    else:
        y = kernel_table.form("avgpool_int8", call.impl)(x, kernel, stride, pad)
    return [geometry.from_nchw(y, call.formats[0])]


# --------------------------------------------------------------------------------------- BinaryOp

# BinaryUtils.hpp functors on the dequantized float32 values (executeInt8 and MNNBinary*Int8).
_BINARY = {
    B.ADD: np.add, B.SUB: np.subtract, B.MUL: np.multiply, B.REALDIV: np.divide,
    B.SquaredDifference: lambda a, b: (a - b) * (a - b),
    B.POW: np.power, B.ATAN2: np.arctan2, B.MOD: np.fmod,
    B.FLOORDIV: lambda a, b: np.floor(a / b), B.FLOORMOD: lambda a, b: a - np.floor(a / b) * b,
    B.LESS: np.less, B.LESS_EQUAL: np.less_equal, B.GREATER: np.greater, B.GREATER_EQUAL: np.greater_equal,
}


# the opTypes above and MIN/MAX as plain ints (a set of ints is tested faster than a dict of enum members)
_BINARY_OPS = frozenset(int(k) for k in _BINARY) | {int(B.MINIMUM), int(B.MAXIMUM)}


def _fixed_scale(attr) -> np.int64:
    """``ssize_t(scale * (1 << 16))`` (CPUBinaryInt8::onResize): float product, truncated."""
    return np.int64(np.trunc(_F32(attr.scale) * _F32(1 << 16)))


def _minmax_fixed(op, qa, qb, attrs, out_attr):
    """MNNBinaryMin/MaxInt8: (q - z) * int(scale * 2^16) in int32, min/max, then
    ``(res ± 2^15) / 2^16`` (C division) + z_out -- the output scale is never applied (MNN 3.6.1)."""
    a = (qa.astype(np.int64) - int(attrs[0].zero)) * _fixed_scale(attrs[0])
    b = (qb.astype(np.int64) - int(attrs[1].zero)) * _fixed_scale(attrs[1])
    a, b = _wrap32(a), _wrap32(b)
    res = np.minimum(a, b) if op == B.MINIMUM else np.maximum(a, b)
    num = np.where(res < 0, res - (1 << 15), res + (1 << 15))
    return np.sign(num) * (np.abs(num) // (1 << 16)) + int(out_attr.zero)


def _wrap32(v):
    return (v + 2 ** 31) % 2 ** 32 - 2 ** 31


def _binary_codes(op, qa, qb, in_attrs, out, lo, hi) -> np.ndarray:
    """The reference formula of CPUBinaryInt8 on codes (any broadcastable shapes)."""
    if op in (B.MINIMUM, B.MAXIMUM):
        r = _minmax_fixed(op, qa, qb, in_attrs, out)
    else:
        fn = _BINARY[op]
        a = R.dequantize(qa, *_sz(in_attrs[0]))
        b = R.dequantize(qb, *_sz(in_attrs[1]))
        with np.errstate(all="ignore"):
            y = np.asarray(fn(a, b)).astype(_F32)
        inv = _F32(0) if out.scale == 0 else _F32(1) / _F32(out.scale)
        r = R._roundf((y * inv).astype(_F32)) + int(out.zero)
    return np.clip(r, lo, hi).astype(np.int8)


# _binary_codes' float32 steps as kernels.eltwise.binary_int8 runs them (its op numbers)
_ARITHMETIC_OPS = {int(B.ADD): 0, int(B.SUB): 1, int(B.MUL): 2}


def _arithmetic(op, in_attrs, out, lo, hi):
    """The arithmetic of ``_binary_codes`` for the fast table (None where it has none)."""
    if op not in _ARITHMETIC_OPS:
        return None
    (sa, za), (sb, zb) = _sz(in_attrs[0]), _sz(in_attrs[1])
    inv = _F32(0) if out.scale == 0 else _F32(1) / _F32(out.scale)
    return (_ARITHMETIC_OPS[op], float(sa), float(za), float(sb), float(zb), float(inv), float(out.zero),
            float(lo), float(hi))


@register(OpType.BinaryOp)
def binary(call: Int8Call):
    """CPUBinaryInt8: dequantize both inputs ((q - z) * s, float32), apply the op in float,
    ``(int)roundf(y * (1 / s_out)) + z_out``, clamp to [min, max] of the output (min 0 with a fused
    ReLU).  MIN/MAX use MNN's fixed-point path.  The result depends on the two codes only, so the fast
    path gathers from a 256 x 256 table of this formula.  A comparison's output keeps its int32 type in
    MNN: see ``packed_int_output``."""
    out = call.out_attrs[0]
    # the node's own parameters, read from the flatbuffer once (they are the same on every run)
    key = ("binary", call.impl, call.in_attrs[0].key, call.in_attrs[1].key, out.key, out.qrange,
           call.out_is_float[0])
    codes_of = call.cache.get(key)
    if codes_of is None:
        p = call.params
        op = int(p.opType)
        if op not in _BINARY_OPS:
            raise UnsupportedOpError(f"{call.name}: {B(op).name} has no int8 kernel in MNN")
        lo, hi = out.qrange
        if int(getattr(p, "activationType", 0) or 0) == 1 and call.out_is_float[0]:
            lo = 0
        in_attrs = call.in_attrs
        codes_of = call.cache[key] = kernel_table.form("code_table2", call.impl)(
            lambda a, b: _binary_codes(op, a, b, in_attrs, out, lo, hi),
            arithmetic=_arithmetic(op, in_attrs, out, lo, hi))
    codes = codes_of(call.inputs[0], call.inputs[1])
    if not call.out_is_float[0]:
        return [packed_int_output(codes, call.formats[0])]
    return [codes]


# Channel pack of NC4HW4 memory in the official x86 wheel (its AVX2 backend: 8 floats per vector; an
# AVX512 build would use 16).  Only needed where MNN's results depend on memory order (bugs below).
X86_PACK = 8


def packed_int_output(codes: np.ndarray, fmt) -> np.ndarray:
    """What MNN 3.6.1 leaves in an int32 tensor written by an int8 kernel (a comparison BinaryOp
    whose output carries a quant attribute): one byte q + 128 per element at the start of the
    buffer, read back as int32 -- four packed codes per element for the first quarter of the
    tensor's memory; the rest is memory the kernel never wrote (zero in a fresh process, assumed
    here).  Memory order is NC4HW4 (channels packed by ``X86_PACK``) for NC4HW4 tensors, row-major
    otherwise."""
    raw = (codes.astype(np.int16) + 128).astype(np.uint8)
    packed = fmt == DataFormat.NC4HW4 and raw.ndim >= 2
    mem = to_packed(raw) if packed else raw.reshape(-1)
    words = np.zeros(mem.size, np.int32)
    n = -(-mem.size // 4)
    padded = np.zeros(n * 4, np.uint8)
    padded[:mem.size] = mem
    words[:n] = padded.view("<i4")
    return from_packed(words, raw.shape) if packed else words.reshape(raw.shape)


def to_packed(x: np.ndarray, pack: int = X86_PACK) -> np.ndarray:
    """Logical [N, C, ...] -> MNN's NC4HW4 memory [N][C/pack][...][pack], channels zero-padded."""
    n, c = x.shape[:2]
    cp = -(-c // pack) * pack
    xp = np.zeros((n, cp) + x.shape[2:], x.dtype)
    xp[:, :c] = x
    return xp.reshape(n, cp // pack, pack, -1).transpose(0, 1, 3, 2).reshape(-1)


def from_packed(mem: np.ndarray, shape, pack: int = X86_PACK) -> np.ndarray:
    n, c = shape[:2]
    plane = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    cp = -(-c // pack) * pack
    x = mem.reshape(n, cp // pack, plane, pack).transpose(0, 1, 3, 2).reshape((n, cp) + tuple(shape[2:]))
    return np.ascontiguousarray(x[:, :c])


# ---------------------------------------------------------------------------------------- UnaryOp

@register(OpType.UnaryOp)
def unary(call: Int8Call):
    """CPUUnary: with a table, ``table[q + 127]``; NEG/ABS/SIGN without one dequantize, apply,
    ``roundf(y / s_out) + z_out`` and clamp (MNNUnaryNeg/Abs/SignInt8)."""
    p = call.params
    q = call.inputs[0]
    table = getattr(p, "tableInt8", None)
    if table is not None and len(table):
        lut = call.cache.get(("lut", call.impl))
        if lut is None:       # table[q + 127] (q = -128 reads entry 0, see the ref)
            lut = call.cache[("lut", call.impl)] = kernel_table.form("code_table", call.impl)(table)
        return [lut(q)]
    op = int(p.opType)
    if op not in UNARY_INT8_WITHOUT_TABLE:
        raise UnsupportedOpError(f"{call.name}: UnaryOp {U(op).name} without a lookup table has no int8 kernel")
    return [_unary_no_table(op, q, call.in_attrs[0], call.out_attrs[0])]


def _unary_no_table(op, q, inp, out) -> np.ndarray:
    """CPUUnary _NegInt8 / _ABSInt8 / _SignInt8 (x86 scalar loops): float math, then C truncation
    (not rounding); NEG and ABS clamp to [min, max], SIGN stores its value unclamped (a byte)."""
    s_in, z_in, z_out = _F32(inp.scale), int(inp.zero), int(out.zero)
    inv = _F32(0) if out.scale == 0 else _F32(1) / _F32(out.scale)
    lo, hi = out.qrange
    d = q.astype(np.int32) - z_in
    if op == U.NEG:
        v = ((-d).astype(_F32) * s_in * inv + _F32(z_out)).astype(_F32)
        return np.clip(np.trunc(v), lo, hi).astype(np.int8)
    if op == U.ABS:
        v = (np.abs((d.astype(_F32) * s_in).astype(_F32)) * inv + _F32(z_out)).astype(_F32)
        v = np.maximum(np.minimum(v, _F32(hi)), _F32(lo))
        return (np.trunc(v + _F32(128)).astype(np.int32) - 128).astype(np.int8)
    pos, neg = int(np.trunc(_F32(1) * inv + _F32(z_out))), int(np.trunc(_F32(-1) * inv + _F32(z_out)))
    v = np.where(d > 0, pos, np.where(d < 0, neg, z_out))
    return ((v + 128) % 256 - 128).astype(np.int8)


# ----------------------------------------------------------------------------------------- Interp

def _interp_positions(call: Int8Call, x):
    """(oh, ow, (h_scale, h_off), (w_scale, w_off)) as the float Interp computes them."""
    fc = OpCall(call.op, [x] + list(call.inputs[1:]), [DataFormat.NCHW] + list(call.formats[1:]))
    oh, ow, scales = resize.interp_sizes(fc)
    given = (None, None) if scales is None else (_F32(1) / scales[2], _F32(1) / scales[3])
    hs = resize.coord_transform(call.params, x.shape[2], oh, given[0])
    ws = resize.coord_transform(call.params, x.shape[3], ow, given[1])
    return oh, ow, hs, ws


def _bilinear_weights(frac):
    """int16(f * 128) and int16((1 - f) * 128), truncated (MNNBilinearSampleC8 / LineC8)."""
    frac = np.asarray(frac, _F32)
    df = np.trunc(frac * _F32(128)).astype(np.int64)
    sf = np.trunc((_F32(1) - frac) * _F32(128)).astype(np.int64)
    return sf, df


@register(OpType.Interp)
def interp(call: Int8Call):
    """CPUInterp int8 path.  The codes are resampled as they are: nearest copies them, bilinear
    interpolates ``q - z_in`` in fixed point (weights * 128, rows in int16, ``(v ± 2^13) / 2^14``) and
    adds z_out -- neither rescales from the input's to the output's scale (MNN 3.6.1)."""
    x = geometry.to_nchw(call.inputs[0], call.formats[0])
    sizes = call.inputs[1] if len(call.inputs) > 1 else None
    # what depends on the shapes, the size input and the zero points only: once per node and key
    key = ("interp", x.shape, call.impl, int(call.in_attrs[0].zero), int(call.out_attrs[0].zero)) + (
        () if sizes is None else (sizes.dtype.str, sizes.shape, sizes.tobytes()))
    plan = call.cache.get(key)
    if plan is None:
        plan = call.cache[key] = _interp_plan(call, x)
    kernel, args = plan
    return [geometry.from_nchw(np.ascontiguousarray(kernel(x, *args)), call.formats[0])]


def _interp_plan(call: Int8Call, x):
    """(kernel, its arguments after the codes) of an int8 Interp of ``x`` (NCHW codes)."""
    oh, ow, (hsc, hof), (wsc, wof) = _interp_positions(call, x)
    h, w = x.shape[2:]
    ys, xs = resize.source_positions(oh, hsc, hof), resize.source_positions(ow, wsc, wof)
    kind = int(call.params.resizeType)
    if kind in (resize.NEAREST, resize.NEAREST_ROUND):
        nearest_round = kind == resize.NEAREST_ROUND
        return kernel_table.form("resize_nearest", call.impl), (
            resize.nearest_index(h, ys, nearest_round), resize.nearest_index(w, xs, nearest_round))
    if kind != resize.BILINEAR:
        raise UnsupportedOpError(f"{call.name}: resizeType {kind} (cubic) has no int8 kernel here")
    y0, y1, fy = resize.bilinear_axis(h, ys)
    x0, x1, fx = resize.bilinear_axis(w, xs)
    return kernel_table.form("resize_bilinear_int8", call.impl), (
        int(call.in_attrs[0].zero), int(call.out_attrs[0].zero), y0, y1, *_bilinear_weights(fy),
        x0, x1, *_bilinear_weights(fx))


def bilinear_int8_ref(x, z_in: int, z_out: int, y0, y1, sfy, dfy, x0, x1, sfx, dfx) -> np.ndarray:
    """The reference form of kernel "resize_bilinear_int8": ``q - z_in`` interpolated along x with the
    weights * 128 into an int16 line, the two lines along y, ``(v +- 2^13) / 2^14`` (C division), the
    result an int8, then + z_out, stored as a byte."""
    q = x.astype(np.int32) - np.int32(z_in)
    rows = q[:, :, :, x0] * sfx.astype(np.int32) + q[:, :, :, x1] * dfx.astype(np.int32)
    rows = rows.astype(np.int16).astype(np.int32)                         # the int16 line buffer
    val = rows[:, :, y0] * sfy.astype(np.int32)[:, None] + rows[:, :, y1] * dfy.astype(np.int32)[:, None]
    half = np.int32(1 << 13)
    v = np.where(val < 0, -((half - val) >> 14), (val + half) >> 14)     # C division by 2^14
    v = v.astype(np.int8).astype(np.int32) + np.int32(z_out)             # int8, then + z_out
    return v.astype(np.int8)                                               # stored as a byte


# -------------------------------------------------------------------- dequantize / float / quantize

def _via_float(call: Int8Call):
    """Int8ToFloat with the input's attribute, the op's float kernel, FloatToInt8 with the output's."""
    deq, quant = kernel_table.form("dequantize", call.impl), kernel_table.form("quantize", call.impl)
    xs = [deq(q, *_sz(a)) if a is not None else q for q, a in zip(call.inputs, call.in_attrs)]
    ys = call.float_kernel(xs)
    return [quant(y, a.scale, a.zero, *a.qrange) for y, a in zip(ys, call.out_attrs)]


def softmax_rows_compiled(x: np.ndarray) -> np.ndarray:
    """The compiled form of kernel "softmax_rows_nofma" (``softmax_rows``'s bits)."""
    from ..kernels.eltwise import softmax_rows_nofma
    from ..ref.mnn_softmax import _EXP_P

    return softmax_rows_nofma(x, _EXP_P[0], _EXP_P[1], _EXP_P[4], _EXP_P[5], _EXP_P[6], _EXP_P[7])


@register(OpType.Softmax)
def softmax(call: Int8Call):
    """CPUSoftmax int8: CPUCastCreator INT8_TO_FLOAT, float softmax along the axis, FLOAT_TO_INT8.
    The float part is MNN's x86 one (``mnnlite.ref.mnn_softmax.softmax_rows``, no FMA as in MNN's int8 build) when the axis is last (or moved last, as
    CPUSoftmax transposes it); its other branch (inside > 8 and axis length < 8) uses the float op."""
    deq, quant = kernel_table.form("dequantize", call.impl), kernel_table.form("quantize", call.impl)
    x = deq(call.inputs[0], *_sz(call.in_attrs[0]))
    axis = call.params.axis if call.params is not None else 0
    axis = axis + x.ndim if axis < 0 else axis
    channel, inside = x.shape[axis], math.prod(x.shape[axis + 1:])
    if inside > 8 and channel < 8:
        y = call.float_kernel([x])[0]
    else:
        moved = np.moveaxis(x, axis, -1)
        rows = kernel_table.form("softmax_rows_nofma", call.impl)(np.ascontiguousarray(moved.reshape(-1, channel)))
        y = np.moveaxis(rows.reshape(moved.shape), -1, axis)
    out = call.out_attrs[0]
    return [quant(np.ascontiguousarray(y), out.scale, out.zero, *out.qrange)]


@register(OpType.LayerNorm)
def layer_norm(call: Int8Call):
    """CPULayerNorm int8: CPUCastCreator INT8_TO_FLOAT, MNNNorm, FLOAT_TO_INT8."""
    return _via_float(call)


@register(OpType.PReLU)
def prelu(call: Int8Call):
    """MNNReluWithSlopeChannelInt8 as the x86 build compiles it (Int8FunctionsOpt.cpp, MNN_USE_SSE: bytes
    stored as q + 128): ``v = (q - z_in) * s_in``, ``v *= slope[c]`` where negative,
    ``y = roundf(v * (1 / s_out) + (z_out + 128))`` clamped to ``[lo + 128, hi + 128]``, minus 128.  The
    128 offset moves the rounding of ties and of the float sum (palm detection: one code in a few
    thousand).  CPUPRelu clamps to the output's [min, max]; a single slope runs CPURelu, which clamps to
    the input's."""
    p = call.params
    x = geometry.to_nchw(call.inputs[0], call.formats[0])
    slope = np.asarray(p.slope, _F32).reshape(-1)
    (s_in, z_in), out = _sz(call.in_attrs[0]), call.out_attrs[0]
    lo, hi = (call.in_attrs[0] if len(slope) == 1 else out).qrange
    v = ((x.astype(np.int32) - int(z_in)).astype(_F32) * _F32(s_in)).astype(_F32)
    per_channel = slope if len(slope) == 1 else slope.reshape((1, -1) + (1,) * (x.ndim - 2))
    v = np.where(v < 0, (v * per_channel).astype(_F32), v)
    inv = _F32(1) / _F32(out.scale) if out.scale > 0 else _F32(0)
    y = ((v * inv).astype(_F32) + _F32(int(out.zero) + 128)).astype(_F32)
    q = np.clip(idst.roundf(y), lo + 128, hi + 128).astype(np.int32) - 128
    return [geometry.from_nchw(q.astype(np.int8), call.formats[0])]


@register(OpType.ReLU)
def relu(call: Int8Call):
    """CPURelu int8, slope 0 (only when input and output share one attribute): max(q, z_out) with
    ``_SSE_MNNReluInt8`` over whole 16-byte blocks of the tensor's memory; the last ``size % 16``
    bytes go through a scalar loop that compares the stored bytes (q + 128) as signed int8 with
    ``int8(z_out)`` (no offset): there a code q >= 0 becomes ``z_out - 128`` and a negative code is
    kept (MNN 3.6.1, x86)."""
    q, fmt = call.inputs[0], call.formats[0]
    z = int(call.out_attrs[0].zero)
    y = np.maximum(q, np.int8(z))
    packed = fmt == DataFormat.NC4HW4 and q.ndim >= 2
    mem = to_packed(y) if packed else y.reshape(-1).copy()
    tail = mem.size - mem.size % 16
    if tail < mem.size:
        src = (to_packed(q) if packed else q.reshape(-1))[tail:]
        stored = (src.astype(np.int16) + 128).astype(np.uint8).view(np.int8)     # q + 128 read as int8
        zero = np.int8(np.int16(z).astype(np.int8))
        out = np.where(stored > zero, stored, zero).view(np.uint8)
        mem[tail:] = (out.astype(np.int16) - 128).astype(np.int8)
    return [from_packed(mem, q.shape) if packed else mem.reshape(q.shape)]


@register(OpType.Scale)
def scale(call: Int8Call):
    """CPUScaleInt8: 15-bit fixed point (mnnlite.ref.int8.scale_int8_ref)."""
    p = call.params
    x = geometry.to_nchw(call.inputs[0], call.formats[0])
    bias = p.biasData if p.biasData is not None and len(p.biasData) else np.zeros(len(p.scaleData), _F32)
    (s_in, z_in), out = _sz(call.in_attrs[0]), call.out_attrs[0]
    y = R.scale_int8_ref(x, np.asarray(p.scaleData, _F32), np.asarray(bias, _F32), s_in, z_in,
                         _F32(out.scale), int(out.zero), *out.qrange)
    return [geometry.from_nchw(y, call.formats[0])]


__all__ = ["Int8Call", "INT8_KERNELS", "conv_weights_int8", "packed_int_output"]
