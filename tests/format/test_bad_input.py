"""Damaged or foreign files give one FormatError line naming the file; the CLI exits 2."""
import json
import struct
import subprocess
import sys

import numpy as np
import pytest

import mnnlite
from mnnlite import FormatError
from mnnlite.format import writer
from mnnlite.format.tables import TABLE_CLASSES, OpType


def _tiny_model():
    """Input -> ReLU -> output, built from the table classes (no oracle needed)."""
    T = TABLE_CLASSES
    ops = [
        T["Op"](name="x", type=OpType.Input, outputIndexes=np.array([0], np.int32),
                main=T["Input"](dims=np.array([1, 3, 4, 4], np.int32))),
        T["Op"](name="y", type=OpType.ReLU, inputIndexes=np.array([0], np.int32),
                outputIndexes=np.array([1], np.int32), main=T["Relu"]()),
    ]
    net = T["Net"](oplists=ops, tensorName=["x", "y"], outputName=["y"], sourceType=3)
    return mnnlite.Model(net)


def _field_pos(data: bytes, table_pos: int, slot: int) -> int:
    vtable = table_pos - struct.unpack_from("<i", data, table_pos)[0]
    return table_pos + struct.unpack_from("<H", data, vtable + 4 + 2 * slot)[0]


def _tensor_name_vector(data: bytes) -> int:
    root = struct.unpack_from("<I", data, 0)[0]
    field = _field_pos(data, root, 7)  # Net.tensorName
    return field + struct.unpack_from("<I", data, field)[0]


def _expect_error(tmp_path, data: bytes, *needles: str):
    path = tmp_path / "bad.mnn"
    path.write_bytes(data)
    with pytest.raises(FormatError) as err:
        mnnlite.load_model(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


def test_tiny_model_round_trips():
    model = _tiny_model()
    assert mnnlite.loads(mnnlite.dumps(model)) == model


@pytest.mark.parametrize("data, needle", [
    (b"", "too small"),
    (b"\x00" * 7, "too small"),
    (json.dumps({"format": "RGB", "mean": [0, 0, 0]}).encode(), "outside the file"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64), "Net"),
    (np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "Net"),
])
def test_foreign_files(tmp_path, data, needle):
    _expect_error(tmp_path, data, needle)


def test_truncated(tmp_path):
    data = mnnlite.dumps(_tiny_model())
    for cut in (12, len(data) // 3, len(data) // 2, len(data) - 8):
        _expect_error(tmp_path, data[:cut])


def test_vector_longer_than_file(tmp_path):
    data = bytearray(mnnlite.dumps(_tiny_model()))
    struct.pack_into("<I", data, _tensor_name_vector(bytes(data)), 0x3FFFFFFF)
    _expect_error(tmp_path, bytes(data), "tensorName", "runs past the end")


def test_bad_vtable(tmp_path):
    data = bytearray(mnnlite.dumps(_tiny_model()))
    root = struct.unpack_from("<I", data, 0)[0]
    struct.pack_into("<i", data, root, -(1 << 30))
    _expect_error(tmp_path, bytes(data), "vtable")


def test_unknown_op_type(tmp_path):
    model = _tiny_model()
    model.net.oplists[1].type = 9999
    _expect_error(tmp_path, mnnlite.dumps(model), "unknown op type 9999", "'y'")


def test_unknown_union_tag(tmp_path, monkeypatch):
    monkeypatch.setitem(writer.OP_PARAMETER_TAG, "Relu", 250)
    _expect_error(tmp_path, mnnlite.dumps(_tiny_model()), "union tag 250")


def test_tensor_index_out_of_range(tmp_path):
    model = _tiny_model()
    model.net.oplists[1].inputIndexes = np.array([7], np.int32)
    _expect_error(tmp_path, mnnlite.dumps(model), "inputIndexes", "outside 0..1")


def test_wrong_parameter_table(tmp_path):
    model = _tiny_model()
    model.net.oplists[1].main = TABLE_CLASSES["Axis"]()
    _expect_error(tmp_path, mnnlite.dumps(model), "ReLU op carries Axis parameters")


def _with_external_const(offset: int, nbytes: int):
    """The tiny model plus a Const 'k' whose data lives in the .weight file at [offset, offset+nbytes)."""
    model = _tiny_model()
    T = TABLE_CLASSES
    const = T["Op"](name="k", type=OpType.Const, outputIndexes=np.array([2], np.int32),
                    main=T["Blob"](dims=np.array([4], np.int32), external=np.array([offset, nbytes], np.int64)))
    model.net.oplists.insert(0, const)
    model.net.tensorName.append("k")
    return model


def test_missing_weight_file(tmp_path):
    _expect_error(tmp_path, mnnlite.dumps(_with_external_const(0, 16)), "bad.mnn.weight", "'k'")


def test_weight_file_too_short(tmp_path):
    (tmp_path / "bad.mnn.weight").write_bytes(bytes(20))
    _expect_error(tmp_path, mnnlite.dumps(_with_external_const(8, 16)), "bytes 8..24", "has 20")


def test_cli_exit_code_and_one_line(tmp_path):
    bad = tmp_path / "bad.mnn"
    bad.write_bytes(b"not a model at all, just text")
    proc = subprocess.run([sys.executable, "-m", "mnnlite", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in proc.stderr


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.mnn"
    target.write_bytes(b"previous content")

    def boom(*_):
        raise OSError("disk full")
    # fail after the temp file is written, at the moment it would replace the target
    monkeypatch.setattr("mnnlite.format.model_io.os.replace", boom)
    with pytest.raises(mnnlite.errors.OutputError, match="disk full"):
        mnnlite.save_model(_tiny_model(), target)
    assert target.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mnn"]
