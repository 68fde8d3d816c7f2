"""Graph sources: Input, Const and TrainableParam, the ops that put a tensor into the graph.

Tensor element types follow MNN's ``Tensor::setType`` (source/core/Tensor.cpp): bool and int64 tensors
are int32, double is float32; a DT_HALF constant is widened to float32 when loaded (InitNet.cpp).
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError
from ..format.tables import DataFormat, DataType, OpType
from .registry import OpCall, register

# DataType -> numpy dtype of the runtime tensor (Tensor::setType)
_RUNTIME_DTYPE = {
    DataType.DT_FLOAT: np.float32, DataType.DT_DOUBLE: np.float32, DataType.DT_HALF: np.float32,
    DataType.DT_BFLOAT16: np.float32, DataType.DT_INT32: np.int32, DataType.DT_QINT32: np.int32,
    DataType.DT_INT64: np.int32, DataType.DT_BOOL: np.int32, DataType.DT_INT8: np.int8,
    DataType.DT_QINT8: np.int8, DataType.DT_UINT8: np.uint8, DataType.DT_QUINT8: np.uint8,
    DataType.DT_INT16: np.int16, DataType.DT_QINT16: np.int16, DataType.DT_UINT16: np.uint16,
    DataType.DT_QUINT16: np.uint16,
}

# MNN's ONNX converter clamps int64 constants to +-2^30 when it narrows them (onnxOpConverter.cpp _limit)
INT64_LIMIT = 1 << 30


def numpy_dtype(data_type) -> np.dtype:
    """The element type MNN gives a tensor declared with ``data_type``."""
    try:
        return np.dtype(_RUNTIME_DTYPE[DataType(data_type)])
    except (KeyError, ValueError):
        raise FormatError(f"tensors of data type {data_type} are not supported") from None


@register(OpType.Input)
def input_(call: OpCall):
    """The runtime binds the value (already checked and in the tensor's own layout) as the only input."""
    call.out_formats = [call.formats[0]]
    return [call.inputs[0]]


@register(OpType.Const, OpType.TrainableParam)
def const(call: OpCall):
    blob = call.op.main
    if blob is None:
        raise FormatError(f"op {call.op.name!r} ({OpType(call.op.type).name}) has no Blob parameter")
    call.out_formats = [DataFormat(blob.dataFormat)]
    return [blob_array(blob, f"op {call.op.name!r}")]


def blob_array(blob, where: str) -> np.ndarray:
    """The tensor a ``Blob`` holds, as MNN loads it (InitNet.cpp initConstTensors)."""
    dims = tuple(int(d) for d in blob.dims) if blob.dims is not None else ()
    count = int(np.prod(dims, dtype=np.int64))
    dt = DataType(blob.dataType)
    data = _blob_data(blob, dt)
    if data is None or (data.size == 0 and count):
        if count == 0:
            return np.zeros(dims, numpy_dtype(dt))
        raise FormatError(f"{where}: constant of shape {dims} and type {dt.name} holds no data")
    if data.size != count:
        raise FormatError(f"{where}: constant of shape {dims} needs {count} values, the file has {data.size}")
    return data.reshape(dims)


def _blob_data(blob, dt):
    if dt in (DataType.DT_FLOAT, DataType.DT_DOUBLE):
        return _as(blob.float32s, np.float32)
    if dt == DataType.DT_HALF:
        return None if blob.uint8s is None else _bytes(blob.uint8s).view("<f2").astype(np.float32)
    if dt == DataType.DT_BFLOAT16:
        if blob.uint8s is None:
            return None
        return (_bytes(blob.uint8s).view("<u2").astype(np.uint32) << 16).view(np.float32)
    if dt == DataType.DT_INT64:
        if blob.int64s is not None:
            return np.clip(np.asarray(blob.int64s, np.int64), -INT64_LIMIT, INT64_LIMIT).astype(np.int32)
        return _as(blob.int32s, np.int32)
    if dt in (DataType.DT_INT32, DataType.DT_QINT32, DataType.DT_BOOL):
        if blob.int32s is None and blob.uint8s is not None:
            return _as(blob.uint8s, np.int32)
        return _as(blob.int32s, np.int32)
    if dt in (DataType.DT_INT8, DataType.DT_QINT8):
        return _as(blob.int8s, np.int8)
    if dt in (DataType.DT_UINT8, DataType.DT_QUINT8):
        return _as(blob.uint8s, np.uint8)
    raise FormatError(f"constants of data type {dt.name} are not supported")


def _as(values, dtype):
    return None if values is None else np.asarray(values).astype(dtype, copy=False)


def _bytes(values) -> np.ndarray:
    data = np.ascontiguousarray(np.asarray(values, np.uint8))
    if data.size % 2:
        raise FormatError(f"a 16-bit float constant has an odd number of bytes ({data.size})")
    return data
