"""Pooling and Pooling3D against the official runtime: max/avg, pads, strides, ceil mode, SAME/VALID,
count include/exclude padding, padX/padY files, global pooling, 3-D pooling."""
import numpy as np
import pytest

from mnnlite.format.tables import OpType
from opcases import check, materialize, node, rng

R = rng(2)


def _x(shape):
    return R.standard_normal(shape).astype(np.float32)


def pool(case_id, kind, x_shape, patch=None, **attrs):
    return node(f"{kind}_{case_id}", kind, {"x": _x(x_shape)}, patch=patch, **attrs)


def _pool(model):
    return next(op for op in model.graph.ops if op.type == OpType.Pooling).main


def pad_xy(model):
    """Caffe-style file: padX/padY and no pads list (avg DEFAULT count then includes padding)."""
    p = _pool(model)
    p.padY, p.padX, p.pads = int(p.pads[0]), int(p.pads[1]), None


def pad_xy_exclude(model):
    pad_xy(model)
    _pool(model).countType = 2


def pads_default_count(model):
    """An explicit pads list with countType DEFAULT: MNN runs it as VALID, excluding padding."""
    _pool(model).countType = 0


def global_pool(model):
    p = _pool(model)
    p.isGlobal = True


def same_pool(model):
    p = _pool(model)
    p.padType, p.pads, p.padX, p.padY = 2, None, 0, 0


def valid_pool(model):
    p = _pool(model)
    p.padType, p.pads, p.padX, p.padY = 1, None, 0, 0


def big_kernel(model):
    """Kernel larger than the input: the size clamps the kernel, the kernel itself does not."""
    p = _pool(model)
    p.kernelY, p.kernelX, p.ceilModel = 7, 6, True


def pads_two(model):
    """A 2-entry pads list pads H only in the size; the kernel reads padX/padY (CPUPool.cpp)."""
    p = _pool(model)
    p.pads = np.array([1, 1], np.int32)
    p.padY, p.padX = 1, 0


# ONNX pools need explicit strides here: the 3.6.1 converter leaves strideX/Y at the table default 0
# when the attribute is absent, and the official runtime then dies dividing by zero (mnnlite raises).
POOL_CASES = []
for kind in ("MaxPool", "AveragePool"):
    POOL_CASES += [
        pool("k2s2", kind, (1, 3, 8, 8), kernel_shape=[2, 2], strides=[2, 2]),
        pool("k3s1p1", kind, (2, 3, 7, 9), kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        pool("k3s2p1", kind, (1, 4, 9, 10), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        pool("asym_pads", kind, (1, 3, 9, 10), kernel_shape=[3, 2], strides=[2, 2], pads=[0, 1, 2, 0]),
        pool("ceil", kind, (1, 3, 8, 9), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        pool("ceil_pad", kind, (1, 3, 8, 9), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
        pool("ceil_overhang", kind, (1, 2, 6, 6), kernel_shape=[2, 2], strides=[3, 3], pads=[1, 1, 1, 1],
             ceil_mode=1),
        pool("k5s3", kind, (1, 2, 11, 13), kernel_shape=[5, 4], strides=[3, 2], pads=[2, 1, 2, 1]),
        pool("same_upper", kind, (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        pool("valid", kind, (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"),
        pool("padxy", kind, (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], patch=pad_xy),
        pool("global_flag", kind, (2, 5, 6, 7), kernel_shape=[2, 2], patch=global_pool),
        pool("same_patched", kind, (1, 3, 10, 7), kernel_shape=[4, 3], strides=[3, 2], patch=same_pool),
        pool("valid_patched", kind, (1, 3, 10, 7), kernel_shape=[4, 3], strides=[3, 2], patch=valid_pool),
        pool("kernel_gt_input", kind, (1, 2, 5, 4), kernel_shape=[2, 2], strides=[1, 1], patch=big_kernel),
        pool("pads_two", kind, (1, 2, 6, 7), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
             patch=pads_two),
    ]
POOL_CASES += [
    pool("include_pad", "AveragePool", (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
         count_include_pad=1),
    pool("include_asym", "AveragePool", (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2], pads=[0, 2, 2, 1],
         count_include_pad=1),
    pool("include_ceil", "AveragePool", (1, 3, 8, 9), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
         count_include_pad=1, ceil_mode=1),
    pool("default_count", "AveragePool", (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], count_include_pad=1, patch=pads_default_count),
    pool("padxy_exclude", "AveragePool", (1, 3, 9, 10), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
         patch=pad_xy_exclude),
    pool("global", "GlobalAveragePool", (2, 5, 6, 7)),
    pool("global", "GlobalMaxPool", (2, 5, 6, 7)),
    pool("global3d", "GlobalAveragePool", (1, 3, 4, 5, 6)),
    pool("global1d", "GlobalMaxPool", (2, 3, 7)),
    # (3-D pools need explicit pads: without them the official runtime dereferences a null pads list)
    pool("3d_k2", "MaxPool", (1, 2, 4, 6, 5), kernel_shape=[2, 2, 2], strides=[2, 2, 2], pads=[0] * 6),
    pool("3d_pad", "AveragePool", (1, 2, 5, 6, 7), kernel_shape=[3, 3, 3], strides=[2, 1, 2],
         pads=[1, 1, 1, 1, 1, 1]),
    pool("3d_pad_incl", "AveragePool", (1, 2, 5, 6, 7), kernel_shape=[3, 2, 3], strides=[1, 2, 2],
         pads=[1, 1, 1, 1, 1, 1], count_include_pad=1),
    pool("3d_pad", "MaxPool", (1, 2, 5, 6, 7), kernel_shape=[3, 3, 3], strides=[2, 1, 2], pads=[1, 1, 1, 1, 1, 1]),
]


@pytest.fixture(scope="module")
def paths():
    return materialize(POOL_CASES)


@pytest.mark.parametrize("case", POOL_CASES, ids=repr)
def test_pooling(case, paths):
    check(case, paths[case.id])
