"""Helpers for the compute-op tests: one-node ONNX graphs converted by the official converter (the
oracle), MNN files patched with mnnlite's own tables for parameters the converter never writes, and
the check of mnnlite's runtime (fast and ref kernels) against the official runtime.

Converted files are cached under ``<repo>/.fixtures/ops/`` keyed by a hash of the ONNX bytes; all the
missing files of a test module are converted in one child process (the converter may abort).
"""
from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import model_zoo
from mnnlite.format.model_io import load_model, save_model
from mnnlite.runtime import Interpreter
from oracle import COSINE_MIN, REL_ERR_MAX, assert_close_to_oracle

FIXTURES = model_zoo.FIXTURE_DIR / "ops"
COSINE_MIN, REL_ERR_MAX = COSINE_MIN, REL_ERR_MAX

_ELEM = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9}


@dataclasses.dataclass
class Case:
    id: str
    model: object                                  # onnx.ModelProto
    feeds: dict
    patch: Optional[Callable] = None               # patch(model) edits the converted mnnlite Model
    flags: tuple = ()

    def __repr__(self):
        return self.id


def node(case_id: str, op_type: str, inputs: dict, *, inits: dict | None = None, outputs=("y",),
         out_elem: str = "float32", opset: int = 13, patch=None, feeds: dict | None = None,
         order=None, **attrs) -> Case:
    """A Case of one ONNX node: ``inputs`` maps graph input names to sample arrays (their dtype and
    shape declare the input), ``inits`` to initializers; ``order`` lists the node's inputs ("" for an
    omitted optional one), by default the graph inputs then the initializers."""
    names = list(order) if order is not None else list(inputs) + [n for n in (inits or {}) if n not in inputs]
    return chain(case_id, [(op_type, names, list(outputs), attrs)], inputs, inits=inits, outputs=outputs,
                 out_elem=out_elem, opset=opset, patch=patch, feeds=feeds)


