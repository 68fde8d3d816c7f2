"""Convolution, ConvolutionDepthwise, Deconvolution, DeconvolutionDepthwise against the official runtime:
pads, strides, dilation, groups, SAME/VALID, fused ReLU/ReLU6, explicit padX/padY, output padding,
fp16 and weight-quantized weights."""
import dataclasses

import numpy as np
import pytest

from mnnlite.format.model_io import load_model
from mnnlite.format.tables import OpType
from mnnlite.ops.weights import conv_weights
from opcases import check, materialize, node, ops_of, rng


def ops_of_model(model, op_type):
    return [op for op in model.graph.ops if op.type == op_type]

R = rng(1)


def _x(shape):
    return R.standard_normal(shape).astype(np.float32)


def conv(case_id, x_shape, w_shape, bias=True, flags=(), patch=None, **attrs):
    inits = {"w": _x(w_shape) * 0.5}
    if bias:
        inits["b"] = _x((w_shape[0],))
    case = node("conv_" + case_id, "Conv", {"x": _x(x_shape)}, inits=inits, patch=patch, **attrs)
    return dataclasses.replace(case, flags=tuple(flags))


def deconv(case_id, x_shape, w_shape, bias=True, patch=None, flags=(), **attrs):
    inits = {"w": _x(w_shape) * 0.5}
    if bias:
        inits["b"] = _x((w_shape[1] * attrs.get("group", 1),))
    case = node("deconv_" + case_id, "ConvTranspose", {"x": _x(x_shape)}, inits=inits, patch=patch, **attrs)
    return dataclasses.replace(case, flags=tuple(flags))


def _common(model):
    return next(op for op in model.graph.ops if op.type in (
        OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Deconvolution,
        OpType.DeconvolutionDepthwise)).main.common


def relu(model):
    _common(model).relu = True


def relu6(model):
    _common(model).relu6 = True


def caffe_pads(model):
    """padX/padY instead of a pads list (Caffe-style files)."""
    c = _common(model)
    c.padY, c.padX, c.pads = int(c.pads[0]), int(c.pads[1]), None


def valid_with_pads(model):
    """VALID sizes the output without pads but the kernel still reads padX/padY (ConvolutionCommon)."""
    c = _common(model)
    c.padMode, c.padY, c.padX, c.pads = 1, 1, 2, None


def same_small_kernel(model):
    """SAME with stride > kernel: MNN's lead pad goes negative (convolutionPad truncates toward 0)."""
    _common(model).padMode = 2


