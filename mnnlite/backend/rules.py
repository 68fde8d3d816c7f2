"""The facts about MNN 3.6.1's CPU backend that ``mnnlite.backend`` relies on, each stated once with its source.

Op families are keyed by ``OpType``; functions take an op type (or an op, where MNN reads its parameters).
Checked against the official runtime by tests/quant/test_pipeline_tracking.py (the commands it executes),
tests/int8/test_plan_vs_mnn.py (its int8 decisions) and the oracle tests of tests/quant.
"""
from __future__ import annotations

from ..format.tables import DataFormat, DataType, OpType, UnaryOpOperation

NCHW, NHWC, NC4HW4 = DataFormat.NCHW, DataFormat.NHWC, DataFormat.NC4HW4


def ints(v) -> list[int]:
    """A flatbuffer index vector (or None) as a list of ints."""
    return [] if v is None else [int(x) for x in v]


# ------------------------------------------------------------------------------------------ content
# OpCommonUtils::opNeedContent: inputs whose data an op never reads (only their shape).
_NO_CONTENT_ALL = {OpType.ZerosLike, OpType.ZeroGrad, OpType.Shape, OpType.Rank, OpType.Const, OpType.Size,
                   OpType.PriorBox}
_NO_CONTENT_INPUT1 = {OpType.Interp, OpType.Crop, OpType.Reshape, OpType.Reduction, OpType.Resize}


def need_content(op_type, index: int) -> bool:
    """MNN's ``OpCommonUtils::opNeedContent``: whether an op of this type reads input ``index``'s data."""
    if op_type in _NO_CONTENT_ALL:
        return False
    if op_type in _NO_CONTENT_INPUT1 and index == 1:
        return False
    return not (op_type == OpType.GridSample and index == 2)


# SizeComputer::needInputContent: inputs read at shape-computation time (they become constants).
_SHAPE_INPUTS = {
    OpType.BatchToSpaceND: (1, 2), OpType.BroadcastTo: (1,), OpType.Col2Im: (1,),
    OpType.CosineSimilarity: (2,), OpType.CropAndResize: (3,), OpType.ExpandDims: (1,), OpType.Fill: (0,),
    OpType.GatherV2: (2,), OpType.GridSample: (2,), OpType.Interp: (1,), OpType.Interp3D: (1,),
    OpType.LinSpace: (2,), OpType.NonMaxSuppressionV2: (2, 3), OpType.OneHot: (1,), OpType.Padding: (1,),
    OpType.RandomUniform: (0,), OpType.RandomNormal: (0,), OpType.Range: (0, 1, 2), OpType.Reduction: (1,),
    OpType.Reshape: (1,), OpType.QuantizedReshape: (1,), OpType.ScatterNd: (2,), OpType.Segment: (1,),
    OpType.SetDiff1D: (0, 1), OpType.Slice: (1,), OpType.SliceTf: (1, 2), OpType.SpaceToBatchND: (1, 2),
    OpType.Tile: (1,), OpType.TopKV2: (1, 2), OpType.Transpose: (1,), OpType.Unique: (0,),
    OpType.Where: (0,), OpType.CumSum: (1,),
}
STRIDED_SLICE_FROM_TF = 0       # StridedSliceParam.fromType of TensorFlow-style begin/end/strides inputs


def shape_inputs(op) -> tuple[int, ...]:
    """MNN's ``SizeComputer::needInputContent``: inputs whose values decide output shapes."""
    n = len(ints(op.inputIndexes))
    if op.type == OpType.Deconvolution and op.main is not None and op.main.common is not None \
            and op.main.common.hasOutputShape:
        return (n - 1,)
    if n > 1 and op.type in (OpType.Squeeze, OpType.Unsqueeze, OpType.ReverseSequence, OpType.Reverse):
        return (1,)
    if op.type == OpType.StridedSlice and op.main is not None and type(op.main).__name__ == "StridedSliceParam":
        if op.main.fromType == STRIDED_SLICE_FROM_TF:
            return () if n == 5 else (1, 2, 3)
        return (1, 2, 3, 4)
    return _SHAPE_INPUTS.get(op.type, ())


def skips_forced_constants(op) -> bool:
    """GeometryComputerUtils::buildConstantTensors: a Where without its Extra parameter never forces its
    shape input constant ("for compability old model")."""
    return op.type == OpType.Where and type(op.main).__name__ != "Extra"


