"""Entry points and outputs: CLI exit codes, bad configs, logs, scale dump, debug JSON, determinism.

``tools/quantized.py SRC DST CONFIG`` (MNN's arguments), ``mnnquant-lite`` (``quantized_main``),
``python -m mnnlite quantize`` and ``mnnlite.quantize``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_oracle import calib_config, oracle_quant

import mnnlite
from mnnlite.errors import ConfigError, DataError
from mnnlite.quant.quantize import quantize

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "quantized.py"
MODEL = "nhwc_like"                                    # the smallest image model: fast end-to-end runs


@pytest.fixture
def case(zoo, tmp_path):
    cfg = calib_config(MODEL)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    return zoo.model_path(MODEL, "float"), tmp_path


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_tool_quantizes_like_quantized_out(case):
    """``--mnn-log``: exactly quantized.out's lines (C++ source line numbers, \\r progress)."""
    src, tmp = case
    before = _digest(src)
    proc = _run(TOOL, src, tmp / "q.mnn", tmp / "cfg.json", "--mnn-log")
    assert proc.returncode == 0, proc.stderr
    assert (tmp / "q.mnn").stat().st_size > 0 and (tmp / "q.mnn.json").exists()
    assert _digest(src) == before                                      # the source is never written
    lines = [l for l in proc.stdout.replace("\r", "\n").splitlines() if l]
    stamp = r"^\[\d\d:\d\d:\d\d\] @ "
    assert re.match(stamp + r"1725: >>> modelFile: ", lines[0])
    assert re.match(stamp + r"1755: Calibrate the feature and quantize model\.\.\.$", lines[3])
    assert any(re.match(stamp + r"137: used dataset num: 12$", l) for l in lines)
    assert any(re.match(stamp + r"1107: fake quant weights done\.$", l) for l in lines)
    assert "CollectFeatureDistribution: 100.00 %" in lines
    assert re.match(stamp + r"1763: Quantize model done!$", lines[-3])
    assert lines[-2].startswith("quantized 4 op(s), skipped 0") and lines[-1].startswith("wrote ")
    assert not [p for p in os.listdir(tmp) if p.startswith(".tmp")]   # atomic writes leave nothing behind


def test_default_log_is_readable_in_a_ci_log(case):
    """Without --mnn-log: no C++ line numbers, no \\r, one whole line per progress step with count/rate."""
    src, tmp = case
    proc = _run(TOOL, src, tmp / "q.mnn", tmp / "cfg.json")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stdout and " @ " not in proc.stdout
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] >>> modelFile: .+", lines[0])
    steps = [l for l in lines if l.startswith("CollectFeatureDistribution: ")]
    assert steps[-1].startswith("CollectFeatureDistribution: 12/12 (100%), ")
    assert all(re.search(r": \d+/12 \(\d+%\), [\d.]+ (samples/s|s/sample)", l) for l in steps)
    assert any(l.startswith("CollectFeatureRange: 12/12") for l in lines)
    assert max(len(l) for l in lines) < 200


def test_same_inputs_same_bytes(case):
    src, tmp = case
    quantize(src, tmp / "a.mnn", tmp / "cfg.json")
    quantize(src, tmp / "b.mnn", str(tmp / "cfg.json"))
    assert _digest(tmp / "a.mnn") == _digest(tmp / "b.mnn")
    assert _digest(tmp / "a.mnn.json") == _digest(tmp / "b.mnn.json")


@pytest.mark.parametrize("argv", [[], ["a.mnn"], ["a.mnn", "b.mnn"], ["a", "b", "c", "d"]])
def test_wrong_argument_count_prints_usage(argv, tmp_path):
    proc = _run(TOOL, *argv, cwd=tmp_path)
    assert proc.returncode == 2
    assert re.fullmatch(r"\[\d\d:\d\d:\d\d\] Usage: \./quantized\.out src\.mnn dst\.mnn "
                        r"preTreatConfig\.json\n\n", proc.stderr)
    exact = _run(TOOL, *argv, "--mnn-log", cwd=tmp_path)
    assert exact.returncode == 2 and re.fullmatch(r"\[\d\d:\d\d:\d\d\] @ 1719: Usage: \./quantized\.out "
                                                  r"src\.mnn dst\.mnn preTreatConfig\.json\n\n", exact.stderr)
    assert os.listdir(tmp_path) == []


