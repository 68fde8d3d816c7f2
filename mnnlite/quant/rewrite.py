"""The quantized model: int8 conv weights, tensor quant info and unary lookup tables (docs/mnn-quantization.md §6.7, §8, §9.7-9.9).

``rewrite`` returns a new ``Model``; the source model is never touched.  The form is the one MNN's
quantizer writes and its runtime consumes (docs/mnn-format.md §3, §6.3, §11):

* each quantized conv: ``weight`` dropped, ``quanParameter`` = IDSTQuan (dense or sparse codes, alpha per
  channel, ``aMaxOrBits`` = bits, **``quantScale`` = 1**, ``scaleIn``/``scaleOut``), ``symmetricQuan`` with
  ``nbits``, ``clampMin/Max`` = ∓(2^(b-1)-1) and the zero points, the float ``bias`` kept,
  ``common.inputCount`` = the real input channel count, ``external``/``externalPath`` cleared;
* ``extraTensorDescribe``: one entry per quantized tensor, sorted by index; existing entries keep their
  other fields;
* ``Sigmoid``/``TanH`` ops become ``UnaryOp`` SIGMOID/TANH, and every UnaryOp (but ABS/NEG/SIGN) whose
  input and output are quantized gets its 255-entry ``tableInt8``.

Everything else (names, order, bizCode, outputName, uuid) is kept.  The EMA path uses the same writer
(asymmetric zero points, conv outputs with ``min = -128``) on the source graph instead of MNN's rebuilt
graph, so names, outputs and ``bizCode`` survive (MNN loses them, docs/mnn-quantization.md §14.11).  Like
MNN's, an EMA conv that does not read another quantized conv's output reads a private quantized copy of its
input (``input_copies``): MNN's FloatToInt8 leaves two ConvertTensor ops there (docs/mnn-quantization.md §9
steps 5-7), so the op that produced the input (a PReLU, a pooling, ...) keeps running in float.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..backend.rules import CONTROL_FLOW_OPS, UNARY_INT8_WITHOUT_TABLE
from ..format import idst
from ..format.tables import TABLE_CLASSES, DataFormat, DataType, OpType, UnaryOpOperation
from ..graph import Model

IDSTQuan = TABLE_CLASSES["IDSTQuan"]
QuantizedFloatParam = TABLE_CLASSES["QuantizedFloatParam"]
TensorConvertInfo = TABLE_CLASSES["TensorConvertInfo"]
TensorDescribe = TABLE_CLASSES["TensorDescribe"]
Op = TABLE_CLASSES["Op"]
TensorQuantInfo = TABLE_CLASSES["TensorQuantInfo"]
UnaryOp = TABLE_CLASSES["UnaryOp"]

U = UnaryOpOperation
# ComputeUnaryBuffer writes no table for backend.rules.UNARY_INT8_WITHOUT_TABLE (the int8 runtime handles
# them without one) ...
# ... and MNN's table builder only knows these (others crash it, docs/mnn-quantization.md §14.16; we leave them float).
TABLE_OPS = {U.SQUARE, U.RSQRT, U.EXP, U.COS, U.SIN, U.SIGMOID, U.TANH, U.TAN, U.ATAN, U.SQRT,
             U.RECIPROCAL, U.LOG1P, U.LOG, U.ACOSH, U.SINH, U.ASINH, U.ATANH, U.COSH, U.ERF, U.ERFC,
             U.ERFINV, U.EXPM1, U.ASIN, U.ACOS, U.HARDSWISH, U.GELU, U.SILU}
CONV_TYPES = (OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Deconvolution)


@dataclass(frozen=True)
class TensorQuant:
    """``TensorQuantInfo`` of one tensor: ``real = (q - zero) * scale``, codes in [min, max]."""

    scale: float
    zero: float = 0.0
    min: float = -127.0
    max: float = 127.0


@dataclass(frozen=True)
class ConvQuant:
    """What replaces one conv's float weights."""

    codes: np.ndarray              # int8 [O, K]: O = outputCount (chunks of weight.size / O)
    alpha: np.ndarray              # float32 [O]
    bits: int
    scale_in: float
    scale_out: float
    input_channels: int | None = None
    zero_in: int = 0
    zero_out: int = 0
    bias: np.ndarray | None = None     # replaces the bias (EMA: batch norm folded in)
    detect_sparse: bool = True         # the offline quantizer looks for sparse codes iff bits > 7
    output: int | None = None          # EMA: the conv now writes this tensor (BN / ReLU merged into it)
    activation: str | None = None      # EMA: "relu" / "relu6" merged from a following op


