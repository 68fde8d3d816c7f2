"""Every command follows the same conventions: --help and --version exit 0, -q prints nothing but errors,
-v prints more, --json prints a machine-readable summary on stdout (the text then goes to stderr) or
writes it to a file.  Commands: python -m mnnlite info|run|quantize|validate|regress, mnnquant-lite
(and tools/quantized.py), python -m mnnlite.demo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mnnlite

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {
    "info": [sys.executable, "-m", "mnnlite", "info"],
    "run": [sys.executable, "-m", "mnnlite", "run"],
    "quantize": [sys.executable, "-m", "mnnlite", "quantize"],
    "validate": [sys.executable, "-m", "mnnlite", "validate"],
    "regress": [sys.executable, "-m", "mnnlite", "regress"],
    "mnnquant-lite": [sys.executable, "-c", "import sys; from mnnlite.cli.quantize import quantized_main; "
                                            "sys.exit(quantized_main())"],
    "tools/quantized.py": [sys.executable, str(REPO / "tools" / "quantized.py")],
    "demo": [sys.executable, "-m", "mnnlite.demo"],
}


def _run(argv, cwd, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


@pytest.mark.parametrize("command", sorted(ENTRY_POINTS))
def test_help_and_version_exit_0_and_write_nothing(command, tmp_path):
    proc = _run(ENTRY_POINTS[command] + ["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--version", "--quiet", "--verbose", "--json"):
        assert option in proc.stdout, (command, option)
    version = _run(ENTRY_POINTS[command] + ["--version"], tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"mnnlite {mnnlite.__version__}"
    assert os.listdir(tmp_path) == []              # e.g. the demo never makes a folder named --help


@pytest.fixture(scope="module")
def cls(zoo, tmp_path_factory):
    """ppocr_cls: float and KL files, its config (file), a held-out folder and one input array."""
    tmp = tmp_path_factory.mktemp("conventions")
    cfg = dict(zoo.quant_config("ppocr_cls", "quant_kl"), used_image_num=4)
    (tmp / "cfg.json").write_text(json.dumps(cfg))
    x = mnnlite.preprocess(zoo.model_path("ppocr_cls", "float"), cfg)[0]["x"]
    np.save(tmp / "x.npy", x)
    return {"float": str(zoo.model_path("ppocr_cls", "float")), "quant": str(zoo.model_path("ppocr_cls", "quant_kl")),
            "cfg": str(tmp / "cfg.json"), "heldout": str(zoo.heldout_dir("ppocr_cls")), "x": str(tmp / "x.npy"),
            "tmp": tmp}


def _argv(command, p):
    return {
        "info": ["info", p["float"]],
        "run": ["run", p["quant"], "--input", p["x"]],
        "quantize": ["quantize", p["float"], str(p["tmp"] / "q.mnn"), p["cfg"]],
        "validate": ["validate", p["float"], p["quant"], p["cfg"], "--data", p["heldout"], "--num", "2"],
    }[command]


def _cli(argv, capsys):
    from mnnlite.cli.main import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("command", ["info", "run", "quantize", "validate"])
def test_quiet_verbose_json(command, cls, capsys):
    code, normal, _ = _cli(_argv(command, cls), capsys)
    assert code == 0 and normal.strip()
    code, quiet, quiet_err = _cli(_argv(command, cls) + ["-q"], capsys)
    assert code == 0 and quiet == "" and quiet_err == ""
    code, verbose, _ = _cli(_argv(command, cls) + ["-v"], capsys)
    assert code == 0 and len(verbose.splitlines()) > len(normal.splitlines())
    code, out, err = _cli(_argv(command, cls) + ["--json"], capsys)
    assert code == 0 and err.strip()                  # the text went to stderr
    summary = json.loads(out)                        # stdout is the JSON alone
    assert isinstance(summary, dict) and summary
    path = cls["tmp"] / f"{command}.json"
    code, out, _ = _cli(_argv(command, cls) + ["--json", str(path)], capsys)
    assert code == 0 and json.loads(path.read_text()).keys() == summary.keys()
    assert f"wrote {path}" in out


def test_quantize_json_summary(cls, capsys):
    code, out, _ = _cli(_argv("quantize", cls) + ["--json", "-q"], capsys)
    summary = json.loads(out)
    assert code == 0 and summary["samples"] == 4 and summary["feature_method"] == "KL"
    assert summary["dst"].endswith("q.mnn") and summary["quantized_ops"] and summary["skipped_ops"] == []


def test_regress_conventions(zoo, tmp_path, capsys):
    cfg = dict(zoo.quant_config("ppocr_cls", "quant_kl"), used_image_num=4)
    (tmp_path / "cases.toml").write_text(
        f'[[case]]\nname = "cls"\nmodel = "{zoo.model_path("ppocr_cls", "float")}"\n'
        f'heldout = "{zoo.heldout_dir("ppocr_cls")}"\nnum = 2\n[case.config]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in cfg.items()))
    code, out, err = _cli(["regress", str(tmp_path / "cases.toml"), "--json"], capsys)
    report = json.loads(out)
    assert code == 0 and report["cases"][0]["verdict"] == "new"
    assert report["cases"][0]["thresholds"] == {"min_cosine": 0.95, "min_agreement": 0.90}   # the defaults
    assert "no golden yet" in err
    code, out, err = _cli(["regress", str(tmp_path / "cases.toml"), "-q"], capsys)
    assert code == 0 and out == "" and err == ""


def test_mnnquant_lite_options(cls, capsys):
    from mnnlite.cli.quantize import quantized_main

    assert quantized_main([cls["float"], str(cls["tmp"] / "m.mnn"), cls["cfg"], "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 4
    assert quantized_main([cls["float"], str(cls["tmp"] / "m.mnn")]) == 2
    assert "Usage: ./quantized.out src.mnn dst.mnn preTreatConfig.json" in capsys.readouterr().err


def test_demo_says_where_it_wrote(tmp_path):
    proc = _run(ENTRY_POINTS["demo"] + [str(tmp_path / "out")], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"wrote {tmp_path / 'out' / 'ppocr_cls.int8.mnn'}" in lines
    assert any(str(tmp_path / "out" / "config.json") in line for line in lines)
    assert "PASS (min-cosine 0.95)" in lines and "\r" not in proc.stdout
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["width"] == 192 and os.path.isdir(config["path"])
    quiet = _run(ENTRY_POINTS["demo"] + [str(tmp_path / "q"), "-q"], tmp_path, timeout=600)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_a_command_imports_its_own_module_only():
    """``python -m mnnlite quantize ...`` builds the quantize parser alone (start-up time of small
    calibrations); a bad or missing command still gets the full parser, which names every command."""
    code = ("import sys, mnnlite.cli.main as m; p = m.build_parser('quantize'); "
            "print(sorted(k for k in sys.modules if k.startswith('mnnlite.cli.') and k not in "
            "('mnnlite.cli.main', 'mnnlite.cli.common')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split("\n")[0] == "['mnnlite.cli.quantize']"
    bad = subprocess.run([sys.executable, "-m", "mnnlite", "quantise"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and all(c in bad.stderr for c in ("info", "run", "quantize", "validate", "regress"))
