"""The one place that decides in which order a model's inputs and outputs cross the API.

MNN tensors carry a layout (``Blob.dataFormat`` / ``Input.dformat``): NCHW, NHWC or NC4HW4.  Models
converted from TFLite (and TensorFlow) declare NHWC inputs and produce NHWC outputs; ONNX/Caffe models
declare NCHW (or NC4HW4) ones.  Two conventions exist in MNN's own APIs:

* ``"model"`` (the default everywhere in mnnlite): every tensor is exchanged in its declared layout, an
  NHWC input as ``[N, H, W, C]``, an NHWC output as MNN gives it.  This is what MNN's Module / Express API
  does (``MNN.nn.load_module_from_file``: an NHWC input ``Variable`` takes ``[1, 128, 128, 3]``, a
  BlazeFace output comes back ``[1, 896, 16]``; checked against the mnn 3.6.1 wheel), and what MNN's
  quantizer feeds (``calibration.cpp`` builds ``_Input(shape, inputs[0].order)`` with the model's own
  order: ``[1, H, W, C]`` for NHWC inputs on the KL/ADMM path, ``[batch, d1, d2, d3]`` from the
  declared dims on the EMA path).  NC4HW4 is NCHW with packed channels, exchanged as NCHW.
* ``"nchw"``: every tensor of rank >= 3 is exchanged in Caffe (NCHW) order, what the Session API does
  with ``Tensor_DimensionType_Caffe`` host tensors (an NHWC tensor crosses as ``moveaxis(-1, 1)`` of
  itself; Tensor.cpp, CPUTensorConvert.cpp).

Inside the runtime each tensor keeps its MNN layout (NHWC arrays for NHWC tensors); the functions here
convert at the boundary only.
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .format.tables import DataFormat, OpType, enum_name

LAYOUTS = ("model", "nchw")
DEFAULT_LAYOUT = "model"

_NHWC = DataFormat.NHWC


def check_layout(layout) -> str:
    """``layout`` lower-cased if it is one of LAYOUTS; ConfigError (one line) otherwise."""
    name = layout.lower() if isinstance(layout, str) else layout
    if name not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(repr(x) for x in LAYOUTS)}, not {layout!r}")
    return name


def _format(fmt) -> DataFormat:
    """A DataFormat from a member, its int value or its name ("NHWC")."""
    return DataFormat[fmt] if isinstance(fmt, str) else DataFormat(fmt)


def _moved(fmt, rank: int, layout: str) -> bool:
    """Whether a tensor of MNN layout ``fmt`` and this rank crosses the API transposed."""
    return layout == "nchw" and _format(fmt) == _NHWC and rank >= 3


def exchange_name(fmt, rank: int, layout: str) -> str:
    """The order in which such a tensor (layout ``fmt``: member, value or name) is fed or returned:
    "NHWC" or "NCHW"."""
    return "NHWC" if _format(fmt) == _NHWC and rank >= 3 and layout == "model" else "NCHW"


def exchange_dims(dims, fmt, layout: str) -> list:
    """A tensor's declared dims (in its own layout) in the order it is exchanged."""
    dims = list(dims)
    if _moved(fmt, len(dims), layout):
        return [dims[0], dims[-1], *dims[1:-1]]
    return dims


def to_tensor(array: np.ndarray, fmt, layout: str) -> np.ndarray:
    """A fed array (exchange order) as the tensor's own layout."""
    if _moved(fmt, array.ndim, layout):
        return np.ascontiguousarray(np.moveaxis(array, 1, -1))
    return array


def from_tensor(array: np.ndarray, fmt, layout: str) -> np.ndarray:
    """A tensor's array (own layout) in exchange order."""
    if _moved(fmt, array.ndim, layout):
        return np.moveaxis(array, -1, 1)
    return array


# ----------------------------------------------------------------------------- static tensor layouts

# Ops whose output MNN keeps in NC4HW4 (GeometryImageOp, convolution family).
NC4HW4_OUTPUT_OPS = frozenset({
    OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Deconvolution, OpType.DeconvolutionDepthwise,
    OpType.Pooling, OpType.Pooling3D, OpType.Interp, OpType.Interp3D, OpType.Resize, OpType.ConvInt8,
    OpType.DepthwiseConvInt8,
})


