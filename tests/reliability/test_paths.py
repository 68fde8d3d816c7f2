"""Issue 15, item 2: external data stays inside the model's folder, in every command, and no message
gives away the size or content of another file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mnnlite
from mnnlite.errors import FormatError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def external(zoo, tmp_path):
    """ppocr_cls with external weights, in a folder of its own; a secret file outside it."""
    src = zoo.model_path("ppocr_cls", "external")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "m.mnn").write_bytes(src.read_bytes())
    (folder / "m.mnn.weight").write_bytes(Path(str(src) + ".weight").read_bytes())
    secret = tmp_path / "secret.bin"
    secret.write_bytes(os.urandom(1234567))
    return folder, secret


def _with_external_path(folder: Path, value: str) -> Path:
    model = mnnlite.load_model(folder / "m.mnn")
    data = mnnlite.dumps(model)     # every weight inline now; put one op back outside, at ``value``
    model = mnnlite.loads(data)
    op = next(op for op in model.graph.ops if op.type == mnnlite.format.tables.OpType.Convolution)
    op.externalPath = value
    import numpy as np
    op.main.external = np.array([0, 16, 16], np.int64)
    out = folder / "hostile.mnn"
    out.write_bytes(mnnlite.dumps(model))
    return out


@pytest.mark.parametrize("value, needle", [
    ("/etc/passwd", "is absolute"),
    ("../secret.bin", "'..' component"),
    ("sub/../../secret.bin", "'..' component"),
])
def test_external_path_outside_the_folder_is_refused_by_every_command(zoo, external, value, needle):
    folder, secret = external
    hostile = _with_external_path(folder, value)
    (folder / "c.json").write_text(json.dumps(zoo.quant_config("ppocr_cls", "quant_kl")))
    with pytest.raises(FormatError, match=needle):
        mnnlite.load_model(hostile)
    for argv in (["info", hostile], ["run", hostile], ["quantize", hostile, folder / "q.mnn", folder / "c.json"]):
        proc = subprocess.run([sys.executable, "-m", "mnnlite", *map(str, argv)], capture_output=True, text=True,
                              cwd=REPO, timeout=300)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert str(secret.stat().st_size) not in proc.stderr and "root:" not in proc.stderr
    assert not (folder / "q.mnn").exists()


def test_symlink_leaving_the_folder_is_refused(external):
    folder, secret = external
    link = folder / "link.weight"
    os.symlink(secret, link)
    hostile = _with_external_path(folder, "link.weight")
    with pytest.raises(FormatError) as err:
        mnnlite.load_model(hostile)
    message = str(err.value)
    assert "outside the model's folder" in message and str(secret.stat().st_size) not in message
    # the default <model>.weight as a link out of the folder too
    os.unlink(folder / "m.mnn.weight")
    os.symlink(secret, folder / "m.mnn.weight")
    with pytest.raises(FormatError, match="outside the model's folder"):
        mnnlite.load_model(folder / "m.mnn")


def test_links_inside_the_folder_and_a_linked_model_still_work(external, tmp_path):
    folder, _ = external
    os.rename(folder / "m.mnn.weight", folder / "real.weight")
    os.symlink("real.weight", folder / "m.mnn.weight")                # a link that stays inside
    assert mnnlite.load_model(folder / "m.mnn").external_weights
    # a model that is itself a link into a blob folder keeps its weights beside the blob
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.rename(folder / "m.mnn", blobs / "m.mnn")
    os.rename(folder / "real.weight", blobs / "m.mnn.weight")
    other = tmp_path / "snapshot"
    other.mkdir()
    os.symlink(blobs / "m.mnn", other / "m.mnn")
    os.symlink(blobs / "m.mnn.weight", other / "m.mnn.weight")
    assert mnnlite.load_model(other / "m.mnn").external_weights


def test_size_message_only_for_files_inside(external):
    folder, _ = external
    (folder / "tiny.weight").write_bytes(b"\0" * 8)
    hostile = _with_external_path(folder, "tiny.weight")
    with pytest.raises(FormatError, match="the weight file has 8"):
        mnnlite.load_model(hostile)
