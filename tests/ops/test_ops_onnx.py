"""Data-movement and shape ops as MNN's converter emits them from small ONNX graphs, against the
official runtime; dynamic models run at two input sizes."""
from __future__ import annotations

import numpy as np
import pytest

import MNN  # noqa: F401,E402  (test oracle: a declared test dependency)
from onnx import helper  # noqa: E402

from mnnlite.runtime import Interpreter  # noqa: E402
from builders.onnx_graph import onnx_graph  # noqa: E402
from oracle import assert_matches, run_oracle  # noqa: E402
from oracle import convert_onnx as convert  # noqa: E402

BIG = 2 ** 31 - 1
node = helper.make_node
i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
rng = np.random.default_rng(7)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def case_concat_split():
    nodes = [node("Concat", ["x", "y"], ["cat"], axis=1),
             node("Split", ["cat", "sp"], ["s0", "s1"], axis=1),
             node("Split", ["x"], ["e0", "e1", "e2"], axis=1),
             node("Concat", ["e2", "e0", "e1"], ["cat_w"], axis=-1)]
    m = onnx_graph(nodes, [("x", [1, 6, "H", "W"], "FLOAT"), ("y", [1, 2, "H", "W"], "FLOAT")],
                   ["s0", "s1", "e1", "cat_w"], {"sp": i64(3, 5)})
    return m, [{"x": randn(1, 6, 4, 5), "y": randn(1, 2, 4, 5)}, {"x": randn(1, 6, 3, 7), "y": randn(1, 2, 3, 7)}]


def case_slice():
    nodes = [node("Slice", ["x", i, "e0", "a0", "p0"], ["sl0"]) for i in ["b0"]] + [
        node("Slice", ["x", "b1", "e1", "a1", "p1"], ["sl1"]),          # negative steps, reversed
        node("Slice", ["x", "b2", "e2"], ["sl2"]),                      # no axes/steps, clamped ends
        node("Slice", ["x", "b3", "e3", "a3"], ["sl3"])]                # negative axes and starts
    inits = {"b0": i64(1, 0), "e0": i64(BIG, -1), "a0": i64(2, 3), "p0": i64(2, 1),
             "b1": i64(-1, -2), "e1": i64(-BIG, 0), "a1": i64(3, 1), "p1": i64(-1, -2),
             "b2": i64(0, 1, 1, 0), "e2": i64(1, 100, 3, 2),
             "b3": i64(-3), "e3": i64(BIG), "a3": i64(-1)}
    m = onnx_graph(nodes, [("x", [1, 5, "H", "W"], "FLOAT")], ["sl0", "sl1", "sl2", "sl3"], inits)
    return m, [{"x": randn(1, 5, 6, 7)}, {"x": randn(1, 5, 9, 4)}]


def case_reshape_flatten_squeeze():
    nodes = [node("Reshape", ["x", "shp"], ["r0"]),                     # 0 keeps, -1 infers
             node("Transpose", ["r0"], ["t0"], perm=[0, 2, 1]),
             node("Flatten", ["x"], ["f2"], axis=2),
             node("Unsqueeze", ["x", "ax"], ["u0"]),
             node("Squeeze", ["u0", "ax"], ["q0"]),
             node("Transpose", ["x"], ["t1"], perm=[3, 1, 0, 2]),
             node("Reshape", ["t1", "shp2"], ["r1"])]
    inits = {"shp": i64(0, 3, -1), "ax": i64(0, 3), "shp2": i64(-1, 6)}
    m = onnx_graph(nodes, [("x", [1, 3, "H", "W"], "FLOAT")], ["t0", "f2", "q0", "r1"], inits)
    return m, [{"x": randn(1, 3, 4, 6)}, {"x": randn(1, 3, 2, 9)}]


def case_pad():
    nodes = [node("Pad", ["x", "p0", "v"], ["c0"], mode="constant"),
             node("Pad", ["x", "p1"], ["r0"], mode="reflect"),
             node("Pad", ["x", "p2"], ["e0"], mode="edge"),
             node("Pad", ["x", "p3"], ["z0"])]
    inits = {"p0": i64(0, 1, 2, 0, 0, 0, 1, 3), "v": np.array(1.5, np.float32),
             "p1": i64(0, 0, 2, 1, 0, 0, 1, 2), "p2": i64(0, 0, 0, 3, 0, 0, 2, 0),
             "p3": i64(0, 0, 1, 1, 0, 0, 1, 1)}
    m = onnx_graph(nodes, [("x", [1, 2, "H", "W"], "FLOAT")], ["c0", "r0", "e0", "z0"], inits)
    return m, [{"x": randn(1, 2, 4, 5)}, {"x": randn(1, 2, 6, 3)}]


def case_tile_expand():
    nodes = [node("Tile", ["x", "reps"], ["t0"]),
             node("Expand", ["m", "shp"], ["x0"]),                      # two-way broadcast
             node("Shape", ["x"], ["sx"]),
             node("Expand", ["m", "sx"], ["x1"]),                       # to a runtime shape
             node("Add", ["x1", "x"], ["a1"])]
    inits = {"reps": i64(1, 2, 1, 3), "shp": i64(2, 1, 1, 4), "m": randn(1, 3, 1, 1)}
    m = onnx_graph(nodes, [("x", [1, 3, "H", "W"], "FLOAT")], ["t0", "x0", "a1"], inits)
    return m, [{"x": randn(1, 3, 2, 4)}, {"x": randn(1, 3, 5, 3)}]


