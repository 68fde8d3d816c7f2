"""What a model holds, as plain data: inputs, outputs, op histogram, parameters, weight encodings."""
from __future__ import annotations

import os
from collections import Counter

import numpy as np

from .format.tables import enum_name
from .graph import Model, OpType
from .layout import declared_layouts

_CONV_TYPES = {OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Deconvolution,
               OpType.DeconvolutionDepthwise}
_IDST_KIND = {1: "dense", 2: "sparse", 3: "fp16", 4: "raw int8"}


def _nbytes(*arrays) -> int:
    return sum(a.nbytes for a in arrays if a is not None)


def _size(*arrays) -> int:
    return sum(a.size for a in arrays if a is not None)


def conv_weight_encoding(conv) -> dict:
    """How a Convolution2D stores its weights: float, fp16, or quantized codes (bits, scales)."""
    q = conv.quanParameter
    if q is None:
        return {"storage": "float32"}
    if q.type == 3:
        return {"storage": "fp16"}
    out_channels = conv.common.outputCount if conv.common is not None else 0
    alpha = q.alpha if q.alpha is not None else q.alphaFp16
    n_alpha = 0 if alpha is None else alpha.size
    asymmetric = q.readType != 0 or (q.type == 4 and q.aMin == 0 and abs(q.quantScale) < 1e-6)
    per_channel = n_alpha >= (2 if asymmetric else 1) * max(out_channels, 2)
    offline = bool(q.scaleIn) or bool(q.scaleOut)
    return {
        "storage": "int8" if offline else "weight-quantized",
        "encoding": _IDST_KIND.get(q.type, f"type {q.type}") + (" with index" if q.index is not None else ""),
        "bits": int(q.aMaxOrBits) if q.aMaxOrBits else 8,
        "symmetric": not asymmetric,
        "per_channel": per_channel,
        "scale_in": float(q.scaleIn),
        "scale_out": float(q.scaleOut),
    }


def _param_stats(op) -> tuple[int, int]:
    """(parameter count, stored bytes) of one op's weights."""
    p = op.main
    if p is None:
        return 0, 0
    name = type(p).__name__
    if name == "Blob" and op.type in (OpType.Const, OpType.TrainableParam):
        arrays = (p.float32s, p.int32s, p.int8s, p.uint8s, p.int64s)
        count = int(np.prod(p.dims)) if p.dims is not None and len(p.dims) else _size(*arrays)
        return count, _nbytes(*arrays)
    if name == "Convolution2D":
        c, q = p.common, p.quanParameter
        count = _size(p.weight, p.bias)
        if p.weight is None and c is not None:
            group = max(int(c.group), 1)
            count = int(c.outputCount) * int(c.inputCount) // group * int(c.kernelX) * int(c.kernelY)
            count += _size(p.bias)
        extra = (q.buffer, q.alpha, q.alphaFp16, q.index) if q is not None else ()
        return count, _nbytes(p.weight, p.bias, *extra)
    arrays = [getattr(p, f) for f in ("weight", "bias", "scaleData", "biasData", "gamma", "beta", "slope")
              if isinstance(getattr(p, f, None), np.ndarray)]
    return _size(*arrays), _nbytes(*arrays)


def _op_types(ops) -> dict:
    histogram = Counter(enum_name("OpType", op.type) for op in ops)
    return dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])))


def describe(model: Model) -> dict:
    """Everything ``mnnlite info`` prints, as a JSON-ready dict."""
    g = model.graph
    inputs = []
    for op in g.ops:
        if op.type != OpType.Input:
            continue
        p = op.main
        inputs.append({
            "name": g.tensors[int(op.outputIndexes[0])],
            "shape": [int(d) for d in p.dims] if p is not None and p.dims is not None else [],
            "dtype": enum_name("DataType", p.dtype if p is not None else 1),
            "layout": enum_name("MNN_DATA_FORMAT", p.dformat if p is not None else 0),
        })
    histogram = _op_types(g.ops)      # main graph only: subgraph ops are counted with their subgraph
    params = nbytes = 0
    convs = []
    for graph, op in model.all_ops():
        count, size = _param_stats(op)
        params += count
        nbytes += size
        if op.type in _CONV_TYPES and type(op.main).__name__ == "Convolution2D":
            enc = conv_weight_encoding(op.main)
            if enc["storage"] != "float32":
                convs.append({"op": op.name, "type": enum_name("OpType", op.type), "graph": graph.name, **enc})
    net = model.net
    return {
        "file": model.path,
        "file_bytes": os.path.getsize(model.path) if model.path and os.path.exists(model.path) else None,
        "version": net.extraInfo.version if net.extraInfo is not None else None,
        "biz_code": net.bizCode,
        "source": enum_name("NetSource", net.sourceType),
        "usage": enum_name("Usage", net.usage),
        "inputs": inputs,
        "outputs": g.output_names(),
        # the MNN layout each output has (NHWC outputs of TFLite models are returned so by default)
        "output_layouts": declared_layouts(g)[1],
        "ops": len(g.ops),
        "op_types": histogram,
        "parameters": params,
        "parameter_bytes": nbytes,
        "quantized_tensors": len(g.quant_info) + sum(len(s.quant_info) for s in model.subgraphs.values()),
        "compressed_convolutions": convs,
        "external_weights": model.external_weights,
        "subgraphs": [{"name": s.name, "ops": len(s.ops), "op_types": _op_types(s.ops), "inputs": s.input_names(),
                       "outputs": s.output_names()} for s in model.subgraphs.values()],
    }