def encode_conv(conv) -> tuple:
    """(IDSTQuan, QuantizedFloatParam) for one ``ConvQuant`` (docs/mnn-quantization.md §8.2 steps 4-6)."""
    bits = int(conv.bits)
    kind, buffer = idst.encode(np.asarray(conv.codes, np.int8), bits, detect_sparse=conv.detect_sparse and bits > 7)
    quan = IDSTQuan(
        buffer=np.frombuffer(buffer, np.int8).copy(), alpha=np.asarray(conv.alpha, np.float32).copy(),
        type=kind, useInt32=False, quantScale=1.0, scaleIn=float(conv.scale_in), scaleOut=float(conv.scale_out),
        aMaxOrBits=bits, aMin=0, readType=0, has_scaleInt=False,
        shapeInt32=idst.needs_shape_int32(np.shape(conv.codes)), weightSize=0, scaleStorage=0)
    limit = (1 << (bits - 1)) - 1
    sym = QuantizedFloatParam(method=0, nbits=bits, zeroPoint=int(conv.zero_in), outputZeroPoint=int(conv.zero_out),
                              clampMin=-limit, clampMax=limit, outputDataType=int(DataType.DT_INT8))
    return quan, sym


def unary_table(op_type: int, s_in: float, z_in: float, s_out: float, z_out: float) -> np.ndarray | None:
    """``ComputeUnaryBuffer``: ``table[i + 127] = clamp(roundf(f((i - z_in) * s_in) / s_out) + z_out, ±127)``.

    ``f`` is our runtime's UnaryOp kernel (MNN's CPU semantics).  None where MNN has no table for the
    op, or where a scale is 0 (MNN would divide by zero).
    """
    from ..format.idst import roundf
    from ..ops.elementwise import unary

    if op_type not in TABLE_OPS or not s_in > 0 or not s_out > 0:
        return None
    i = np.arange(-127, 128, dtype=np.float32)
    x = ((i - np.float32(z_in)) * np.float32(s_in)).astype(np.float32)
    y = unary(int(op_type), x)
    with np.errstate(all="ignore"):
        q = roundf(y / np.float32(s_out))
    q = np.where(np.isfinite(q), q, np.where(q > 0, 127, -127))    # MNN's (int) cast of +-inf/NaN is UB
    val = np.trunc(np.clip(q, -2**31, 2**31 - 1).astype(np.int64) + np.float32(z_out))
    return np.clip(val, -127, 127).astype(np.int8)


def rewrite(model: Model, tensors: dict[int, TensorQuant], convs: dict[int, ConvQuant],
            tables: bool = True, drop_ops=(), input_copies=None) -> Model:
    """A quantized copy of ``model``.

    ``tensors``: tensor index -> quant info (main graph).  ``convs``: position of the op in the main
    graph's op list -> its int8 weights.  ``tables``: fill UnaryOp lookup tables (KL/ADMM path).
    ``drop_ops``: positions of ops merged into a conv (EMA: BatchNorm, ReLU), removed from the list.
    ``input_copies``: position of a conv -> quant info of the private copy of its input it then reads (EMA).
    """
    net = _owned_copy(model.net, convs, set(input_copies or ()))
    ops = net.oplists
    # no quant info on While/If outputs: MNN's runtime misreads it (backend/rules.py CONTROL_FLOW_OPS)
    flow_outputs = {int(i) for op in ops if op.type in CONTROL_FLOW_OPS and op.outputIndexes is not None
                    for i in op.outputIndexes}
    tensors = {t: q for t, q in tensors.items() if t not in flow_outputs}
    for pos, conv in sorted(convs.items()):
        _quantize_conv(ops[pos], conv)
    copies = {id(ops[pos]): q for pos, q in (input_copies or {}).items()}
    if drop_ops:
        drop = set(drop_ops)
        net.oplists = ops = [op for p, op in enumerate(ops) if p not in drop]
    if copies:
        tensors = dict(tensors)
        net.oplists = ops = _with_input_copies(net, ops, copies, tensors)
    for op in ops:
        if op.type in (OpType.Sigmoid, OpType.TanH):
            kind = U.SIGMOID if op.type == OpType.Sigmoid else U.TANH
            op.type = OpType.UnaryOp
            op.main = UnaryOp(opType=int(kind), T=0)   # MNN: a fresh UnaryOpT
    if tables:
        for op in ops:
            _fill_table(op, tensors)
    net.extraTensorDescribe = _describes(net.extraTensorDescribe, tensors)
    return Model(net, path=None)


# ops whose type or table rewrite sets (Sigmoid/TanH become UnaryOps, UnaryOps get lookup tables)
_RETYPED = (OpType.Sigmoid, OpType.TanH, OpType.UnaryOp)


