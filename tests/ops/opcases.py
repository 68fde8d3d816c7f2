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
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import model_zoo
from mnnlite.format.model_io import load_model, save_model
from mnnlite.runtime import Interpreter
from builders.onnx_graph import onnx_graph
from oracle import assert_matches, oracle_input_info, run_oracle
from oracle.tools import convert_batch

FIXTURES = model_zoo.FIXTURE_DIR / "ops"

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
    from onnx import helper

    nds = [helper.make_node(t, list(i), list(o), **a) for t, i, o, a in nodes]
    model = onnx_graph(nds, [(n, list(a.shape), _ELEM[str(a.dtype)]) for n, a in inputs.items()],
                       [(o, _ELEM[out_elem]) for o in outputs], inits, opset, name=case_id)
    return Case(case_id, model, feeds if feeds is not None else dict(inputs), patch)


# ----------------------------------------------------------------------------------- converting

def _key(case: Case) -> str:
    data = case.model.SerializeToString() + json.dumps(list(case.flags)).encode()
    return hashlib.sha1(data).hexdigest()[:20]


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
                convert_batch(jobs)
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

def check(case: Case, path: Path, impls=("fast", "ref")) -> None:
    """mnnlite's outputs (each impl) match the official runtime's on ``case.feeds``."""
    assert path.exists(), f"{case.id}: the official converter produced no file for this graph"
    # a patch may leave a graph input unused and gone from the file: the oracle takes the file's inputs only
    declared = oracle_input_info(path)
    ref = run_oracle(path, {k: v for k, v in case.feeds.items() if k in declared}, api="session", layout="nchw")
    for impl in impls:
        # the oracle exchanges every tensor in Caffe order here (NHWC inputs too): so do we
        got = Interpreter(path, impl=impl, layout="nchw").run(case.feeds)
        assert_matches(got, ref, f"{case.id} [{impl}]")


def ops_of(path: Path, op_type) -> list:
    """The ops of a converted file with the given OpType (to check what a case exercises)."""
    return [op for op in load_model(path).graph.ops if op.type == op_type]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
