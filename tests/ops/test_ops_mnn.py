"""Op parameters the ONNX converter never emits (TF masks, NHWC tensors, Raster regions, typed constants),
written as MNN graphs by hand and compared with the official runtime (Session API)."""
from __future__ import annotations

import numpy as np
import pytest

import MNN  # noqa: F401,E402  (test oracle: a declared test dependency)

from mnnlite.format.tables import TABLE_CLASSES as T, DataFormat, OpType  # noqa: E402
from mnnlite.runtime import Interpreter  # noqa: E402
from builders.mnn_graph import NetBuilder  # noqa: E402
from oracle import assert_matches, run_oracle_isolated  # noqa: E402

NCHW, NHWC, NC4HW4 = DataFormat.NCHW, DataFormat.NHWC, DataFormat.NC4HW4
rng = np.random.default_rng(11)


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(tmp_path, builder, outputs, feeds, name="m", layout="model"):
    """Our outputs against the official runtime's, run in a child process (hand-built graphs can make it
    abort) in Caffe order, which is the declared layout but for NHWC tensors (``layout="nchw"`` for those)."""
    path = builder.save(tmp_path / f"{name}.mnn", outputs)
    got = Interpreter(path, layout=layout).run(feeds)
    assert_matches(got, run_oracle_isolated(path, feeds, layout="nchw"), name)
    return got


def ss(begin=0, end=0, shrink=0, new=0, ellipsis=0, from_type=0):
    return T["StridedSliceParam"](beginMask=begin, endMask=end, shrinkAxisMask=shrink, newAxisMask=new,
                                  ellipsisMask=ellipsis, fromType=from_type, T=1, Index=3)


# (begin, end, strides, param) on a [2, 3, 4, 5] input
STRIDED = {
    "plain": ([0, 1, 1, 0], [2, 3, 4, 5], [1, 1, 2, 2], ss()),
    "negative_begin_end": ([-2, -3, 0, -4], [2, -1, -1, 5], [1, 1, 1, 3], ss()),
    "masks": ([1, 2, 3, 1], [0, 0, 0, 4], [1, 1, 1, 1], ss(begin=0b0110, end=0b0111)),
    "shrink": ([1, 0, 2, 0], [2, 3, 3, 5], [1, 1, 1, 1], ss(shrink=0b0101)),
    "new_axis": ([0, 0, 1], [2, 0, 3], [1, 1, 1], ss(new=0b010)),
    "ellipsis": ([0, 1], [0, 4], [1, 2], ss(ellipsis=0b01)),
    "ellipsis_middle": ([1, 0, 1], [2, 0, 5], [1, 1, 2], ss(ellipsis=0b10)),
    "clamped": ([0, 0, 0, 0], [9, 9, 99, 9], [1, 2, 3, 1], ss()),
}


def _strided_slice(begin, end, strides, param) -> NetBuilder:
    """x [2, 3, 4, 5] -> StridedSlice(begin, end, strides) -> y."""
    b = NetBuilder()
    b.input("x", [2, 3, 4, 5])
    b.const("b", np.array(begin, np.int32))
    b.const("e", np.array(end, np.int32))
    b.const("s", np.array(strides, np.int32))
    b.op(OpType.StridedSlice, ["x", "b", "e", "s"], ["y"], param)
    return b


@pytest.mark.parametrize("case", sorted(STRIDED))
def test_strided_slice_tf(tmp_path, case):
    check(tmp_path, _strided_slice(*STRIDED[case]), ["y"], {"x": randn(2, 3, 4, 5)}, case)


REVERSED = {  # (begin, end, strides, param, the same slice in numpy)
    "masked": ([0, 0, 0, 0], [0, 0, 0, 0], [-1, -1, 1, -2], ss(begin=0b1111, end=0b1111),
               np.s_[::-1, ::-1, :, ::-2]),
    "bounds": ([-1, 0, 3, 4], [0, 3, 0, 0], [-1, 1, -1, -2], ss(end=0b1001), np.s_[::-1, 0:3, 3:0:-1, 4::-2]),
}


