"""Issue 15, items 4 and 6: each failure class found by probing ends in one line and exit code 2 (3 when
interrupted), fixed where it arises; structural nonsense MNN also rejects is refused by name."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnnlite
from mnnlite.errors import ConfigError, FormatError, ResourceError
from mnnlite.format.tables import TABLE_CLASSES, OpType
from mnnlite.quant.config import load_config
from mnnlite.quant.feature.admm import ADMMObserver
from mnnlite.quant.feature.kl import KLObserver
from mnnlite.runtime import Interpreter
from mnnlite.safety import guarded_call

REPO = Path(__file__).resolve().parents[2]
X = np.zeros((1, 3, 48, 192), np.float32)         # ppocr_cls's input


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mnnlite", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=600, env=env)


@pytest.fixture
def cls(zoo):
    return mnnlite.load_model(zoo.model_path("ppocr_cls", "float"))


def _first(model, op_type):
    return next(op for op in model.graph.ops if op.type == op_type)


def test_memory_error_in_a_kernel_names_the_op(cls):
    interp = Interpreter(cls)
    step = next(s for s in interp._programs[""].steps if s.op.type == OpType.Convolution)
    step.kernel = lambda call: [np.empty((1 << 22, 1 << 22, 1 << 8), np.float32)]   # numpy's _ArrayMemoryError
    with pytest.raises(ResourceError) as err:
        interp.run({"x": X})
    message = str(err.value)
    assert f"op {step.op.name!r} (Convolution)" in message and "cannot allocate 16384.0 TiB" in message
    assert "for an array of shape (4194304, 4194304, 256) float32; out of memory" in message
    assert "\n" not in message


@pytest.mark.parametrize("op_type", [OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Pooling3D,
                                     OpType.ConvertTensor])
def test_missing_parameter_tables(cls, op_type):
    _first(cls, op_type).main = None
    with pytest.raises(FormatError, match="has no parameter table, which this op type needs"):
        Interpreter(cls)


def test_missing_interp_table(zoo):
    model = mnnlite.load_model(zoo.model_path("ppocr_det", "float"))
    _first(model, OpType.Interp).main = None
    with pytest.raises(FormatError, match=r"\(Interp\): has no parameter table"):
        Interpreter(model)


def test_non_finite_activations_get_no_scale():
    """A layer that overflowed to inf on a calibration sample: KL divided by zero, ADMM binned NaN."""
    kl = KLObserver()
    for index in (0, 1):
        kl.pass_index = index
        kl.update(np.array([1.0, np.inf, -2.0], np.float32))
    assert kl.compute().scale == 0.0
    admm = ADMMObserver()
    for index in (0, 1):
        admm.start_pass(index)
        admm.update(np.array([1.0, np.inf, np.nan], np.float32))
    assert admm.compute() == (0.0, 0)


def test_deeply_nested_config(tmp_path):
    deep = {"inputs": []}
    node = deep["inputs"]
    for _ in range(5000):
        node.append([])
        node = node[0]
    with pytest.raises(ConfigError, match="nests more than 32 levels"):
        load_config(deep)
    path = tmp_path / "deep.json"
    path.write_text('{"inputs": ' + "[" * 200000 + "]" * 200000 + "}")
    with pytest.raises(ConfigError, match="nests deeper"):
        load_config(path)


def test_non_ascii_names_under_an_ascii_stdout(cls, tmp_path):
    """Names come from the file (decoded with surrogateescape: invalid UTF-8 survives as surrogates)."""
    cls.net.tensorName[0] = "x\udcff\u00e9"
    cls.graph.ops[0].name = "x\udcff\u00e9"
    path = tmp_path / "names.mnn"
    mnnlite.save_model(cls, path)
    env = dict(os.environ, PYTHONIOENCODING="ascii", LANG="C", LC_ALL="C")
    proc = _cli("info", path, env=env)
    assert proc.returncode == 0 and "x\\udcff\\xe9" in proc.stdout, proc.stderr
    np.save(tmp_path / "x.npy", X)
    proc = _cli("run", path, "--input", tmp_path / "x.npy", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("run", path, "--input", f"bad\u00e9={tmp_path / 'x.npy'}", env=env)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and "bad\\xe9" in proc.stderr


def test_last_resort_guard(capsys):
    def buggy(_):
        raise KeyError("surprise\nsecond line")
    assert guarded_call(buggy, None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mnnlite: internal error: KeyError")

    def interrupted(_):
        raise KeyboardInterrupt
    assert guarded_call(interrupted, None) == 3
    assert capsys.readouterr().err == "mnnlite: interrupted; temporary files removed\n"


# ------------------------------------------------------------------------------------ structural checks

@pytest.mark.parametrize("op_type, field, value, needle", [
    (OpType.Convolution, "group", 2, "group 2 does not divide the 3 input channels"),
    (OpType.ConvolutionDepthwise, "group", 0, "depthwise group must be >= 1, got 0"),
    (OpType.Convolution, "padMode", 99, "padMode 99 is not 0 (CAFFE), 1 (VALID) or 2 (SAME)"),
    (OpType.Convolution, "strideX", 0, "stride must be >= 1, got 0"),
])
def test_conv_structure(cls, tmp_path, op_type, field, value, needle):
    setattr(_first(cls, op_type).main.common, field, value)
    path = tmp_path / "bad.mnn"
    mnnlite.save_model(cls, path)
    np.save(tmp_path / "x.npy", X)
    proc = _cli("run", path, "--input", tmp_path / "x.npy")
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "division" not in proc.stderr


@pytest.mark.parametrize("field", ["scale", "zero", "min", "max"])
def test_non_finite_quant_info(zoo, tmp_path, field):
    """Found by tools/fuzz_cli.py (selfie segmentation's KL file, quantInfo.min = NaN): the int8 plan took
    int(min) and stopped with a ValueError traceback."""
    model = mnnlite.load_model(zoo.model_path("ppocr_cls", "quant_kl"))
    describe = next(d for d in model.net.extraTensorDescribe if d.quantInfo is not None)
    setattr(describe.quantInfo, field, float("nan"))
    path = tmp_path / "bad.mnn"
    mnnlite.save_model(model, path)
    np.save(tmp_path / "x.npy", X)
    proc = _cli("run", path, "--input", tmp_path / "x.npy")
    name = model.net.tensorName[describe.index]
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"tensor {name!r}: quant info {field} is nan, not a finite number" in proc.stderr


def test_negative_pool_pads(cls):
    pool = _first(cls, OpType.Pooling)
    pool.main.pads = np.array([0, -2, 0, 0], np.int32)
    with pytest.raises(FormatError, match=r"pads \[0, -2, 0, 0\] are negative; pooling pads must be >= 0"):
        Interpreter(cls)


def _reshape_model(dims) -> mnnlite.Model:
    """Input [1, 16, 16, 32] -> Reshape(dims)."""
    T = TABLE_CLASSES
    ops = [T["Op"](name="x", type=OpType.Input, outputIndexes=np.array([0], np.int32),
                   main=T["Input"](dims=np.array([1, 16, 16, 32], np.int32))),
           T["Op"](name="r", type=OpType.Reshape, inputIndexes=np.array([0], np.int32),
                   outputIndexes=np.array([1], np.int32), main=T["Reshape"](dims=np.array(dims, np.int32)))]
    return mnnlite.loads(mnnlite.dumps(mnnlite.Model(T["Net"](oplists=ops, tensorName=["x", "y"], outputName=["y"],
                                                                sourceType=3))))


@pytest.mark.parametrize("dims, needle", [
    ([0, 0, 0, 0, 0, 0], "copies dim 4 (0) of an input of rank 4"),
    ([-1, -1], "has more than one -1"),
    ([0, 0], "cannot reshape a tensor of shape (1, 16, 16, 32)"),
])
def test_zero_reshape_dims_where_invalid(dims, needle):
    """0 copies the input's dim at that position (ShapeReshape.cpp): past the input's rank, or when the
    element count then does not fit, it is an error naming the op."""
    assert Interpreter(_reshape_model([0, -1])).run({"x": np.zeros((1, 16, 16, 32), np.float32)})["y"].shape == \
        (1, 16 * 16 * 32)
    with pytest.raises(mnnlite.ShapeError) as err:
        Interpreter(_reshape_model(dims)).run({"x": np.zeros((1, 16, 16, 32), np.float32)})
    assert "\n" not in str(err.value) and "op 'r' (Reshape" in str(err.value) and needle in str(err.value)


def test_info_counts_subgraph_ops_separately(zoo):
    proc = _cli("info", zoo.model_path("ifgraph", "float"), "--json")
    info = json.loads(proc.stdout)
    model = mnnlite.load_model(zoo.model_path("ifgraph", "float"))
    assert info["ops"] == len(model.graph.ops) == sum(info["op_types"].values())
    assert [s["ops"] for s in info["subgraphs"]] == [sum(s["op_types"].values()) for s in info["subgraphs"]]
    assert "If" in info["op_types"] and all("If" not in s["op_types"] for s in info["subgraphs"])


def test_info_on_a_fifo_refuses_at_once(tmp_path):
    fifo = tmp_path / "pipe.mnn"
    os.mkfifo(fifo)
    proc = _cli("info", fifo)          # would block forever waiting for a writer if opened
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    proc = _cli("info", "/dev/null")
    assert proc.returncode == 2 and "not a regular file" in proc.stderr


def test_fifo_config_and_input_refuse_at_once(zoo, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    model = zoo.model_path("ppocr_cls", "float")
    proc = _cli("quantize", model, tmp_path / "q.mnn", fifo)
    assert proc.returncode == 2 and "config is not a regular file" in proc.stderr
    proc = _cli("run", model, "--input", fifo)
    assert proc.returncode == 2 and "is not a regular file" in proc.stderr


def test_info_on_a_convert_tensor_without_its_table(cls):
    """Found by tools/fuzz_cli.py: ``info`` derives the declared layouts before any structural check."""
    from mnnlite.info import describe
    _first(cls, OpType.ConvertTensor).main = None
    with pytest.raises(FormatError, match=r"\(ConvertTensor\): has no parameter table"):
        describe(cls)