CONV_CASES = [
    conv("k3p1", (1, 3, 9, 9), (4, 3, 3, 3), pads=[1, 1, 1, 1]),
    conv("k3s2", (2, 3, 10, 11), (5, 3, 3, 3), pads=[1, 1, 1, 1], strides=[2, 2]),
    conv("k3s2_asym", (1, 3, 10, 11), (5, 3, 3, 3), pads=[0, 1, 2, 0], strides=[2, 3]),
    conv("k5d2", (1, 4, 13, 12), (6, 4, 5, 5), pads=[4, 4, 4, 4], dilations=[2, 2]),
    conv("k3x1_dil", (1, 2, 9, 10), (3, 2, 3, 1), pads=[2, 0, 2, 0], dilations=[2, 3]),
    conv("k1", (1, 8, 5, 7), (16, 8, 1, 1), bias=False),
    conv("k1s2", (1, 8, 6, 7), (4, 8, 1, 1), strides=[2, 2]),
    conv("nopad_short", (1, 3, 10, 10), (4, 3, 3, 3), strides=[3, 3]),
    conv("wide_c", (1, 19, 7, 7), (21, 19, 3, 3), pads=[1, 1, 1, 1]),
    conv("same_upper", (1, 3, 10, 9), (4, 3, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER"),
    conv("same_even_k", (1, 3, 9, 9), (4, 3, 4, 4), auto_pad="SAME_UPPER"),
    conv("valid", (1, 3, 10, 9), (4, 3, 3, 3), strides=[2, 2], auto_pad="VALID"),
    conv("depthwise", (1, 6, 9, 9), (6, 1, 3, 3), pads=[1, 1, 1, 1], group=6),
    conv("depthwise_s2", (2, 5, 12, 11), (5, 1, 5, 5), pads=[2, 2, 2, 2], strides=[2, 2], group=5),
    conv("depthwise_dil", (1, 4, 12, 11), (4, 1, 3, 3), pads=[2, 2, 2, 2], dilations=[2, 2], group=4),
    conv("group_split", (1, 8, 7, 7), (6, 4, 3, 3), pads=[1, 1, 1, 1], group=2),
    conv("group_native", (1, 8, 7, 7), (12, 2, 3, 3), pads=[1, 1, 1, 1], group=4, flags=["--groupConvNative"]),
    conv("relu", (1, 3, 8, 8), (4, 3, 3, 3), pads=[1, 1, 1, 1], patch=relu),
    conv("relu6", (1, 3, 8, 8), (4, 3, 3, 3), pads=[1, 1, 1, 1], patch=relu6),
    conv("caffe_pads", (1, 3, 8, 9), (4, 3, 3, 3), pads=[1, 2, 1, 2], strides=[2, 1], patch=caffe_pads),
    conv("valid_reads_pad", (1, 3, 8, 9), (4, 3, 3, 3), patch=valid_with_pads),
    conv("same_neg_pad", (1, 3, 9, 9), (4, 3, 1, 1), strides=[4, 4], patch=same_small_kernel),
    conv("fp16", (1, 3, 8, 8), (4, 3, 3, 3), pads=[1, 1, 1, 1], flags=["--fp16"]),
    conv("wq8", (1, 3, 8, 8), (8, 3, 3, 3), pads=[1, 1, 1, 1], flags=["--weightQuantBits", "8"]),
    conv("wq8sym", (1, 3, 8, 8), (8, 3, 3, 3), pads=[1, 1, 1, 1],
         flags=["--weightQuantBits", "8", "--weightQuantAsymmetric"]),
    conv("wq4", (1, 4, 8, 8), (8, 4, 3, 3), pads=[1, 1, 1, 1], flags=["--weightQuantBits", "4"]),
]


def deconv_same(model):
    _common(model).padMode = 2


DECONV_CASES = [
    deconv("k3s2", (1, 3, 5, 6), (3, 4, 3, 3), strides=[2, 2]),
    deconv("k3s2p1", (2, 3, 5, 6), (3, 4, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1]),
    deconv("k4s2_asym", (1, 3, 5, 6), (3, 2, 4, 4), strides=[2, 2], pads=[1, 0, 2, 1]),
    deconv("outpad", (1, 3, 5, 6), (3, 4, 3, 3), strides=[2, 3], pads=[1, 1, 1, 1], output_padding=[1, 2]),
    deconv("dilated", (1, 2, 5, 5), (2, 3, 3, 3), strides=[1, 2], dilations=[2, 2], pads=[1, 1, 1, 1]),
    deconv("k1", (1, 8, 4, 4), (8, 5, 1, 1), bias=False),
    deconv("groups", (1, 4, 5, 5), (4, 3, 3, 3), strides=[2, 2], group=2),
    deconv("depthwise", (1, 6, 5, 5), (6, 1, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1], group=6),
    deconv("same_upper", (1, 3, 5, 5), (3, 4, 3, 3), strides=[2, 2], auto_pad="SAME_UPPER"),
    deconv("same_stride_gt_k", (1, 3, 4, 4), (3, 2, 1, 1), strides=[3, 3], patch=deconv_same),
    deconv("relu", (1, 3, 5, 5), (3, 4, 3, 3), strides=[2, 2], patch=relu),
    deconv("relu6", (1, 3, 5, 5), (3, 4, 3, 3), strides=[2, 2], patch=relu6),
    deconv("caffe_pads", (1, 3, 5, 5), (3, 4, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1], patch=caffe_pads),
    deconv("output_shape", (1, 3, 5, 6), (3, 2, 3, 3), bias=False, strides=[2, 2], output_shape=[12, 14]),
    deconv("fp16", (1, 3, 5, 5), (3, 4, 3, 3), strides=[2, 2], flags=["--fp16"]),
    deconv("wq8", (1, 4, 5, 5), (4, 8, 3, 3), strides=[2, 2], flags=["--weightQuantBits", "8"]),
    deconv("wq8_groups", (1, 4, 5, 5), (4, 3, 3, 3), strides=[2, 2], group=2, flags=["--weightQuantBits", "8"]),
]


@pytest.fixture(scope="module")
def paths():
    return materialize(CONV_CASES + DECONV_CASES)


@pytest.mark.parametrize("case", CONV_CASES, ids=repr)
def test_convolution(case, paths):
    check(case, paths[case.id])


@pytest.mark.parametrize("case", DECONV_CASES, ids=repr)
def test_deconvolution(case, paths):
    check(case, paths[case.id])


def test_cases_hit_the_intended_ops(paths):
    assert ops_of(paths["conv_depthwise"], OpType.ConvolutionDepthwise)
    assert ops_of(paths["conv_group_native"], OpType.Convolution)[0].main.common.group == 4
    assert ops_of(paths["conv_fp16"], OpType.Convolution)[0].main.quanParameter.type == 3
    assert ops_of(paths["conv_wq4"], OpType.Convolution)[0].main.quanParameter is not None
    assert ops_of(paths["deconv_depthwise"], OpType.DeconvolutionDepthwise)
    assert ops_of(paths["deconv_wq8"], OpType.Deconvolution)[0].main.quanParameter is not None
    assert ops_of(paths["deconv_output_shape"], OpType.Deconvolution)[0].main.common.hasOutputShape


def test_decoded_weights_are_cached_per_op(paths):
    model = load_model(paths["conv_wq8"])
    op = ops_of_model(model, OpType.Convolution)[0]
    first = conv_weights(op)
    assert conv_weights(op)[0] is first[0]            # decoded once
    op.main.quanParameter = None
    op.main.weight = np.ones(first[0].size, np.float32)
    assert np.array_equal(conv_weights(op)[0], np.ones(first[0].shape, np.float32))   # edited op: decoded again


def test_decoded_weights_die_with_their_model(paths):
    """The cache holds ops weakly: a process that loads model after model (regress, a Ray worker, the
    mutation harness) must not keep every dead model and its decoded weights (it once did, up to 1 GiB,
    and each new entry summed the whole cache: the harness slowed from 36 to 4 mutants/s)."""
    import gc
    import pickle

    from mnnlite.ops import weights

    weights.clear_cache()
    model = load_model(paths["conv_wq8"])
    op = ops_of_model(model, OpType.Convolution)[0]
    conv_weights(op)
    assert len(weights._cache) == 1 and weights._cached_bytes > 0
    assert pickle.loads(pickle.dumps(op)) == op         # the weakref slot does not reach pickles (Ray, workers)
    del model, op
    gc.collect()
    assert len(weights._cache) == 0 and weights._cached_bytes == 0


@pytest.mark.parametrize("n, c, h, w, o, k, s, pad, d", [
    (3, 5, 13, 11, 7, 3, 1, (1, 1, 1, 1), 1), (4, 3, 17, 17, 16, 3, 2, (1, 1, 1, 1), 1),
    (5, 8, 9, 9, 12, 1, 1, (0, 0, 0, 0), 1), (7, 2, 6, 6, 5, 1, 2, (0, 0, 0, 0), 1),
    (3, 3, 15, 12, 5, 3, 2, (2, 0, 1, 1), 2), (2, 4, 11, 9, 6, 5, 1, (2, 1, 2, 1), 1),
    (1, 6, 10, 10, 9, 3, 1, (1,) * 4, 1)])
@pytest.mark.parametrize("threads", [1, 3])
def test_tiled_conv_batch_is_mnn_exact_conv2d(n, c, h, w, o, k, s, pad, d, threads):
    """The EMA simulation's batch conv in whole-tile column chunks (bounded memory, optional threads)
    gives mnn_exact.conv2d's bits for every chunk size, chunks straddling images included."""
    from mnnlite.kernels import mnn_exact
    from mnnlite.kernels.threads import get_num_threads, set_num_threads
    from mnnlite.kernels.mnn_ops import tiled_conv_batch

    x, wt, b = _x((n, c, h, w)), _x((o, c, k, k)), _x((o,))
    want = mnn_exact.conv2d(x, wt, b, (s, s), pad, (d, d), 0, strassen=False)
    before = get_num_threads()
    set_num_threads(threads)
    try:
        for chunk in (4 * c * k * k * 24, 4 * c * k * k * 72, 1 << 20, 32 << 20):
            got = tiled_conv_batch(x, wt, b, (s, s), pad, (d, d), 0, chunk_bytes=chunk)
            assert got.shape == want.shape and np.array_equal(got.view(np.int32), want.view(np.int32)), chunk
    finally:
        set_num_threads(before)