@pytest.mark.parametrize("case", sorted(REVERSED))
def test_strided_slice_negative_strides(tmp_path, case):
    """TF-style negative strides: the official runtime corrupts its heap on these graphs (abort or
    wrong data), so numpy's slicing is the oracle; ONNX negative steps are checked in test_ops_onnx."""
    begin, end, strides, param, index = REVERSED[case]
    b = _strided_slice(begin, end, strides, param)
    x = randn(2, 3, 4, 5)
    got = Interpreter(b.save(tmp_path / "rev.mnn", ["y"])).run({"x": x})
    np.testing.assert_array_equal(got["y"], x[index])


def test_strided_slice_write(tmp_path):
    b = NetBuilder()
    b.input("x", [2, 3, 4])
    b.input("v", [2, 1, 2])
    for n, v in (("b", [0, 1, 0]), ("e", [2, 2, 4]), ("s", [1, 1, 2])):
        b.const(n, np.array(v, np.int32))
    b.op(OpType.StridedSlice, ["x", "b", "e", "s", "v"], ["y"], ss())
    check(tmp_path, b, ["y"], {"x": randn(2, 3, 4), "v": randn(2, 1, 2)}, "write")


def test_slice_variants_and_pack(tmp_path):
    b = NetBuilder()
    b.input("x", [2, 6, 3])
    b.const("beg", np.array([1, -4, 0], np.int32))
    b.const("size", np.array([1, 3, -1], np.int32))
    b.op(OpType.SliceTf, ["x", "beg", "size"], ["tf"])
    b.op(OpType.Slice, ["x"], ["c0", "c1", "c2"], T["Slice"](axis=1, slicePoints=np.array([1, 4], np.int32),
                                                           sourceType=0))                      # Caffe
    b.op(OpType.Slice, ["x"], ["t0", "t1"], T["Slice"](axis=-2, slicePoints=np.array([2], np.int32),
                                                      sourceType=1))                           # TF: 2 parts
    b.op(OpType.Slice, ["x"], ["o0", "o1"], T["Slice"](axis=1, slicePoints=np.array([-1, 2], np.int32),
                                                      sourceType=3))                           # sizes, -1
    b.op(OpType.Pack, ["c1", "t0", "t1"], ["packed"], T["PackParam"](axis=-1))
    b.op(OpType.Unpack, ["x"], ["u0", "u1"], T["Axis"](axis=0))
    b.op(OpType.ExpandDims, ["u1"], ["ex"], T["ExpandDims"](axis=-1))
    outs = ["tf", "c0", "c2", "t1", "o0", "packed", "u0", "ex"]
    check(tmp_path, b, outs, {"x": randn(2, 6, 3)}, "slices")


def test_shape_queries_and_generators(tmp_path):
    b = NetBuilder()
    b.input("x", [1, 3, 4, 5])
    b.op(OpType.Rank, ["x"], ["rank"])
    b.op(OpType.Size, ["x"], ["size"])
    b.op(OpType.Shape, ["x"], ["shape"], T["ShapeParam"](hasStart=True, start=1, hasEnd=True, end=-1), fmt=NCHW)
    b.op(OpType.ZerosLike, ["x"], ["zeros"])
    b.const("val", np.array(2.5, np.float32))
    b.op(OpType.Fill, ["shape", "val"], ["filled"])
    b.const("axis", np.array([2], np.int32))
    b.op(OpType.Reverse, ["x", "axis"], ["rev"])
    b.op(OpType.Permute, ["x"], ["perm_rev"], T["Permute"]())
    b.const("start", np.array(3, np.int32))
    b.const("limit", np.array(-4, np.int32))
    b.const("delta", np.array(-2, np.int32))
    b.op(OpType.Range, ["start", "limit", "delta"], ["irange"])
    b.op(OpType.Identity, ["x", "rev"], ["id0", "id1"])
    outs = ["rank", "size", "shape", "zeros", "filled", "rev", "perm_rev", "irange", "id0", "id1"]
    check(tmp_path, b, outs, {"x": randn(1, 3, 4, 5)}, "queries")


