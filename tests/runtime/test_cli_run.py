"""``mnnlite run``: inputs from .npy files or random ones, outputs to .npz, exit codes."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from mnnlite.cli import run
from mnnlite.cli.main import run_guarded
from mnnlite.format.tables import TABLE_CLASSES as T, OpType
from mnnlite.runtime import Interpreter
from builders.mnn_graph import NetBuilder


def cli(*argv) -> int:
    parser = argparse.ArgumentParser()
    run.add_parser(parser.add_subparsers())
    args = parser.parse_args(["run", *map(str, argv)])
    return run_guarded(args.func, args)


@pytest.fixture
def model(tmp_path):
    b = NetBuilder()
    b.input("x", [1, 2, -1, -1])
    b.input("bias", [1, 2, 1, 1])
    b.op(OpType.BinaryOp, ["x", "bias"], ["y"], T["BinaryOp"](opType=0, T=1))
    b.op(OpType.Shape, ["y"], ["shape"])
    return b.save(tmp_path / "m.mnn", ["y", "shape"])


def test_run_writes_every_output_and_reports_latency(model, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert cli(model, "--input", f"x={tmp_path / 'x.npy'}", "-o", out, "--repeat", 3, "--threads", 2) == 0
    text = capsys.readouterr().out
    assert "random float32 values of shape [1, 2, 1, 1]" in text          # bias was not given
    assert "output y: shape [1, 2, 3, 4] float32" in text
    assert "median of 3 run(s)" in text
    saved = np.load(out)
    assert sorted(saved.files) == ["shape", "y"]
    np.testing.assert_array_equal(saved["shape"], [1, 2, 3, 4])
    expect = Interpreter(model).run({"x": x, "bias": np.random.default_rng(0).standard_normal((1, 2, 1, 1))
                                     .astype(np.float32)})
    np.testing.assert_allclose(saved["y"], expect["y"], rtol=1e-6)


@pytest.mark.parametrize("argv, message", [
    ([], "input 'x' has dynamic dims"),
    (["--input", "nope=a.npy"], "has no input 'nope'"),
    (["--input", "x=missing.npy"], "cannot read"),
    (["--input", "lonely.npy"], "write NAME=FILE.npy"),
])
def test_bad_arguments_exit_with_code_2(model, capsys, argv, message):
    assert cli(model, *argv) == 2
    assert message in capsys.readouterr().err


def test_quantized_models_run_in_int8_unless_forced_to_float(tmp_path, capsys):
    b = NetBuilder()
    b.input("x", [1, 3])
    b.op(OpType.ReLU, ["x"], ["y"], T["Relu"](slope=0.0))
    b.describes = [T["TensorDescribe"](index=0, quantInfo=T["TensorQuantInfo"](scale=0.1, type=6))]
    path = b.save(tmp_path / "q.mnn", ["y"])
    assert cli(path) == 0
    assert "runs it in int8" in capsys.readouterr().out
    assert cli(path, "--float") == 0
    assert "runs it in float" in capsys.readouterr().out