def _owned_copy(net, convs: dict, rewired: set):
    """A copy of ``net`` that owns what ``rewrite`` changes: the convs it quantizes or rewires (deep
    copies, less their float weights), the ops it retypes or gives tables, the tensor describes (their
    quant info); every other op is shared with ``net``, as equalize.py and simulate.py share them (a deep
    copy of the whole net was most of an accurate-flow build on small models: silero VAD)."""
    result = copy.copy(net)
    memo = _replaced_weights(net.oplists, convs)
    result.oplists = [copy.deepcopy(op, memo) if p in convs or p in rewired or op.type in _RETYPED else op
                      for p, op in enumerate(net.oplists)]
    if net.extraTensorDescribe is not None:
        result.extraTensorDescribe = [copy.copy(d) for d in net.extraTensorDescribe]
    return result


def _replaced_weights(ops, convs: dict) -> dict:
    """A ``deepcopy`` memo that leaves out the float weight arrays of the convs ``_quantize_conv`` gives
    int8 weights (it sets ``weight`` to None): copying them is most of the copy's time (MiniLM: 0.6 s
    of accuracy control's builds).  An array another op also holds is copied as before."""
    mine = {id(ops[pos].main.weight) for pos in convs
            if ops[pos].main is not None and isinstance(getattr(ops[pos].main, "weight", None), np.ndarray)}
    mine -= {id(getattr(op.main, "weight", None)) for p, op in enumerate(ops) if p not in convs and op.main is not None}
    return dict.fromkeys(mine)


def _quantize_conv(op, conv: ConvQuant) -> None:
    main = op.main
    quan, sym = encode_conv(conv)
    main.quanParameter = quan
    main.symmetricQuan = sym
    main.weight = None
    main.external = None
    op.externalPath = None
    if conv.bias is not None:
        main.bias = np.asarray(conv.bias, np.float32).copy()
    if conv.input_channels is not None and main.common is not None:
        main.common.inputCount = int(conv.input_channels)
    if conv.output is not None:
        op.outputIndexes = np.array([conv.output], np.int32)
    if conv.activation == "relu":
        main.common.relu = True
    elif conv.activation == "relu6":
        main.common.relu6 = True


def _with_input_copies(net, ops, copies: dict, tensors: dict) -> list:
    """The op list with, before each conv of ``copies`` (op id -> quant info), MNN's two ConvertTensor ops
    (NCHW -> NC4HW4, as its EMA graph's ``_Convert`` before and after the FloatToInt8): the first one's
    output carries the quant info, the conv reads the second one's.  New tensors go after the existing
    ones, so every index already in the net stays valid."""
    result = []
    for op in ops:
        q = copies.get(id(op))
        if q is not None:
            source = int(op.inputIndexes[0])
            quantized, converted = len(net.tensorName), len(net.tensorName) + 1
            net.tensorName = list(net.tensorName) + [f"{op.name}__int8_input", f"{op.name}__int8_input_nc4hw4"]
            for name, src, dst in ((f"{op.name}__int8_input", source, quantized),
                                   (f"{op.name}__int8_input_nc4hw4", quantized, converted)):
                result.append(Op(name=name, type=OpType.ConvertTensor, inputIndexes=np.array([src], np.int32),
                                 outputIndexes=np.array([dst], np.int32),
                                 main=TensorConvertInfo(source=int(DataFormat.NCHW), dest=int(DataFormat.NC4HW4))))
            tensors[quantized] = q
            op.inputIndexes = np.array([converted] + [int(i) for i in op.inputIndexes[1:]], np.int32)
        result.append(op)
    return result


def _fill_table(op, tensors) -> None:
    if op.type != OpType.UnaryOp or op.main is None:
        return
    kind = int(op.main.opType)
    if kind in UNARY_INT8_WITHOUT_TABLE:
        return
    ins, outs = list(op.inputIndexes or []), list(op.outputIndexes or [])
    if not ins or not outs or int(outs[0]) not in tensors or int(ins[0]) not in tensors:
        return
    qi, qo = tensors[int(ins[0])], tensors[int(outs[0])]
    table = unary_table(kind, qi.scale, qi.zero, qo.scale, qo.zero)
    if table is not None:
        op.main.tableInt8 = table


def _describes(existing, tensors: dict[int, TensorQuant]) -> list | None:
    by_index = {int(d.index): d for d in existing or []}
    for t, q in tensors.items():
        info = TensorQuantInfo(scale=float(q.scale), zero=float(q.zero), min=float(q.min), max=float(q.max),
                               type=int(DataType.DT_INT8))
        if t in by_index:
            by_index[t].quantInfo = info
        else:
            by_index[t] = TensorDescribe(index=t, quantInfo=info)
    return [by_index[t] for t in sorted(by_index)] or None


__all__ = ["TensorQuant", "ConvQuant", "rewrite", "encode_conv", "unary_table", "TABLE_OPS", "CONV_TYPES"]