def case_gather():
    nodes = [node("Gather", ["x", "i0"], ["g0"], axis=1),
             node("Gather", ["x", "i1"], ["g1"], axis=-1),
             node("Gather", ["tab", "tok"], ["g2"], axis=0),            # runtime int indices
             node("GatherND", ["x", "nd"], ["g3"]),
             node("GatherND", ["x", "nd1"], ["g4"], batch_dims=1)]
    inits = {"i0": i64(2, 0, 2), "i1": i64([1, 0], [3, 2]), "tab": randn(10, 4),
             "nd": i64([0, 1], [0, 3]), "nd1": i64([[2, 1], [0, 0]])}
    m = onnx_graph(nodes, [("x", [1, 4, 5, 6], "FLOAT"), ("tok", [1, "S"], "INT64")],
                   ["g0", "g1", "g2", "g3", "g4"], inits)
    return m, [{"x": randn(1, 4, 5, 6), "tok": np.array([[3, 0, 9, 2]], np.int64)},
               {"x": randn(1, 4, 5, 6), "tok": np.array([[1, 7]], np.int64)}]


def case_depth_space():
    nodes = [node("DepthToSpace", ["x"], ["d0"], blocksize=2, mode="DCR"),
             node("DepthToSpace", ["x"], ["d1"], blocksize=2, mode="CRD"),
             node("SpaceToDepth", ["d1"], ["s0"], blocksize=2)]
    m = onnx_graph(nodes, [("x", [1, 8, "H", "W"], "FLOAT")], ["d0", "d1", "s0"])
    return m, [{"x": randn(1, 8, 3, 4)}, {"x": randn(1, 8, 2, 5)}]


def case_shape_arith():
    from onnx import TensorProto, numpy_helper
    nodes = [node("Shape", ["x"], ["s"]),
             node("Gather", ["s", "k3"], ["w"], axis=0),
             node("Range", ["zero", "w", "one"], ["r"]),
             node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
             node("Range", ["fa", "fb", "fc"], ["rr"]),
             node("ConstantOfShape", ["s"], ["c"], value=numpy_helper.from_array(np.array([0.25], np.float32))),
             node("Add", ["c", "rf"], ["cr"]),
             node("Size", ["x"], ["n"]),
             node("Identity", ["x"], ["ident"])]
    inits = {"k3": np.array(3, np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "fa": np.array(0.5, np.float32), "fb": np.array(3.0, np.float32), "fc": np.array(0.75, np.float32)}
    m = onnx_graph(nodes, [("x", [1, 2, "H", "W"], "FLOAT")],
                   [("s", TensorProto.INT64), "cr", "rr", ("n", TensorProto.INT64), "ident"], inits)
    return m, [{"x": randn(1, 2, 3, 4)}, {"x": randn(1, 2, 5, 2)}]


def case_matmul_reshape_transpose():
    """Attention-style reshapes around activation MatMuls (dynamic sequence length)."""
    nodes = [node("Reshape", ["x", "split"], ["h"]),
             node("Transpose", ["h"], ["q"], perm=[0, 2, 1, 3]),
             node("Transpose", ["h"], ["k"], perm=[0, 2, 3, 1]),
             node("MatMul", ["q", "k"], ["qk"]),
             node("MatMul", ["qk", "q"], ["o"]),
             node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
             node("Reshape", ["ot", "merge"], ["y"])]
    inits = {"split": i64(0, 0, 2, 4), "merge": i64(0, 0, 8)}
    m = onnx_graph(nodes, [("x", [1, "S", 8], "FLOAT")], ["y"], inits)
    return m, [{"x": randn(1, 5, 8)}, {"x": randn(1, 3, 8)}]


CASES = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("case_")}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_ops")
    cache = {}

    def get(name):
        if name not in cache:
            model, feeds = CASES[name]()
            cache[name] = (convert(model, out / f"{name}.mnn"), feeds)
        return cache[name]
    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_official_runtime(models, name):
    path, feed_sets = models(name)
    interp = Interpreter(path)
    for i, feeds in enumerate(feed_sets):
        assert_matches(interp.run(feeds), run_oracle(path, feeds, layout="nchw"), f"{name} (size {i})")


def test_static_model_rasters(tmp_path):
    """``--saveStaticModel`` turns the data-movement ops into Raster ops whose regions live in the
    output tensors' TensorDescribe; the result must equal the dynamic conversion and the oracle."""
    nodes = [node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]),
             node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             node("Concat", ["x", "c"], ["cat"], axis=1),
             node("Slice", ["cat", "st", "en", "ax"], ["s"]),
             node("Pad", ["s", "pads"], ["p"], mode="reflect"),
             node("Gather", ["cat", "gi"], ["g"], axis=1),
             node("DepthToSpace", ["cat"], ["d"], blocksize=2, mode="CRD")]
    inits = {"w": randn(5, 3, 1, 1), "st": i64(1, 1), "en": i64(6, 3), "ax": i64(1, 2),
             "pads": i64(0, 0, 1, 1, 0, 0, 1, 1), "gi": i64(7, 0)}
    m = onnx_graph(nodes, [("x", [1, 3, 4, 5], "FLOAT")], ["t", "p", "g", "d"], inits)
    static = convert(m, tmp_path / "static.mnn", "--saveStaticModel")
    dynamic = convert(m, tmp_path / "dynamic.mnn")
    interp = Interpreter(static)
    types = {op.type for op in interp.model.graph.ops}
    assert interp.model.net.usage == 2 and 128 in types   # INFERENCE_STATIC, OpType Raster
    feeds = {"x": randn(1, 3, 4, 5)}
    got = interp.run(feeds)
    assert_matches(got, run_oracle(static, feeds, layout="nchw"), "static")
    assert_matches(got, Interpreter(dynamic).run(feeds), "static vs dynamic")