def test_reshape_family(tmp_path):
    b = NetBuilder()
    b.input("x", [2, 1, 3, 1, 4])
    b.op(OpType.Squeeze, ["x"], ["sq_all"], T["SqueezeParam"]())                       # every 1-dim
    b.op(OpType.Squeeze, ["x"], ["sq_one"], T["SqueezeParam"](squeezeDims=np.array([-2], np.int32)))
    b.op(OpType.Unsqueeze, ["sq_all"], ["unsq"], T["SqueezeParam"](squeezeDims=np.array([0, -1], np.int32)))
    b.op(OpType.Flatten, ["x"], ["fl_2d"], T["Flatten"](axis=2))                         # [outer, inner]
    b.const("perm", np.array([4, 0, 2, 3, 1], np.int32))
    b.op(OpType.Transpose, ["x", "perm"], ["tr"])
    b.const("shape", np.array([0, -1, 4], np.int32))
    b.op(OpType.Reshape, ["x", "shape"], ["rs"], T["Reshape"](dimType=NCHW))
    outs = ["sq_all", "sq_one", "unsq", "fl_2d", "tr", "rs"]
    check(tmp_path, b, outs, {"x": randn(2, 1, 3, 1, 4)}, "reshapes")


def test_flatten_with_end_axis(tmp_path):
    """Dims axis..endAxis merge into one.  numpy is the oracle: MNN 3.6.1's FlattenComputer writes the
    dims after endAxis at their input positions (ShapeReshape.cpp), leaving a 0-sized dim here."""
    b = NetBuilder()
    b.input("x", [2, 1, 3, 1, 4])
    b.op(OpType.Flatten, ["x"], ["y"], T["Flatten"](axis=1, endAxis=3))
    x = randn(2, 1, 3, 1, 4)
    np.testing.assert_array_equal(Interpreter(b.save(tmp_path / "fl.mnn", ["y"])).run({"x": x})["y"],
                                  x.reshape(2, 3, 4))


def test_dropout_is_the_identity(tmp_path):
    """The official runtime has no Dropout kernel (the converter removes the op, RemoveDropout.cpp)."""
    b = NetBuilder()
    b.input("x", [2, 3])
    b.op(OpType.Dropout, ["x"], ["y"])
    x = randn(2, 3)
    np.testing.assert_array_equal(Interpreter(b.save(tmp_path / "drop.mnn", ["y"])).run({"x": x})["y"], x)


def test_gathers_tile_broadcast_pad(tmp_path):
    b = NetBuilder()
    b.input("x", [3, 4, 2])
    b.input("idx", [2, 2], dtype=3)
    b.op(OpType.Gather, ["x", "idx"], ["g_axis"], T["Axis"](axis=1))            # an Axis param wins
    b.const("ax", np.array(2, np.int32))
    b.op(OpType.GatherV2, ["x", "idx", "ax"], ["g_in"])
    b.const("nd", np.array([[2, 1], [0, 3], [1, 1]], np.int32))
    b.op(OpType.GatherND, ["x", "nd"], ["gnd"])
    b.const("reps", np.array([2, 1, 3], np.int32))
    b.op(OpType.Tile, ["x", "reps"], ["tiled"])
    b.const("v", randn(3))
    b.const("to", np.array([3, 2, 2], np.int32))
    b.op(OpType.BroadcastTo, ["v", "to"], ["fwd"], T["Axis"](axis=1))            # TF select: leading dims
    b.const("to2", np.array([2, 1, 1, 2], np.int32))
    b.op(OpType.BroadcastTo, ["x", "to2"], ["bcast"])
    b.const("pads", np.array([1, 2, 0, 1, 1, 0], np.int32))
    b.op(OpType.Padding, ["x", "pads"], ["sym"], T["PadParam"](mode=2))
    b.op(OpType.Padding, ["x", "pads"], ["refl"], T["PadParam"](mode=1))
    outs = ["g_axis", "g_in", "gnd", "tiled", "fwd", "bcast", "sym", "refl"]
    feeds = {"x": randn(3, 4, 2), "idx": np.array([[0, 1], [1, 1]], np.int32)}
    check(tmp_path, b, outs, feeds, "gathers")


def test_gather_out_of_range_indices_give_zeros(tmp_path):
    b = NetBuilder()
    b.input("x", [4, 3])
    b.input("idx", [3], dtype=3)
    b.op(OpType.GatherV2, ["x", "idx"], ["g"])
    got = check(tmp_path, b, ["g"], {"x": randn(4, 3), "idx": np.array([1, 7, -2], np.int32)}, "oob")
    assert not got["g"][1:].any()


