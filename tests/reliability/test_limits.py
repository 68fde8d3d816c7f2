"""Issue 15, item 3: one field of a hostile model (or config, or image) cannot make mnnlite allocate or
loop without bound; the refusal is one line naming op, shape and bytes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mnnlite
from mnnlite import limits
from mnnlite.errors import ConfigError, FormatError, ResourceError, ShapeError
from mnnlite.format.tables import TABLE_CLASSES, OpType
from mnnlite.runtime import Interpreter

REPO = Path(__file__).resolve().parents[2]
X = np.zeros((1, 3, 48, 192), np.float32)         # ppocr_cls's input


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mnnlite", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=600)


@pytest.fixture
def cls(zoo):
    return zoo.model_path("ppocr_cls", "float")


def _first(model, op_type):
    return next(op for op in model.graph.ops if op.type == op_type)


def test_memory_budget_names_op_shape_and_bytes(cls, tmp_path):
    with limits.memory_limit("64K"):
        with pytest.raises(ResourceError) as err:
            Interpreter(cls).run({"x": X})
    message = str(err.value)
    assert re.search(r"op '[^']+' \(\w+\): output of shape 1x\d+x\d+x\d+ needs [\d.]+ KiB, more than "
                     r"the memory budget 64.0 KiB", message), message
    np.save(tmp_path / "x.npy", X)
    proc = _cli("run", cls, "--input", tmp_path / "x.npy", "--max-memory", "64K")
    assert proc.returncode == 2 and "memory budget 64.0 KiB" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert Interpreter(cls).run({"x": X})          # the default budget (available RAM) runs it


def test_budget_sizes_and_default():
    assert limits.parse_size("2G") == 2 << 30 and limits.parse_size("512m") == 512 << 20
    assert limits.parse_size(1000) == 1000 and limits.parse_size("1.5KiB") == 1536
    for bad in ("lots", "-1G", "0", "3X"):
        with pytest.raises(ConfigError):
            limits.parse_size(bad)
    assert 0 < limits.max_memory()
    limits.set_max_memory("3M")
    try:
        assert limits.max_memory() == 3 << 20
    finally:
        limits.set_max_memory(None)
    proc = _cli("run", "x.mnn", "--max-memory", "lots")
    assert proc.returncode == 2 and "memory size 'lots'" in proc.stderr


def test_huge_input_dims_are_refused_before_allocating(cls, tmp_path):
    model = mnnlite.load_model(cls)
    _first(model, OpType.Input).main.dims = np.array([1, 3, 100000, 100000], np.int32)
    path = tmp_path / "huge.mnn"
    mnnlite.save_model(model, path)
    proc = _cli("run", path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "random input of shape 1x3x100000x100000 needs 111.8 GiB" in proc.stderr


@pytest.mark.parametrize("field, value, needle", [
    ("strideX", 2 ** 24, "stride 16777216 is larger than 65536"),
    ("strideY", 0, "stride must be >= 1, got 0"),
    ("kernelX", -3, "kernel size must be >= 1"),
    ("dilateX", 2 ** 31 - 1, "dilation 2147483647 is larger"),
])
def test_conv_attributes_checked_before_the_kernel(cls, field, value, needle):
    model = mnnlite.load_model(cls)
    setattr(_first(model, OpType.Convolution).main.common, field, value)
    with pytest.raises(FormatError, match=needle):
        Interpreter(model)


@pytest.mark.parametrize("scale", [1e30, float("inf"), 3e9])
def test_extreme_interp_scales(zoo, scale):
    """ppocr_det's upsampling Interp with a hostile scale: one line, no OverflowError."""
    model = mnnlite.load_model(zoo.model_path("ppocr_det", "float"))
    op = _first(model, OpType.Interp)
    op.main.heightScale = scale
    op.main.outputHeight = op.main.outputWidth = 0
    with pytest.raises((FormatError, ShapeError)) as err:
        Interpreter(model).run({"x": np.zeros((1, 3, 64, 64), np.float32)})
    assert "heightScale" in str(err.value) or "not a size" in str(err.value)


def test_loop_with_an_int_max_trip_count_is_capped(zoo, monkeypatch):
    model = mnnlite.load_model(zoo.model_path("ifgraph", "float"))
    loop = next(op for op in model.graph.ops if op.type == OpType.While)
    trip = next(op for op in model.graph.ops if int(op.outputIndexes[0]) == int(loop.inputIndexes[0]))
    trip.main.int32s = np.array([2 ** 31 - 1], np.int32) if trip.main.int32s is not None else trip.main.int32s
    trip.main.int64s = np.array([2 ** 31 - 1], np.int64) if trip.main.int64s is not None else trip.main.int64s
    monkeypatch.setattr(limits, "MAX_LOOP_ITERATIONS", 50)
    with pytest.raises(ResourceError, match=r"loop ran 50 iterations without finishing"):
        Interpreter(model).run({"x": np.ones((1, 8), np.float32)})


def test_self_recursive_subgraph_is_capped(zoo):
    """An If whose branches contain the If again: MNN recurses until the stack ends; we stop at the cap."""
    model = mnnlite.load_model(zoo.model_path("ifgraph", "float"))
    outer = next(op for op in model.graph.ops if op.type == OpType.If)
    for sub in model.net.subgraphs:
        if sub.name in (outer.main.then_graph, outer.main.else_graph):
            sub.tensors = list(sub.tensors) + ["again"]
            x = int(sub.inputs[0])
            sub.nodes = list(sub.nodes) + [TABLE_CLASSES["Op"](
                name="again", type=OpType.If, inputIndexes=np.array([x, x], np.int32),
                outputIndexes=np.array([len(sub.tensors) - 1], np.int32), main=outer.main)]
    model = mnnlite.loads(mnnlite.dumps(model))
    with pytest.raises(ResourceError, match=rf"nested {limits.MAX_SUBGRAPH_DEPTH} deep"):
        Interpreter(model).run({"x": np.ones((1, 8), np.float32)})


def test_image_size_checked_before_decoding(tmp_path, monkeypatch):
    from mnnlite.quant.image import decode_rgba

    assert Image.MAX_IMAGE_PIXELS is not None           # Pillow's decompression-bomb guard stays on
    path = tmp_path / "big.png"
    Image.new("L", (300, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300 * 200 - 1)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(1))
    with pytest.raises(ResourceError, match=r"300x200 pixels is over Pillow's decompression-bomb limit"):
        decode_rgba(str(path))
    assert not decoded                                  # refused from the header alone
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10 ** 9)
    with limits.memory_limit("100K"):
        with pytest.raises(ResourceError, match="decoded image of shape 200x300x4"):
            decode_rgba(str(path))


def test_oversized_calibration_image_is_skipped_with_a_warning(zoo, tmp_path, monkeypatch):
    cfg = zoo.quant_config("nhwc_like", "quant_kl")
    calib = tmp_path / "calib"
    calib.mkdir()
    for p in sorted(Path(cfg["path"]).iterdir())[:2]:
        (calib / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (4000, 3000)).save(calib / "zz_bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000 * 3000 - 1)
    cfg = dict(cfg, path=str(calib), used_image_num=3)
    report = mnnlite.quantize(zoo.model_path("nhwc_like", "float"), tmp_path / "q.mnn", cfg)
    assert any("zz_bomb.png" in w and "decompression-bomb" in w for w in report.warnings), report.warnings
