"""Checks a decoded model must pass before anything indexes tensors or reads op parameters.

The reader guarantees the bytes decode; this guarantees the graph makes sense: tensor indices exist, and
an op's parameter table is the one its type reads (MNN itself would reinterpret the wrong table).
"""
from __future__ import annotations

import math

from ..errors import FormatError
from .tables import OpType

T = OpType
# op type -> the parameter table(s) MNN reads for it (ops not listed accept any table or none)
EXPECTED_PARAM = {
    T.Input: "Input", T.Const: "Blob", T.TrainableParam: "Blob",
    T.Convolution: "Convolution2D", T.ConvolutionDepthwise: "Convolution2D",
    T.Deconvolution: "Convolution2D", T.DeconvolutionDepthwise: "Convolution2D",
    T.ConvInt8: "Convolution2D", T.DepthwiseConvInt8: "Convolution2D",
    T.Pooling: "Pool", T.Pooling3D: "Pool3D", T.ReLU: "Relu", T.ReLU6: "Relu6", T.PReLU: "PRelu",
    T.Scale: "Scale", T.BatchNorm: "BatchNorm", T.Eltwise: "Eltwise", T.BinaryOp: "BinaryOp",
    T.UnaryOp: "UnaryOp", T.Concat: "Axis", T.Softmax: "Axis", T.Interp: "Interp", T.Reshape: "Reshape",
    T.Permute: "Permute", T.Flatten: "Flatten", T.ConvertTensor: "TensorConvertInfo", T.Slice: "Slice",
    T.StridedSlice: "StridedSliceParam", T.Squeeze: "SqueezeParam", T.Unsqueeze: "SqueezeParam",
    T.GatherV2: ("GatherV2", "Axis"), T.Reduction: "ReductionParam", T.Pack: "PackParam", T.MatMul: "MatMul",
    T.BatchMatMul: "BatchMatMulParam", T.LayerNorm: "LayerNorm", T.InnerProduct: "InnerProduct",
    T.Cast: "CastParam", T.TopKV2: "TopKV2", T.ArgMax: "ArgMax", T.ArgMin: "ArgMax",
    T.DepthToSpace: "DepthSpaceParam", T.SpaceToDepth: "DepthSpaceParam", T.Padding: "PadParam",
    T.While: ("WhileParam", "LoopParam"), T.If: "IfParam", T.GridSample: "GridSample", T.Extra: "Extra",
}


def check_model(model) -> None:
    net = model.net
    graphs = [("main graph", net.tensorName, net.oplists, [], net.extraTensorDescribe)]
    for sub in net.subgraphs or []:
        graphs.append((f"subgraph {sub.name!r}", sub.tensors or [], sub.nodes or [],
                       [("inputs", sub.inputs), ("outputs", sub.outputs)], sub.extraTensorDescribe))
    for where, names, ops, lists, describe in graphs:
        count = len(names)
        for i, op in enumerate(ops):
            _check_op(model.path, where, i, op, count)
        for name, idx in lists:
            if idx is not None and idx.size and (idx.min() < 0 or idx.max() >= count):
                raise FormatError(f"{model.path}: {where}: {name} names a tensor outside 0..{count - 1}")
        for d in describe or []:
            if not 0 <= d.index < count:
                raise FormatError(f"{model.path}: {where}: extra tensor info for tensor {d.index}, "
                                  f"outside 0..{count - 1}")
            _check_quant_info(model.path, where, names[d.index], d.quantInfo)


def _check_quant_info(path, where, tensor: str, info) -> None:
    """A tensor's quant info feeds int8 casts and clamps (int(min), scale division): finite numbers only
    (a scale of 0 is legal: MNN's quantizer writes it for all-zero tensors)."""
    if info is None:
        return
    for field in ("scale", "zero", "min", "max"):
        value = getattr(info, field)
        if value is not None and not math.isfinite(value):
            raise FormatError(f"{path}: {where}: tensor {tensor!r}: quant info {field} is {value}, "
                              f"not a finite number")


def _check_op(path, where, i, op, count):
    for field in ("inputIndexes", "outputIndexes"):
        idx = getattr(op, field)
        if idx is not None and idx.size and (idx.min() < 0 or idx.max() >= count):
            raise FormatError(f"{path}: {where}, op {i} ({op.name!r}): {field} {idx.tolist()[:8]} "
                              f"names a tensor outside 0..{count - 1}")
    if op.type == T.Input and (op.outputIndexes is None or op.outputIndexes.size != 1):
        raise FormatError(f"{path}: {where}, op {i} ({op.name!r}): an Input op must have exactly one output")
    expected = EXPECTED_PARAM.get(op.type)
    if isinstance(expected, str):
        expected = (expected,)
    if expected is not None and op.main is not None and type(op.main).__name__ not in expected:
        raise FormatError(f"{path}: {where}, op {i} ({op.name!r}): a {op.type.name} op carries "
                          f"{type(op.main).__name__} parameters, expected {' or '.join(expected)}")
