"""Issue 15, items 1 and 5: no input is ever written, and outputs appear as a set, atomically, with the
umask's permissions; temporaries are removed on every exit path and after a SIGKILL."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnnlite
from mnnlite import safety
from mnnlite.errors import Interrupted, OutputError
from mnnlite.quant.quantize import quantize

REPO = Path(__file__).resolve().parents[2]
MODEL = "nhwc_like"          # the smallest image model of the zoo: quick end-to-end runs


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "mnnlite", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=600, env=env)


@pytest.fixture
def work(zoo, tmp_path):
    """A private copy of a float model (with external weights too) and a 2-image config."""
    src = tmp_path / "m.mnn"
    src.write_bytes(zoo.model_path(MODEL, "float").read_bytes())
    ext = zoo.model_path(MODEL, "external")
    (tmp_path / "e.mnn").write_bytes(ext.read_bytes())
    (tmp_path / "e.mnn.weight").write_bytes(Path(str(ext) + ".weight").read_bytes())
    cfg = zoo.quant_config(MODEL, "quant_kl")
    cfg["used_image_num"] = 2
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return tmp_path, cfg


def _files(folder) -> dict:
    return {p.name: _digest(p) for p in Path(folder).rglob("*") if p.is_file()}


@pytest.mark.parametrize("dst, config, needle", [
    ("e.mnn.weight", "cfg.json", "weight file"),          # DST is the source's external weights
    ("cfg.json", "cfg.json", "is the config"),             # DST is the config
    ("q", "q.json", "scale dump"),                         # DST.json is the config
    ("m.mnn", "cfg.json", "source model"),                 # DST is the source
])
def test_quantize_never_writes_an_input(work, dst, config, needle):
    folder, cfg = work
    if config != "cfg.json":
        (folder / config).write_text(json.dumps(cfg))
    src = "e.mnn" if dst.startswith("e.") else "m.mnn"
    before = _files(folder)
    proc = _cli("quantize", folder / src, folder / dst, folder / config)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert _files(folder) == before


def test_links_to_inputs_are_refused(work):
    folder, cfg = work
    os.symlink(folder / "m.mnn", folder / "sym.mnn")
    os.link(folder / "cfg.json", folder / "hard.json")
    for dst, needle in ((folder / "sym.mnn", "is the source model"),
                        (folder / "hard", "hard link to the config")):
        with pytest.raises(OutputError, match=needle):
            quantize(folder / "m.mnn", dst, folder / "cfg.json")


def test_calibration_files_and_the_debug_dump_are_checked(work):
    folder, cfg = work
    private = folder / "calib"
    private.mkdir()
    for p in sorted(Path(cfg["path"]).iterdir())[:2]:
        (private / p.name).write_bytes(p.read_bytes())
    image = sorted(private.iterdir())[0]
    before = image.read_bytes()
    with pytest.raises(OutputError, match="calibration file"):
        quantize(folder / "m.mnn", image, dict(cfg, path=str(private)))
    assert image.read_bytes() == before
    cfg_path = folder / "dbg.json"
    cfg_path.write_text(json.dumps(dict(cfg, debug=True)))
    os.symlink(cfg_path, folder / "q.mnn.debug.json")
    with pytest.raises(OutputError, match="debug dump is the config"):
        quantize(folder / "m.mnn", folder / "q.mnn", cfg_path)
    assert json.loads(cfg_path.read_text())["debug"] is True


def test_run_output_and_validate_json_never_write_an_input(work, zoo):
    folder, cfg = work
    before = _files(folder)
    proc = _cli("run", folder / "m.mnn", "--output", folder / "m.mnn")
    assert proc.returncode == 2 and "is the model" in proc.stderr and len(proc.stderr.splitlines()) == 1
    proc = _cli("validate", folder / "m.mnn", folder / "m.mnn", folder / "cfg.json", "--json", folder / "cfg.json")
    assert proc.returncode == 2 and "is the config" in proc.stderr, proc.stderr
    assert _files(folder) == before


def test_run_output_writes_exactly_the_named_file(work):
    folder, _ = work
    np.save(folder / "x.npy", np.zeros((1, 3, 48, 48), np.float32))
    proc = _cli("run", folder / "m.mnn", "--input", folder / "x.npy", "--output", folder / "outfile")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "outfile").exists() and not (folder / "outfile.npz").exists()
    assert f"to {folder / 'outfile'}" in proc.stdout
    with np.load(folder / "outfile") as z:
        assert z.files


# ------------------------------------------------------------------------------------------ atomic sets

def test_quantize_renames_the_dumps_before_the_model(work, monkeypatch):
    folder, cfg = work
    order = []
    real = os.replace

    def spy(a, b):
        order.append(os.path.basename(b))
        real(a, b)
    monkeypatch.setattr(safety.os, "replace", spy)
    quantize(folder / "m.mnn", folder / "q.mnn", dict(cfg, debug=True))
    assert order == ["q.mnn.debug.json", "q.mnn.json", "q.mnn"]


def test_a_failed_rename_keeps_the_old_set_and_no_temporary(work, monkeypatch):
    folder, cfg = work
    quantize(folder / "m.mnn", folder / "q.mnn", cfg)
    before = _files(folder)
    real, calls = os.replace, []

    def fail_on_model(a, b):
        calls.append(b)
        if b.endswith("q.mnn"):
            raise OSError(28, "No space left on device")
        real(a, b)
    monkeypatch.setattr(safety.os, "replace", fail_on_model)
    with pytest.raises(OutputError, match="no space left"):
        quantize(folder / "m.mnn", folder / "q.mnn", dict(cfg, feature_quantize_method="EMA"))
    # the dump was renamed already (a reader sees old model + new dump, never the reverse)
    assert _digest(folder / "q.mnn") == before["q.mnn"]
    assert not [p for p in os.listdir(folder) if p.startswith(safety.TEMP_PREFIX)]


def test_full_disk_during_write(tmp_path, monkeypatch):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def enospc(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(safety.os, "fsync", enospc)
    with pytest.raises(OutputError, match="no space left on the device; nothing was written"):
        safety.write_files([(target, b"new" * 1000, "output")])
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_sigterm_during_write_removes_the_temporaries(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync_then_term(fd):
        real_fsync(fd)
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(safety.os, "fsync", fsync_then_term)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted):
        safety.write_files([(tmp_path / "a.json", b"{}", "dump"), (tmp_path / "a", b"model", "model")])
    assert os.listdir(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is handler                # the handler is restored


def test_cli_sigterm_exits_3_without_leftovers(work):
    folder, cfg = work
    script = (f"import os, signal, sys\nfrom mnnlite import safety\nreal = os.fsync\n"
              f"def term(fd):\n    real(fd)\n    os.kill(os.getpid(), signal.SIGTERM)\n"
              f"safety.os.fsync = term\nfrom mnnlite.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", script, "quantize", str(folder / "m.mnn"), str(folder / "q.mnn"),
                           str(folder / "cfg.json"), "--quiet"], capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert proc.returncode == 3 and proc.stderr.strip() == "mnnlite: interrupted; temporary files removed"
    assert not [p for p in os.listdir(folder) if p.startswith(safety.TEMP_PREFIX) or p.startswith("q.")]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"{safety.TEMP_PREFIX}{dead}-0123abcd-out.mnn"
    live = tmp_path / f"{safety.TEMP_PREFIX}{os.getppid()}-0123abcd-out.mnn"
    foreign = tmp_path / ".tmp-other-tool"
    for p in (stale, live, foreign):
        p.write_bytes(b"partial")
    safety.write_files([(tmp_path / "out.mnn", b"data", "output")])
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, foreign.name, "out.mnn"])


def test_permissions_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o022)
    try:
        safety.write_files([(tmp_path / "new", b"x", "output")])
        assert (tmp_path / "new").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        safety.write_files([(tmp_path / "new2", b"x", "output")])
        assert (tmp_path / "new2").stat().st_mode & 0o777 == 0o600
        (tmp_path / "kept").write_bytes(b"old")
        os.chmod(tmp_path / "kept", 0o640)
        safety.write_files([(tmp_path / "kept", b"new", "output")])
        assert (tmp_path / "kept").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


@pytest.mark.parametrize("dst, needle", [
    ("", "path is empty"),
    ("folder", "is a folder"),
    ("missing/q.mnn", "does not exist"),
])
def test_unwritable_destinations(work, dst, needle):
    folder, _ = work
    (folder / "folder").mkdir()
    target = str(folder / dst) if dst else ""
    proc = _cli("quantize", folder / "m.mnn", target, folder / "cfg.json")
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr


def test_read_only_folder(tmp_path, monkeypatch):
    """A folder we may not write to (simulated: the tests may run as root, who may write anywhere)."""
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(safety.os, "open", denied)
    with pytest.raises(OutputError, match="cannot write the output: Permission denied; nothing was written"):
        safety.write_files([(tmp_path / "out", b"x", "output")])
    assert os.listdir(tmp_path) == []


def test_save_model_refuses_its_own_source(work):
    folder, _ = work
    model = mnnlite.load_model(folder / "e.mnn")
    with pytest.raises(OutputError, match="weight file"):
        mnnlite.save_model(model, folder / "e.mnn.weight")


def test_regress_reports_never_overwrite_the_cases_or_each_other(work):
    folder, _ = work
    cases = folder / "cases.toml"
    cases.write_text('[[case]]\nname = "c"\nmodel = "m.mnn"\nconfig = "cfg.json"\ngolden = "g.json"\n')
    before = _files(folder)
    for extra, needle in ((["--json", cases], "is the cases file"),
                          (["--json", folder / "r.json", "--junit", folder / "r.json"], "is the --json report"),
                          (["--junit", folder / "m.mnn"], "is the case 'c' model")):
        proc = _cli("regress", cases, *extra)
        assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert _files(folder) == before


def test_a_sigkilled_writer_leaves_a_temporary_the_next_command_removes(work):
    folder, cfg = work
    script = ("import os, signal, sys\nfrom mnnlite.safety import OutputSet\nout = OutputSet().__enter__()\n"
              "out.add(sys.argv[1], b'partial', 'model')\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(folder / "q.mnn")], cwd=REPO, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p for p in os.listdir(folder) if p.startswith(safety.TEMP_PREFIX)]
    assert len(leftovers) == 1 and not (folder / "q.mnn").exists()
    proc = _cli("run", folder / "m.mnn", "--output", folder / "out.npz")
    assert proc.returncode == 2                      # even a command that fails later sweeps first
    assert not [p for p in os.listdir(folder) if p.startswith(safety.TEMP_PREFIX)]