def op_output_format(op, input_formats, input_ranks) -> int:
    """The MNN layout of an op's outputs (``TensorUtils::getDescribe(output)->dimensionFormat`` after the
    op's SizeComputer): the Input's ``dformat``, a Const's ``dataFormat``, ConvertTensor's ``dest``,
    NC4HW4 for conv/pool/interp, a BinaryOp takes that of its higher-rank input (ShapeBinaryOp.cpp), the
    rest that of their first input.  ``input_ranks`` may hold None for unknown ranks."""
    t = op.type
    if t == OpType.Input:
        return int(op.main.dformat) if op.main is not None else int(DataFormat.NC4HW4)
    if t == OpType.Const or t == OpType.TrainableParam:
        return int(op.main.dataFormat) if op.main is not None and op.main.dataFormat is not None \
            else int(DataFormat.NCHW)
    if t == OpType.ConvertTensor:
        if op.main is None:         # the runtime refuses it the same way (format/structure.py)
            from .format.structure import check_op
            check_op(op, "model")
        return int(op.main.dest)
    if t in NC4HW4_OUTPUT_OPS:
        return int(DataFormat.NC4HW4)
    if not input_formats:
        return int(DataFormat.NCHW)
    if t == OpType.BinaryOp and len(input_formats) == 2:
        r0, r1 = input_ranks[0], input_ranks[1]
        if r0 is not None and r1 is not None and r0 < r1:
            return int(input_formats[1])
    return int(input_formats[0])


def graph_formats(graph) -> dict[int, int]:
    """Tensor index -> MNN layout for every tensor of ``graph``, without running it.

    Ranks are known only for inputs and constants (declared dims); a BinaryOp between two tensors of
    unknown rank keeps its first input's layout, which is MNN's rule unless the second has a higher rank
    (a BinaryOp whose first input is a rank-unknown activation of lower rank than the second: rare).
    """
    formats: dict[int, int] = {}
    ranks: dict[int, int | None] = {}
    for op in graph.ops:
        ins = [int(i) for i in (op.inputIndexes if op.inputIndexes is not None else ())]
        fmt = op_output_format(op, [formats.get(i, int(DataFormat.NCHW)) for i in ins],
                               [ranks.get(i) for i in ins])
        rank = None
        if op.type in (OpType.Input, OpType.Const, OpType.TrainableParam) and op.main is not None:
            dims = op.main.dims
            rank = len(dims) if dims is not None else None
        for o in (op.outputIndexes if op.outputIndexes is not None else ()):
            formats[int(o)] = fmt
            ranks[int(o)] = rank
    return formats


def declared_layouts(graph) -> tuple[dict[str, str], dict[str, str]]:
    """({input name: layout name}, {output name: layout name}) as the file declares them."""
    formats = graph_formats(graph)
    # a damaged file may hold any number there: its text, never an exception (the file reader's contract)
    name = lambda i: enum_name("MNN_DATA_FORMAT", formats.get(int(i), int(DataFormat.NCHW)))   # noqa: E731
    return ({graph.tensors[int(i)]: name(i) for i in graph.inputs},
            {graph.tensors[int(i)]: name(i) for i in graph.outputs})




def input_specs(model, layout: str) -> list:
    """The model's inputs as the calibration / validation data must be built (``quant.dataset.InputSpec``,
    file order): declared dims and layout name in the exchange order of ``layout``."""
    from .ops.const import numpy_dtype
    from .quant.dataset import InputSpec

    layout = check_layout(layout)
    specs = []
    for op in model.graph.ops:
        if op.type != OpType.Input:
            continue
        p = op.main
        dims = [int(d) for d in p.dims] if p is not None and p.dims is not None else []
        fmt = DataFormat(p.dformat if p is not None else DataFormat.NC4HW4)
        dtype = numpy_dtype(p.dtype if p is not None else 1)
        specs.append(InputSpec(model.graph.tensors[int(op.outputIndexes[0])],
                               tuple(exchange_dims(dims, fmt, layout)), exchange_name(fmt, len(dims), layout),
                               dtype.name))
    return specs


__all__ = ["LAYOUTS", "DEFAULT_LAYOUT", "check_layout", "exchange_name", "exchange_dims", "to_tensor",
           "from_tensor", "op_output_format", "graph_formats", "declared_layouts", "input_specs"]