BAD_CONFIGS = [
    ({"colour": "RGB"}, "unknown key"),
    ({"format": 123}, "format"),
    ({"feature_quantize_method": "MSE"}, "KL, ADMM, EMA"),
    ({"weight_quantize_method": "KL"}, "MAX_ABS, ADMM"),
    ({"feature_clamp_value": 300}, "feature_clamp_value"),
    ({"weight_clamp_value": -1}, "weight_clamp_value"),
    ({"quant_bits": 9}, "quant_bits"),
    ({"mean": [1, 2, 3, 4, 5]}, "mean"),
    ({"path": None}, "path"),
    ({"path": "/nonexistent/folder"}, "/nonexistent/folder"),
]


@pytest.mark.parametrize("change, mentions", BAD_CONFIGS)
def test_bad_config_one_line_exit_2_nothing_written(case, change, mentions):
    src, tmp = case
    cfg = json.loads((tmp / "cfg.json").read_text())
    for key, value in change.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    (tmp / "bad.json").write_text(json.dumps(cfg))
    proc = _run(TOOL, src, tmp / "q.mnn", tmp / "bad.json")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mnnlite: error: ") and mentions in err[0], proc.stderr
    assert not (tmp / "q.mnn").exists() and not (tmp / "q.mnn.json").exists()


def test_invalid_json_and_missing_model(case):
    src, tmp = case
    (tmp / "broken.json").write_text("{ not json")
    for args in [(src, tmp / "q.mnn", tmp / "broken.json"), (tmp / "nope.mnn", tmp / "q.mnn", tmp / "cfg.json"),
                 (src, src, tmp / "cfg.json")]:
        proc = _run(TOOL, *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp / "q.mnn").exists()


def test_unreadable_images_are_skipped_with_a_warning(case, zoo):
    src, tmp = case
    folder = tmp / "imgs"
    folder.mkdir()
    for i, f in enumerate(sorted(Path(calib_config(MODEL)["path"]).iterdir())[:3]):
        (folder / f"{i}.png").write_bytes(f.read_bytes())
    (folder / "3.png").write_bytes(b"not an image")
    cfg = dict(calib_config(MODEL), path=str(folder))
    report = quantize(src, tmp / "q.mnn", cfg)
    assert report.samples == 3 and len(report.warnings) == 1 and "3.png" in report.warnings[0]
    (folder / "0.png").write_bytes(b"x")
    (folder / "1.png").write_bytes(b"x")
    (folder / "2.png").write_bytes(b"x")
    with pytest.raises(DataError):
        quantize(src, tmp / "q2.mnn", cfg)
    assert not (tmp / "q2.mnn").exists()


