"""Softmax, MatMul / BatchMatMul / InnerProduct, and the image ops fed NHWC tensors directly (MNN
converts them to NC4HW4 itself; mnnlite's kernels must read ``call.formats``)."""
import numpy as np
import pytest

from mnnlite.format.tables import TABLE_CLASSES as T
from mnnlite.format.tables import DataFormat, OpType
from opcases import check, materialize, node, rng

R = rng(7)
X = R.standard_normal((2, 3, 4, 5)).astype(np.float32)


def _f(*shape):
    return R.standard_normal(shape).astype(np.float32)


def _op(model, op_type):
    return next(op for op in model.graph.ops if op.type == op_type)


SOFTMAX_CASES = [node(f"softmax_{axis}", "Softmax", {"x": X * 3}, axis=axis) for axis in (0, 1, 2, -1)]
SOFTMAX_CASES += [node("softmax_opset11", "Softmax", {"x": X * 3}, axis=1, opset=11),
                  node("softmax_2d", "Softmax", {"x": _f(7, 33) * 5}, axis=-1)]


def batch_matmul(adj_x, adj_y):
    def patch(model):
        op = _op(model, OpType.MatMul)
        op.type, op.main = int(OpType.BatchMatMul), T["BatchMatMulParam"](adjX=adj_x, adjY=adj_y)
    patch.__name__ = f"batch_matmul_{adj_x}_{adj_y}"
    return patch


W, BIAS = _f(6, 4), _f(6)


def inner_product(model):
    """InnerProduct (Caffe) from a MatMul template: y = x @ W^T + bias, input b left unused."""
    op = _op(model, OpType.MatMul)
    op.type, op.inputIndexes = int(OpType.InnerProduct), op.inputIndexes[:1]
    op.main = T["InnerProduct"](outputCount=6, biasTerm=1, weightSize=W.size, weight=W.reshape(-1), bias=BIAS)


MATMUL_CASES = [
    node("mm_2d", "MatMul", {"a": _f(3, 4), "b": _f(4, 5)}),
    node("mm_3d_2d", "MatMul", {"a": _f(2, 3, 4), "b": _f(4, 5)}),
    node("mm_bcast", "MatMul", {"a": _f(2, 1, 3, 4), "b": _f(1, 3, 4, 5)}),
    node("mm_vec_left", "MatMul", {"a": _f(4), "b": _f(3, 4, 5)}),
    node("mm_vec_right", "MatMul", {"a": _f(2, 3, 4), "b": _f(4)}),
    node("mm_big", "MatMul", {"a": _f(33, 70), "b": _f(70, 17)}),
    node("gemm_tb", "Gemm", {"a": _f(3, 4), "b": _f(5, 4)}, transB=1),
    node("gemm_ta_bias", "Gemm", {"a": _f(4, 3), "b": _f(4, 5), "c": _f(5)}, transA=1),
    node("bmm", "MatMul", {"a": _f(2, 3, 4), "b": _f(2, 4, 5)}, patch=batch_matmul(False, False)),
    node("bmm_adj", "MatMul", {"a": _f(2, 4, 3), "b": _f(2, 5, 4)}, patch=batch_matmul(True, True)),
    # batch 1: GeometryInnerProduct.cpp allocates the bias as [batch, outputCount] but fills one row
    node("inner_product", "MatMul", {"a": _f(1, 4), "b": _f(4, 5)}, patch=inner_product),
]


# ------------------------------------------------------------------------------ NHWC inputs directly

def nhwc_direct(model):
    """Feed the NHWC graph input straight into the op: drop the ConvertTensor ops around it."""
    net = model.net
    outputs = set(net.outputName or [])
    names = net.tensorName
    alias, keep = {}, []
    for op in net.oplists:
        if op.type == OpType.Input:
            dims = [int(d) for d in op.main.dims]
            op.main.dformat, op.main.dims = int(DataFormat.NHWC), np.array([dims[0], *dims[2:], dims[1]], np.int32)
        if op.type == OpType.ConvertTensor:
            src, dst = int(op.inputIndexes[0]), int(op.outputIndexes[0])
            if names[dst] in outputs:       # the computing op writes the graph output itself
                for other in keep:
                    other.outputIndexes = np.array([dst if int(i) == src else int(i) for i in other.outputIndexes],
                                                   np.int32)
            else:
                alias[dst] = src
            continue
        if op.inputIndexes is not None:
            op.inputIndexes = np.array([alias.get(int(i), int(i)) for i in op.inputIndexes], np.int32)
        keep.append(op)
    net.oplists = keep
    model.invalidate()


def nhwc_resize(model):
    """NHWC Interp sized by its table (a sizes input would have to be in NHWC order too)."""
    nhwc_direct(model)
    op = _op(model, OpType.Interp)
    op.inputIndexes = op.inputIndexes[:1]
    op.main.outputHeight, op.main.outputWidth = 7, 9


NHWC_CASES = [
    node("nhwc_conv", "Conv", {"x": _f(1, 3, 7, 6)}, inits={"w": _f(4, 3, 3, 3), "b": _f(4)}, pads=[1, 1, 1, 1],
         strides=[2, 1], patch=nhwc_direct),
    node("nhwc_dwconv", "Conv", {"x": _f(1, 4, 7, 6)}, inits={"w": _f(4, 1, 3, 3), "b": _f(4)}, group=4,
         pads=[1, 1, 1, 1], patch=nhwc_direct),
    node("nhwc_deconv", "ConvTranspose", {"x": _f(1, 3, 4, 5)}, inits={"w": _f(3, 2, 3, 3)}, strides=[2, 2],
         patch=nhwc_direct),
    node("nhwc_maxpool", "MaxPool", {"x": _f(1, 3, 7, 6)}, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
         patch=nhwc_direct),
    node("nhwc_avgpool", "AveragePool", {"x": _f(1, 3, 7, 6)}, kernel_shape=[3, 2], strides=[2, 2],
         pads=[1, 0, 1, 0], patch=nhwc_direct),
    node("nhwc_resize", "Resize", {"x": _f(1, 3, 4, 5)}, inits={"sz": np.array([1, 3, 7, 9], np.int64)},
         order=["x", "", "", "sz"], mode="linear", patch=nhwc_resize),
]
# (No NHWC Scale/PReLU case: MNN's CPUScale/CPUPRelu read their input as NC4HW4 whatever its layout and
# no geometry converts it, so the official runtime computes garbage on a direct NHWC input.)

CASES = SOFTMAX_CASES + MATMUL_CASES + NHWC_CASES


@pytest.fixture(scope="module")
def paths():
    return materialize(CASES)


@pytest.mark.parametrize("case", SOFTMAX_CASES + MATMUL_CASES, ids=repr)
def test_softmax_matmul(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", NHWC_CASES, ids=repr)
def test_nhwc_inputs(case, paths):
    from mnnlite.format.model_io import load_model
    assert not any(op.type == OpType.ConvertTensor for op in load_model(paths[case.id]).graph.ops)
    check(case, paths[case.id])
