"""Helpers for the runtime tests: tiny ONNX graphs, hand-built MNN graphs, and the official runtime.

The official ``mnn`` wheel is the oracle (test-only).  Two ways to get a model:
* ``onnx_graph`` + ``convert``: what MNN's converter emits for a few ONNX nodes (realistic layouts,
  ConvertTensor boundaries, control-flow subgraphs);
* ``NetBuilder``: an MNN graph written op by op with mnnlite's own tables, to reach parameters the ONNX
  converter never emits (TF masks, NHWC tensors, Raster regions, DT_HALF constants, ...).
``oracle`` runs a file in the official runtime and returns outputs in Caffe (NCHW) order.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from mnnlite.format.model_io import save_model
from mnnlite.format.tables import TABLE_CLASSES as T, DataFormat, OpType
from mnnlite.graph import Model

import model_zoo

COSINE_MIN, REL_ERR_MAX = model_zoo.COSINE_MIN, model_zoo.REL_ERR_MAX


# ------------------------------------------------------------------------------------ comparing

def assert_matches(got: dict, ref: dict, where: str = "", rel_err: float = REL_ERR_MAX) -> None:
    """Same output names, shapes and dtype kinds; ints equal, floats within the float budget."""
    assert set(got) == set(ref), f"{where}: outputs {sorted(got)} != oracle's {sorted(ref)}"
    for name, r in ref.items():
        g = got[name]
        label = f"{where} output {name!r}"
        assert g.shape == r.shape, f"{label}: shape {g.shape} != oracle's {r.shape}"
        assert (g.dtype.kind == "f") == (r.dtype.kind == "f"), f"{label}: dtype {g.dtype} != oracle's {r.dtype}"
        if r.dtype.kind != "f":
            np.testing.assert_array_equal(g, r, err_msg=label)
        else:
            assert_close(g, r, label, rel_err)


assert_close = model_zoo.assert_close_to_oracle


# --------------------------------------------------------------------------------- ONNX models

def onnx_graph(nodes, inputs, outputs, inits=None, opset: int = 13):
    """nodes: onnx NodeProtos; inputs: [(name, shape, elem)]; outputs: names or (name, elem);
    inits: {name: numpy array}."""
    from onnx import TensorProto, helper, numpy_helper

    ins = [helper.make_tensor_value_info(n, getattr(TensorProto, e), s) for n, s, e in inputs]
    outs = [helper.make_tensor_value_info(*(o if isinstance(o, tuple) else (o, TensorProto.FLOAT)), None)
            for o in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    graph = helper.make_graph(nodes, "g", ins, outs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def convert(model, path: Path, *flags: str) -> Path:
    """Convert an onnx ModelProto with the official converter (in a child process: it may abort)."""
    import onnx

    src = Path(path).with_suffix(".onnx")
    onnx.save(model, str(src))
    code = "import _tools, sys; _tools.mnnconvert(sys.argv[1:])"
    argv = ["MNNConvert", "-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(path), "--bizCode", "t",
            *flags]
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    if not Path(path).exists():
        raise RuntimeError(f"MNNConvert failed on {src}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return Path(path)


# --------------------------------------------------------------------------- hand-built MNN nets

class NetBuilder:
    """Write an MNN graph op by op: ``b.input(...)``, ``b.const(...)``, ``b.op(...)``, ``b.save(path)``."""

    def __init__(self):
        self.tensors: list[str] = []
        self.ops: list = []
        self.subgraphs: list = []
        self.describes: list = []

    def index(self, name: str) -> int:
        if name not in self.tensors:
            self.tensors.append(name)
        return self.tensors.index(name)

    def input(self, name, dims, dtype=1, dformat=DataFormat.NCHW):
        main = T["Input"](dims=np.array(dims, np.int32), dtype=dtype, dformat=int(dformat))
        return self.op(OpType.Input, [], [name], main)

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


# ------------------------------------------------------------------------------- the official runtime

def oracle(path, feeds: dict, api: str = "session", isolated: bool = False) -> dict:
    """Outputs of the official runtime, every array in Caffe (NCHW) order: inputs are resized in the
    tensor's own layout and filled from Caffe host tensors, outputs copied into ``Tensor(t, CAFFE)``.
    ``isolated`` runs it in a child process (hand-built graphs can make the runtime abort)."""
    if isolated:
        return _oracle_in_child(path, feeds, api)
    import MNN

    if api == "module":
        return _oracle_module(MNN, path, feeds)
    interp = MNN.Interpreter(str(path))
    session = interp.createSession({"numThread": 1})
    inputs = interp.getSessionInputAll(session)
    for name, t in inputs.items():
        shape = list(np.shape(feeds[name]))
        if t.getDimensionType() == MNN.Tensor_DimensionType_Tensorflow and len(shape) >= 3:
            shape = [shape[0], *shape[2:], shape[1]]
        interp.resizeTensor(t, tuple(shape))
    interp.resizeSession(session)
    for name, t in inputs.items():
        arr = np.ascontiguousarray(feeds[name])
        kind = MNN.Halide_Type_Float if arr.dtype.kind == "f" else MNN.Halide_Type_Int
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" else np.int32)
        t.copyFrom(MNN.Tensor(arr.shape, kind, arr, MNN.Tensor_DimensionType_Caffe))
    assert interp.runSession(session) == 0, f"official runtime failed on {path}"
    out = {}
    for name, t in interp.getSessionOutputAll(session).items():
        host = MNN.Tensor(t, MNN.Tensor_DimensionType_Caffe)
        t.copyToHostTensor(host)
        arr = np.array(host.getNumpyData(), copy=True).reshape(host.getShape())
        out[name] = arr.astype(np.float32 if arr.dtype.kind == "f" else np.int32)
    return out


def _oracle_in_child(path, feeds, api):
    folder = Path(path).parent
    src, dst = folder / (Path(path).stem + ".feeds.npz"), folder / (Path(path).stem + ".oracle.npz")
    np.savez(src, **feeds)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[4]); import rt_oracle; "
            "f = dict(np.load(sys.argv[2])); np.savez(sys.argv[3], **rt_oracle.oracle(sys.argv[1], f, sys.argv[5]))")
    res = subprocess.run([sys.executable, "-c", code, str(path), str(src), str(dst),
                          str(Path(__file__).parent), api], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"the official runtime failed on {path} (exit {res.returncode}):\n{res.stderr[-2000:]}")
    with np.load(dst) as out:
        return {k: out[k] for k in out.files}


def _oracle_module(MNN, path, feeds):
    F = MNN.expr
    module = MNN.nn.load_module_from_file(str(path), [], [], thread_num=1)
    info = module.get_info()
    args = []
    for name in info["inputNames"]:
        arr = np.ascontiguousarray(feeds[name])
        kind = F.float if arr.dtype.kind == "f" else F.int
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" else np.int32)
        args.append(F.const(arr, list(arr.shape), F.NCHW, kind))
    out = {}
    for name, var in zip(info["outputNames"], module.forward(args)):
        if var.data_format == F.NC4HW4:
            var = F.convert(var, F.NCHW)
        arr = np.array(var.read(), copy=True)
        out[name] = arr.astype(np.float32 if arr.dtype.kind == "f" else np.int32)
    return out