@pytest.mark.parametrize("method", ["KL", "ADMM", "EMA"])
def test_thread_count_does_not_change_the_output(zoo, tmp_path, method):
    """Samples run side by side on several interpreters (KL, EMA); the bytes must not depend on how many."""
    name = {"KL": "ppocr_cls", "EMA": "mobilenet"}.get(method, MODEL)
    cfg = dict(calib_config(name), feature_quantize_method=method)
    src = zoo.model_path(name, "float")
    for n in (1, 2, 3):
        quantize(src, tmp_path / f"t{n}.mnn", cfg, threads=n)
    for n in (2, 3):
        assert _digest(tmp_path / f"t{n}.mnn") == _digest(tmp_path / "t1.mnn")
        assert _digest(tmp_path / f"t{n}.mnn.json") == _digest(tmp_path / "t1.mnn.json")
    proc = _run("-m", "mnnlite", "quantize", "--threads", "2", "--quiet", src, tmp_path / "cli.mnn",
                _write_cfg(tmp_path, cfg), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert _digest(tmp_path / "cli.mnn") == _digest(tmp_path / "t1.mnn")


def _write_cfg(folder, cfg) -> Path:
    path = folder / "threads-cfg.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("threads", [0, 65, 1.5, True, "2"])
def test_bad_thread_count_is_a_config_error(case, threads):
    src, tmp = case
    with pytest.raises(ConfigError, match="threads"):
        quantize(src, tmp / "x.mnn", tmp / "cfg.json", threads=threads)
    assert not (tmp / "x.mnn").exists()


def test_python_api_and_module_entry_point(case):
    src, tmp = case
    report = mnnlite.quantize(src, tmp / "api.mnn", calib_config(MODEL))
    assert report.quantized_ops and report.tensors == len(mnnlite.load_model(tmp / "api.mnn").graph.quant_info)
    proc = _run("-m", "mnnlite", "quantize", src, tmp / "m.mnn", tmp / "cfg.json")
    assert proc.returncode == 0, proc.stderr
    assert _digest(tmp / "m.mnn") == _digest(tmp / "api.mnn")
    from mnnlite.cli.quantize import quantized_main

    assert quantized_main([str(src), str(tmp / "c.mnn"), str(tmp / "cfg.json")]) == 0
    assert quantized_main(["only-one"]) == 2


def test_scale_dump_layout_matches_oracle(zoo):
    """<dst>.json: same ops, same tensors, same keys as quantized.out's dump (values: test_pipeline_kl)."""
    from test_pipeline_oracle import our_quant

    cfg = calib_config("cnn")
    ours = json.loads(Path(str(our_quant("cnn", cfg)[0]) + ".json").read_text())
    theirs = json.loads(Path(str(oracle_quant("cnn", cfg)) + ".json").read_text())
    assert [o["name"] for o in ours] == [o["name"] for o in theirs]
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in ("inputs", "outputs"):
            assert [t["tensorIndex"] for t in a.get(key, [])] == [t["tensorIndex"] for t in b.get(key, [])]
            for x, y in zip(a.get(key, []), b.get(key, [])):
                assert (x["scales"][0] == 0) == (y["scales"][0] == 0) or x["tensorIndex"] in (0, 1)
    text = Path(str(our_quant("cnn", cfg)[0]) + ".json").read_text()
    assert text.startswith("[\n    {\n        \"name\": ") and text.endswith("]\n")


def test_debug_mode(case):
    """``debug: true``: MNN's distance lines on the console and the same numbers in <dst>.debug.json."""
    import io

    src, tmp = case
    out = io.StringIO()
    report = quantize(src, tmp / "d.mnn", dict(calib_config(MODEL), debug=True), log=out, mnn_log=True)
    text = out.getvalue()
    assert "\rcomputeDistance: 100.00 %" in text and "\n\nDebug info:\n\n" in text
    lines = re.findall(r"^(.+):  cos distance: (-?[\d.na]+), overflow ratio: ([\d.]+)$", text, re.M)
    assert lines and [l[0] for l in lines] == sorted(l[0] for l in lines)
    data = json.loads((tmp / "d.mnn.debug.json").read_text())
    assert data["samples"] == 12 and len(data["tensors"]) == len(lines) == len(report.debug)
    cos = {r["name"]: r["cosine"] for r in data["tensors"]}
    for name, c, o in lines:
        assert abs(cos[name] - float(c)) < 1e-6 and 0 <= float(o) <= 1
    assert min(cos.values()) > 0.99                              # nhwc_like quantizes well
    # debug mode changes nothing in the model
    quantize(src, tmp / "n.mnn", calib_config(MODEL))
    assert _digest(tmp / "d.mnn") == _digest(tmp / "n.mnn")


def test_zero_scale_tensors_get_no_quant_info(zoo):
    """MNN writes scale-0 quant info for integer tensors and all-zero constants (cnn's PReLU lowering);
    its runtime then gives run-to-run different outputs.  We leave them out (README: deviations)."""
    from test_pipeline_oracle import our_quant

    cfg = calib_config("cnn")
    theirs = mnnlite.load_model(oracle_quant("cnn", cfg)).graph.quant_info
    ours = mnnlite.load_model(our_quant("cnn", cfg)[0]).graph.quant_info
    zero = {t for t, q in theirs.items() if q.scale == 0}
    assert zero and set(ours) == set(theirs) - zero
    assert all(q.scale > 0 for q in ours.values())


def test_config_errors_raise_before_writing(case):
    src, tmp = case
    with pytest.raises(ConfigError):
        quantize(src, tmp / "x.mnn", dict(calib_config(MODEL), feature_quantize_method="nope"))
    assert not (tmp / "x.mnn").exists()
    np.testing.assert_equal(os.listdir(tmp), ["cfg.json"])


def test_demo_ships_and_validates(tmp_path):
    """The packaged demo (≤ 1 MB of model and images) quantizes and passes its own validation."""
    import mnnlite.demo as demo

    files = [p for p in Path(demo.__file__).parent.rglob("*") if p.suffix in (".mnn", ".png")]
    assert sum(p.stat().st_size for p in files) <= 1 << 20
    assert len(list(Path(demo.calibration_dir()).glob("*.png"))) == 16
    report, check = demo.run(str(tmp_path))
    assert report.quantized_ops and check.passed, check.render()
    assert check.accuracy_quant == check.accuracy_float == 1.0
