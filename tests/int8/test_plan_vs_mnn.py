"""The int8 plan against the official runtime's own command list, on every quantized zoo file.

MNN's Session debug callbacks name every command it runs after geometry lowering (``<op>_raster_<k>``
for unnamed ones) and mark those whose output holds int8 (" [ DT_INT8 ] ").  Our plan must list the
same compute commands and casts, with the same int8/float decision, in the same order.  Raster
commands are left out of the comparison: MNN fuses chains of regions where it can and materialises an
intermediate copy where it cannot (mnnlite.int8.plan does not model region algebra); the copies move
values exactly either way.
"""
from __future__ import annotations

import re

import numpy as np

import pytest

import model_zoo as zoo
from oracle.runtime import commands as oracle_commands
from mnnlite.int8 import int8_plan
from mnnlite.runtime import Interpreter

VARIANTS = ("quant_kl", "quant_ema")
CASES = [(n, v) for n in zoo.model_names() for v in VARIANTS if v in zoo.variants_for(n)]


def _normalized(rows):
    return [(re.sub(r"_raster_\d+$", "_raster_*", name), kind, int8) for name, kind, int8 in rows if kind != "Raster"]


@pytest.mark.oracle
@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_int8_decisions_match_official_runtime(mnn_oracle, name, variant):
    path = zoo.model_path(name, variant)
    feeds = zoo.image_feeds(name)[0]
    interp = Interpreter(path)
    assert interp.precision == "int8"
    ours = _normalized(int8_plan(interp, feeds).command_table())
    theirs = _normalized(oracle_commands(path, feeds))
    if ours != theirs:
        import difflib
        diff = "\n".join(difflib.unified_diff([str(r) for r in theirs], [str(r) for r in ours],
                                              "official runtime", "mnnlite plan", lineterm="", n=1))
        pytest.fail(f"{name}/{variant}: command list differs\n{diff[:6000]}")
    assert any(int8 for _, _, int8 in ours), "no command runs in int8"


def test_plan_reports_int8_and_float_ops(zoo):
    """cnn quant_kl: convs run int8, the Deconvolution and the Select run float (docs/mnn-quantization.md §13.1)."""
    interp = Interpreter(zoo.model_path("cnn", "quant_kl"))
    plan = int8_plan(interp, zoo.image_feeds("cnn")[0])
    assert {"conv_3", "conv_12", "maxpool_21", "sigmoid_24", "resize_32", "softmax_58"} <= set(plan.int8_ops())
    assert {"convtranspose_39", "Select12"} <= set(plan.float_ops())


def test_float_precision_has_no_plan(zoo):
    interp = Interpreter(zoo.model_path("cnn", "quant_kl"), precision="float")
    assert interp.precision == "float"
    with pytest.raises(ValueError, match="float"):
        int8_plan(interp, zoo.image_feeds("cnn")[0])


def test_integer_binary_ops_decided_int8_keep_their_integer_kernel(zoo, tmp_path):
    """Token-id arithmetic (the converter's Gather index wrap, (ids + n) mod n) with MNN's scale-0 quant
    info: the commands are decided int8 (the official runtime's callbacks mark them DT_INT8), but
    CPUBinaryCreator takes CPUBinaryInt8 only when inputs and output hold int8 (applyQuant), and token
    ids never do: MNN runs the integer kernel, so the gather indices are the true ones (checked on the
    MiniLM corpus model against the official runtime's callbacks)."""
    import mnnlite

    folder = tmp_path / "samples"
    folder.mkdir()
    for i in range(3):
        np.savez(folder / f"s{i}.npz", tokens=np.random.default_rng(i).integers(0, 128, (1, 16)).astype(np.int64))
    dst = tmp_path / "transformer.kl.mnn"
    mnnlite.quantize(zoo.model_path("transformer", "float"), dst, {"path": str(folder), "input_type": "sequence"})
    feeds = {"tokens": np.random.default_rng(9).integers(0, 128, (1, 16)).astype(np.int64)}
    interp = Interpreter(dst)
    plan = int8_plan(interp, feeds)
    wraps = [p for p in plan.ops if p.command is not None and p.command.type == "BinaryOp"
             and p.op.name in ("BinaryOp16", "BinaryOp17")]
    assert len(wraps) == 2 and all(p.command.int8 and not p.command.int8_kernel and not p.int8 for p in wraps)
    assert any(p.int8 and p.command.type == "BinaryOp" for p in plan.ops)       # float BinaryOps still int8
    index = {}
    interp.run(feeds, observe=lambda i, name, a: index.__setitem__(name, np.array(a)) if name == "BinaryOp17" else None)
    floats = {}
    Interpreter(dst, precision="float").run(
        feeds, observe=lambda i, name, a: floats.__setitem__(name, np.array(a)) if name == "BinaryOp17" else None)
    assert index["BinaryOp17"].dtype == np.int32 and np.array_equal(index["BinaryOp17"], floats["BinaryOp17"])


@pytest.mark.oracle
def test_view_regions_read_only_their_first_input(mnn_oracle, tmp_path):
    """A Tile or a Squeeze with an axes input: MNN's Raster reads input 0's regions only (multiples and axes
    are read at shape time, backend.rules.region_inputs), so an int8 Raster follows the int8 data and MNN
    casts the float data before it (squeeze_66's FloatToInt8).  mnnlite's own KL file of the misc graph;
    the Tile and Squeeze outputs are then MNN's bit for bit."""
    import mnnlite

    zoo = mnn_oracle
    dst = tmp_path / "misc.kl.mnn"
    samples = [zoo.random_feeds("misc", 0, seed=100 + i) for i in range(4)]
    mnnlite.quantize(zoo.model_path("misc", "float"), dst, {"quant_bits": 8, "batch_size": 2}, samples=samples,
                     threads=1)
    feeds = zoo.random_feeds("misc", 0, seed=7)
    casts = [r for r in _normalized(int8_plan(Interpreter(dst), dict(feeds)).command_table()) if "Int8" in r[1]]
    theirs = [r for r in _normalized(oracle_commands(dst, feeds)) if "Int8" in r[1]]
    assert ("squeeze_66_raster_*", "FloatToInt8", True) in theirs
    assert [r for r in casts if r[0].startswith(("squeeze_66", "tile_29"))] == \
        [r for r in theirs if r[0].startswith(("squeeze_66", "tile_29"))]
    ours, official = Interpreter(dst).run(dict(feeds)), zoo.run_oracle_isolated(dst, dict(feeds))
    for name in ("tile_out", "squeeze_out"):
        np.testing.assert_array_equal(ours[name], official[name])