def test_constants_of_every_stored_type(tmp_path):
    b = NetBuilder()
    b.input("x", [2, 3])
    half = randn(2, 3)
    b.const("h", half, data_type=19)                               # DT_HALF bytes -> float32
    b.op(OpType.BinaryOp, ["x", "h"], ["xh"], T["BinaryOp"](opType=0, T=1))
    b.const("i8", np.array([[-3, 4, 100]], np.int8), data_type=6)
    b.op(OpType.Concat, ["i8", "i8"], ["i8cat"], T["Axis"](axis=0))
    b.op(OpType.Cast, ["i8cat"], ["i8f"], T["CastParam"](dstT=1))   # the binding cannot read int8 outputs
    b.const("u8", np.array([[250, 3, 7]], np.uint8), data_type=4)
    b.op(OpType.Concat, ["u8", "u8"], ["u8cat"], T["Axis"](axis=0))
    tp = T["Blob"](dims=np.array([3], np.int32), dataType=1, dataFormat=0, float32s=randn(3))
    b.op(OpType.TrainableParam, [], ["w"], tp)
    b.op(OpType.BinaryOp, ["x", "w"], ["xw"], T["BinaryOp"](opType=2, T=1))
    path = b.save(tmp_path / "consts.mnn", ["xh", "i8f", "u8cat", "xw"])
    feeds = {"x": randn(2, 3)}
    got = Interpreter(path).run(feeds)
    assert_matches(got, run_oracle_isolated(path, feeds, layout="nchw"), "consts")
    np.testing.assert_allclose(got["xh"], feeds["x"] + half.astype(np.float16).astype(np.float32), rtol=1e-6)
    assert got["u8cat"].dtype == np.uint8


def test_int64_constants_are_clamped_to_int32_like_the_converter():
    """MNN itself cannot load int64s (loadBlobData); the ONNX converter narrows with +-2^30 clamping."""
    from mnnlite.ops.const import blob_array
    blob = T["Blob"](dims=np.array([3], np.int32), dataType=9, dataFormat=0,
                     int64s=np.array([5, -(2 ** 40), 2 ** 62], np.int64))
    out = blob_array(blob, "test")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [5, -(2 ** 30), 2 ** 30])


# ------------------------------------------------------------------------------------------- layouts

def test_nhwc_input_and_output_are_exchanged_in_caffe_order(tmp_path):
    """With layout="nchw" an NHWC tensor is fed and returned as NCHW, like Tensor(t, CAFFE) host tensors in
    MNN; by default it is fed and returned as declared (NHWC), the same values moved."""
    b = NetBuilder()
    b.input("x", [1, 4, 5, 3], dformat=NHWC)                              # N H W C
    b.op(OpType.ReLU, ["x"], ["nhwc_out"], T["Relu"](slope=0.0))
    b.op(OpType.ConvertTensor, ["x"], ["nchw"], T["TensorConvertInfo"](source=NHWC, dest=NCHW))
    b.op(OpType.Concat, ["x", "x"], ["cat_c"], T["Axis"](axis=3))         # NHWC axis 3 = channels
    b.op(OpType.DepthToSpace, ["cat_c"], ["d2s"], T["DepthSpaceParam"](blockSize=1))
    b.op(OpType.Shape, ["x"], ["shape"])
    x = randn(1, 3, 4, 5)                                                 # Caffe order
    got = check(tmp_path, b, ["nhwc_out", "nchw", "cat_c", "d2s", "shape"], {"x": x}, "nhwc", layout="nchw")
    np.testing.assert_array_equal(got["nchw"], x)
    np.testing.assert_array_equal(got["nhwc_out"], np.maximum(x, 0))
    np.testing.assert_array_equal(got["shape"], [1, 4, 5, 3])
    declared = Interpreter(tmp_path / "nhwc.mnn").run({"x": np.ascontiguousarray(np.moveaxis(x, 1, -1))})
    np.testing.assert_array_equal(declared["nchw"], x)                                  # an NCHW tensor
    for name in ("nhwc_out", "cat_c", "d2s"):                                           # NHWC tensors
        np.testing.assert_array_equal(declared[name], np.moveaxis(got[name], 1, -1))