def chain(case_id: str, nodes, inputs: dict, *, inits: dict | None = None, outputs=("y",),
          out_elem: str = "float32", opset: int = 13, patch=None, feeds: dict | None = None) -> Case:
    """A Case of several ONNX nodes given as (op_type, input names, output names, attributes)."""
    from onnx import helper, numpy_helper

    graph_in = [helper.make_tensor_value_info(n, _ELEM[str(a.dtype)], list(a.shape)) for n, a in inputs.items()]
    graph_out = [helper.make_tensor_value_info(o, _ELEM[out_elem], None) for o in outputs]
    init = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    nds = [helper.make_node(t, list(i), list(o), **a) for t, i, o, a in nodes]
    graph = helper.make_graph(nds, case_id, graph_in, graph_out, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return Case(case_id, model, feeds if feeds is not None else dict(inputs), patch)


# ----------------------------------------------------------------------------------- converting

def _key(case: Case) -> str:
    data = case.model.SerializeToString() + json.dumps(list(case.flags)).encode()
    return hashlib.sha1(data).hexdigest()[:20]


_CONVERT = """
import json, sys, _tools
for src, dst, flags in json.loads(sys.argv[1]):
    _tools.mnnconvert(["MNNConvert", "-f", "ONNX", "--modelFile", src, "--MNNModel", dst,
                       "--bizCode", "t", *flags])
"""


def _convert(jobs) -> None:
    subprocess.run([sys.executable, "-c", _CONVERT, json.dumps(jobs)], capture_output=True, timeout=600)


def materialize(cases) -> dict:
    """{case id: .mnn path}: converts what is missing (one child process), then applies patches."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    plain = {c.id: FIXTURES / f"{_key(c)}.mnn" for c in cases}
    todo = [c for c in cases if not plain[c.id].exists()]
    if todo:
        with open(FIXTURES / ".convert.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            jobs = []
            for c in todo:
                if plain[c.id].exists():
                    continue
                src = FIXTURES / f"{_key(c)}.onnx"
                src.write_bytes(c.model.SerializeToString())
                jobs.append([str(src), str(plain[c.id]), list(c.flags)])
            if jobs:
                _convert(jobs)
                # A graph the converter aborts on stops the batch: redo the rest one by one.
                for job in jobs:
                    if not Path(job[1]).exists():
                        _convert([job])
    paths = {}
    for c in cases:
        path = plain[c.id]
        if path.exists() and c.patch is not None:
            model = load_model(path)
            c.patch(model)
            path = FIXTURES / f"{_key(c)}-{c.patch.__name__}-{c.id}.mnn"
            save_model(model, path)
        paths[c.id] = path
    return paths


# ------------------------------------------------------------------------------------ checking

def assert_close(got: np.ndarray, ref: np.ndarray, label: str) -> None:
    assert got.shape == ref.shape, f"{label}: shape {got.shape} != oracle's {ref.shape}"
    if ref.dtype.kind != "f":
        assert got.dtype.kind in "iub", f"{label}: dtype {got.dtype}, oracle gives {ref.dtype}"
        np.testing.assert_array_equal(got, ref, err_msg=label)
        return
    assert got.dtype.kind == "f", f"{label}: dtype {got.dtype}, oracle gives {ref.dtype}"
    assert_close_to_oracle(got, ref, label)


def oracle(path: Path, feeds: dict) -> dict:
    """Outputs of the official runtime (Session API, 1 thread), every array in Caffe (NCHW) order.
    Inputs are resized in the tensor's own layout (an NHWC input takes NHWC dims) and filled from
    Caffe host tensors; outputs are copied into Caffe host tensors."""
    import MNN

    interp = MNN.Interpreter(str(path))
    session = interp.createSession({"numThread": 1})
    inputs = interp.getSessionInputAll(session)
    arrays = {}
    for name, t in inputs.items():
        arr = np.asarray(feeds[name])
        arrays[name] = np.ascontiguousarray(arr, np.float32 if arr.dtype.kind == "f" else np.int32)
        shape = list(arr.shape)
        if t.getDimensionType() == MNN.Tensor_DimensionType_Tensorflow and len(shape) >= 3:
            shape = [shape[0], *shape[2:], shape[1]]
        interp.resizeTensor(t, tuple(shape))
    interp.resizeSession(session)
    for name, t in inputs.items():
        arr = arrays[name]
        kind = MNN.Halide_Type_Float if arr.dtype.kind == "f" else MNN.Halide_Type_Int
        t.copyFrom(MNN.Tensor(arr.shape, kind, arr, MNN.Tensor_DimensionType_Caffe))
    code = interp.runSession(session)
    assert code == 0, f"official runtime: runSession on {path} returned {code}"
    out = {}
    for name, t in interp.getSessionOutputAll(session).items():
        host = MNN.Tensor(t, MNN.Tensor_DimensionType_Caffe)
        t.copyToHostTensor(host)
        shape = tuple(host.getShape())
        data = np.array(host.getNumpyData(), copy=True) if int(np.prod(shape)) else np.zeros(0)
        out[name] = data.reshape(shape).astype(np.float32 if data.dtype.kind == "f" else np.int32)
    return out


def check(case: Case, path: Path, impls=("fast", "ref")) -> None:
    """mnnlite's outputs (each impl) match the official runtime's on ``case.feeds``."""
    assert path.exists(), f"{case.id}: the official converter produced no file for this graph"
    ref = oracle(path, case.feeds)
    for impl in impls:
        # ``oracle`` exchanges every tensor in Caffe order (NHWC inputs too): so do we
        got = Interpreter(path, impl=impl, layout="nchw").run(case.feeds)
        assert set(got) == set(ref), f"{case.id}: outputs {sorted(got)} != oracle's {sorted(ref)}"
        for name in ref:
            assert_close(got[name], ref[name], f"{case.id} [{impl}] output {name!r}")


def ops_of(path: Path, op_type) -> list:
    """The ops of a converted file with the given OpType (to check what a case exercises)."""
    return [op for op in load_model(path).graph.ops if op.type == op_type]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