# ------------------------------------------------------------------------------------------ geometry
# Pure data movement (source/geometry: GeometryConcat, GeometryReshape, GeometryPermute, GeometrySlice,
# GeometryTile, ...): the output is a view (regions) over its inputs; no command runs for the op.
_VIEW_ALL_INPUTS = {OpType.Concat, OpType.Pack, OpType.QuantizedConcat}
# makeFullRef (GeometryReshape.cpp): the output copies the regions of its input when that input is
# virtual itself (the others reference their input tensor)
FULL_REF_OPS = frozenset({OpType.Reshape, OpType.Squeeze, OpType.Unsqueeze, OpType.ExpandDims, OpType.Flatten,
                          OpType.Identity, OpType.QuantizedReshape})
VIEW_OPS = frozenset(_VIEW_ALL_INPUTS | FULL_REF_OPS | {
    OpType.ConvertTensor, OpType.Permute, OpType.Transpose, OpType.Slice, OpType.SliceTf, OpType.StridedSlice,
    OpType.Unpack, OpType.Tile, OpType.BroadcastTo, OpType.DepthToSpace, OpType.SpaceToDepth, OpType.Crop,
    OpType.Padding, OpType.Reverse, OpType.ReverseSequence})
TRANSPOSING_OPS = frozenset({OpType.Permute, OpType.Transpose})
RESHAPING_OPS = frozenset({OpType.Reshape, OpType.Flatten, OpType.Squeeze, OpType.Unsqueeze})


def region_inputs(op_type, count: int) -> list[int]:
    """Positions of a data-movement op's inputs its regions read: every content input of a Concat/Pack,
    the first input of the others (the rest are read at shape time: slice points, pads, perms, multiples)."""
    if op_type in _VIEW_ALL_INPUTS:
        return [k for k in range(count) if need_content(op_type, k)]
    return [0] if count else []


# Ops MNN's CPU backend runs on NC4HW4 only: other layouts get converted copies of input 0 and output 0
# around them (GeometryConvUtils::computeSingle, GeometryImageOp).
NC4HW4_ONLY = frozenset({OpType.Convolution, OpType.Deconvolution, OpType.ConvolutionDepthwise, OpType.Pooling,
                         OpType.Interp})


# ------------------------------------------------------------------------------------------ int8
# Command types along which quant attributes spread (Pipeline.cpp _getQuantPropagateOp, Compiler_Loop).
PROPAGATE_TYPES = frozenset({"Raster", "ReLU", "ReLU6", "Pooling", "Interp", "CropAndResize", "ROIPooling"})
# CPUUnary: these run in int8 without a lookup table (dequantize, apply, requantize); every other
# UnaryOp needs the table the quantizer writes (docs/mnn-quantization.md §13.1).
UNARY_INT8_WITHOUT_TABLE = frozenset({UnaryOpOperation.NEG, UnaryOpOperation.ABS, UnaryOpOperation.SIGN})
QUANT_TYPE = DataType.DT_INT8           # TensorDescribe.quantInfo.type MNN's CPU backend quantizes to
# Control flow.  MNN's Module API runs a model with While/If as separate modules: the straight-line parts of
# the main graph as sessions, each While/If with its body (PipelineModule).  Quant info on the *outputs* of a
# While/If can be misread there: the zoo LSTM's KL file (an LSTM and a bidirectional GRU, both While loops,
# their input projections int8) gives the GRU outputs cosine 0.38 / 0.27 to the float model in the official
# runtime, 0.9996 / 0.9995 with that quant info removed, where mnnlite's int8 runtime then agrees with it
# (tests/int8/test_control_flow_int8.py).  ddddocr OCR's KL file, with the same marks, is read correctly: the
# condition was not isolated, so the quantizer never writes them.  Quant info on their inputs is fine.
CONTROL_FLOW_OPS = frozenset({OpType.While, OpType.If})
# Op types that only exist in quantized files (offline-quantized convs and the explicit casts)
INT8_OP_TYPES = frozenset({OpType.ConvInt8, OpType.DepthwiseConvInt8, OpType.EltwiseInt8, OpType.FloatToInt8,
                           OpType.Int8ToFloat})
