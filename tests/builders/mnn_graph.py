"""Write an MNN graph op by op with mnnlite's own tables, to reach what the ONNX converter never emits
(TF masks, NHWC tensors, Raster regions, DT_HALF constants, quant attributes on single ops, ...)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mnnlite.format.model_io import save_model
from mnnlite.format.tables import TABLE_CLASSES as T, DataFormat, OpType
from mnnlite.graph import Model


class NetBuilder:
    """``b.input(...)``, ``b.const(...)``, ``b.op(...)``, ``b.quant(...)`` (a TensorDescribe), ``b.subgraph(...)``,
    ``b.save(path, outputs)``."""

    def __init__(self):
        self.tensors: list[str] = []
        self.ops: list = []
        self.subgraphs: list = []
        self.describes: list = []

    def index(self, name: str) -> int:
        if name not in self.tensors:
            self.tensors.append(name)
        return self.tensors.index(name)

    def input(self, name, dims, dtype=1, dformat=DataFormat.NCHW, fmt=DataFormat.NHWC):
        """An Input op declaring layout ``dformat``; ``fmt`` is the op's defaultDimentionFormat."""
        main = T["Input"](dims=np.array(dims, np.int32), dtype=dtype, dformat=int(dformat))
        return self.op(OpType.Input, [], [name], main, fmt=fmt)

    def const(self, name, array, dformat=DataFormat.NCHW, data_type=None):
        a = np.asarray(array)
        blob = T["Blob"](dims=np.array(a.shape, np.int32), dataFormat=int(dformat))
        if data_type is not None:
            blob.dataType = data_type
            if data_type == 19:        # DT_HALF: raw IEEE half bytes
                blob.uint8s = np.frombuffer(a.astype("<f2").tobytes(), np.uint8).copy()
            elif data_type == 9:
                blob.int64s = a.astype(np.int64)
            elif data_type == 6:
                blob.int8s = a.astype(np.int8)
            elif data_type == 4:
                blob.uint8s = a.astype(np.uint8)
        elif a.dtype.kind == "f":
            blob.dataType, blob.float32s = 1, a.astype(np.float32).reshape(-1)
        else:
            blob.dataType, blob.int32s = 3, a.astype(np.int32).reshape(-1)
        return self.op(OpType.Const, [], [name], blob)

    def op(self, op_type, inputs, outputs, main=None, fmt=DataFormat.NHWC, name=None):
        ins = [self.index(n) for n in inputs]
        outs = [self.index(n) for n in outputs]
        op = T["Op"](type=int(op_type), name=name or outputs[0], main=main, defaultDimentionFormat=int(fmt),
                     inputIndexes=np.array(ins, np.int32), outputIndexes=np.array(outs, np.int32))
        self.ops.append(op)
        return outputs[0] if len(outputs) == 1 else outputs

    def quant(self, name, scale, zero=0, lo=-127, hi=127):
        """Int8 quant info (scale, zero point, clamp range) on tensor ``name``."""
        info = T["TensorQuantInfo"](scale=float(scale), zero=float(zero), min=float(lo), max=float(hi), type=6)
        self.describes.append(T["TensorDescribe"](index=self.index(name), quantInfo=info))

    def subgraph(self, name, inputs, outputs):
        """Turn everything built so far into subgraph ``name`` and start afresh."""
        idx = {n: i for i, n in enumerate(self.tensors)}
        self.subgraphs.append(T["SubGraphProto"](
            name=name, inputs=np.array([idx[n] for n in inputs], np.int32),
            outputs=np.array([idx[n] for n in outputs], np.int32), tensors=list(self.tensors), nodes=self.ops))
        self.tensors, self.ops = [], []

    def save(self, path, outputs) -> Path:
        net = T["Net"](oplists=self.ops, tensorName=list(self.tensors), outputName=list(outputs),
                       sourceType=0, subgraphs=self.subgraphs or None,
                       extraTensorDescribe=self.describes or None)
        save_model(Model(net), path)
        return Path(path)


def strings(*names):
    return T["StringVec"](data=list(names))
