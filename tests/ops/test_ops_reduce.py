"""Reduction, ArgMax/ArgMin, TopKV2, CumSum/CumProd against the official runtime: every reduction
type MNN's CPU backend runs (float and int32), keepDims, adjacent and split axes, ties."""
import numpy as np
import pytest

from mnnlite.format.tables import TABLE_CLASSES as T
from mnnlite.format.tables import DataFormat, OpType
from mnnlite.ops.reduce import reduction
from mnnlite.ops.registry import OpCall
from opcases import check, materialize, node, rng

R = rng(5)
SHAPE = (2, 3, 4, 5)
X = R.standard_normal(SHAPE).astype(np.float32)
XI = R.integers(-9, 10, SHAPE).astype(np.int32)
TIES = R.integers(-2, 3, SHAPE).astype(np.float32)       # many equal values


def _op(model, op_type):
    return next(op for op in model.graph.ops if op.type == op_type)


def reduce_case(case_id, onnx_op, x, axes, keepdims, out_elem="float32", patch=None):
    if axes is None:
        return node(case_id, onnx_op, {"x": x}, keepdims=keepdims, out_elem=out_elem, patch=patch)
    if onnx_op == "ReduceSum":
        return node(case_id, onnx_op, {"x": x}, inits={"axes": np.array(axes, np.int64)}, keepdims=keepdims,
                    out_elem=out_elem, patch=patch)
    return node(case_id, onnx_op, {"x": x}, axes=list(axes), keepdims=keepdims, out_elem=out_elem, patch=patch)


def operation(value):
    def patch(model):
        _op(model, OpType.Reduction).main.operation = value
    patch.__name__ = f"operation_{value}"
    return patch


AXES = {"a1": [1], "a13": [1, 3], "a12": [1, 2], "neg": [-1, -3], "a0": [0], "a023": [0, 2, 3], "all": None}
REDUCE_CASES = []
for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
    for tag, axes in AXES.items():
        for keep in (0, 1):
            REDUCE_CASES.append(reduce_case(f"{op}_{tag}_k{keep}", op, X, axes, keep))
            REDUCE_CASES.append(reduce_case(f"{op}_int_{tag}_k{keep}", op, XI if op != "ReduceProd" else XI % 3 - 1,
                                            axes, keep, out_elem="int32"))
for value, name in ((7, "ANY"), (8, "ALL")):       # int32 only: ANY is "some element > 0"
    for tag, axes in (("a1", [1]), ("a13", [1, 3]), ("all", None)):
        REDUCE_CASES.append(reduce_case(f"{name}_{tag}", "ReduceMax", XI % 3 - 1, axes, 0, out_elem="int32",
                                        patch=operation(value)))


def topk(case_id, x, k, axis=-1, largest=1, out="float32"):
    return node(case_id, "TopK", {"x": x}, inits={"k": np.array([k], np.int64)}, outputs=("v", "i"),
                out_elem=out, axis=axis, largest=largest)


ARG_CASES = []
for onnx_op in ("ArgMax", "ArgMin"):
    for axis in (0, 1, 3, -2):
        ARG_CASES.append(node(f"{onnx_op}_{axis}", onnx_op, {"x": X}, axis=axis, keepdims=0, out_elem="int64"))
    ARG_CASES += [
        node(f"{onnx_op}_ties", onnx_op, {"x": TIES}, axis=3, keepdims=0, out_elem="int64"),
        node(f"{onnx_op}_keepdims", onnx_op, {"x": X}, axis=2, keepdims=1, out_elem="int64"),
    ]
ARG_CASES += [
    topk("topk_k3", X, 3),
    topk("topk_k1", X, 1),
    topk("topk_axis1", X, 2, axis=1),
    topk("topk_smallest", X, 3, largest=0),
    topk("topk_ties", TIES, 4),
    topk("topk_ties_long", R.integers(0, 4, (3, 40)).astype(np.float32), 7),
    topk("topk_ties_smallest", TIES, 3, largest=0),
    topk("topk_ties_k1", TIES, 1),
    topk("topk_full", TIES, 5),
    topk("topk_int", XI, 3, out="int32"),
]


def cumprod(model):
    op = _op(model, OpType.CumSum)
    op.type, op.main, op.inputIndexes = int(OpType.CumProd), T["Axis"](axis=2), op.inputIndexes[:1]


CUM_CASES = [node(f"cumsum_e{e}_r{r}_a{a}", "CumSum", {"x": X}, inits={"a": np.array(a, np.int32)},
                  exclusive=e, reverse=r) for e in (0, 1) for r in (0, 1) for a in (1, -1)]
CUM_CASES += [
    node("cumsum_int", "CumSum", {"x": XI}, inits={"a": np.array(3, np.int32)}, out_elem="int32"),
    node("cumprod", "CumSum", {"x": R.uniform(0.5, 1.5, SHAPE).astype(np.float32)},
         inits={"a": np.array(2, np.int32)}, patch=cumprod),
]

CASES = REDUCE_CASES + ARG_CASES + CUM_CASES


@pytest.fixture(scope="module")
def paths():
    return materialize(CASES)


@pytest.mark.parametrize("case", REDUCE_CASES, ids=repr)
def test_reduction(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", ARG_CASES, ids=repr)
def test_argmax_topk(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", CUM_CASES, ids=repr)
def test_cumulative(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("operation, expect", [(1, lambda x: np.abs(x).sum((1, 3))),
                                               (2, lambda x: (x * x).sum((1, 3)))])
def test_asum_sumsq_without_mnn_kernel(operation, expect):
    """MNN's CPU backend has no ASUM/SUMSQ kernel (the converter lowers them); mnnlite computes them."""
    op = T["Op"](type=int(OpType.Reduction), name="r",
                 main=T["ReductionParam"](operation=operation, dim=np.array([1, 3], np.int32), keepDims=False))
    y = reduction(OpCall(op, [X], [DataFormat.NCHW]))[0]
    np.testing.assert_allclose(y, expect(X), rtol=1e-5)
