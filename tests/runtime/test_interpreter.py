"""The Interpreter itself: input checks, errors, tracing and observing, bounded memory."""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from mnnlite.errors import ShapeError, UnsupportedOpError
from mnnlite.format.tables import TABLE_CLASSES as T, DataFormat, OpType
from mnnlite.ops.registry import supported_op_types
from mnnlite.runtime import InputInfo, Interpreter
from builders.mnn_graph import NetBuilder

NCHW, NHWC = DataFormat.NCHW, DataFormat.NHWC
add = T["BinaryOp"](opType=0, T=1)


def _chain(tmp_path, steps=6):
    """x -> relu -> (+ c) -> relu -> ...; also a second input and an int input for the checks."""
    b = NetBuilder()
    b.input("x", [1, 3, -1, -1])
    b.input("tok", [1, 4], dtype=3)
    b.const("c", np.full((1, 3, 1, 1), 0.5, np.float32))
    prev = "x"
    for i in range(steps):
        b.op(OpType.ReLU, [prev], [f"r{i}"], T["Relu"](slope=0.0))
        b.op(OpType.BinaryOp, [f"r{i}", "c"], [f"a{i}"], add)
        prev = f"a{i}"
    b.op(OpType.Shape, ["tok"], ["tok_shape"], fmt=NCHW)
    return b.save(tmp_path / "chain.mnn", [prev, "tok_shape"]), prev


def _feeds(h=4, w=5):
    return {"x": np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32),
            "tok": np.arange(4, dtype=np.int64).reshape(1, 4)}


def test_kernels_of_every_family_are_registered():
    supported = set(supported_op_types())
    for op in ("Input", "Reshape", "While", "Convolution", "BinaryOp", "Reduction", "LayerNorm"):
        assert op in supported


def test_input_info_and_names(tmp_path):
    path, out = _chain(tmp_path)
    interp = Interpreter(path)
    assert interp.input_names == ["x", "tok"]
    assert interp.output_names == [out, "tok_shape"]
    info = interp.input_info()
    assert info["x"] == InputInfo((1, 3, -1, -1), np.dtype(np.float32), "NCHW")
    assert info["tok"] == InputInfo((1, 4), np.dtype(np.int32), "NCHW")


def test_dynamic_dims_take_any_size_and_int64_feeds_are_narrowed(tmp_path):
    path, out = _chain(tmp_path)
    interp = Interpreter(path)
    for h, w in ((4, 5), (7, 2)):
        feeds = _feeds(h, w)
        got = interp.run(feeds)
        expect = feeds["x"]
        for _ in range(6):
            expect = np.maximum(expect, 0) + 0.5
        np.testing.assert_allclose(got[out], expect, rtol=1e-6)
        assert got["tok_shape"].dtype == np.int32
        np.testing.assert_array_equal(got["tok_shape"], [1, 4])


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update(nope=f["x"]), "unknown input 'nope'"),
    (lambda f: f.pop("tok"), "input 'tok' was not fed"),
    (lambda f: f.update(x=f["x"][0]), "expects rank 4"),
    (lambda f: f.update(x=np.zeros((1, 2, 4, 4), np.float32)), "dim 1 must be 3"),
    (lambda f: f.update(x=np.zeros((1, 3, 0, 4), np.float32)), "must be > 0"),
    (lambda f: f.update(x=f["x"].astype(np.int32)), "expects float values"),
    (lambda f: f.update(tok=f["tok"].astype(np.float32)), "expects int32 values"),
    (lambda f: f.update(tok=np.full((1, 4), 2 ** 40, np.int64)), "do not fit"),
])
def test_bad_feeds_raise_shape_error_naming_the_input(tmp_path, change, message):
    path, _ = _chain(tmp_path)
    feeds = _feeds()
    change(feeds)
    with pytest.raises(ShapeError, match=message):
        Interpreter(path).run(feeds)


def test_input_too_small_for_the_model_raises_shape_error(tmp_path):
    """A slice that starts past the end of a too small input: the op and tensor are named."""
    b = NetBuilder()
    b.input("x", [1, 2, -1])
    b.const("beg", np.array([0, 0, 4], np.int32))
    b.const("end", np.array([1, 2, 8], np.int32))
    b.const("st", np.array([1, 1, 1], np.int32))
    b.op(OpType.StridedSlice, ["x", "beg", "end", "st"], ["tail"], T["StridedSliceParam"]())
    interp = Interpreter(b.save(tmp_path / "tail.mnn", ["tail"]))
    assert interp.run({"x": np.ones((1, 2, 9), np.float32)})["tail"].shape == (1, 2, 4)
    with pytest.raises(ShapeError, match=r"op 'tail' \(StridedSlice\).*'tail'.*dimension <= 0"):
        interp.run({"x": np.ones((1, 2, 3), np.float32)})