def test_nhwc_depth_to_space(tmp_path):
    b = NetBuilder()
    b.input("x", [1, 2, 3, 8], dformat=NHWC)
    b.op(OpType.DepthToSpace, ["x"], ["dcr"], T["DepthSpaceParam"](blockSize=2, mode=0))
    b.op(OpType.DepthToSpace, ["x"], ["crd"], T["DepthSpaceParam"](blockSize=2, mode=1))
    b.op(OpType.SpaceToDepth, ["dcr"], ["back"], T["DepthSpaceParam"](blockSize=2, mode=0))
    check(tmp_path, b, ["dcr", "crd", "back"], {"x": randn(1, 8, 2, 3)}, "nhwc_d2s", layout="nchw")


def test_nc4hw4_shape_and_reshape_follow_the_nhwc_rules(tmp_path):
    """Shape of an NC4HW4 tensor by an op whose default format is NHWC lists N,H,W,C; a Reshape with
    dimType NHWC reads that shape in NHWC order and reorders the elements in NHWC order."""
    b = NetBuilder()
    b.input("x", [1, 3, 4, 2], dformat=NC4HW4)
    b.op(OpType.Shape, ["x"], ["shape_nhwc"], fmt=NHWC)
    b.op(OpType.Shape, ["x"], ["shape_nchw"], fmt=NCHW)
    b.op(OpType.Reshape, ["x", "shape_nhwc"], ["same"], T["Reshape"](dimType=NHWC))
    b.op(OpType.Reshape, ["x"], ["r_nhwc"], T["Reshape"](dims=np.array([1, 6, 2, 2], np.int32), dimType=NHWC))
    b.op(OpType.Reshape, ["x"], ["r_nchw"], T["Reshape"](dims=np.array([1, 6, 2, 2], np.int32), dimType=NCHW))
    b.op(OpType.ConvertTensor, ["r_nhwc"], ["r_nhwc_out"], T["TensorConvertInfo"](source=NC4HW4, dest=NCHW))
    b.op(OpType.Reshape, ["x"], ["flat_nhwc"], T["Reshape"](dims=np.array([1, -1], np.int32), dimType=NHWC))
    b.op(OpType.Reshape, ["x"], ["r3_nhwc"], T["Reshape"](dims=np.array([1, 4, 6], np.int32), dimType=NHWC))
    outs = ["shape_nhwc", "shape_nchw", "same", "r_nhwc_out", "r_nchw", "flat_nhwc", "r3_nhwc"]
    got = check(tmp_path, b, outs, {"x": randn(1, 3, 4, 2)}, "nc4hw4")
    np.testing.assert_array_equal(got["shape_nhwc"], [1, 4, 2, 3])


def test_raster_regions_from_extra_attributes(tmp_path):
    """Raster with Extra ``region`` (11 ints per input: src offset/strides, dst offset/strides, size)."""
    b = NetBuilder()
    b.input("a", [2, 3])
    b.input("c", [4])
    # per input: src offset, 3 src strides, dst offset, 3 dst strides, 3 sizes
    regions = [0, 0, 1, 3, 0, 0, 5, 1, 1, 3, 2,        # a transposed into rows 0..2, cols 0..1
               1, 0, 1, 0, 2, 0, 5, 0, 1, 3, 1]        # c[1:4] into column 2
    attrs = [T["Attribute"](key="region", list=T["ListValue"](i=np.array(regions, np.int32))),
             T["Attribute"](key="shape", list=T["ListValue"](i=np.array([3, 5], np.int32)))]
    b.op(OpType.Raster, ["a", "c"], ["r"], T["Extra"](type="Raster", engine="MNN", attr=attrs))
    a, c = randn(2, 3), randn(4)
    got = check(tmp_path, b, ["r"], {"a": a, "c": c}, "raster")
    expect = np.zeros((3, 5), np.float32)
    expect[:, :2] = a.T
    expect[:, 2] = c[1:]
    np.testing.assert_array_equal(got["r"], expect)