def test_kernel_errors_name_the_op(tmp_path):
    b = NetBuilder()
    b.input("x", [2, 6])
    b.op(OpType.Reshape, ["x"], ["r"], T["Reshape"](dims=np.array([5, -1], np.int32)))
    with pytest.raises(ShapeError, match=r"op 'r' \(Reshape.*cannot reshape"):
        Interpreter(b.save(tmp_path / "r.mnn", ["r"])).run({"x": np.ones((2, 6), np.float32)})


def test_nan_inputs_propagate(tmp_path):
    path, out = _chain(tmp_path)
    feeds = _feeds()
    feeds["x"][0, 1, 2, 3] = np.nan
    got = Interpreter(path).run(feeds)[out]
    assert np.isnan(got[0, 1, 2, 3]) and np.isfinite(np.delete(got.ravel(), 1 * 20 + 2 * 5 + 3)).all()


def test_unsupported_op_is_reported_at_construction(tmp_path):
    b = NetBuilder()
    b.input("x", [1, 4])
    b.op(OpType.Proposal, ["x"], ["y"], name="rpn")
    with pytest.raises(UnsupportedOpError) as err:
        Interpreter(b.save(tmp_path / "u.mnn", ["y"]))
    text = str(err.value)
    assert "\n" not in text and "'rpn'" in text and "Proposal" in text and "Convolution" in text


def test_return_all_trace_and_observe(tmp_path):
    path, out = _chain(tmp_path)
    feeds = _feeds()
    plain = Interpreter(path).run(feeds)
    assert set(plain) == {out, "tok_shape"}
    everything = Interpreter(path).run(feeds, return_all=True)
    traced = Interpreter(path, trace=True).run(feeds)
    names = {"x", "tok", "c", "tok_shape", *(f"r{i}" for i in range(6)), *(f"a{i}" for i in range(6))}
    assert set(everything) == set(traced) == names
    np.testing.assert_array_equal(everything["r0"], np.maximum(feeds["x"], 0))
    seen = []
    Interpreter(path).run(feeds, observe=lambda i, name, a: seen.append((name, a.shape)))
    assert sorted(n for n, _ in seen) == sorted(names)
    assert ("a3", (1, 3, 4, 5)) in seen


def test_intermediates_are_freed_after_their_last_use(tmp_path):
    """While op k runs, the outputs of ops that nobody reads any more are gone (bounded memory)."""
    path, _ = _chain(tmp_path, steps=20)
    refs, peak = [], [0]

    def observe(index, name, array):
        if name.startswith(("r", "a")):
            gc.collect()
            peak[0] = max(peak[0], sum(r() is not None for r in refs))
            refs.append(weakref.ref(array))
    Interpreter(path).run(_feeds(), observe=observe)
    assert len(refs) == 40 and peak[0] <= 2


def test_nhwc_input_is_fed_in_declared_or_nchw_order(tmp_path):
    b = NetBuilder()
    b.input("x", [1, -1, -1, 3], dformat=NHWC)
    b.op(OpType.ConvertTensor, ["x"], ["y"], T["TensorConvertInfo"](source=NHWC, dest=NCHW))
    b.op(OpType.ConvertTensor, ["y"], ["z"], T["TensorConvertInfo"](source=NCHW, dest=NHWC))
    path = b.save(tmp_path / "n.mnn", ["y", "z"])
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 2)).astype(np.float32)
    # layout="nchw": Caffe order in and out, whatever the declared layout (the Session API's convention)
    interp = Interpreter(path, layout="nchw")
    info = interp.input_info()["x"]
    assert info.layout == "NHWC" and info.shape == (1, -1, -1, 3) and info.feed_shape == (1, 3, -1, -1)
    out = interp.run({"x": x})
    np.testing.assert_array_equal(out["y"], x)
    np.testing.assert_array_equal(out["z"], x)
    with pytest.raises(ShapeError, match=r"expects shape \[1, 3, \?, \?\]"):
        interp.run({"x": np.zeros((1, 4, 2, 3), np.float32)})
    # default: the declared layout (NHWC in, the NHWC output as is, the NCHW one as is)
    interp = Interpreter(path)
    assert interp.input_info()["x"].feed_shape == (1, -1, -1, 3)
    assert interp.output_layouts() == {"y": "NCHW", "z": "NHWC"}
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    out = interp.run({"x": nhwc})
    np.testing.assert_array_equal(out["y"], x)
    np.testing.assert_array_equal(out["z"], nhwc)
    with pytest.raises(ShapeError, match=r"expects shape \[1, \?, \?, 3\]"):
        interp.run({"x": np.zeros((1, 3, 4, 2), np.float32)})


def test_impl_must_be_fast_or_ref(tmp_path):
    path, _ = _chain(tmp_path)
    with pytest.raises(ValueError, match="impl"):
        Interpreter(path, impl="gpu")
