"""``mnnlite.validate`` / ``mnnlite validate`` on zoo models: the report, thresholds both ways, exit codes."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mnnlite.cli.main import main as cli
from mnnlite.metrics import DIRECTION
from mnnlite.regress.golden import check_metric_names
from mnnlite import validate


def _paths(zoo, name, variant):
    return (str(zoo.quant_source_path(name, variant)), str(zoo.model_path(name, variant)),
            zoo.quant_config(name, variant))


@pytest.fixture(scope="module")
def cnn_ema(zoo, tmp_path_factory):
    flt, q, cfg = _paths(zoo, "cnn", "quant_ema")
    cfg_path = tmp_path_factory.mktemp("validate") / "cnn.config.json"
    cfg_path.write_text(json.dumps(cfg))
    return flt, q, cfg, str(cfg_path)


def test_report_interface(zoo, cnn_ema):
    flt, q, cfg, _ = cnn_ema
    report = validate(flt, q, cfg)
    # default samples: the files of "path" after the calibration ones (used_image_num of them)
    calib = sorted(os.listdir(cfg["path"]))
    assert [os.path.basename(p) for p in report.samples] == calib[cfg["used_image_num"]:]
    metrics = report.metrics()
    check_metric_names(metrics)                      # what the regression harness accepts
    assert set(metrics) >= {"seg.cosine", "seg.rel_l2", "seg.max_abs", "prob.cosine", "prob.top1_agreement",
                            "prob.top5_agreement"}
    assert "seg.top1_agreement" not in metrics       # a segmentation map is not classifier-like
    assert all(k.rsplit(".", 1)[1] in DIRECTION for k in metrics)
    assert report.passed and report.failures == [] and not report.gated
    assert report.precision == "int8"
    assert 0.99 < metrics["seg.cosine"] <= 1.0
    assert report.layers and all(-1.0 <= layer.cosine <= 1.0 for layer in report.layers)
    d = report.to_dict()
    assert d["metrics"] == metrics and d["passed"] is True and len(d["worst_layers"]) == len(report.layers)
    # no threshold given: what was measured, never a bare PASS
    assert d["verdict"] == report.verdict == "MEASURED (no threshold set)" and d["gated"] is False
    last = report.render().splitlines()[-1]
    assert "worst layers" in report.render() and last.startswith("MEASURED (no threshold set)")
    assert "PASS" not in report.render()


def test_heldout_folder_and_num(zoo, cnn_ema):
    flt, q, cfg, _ = cnn_ema
    report = validate(flt, q, cfg, data=str(zoo.heldout_dir("cnn")), num=2, layers=False)
    assert [os.path.basename(p) for p in report.samples] == sorted(os.listdir(zoo.heldout_dir("cnn")))[:2]
    assert report.layers == []


def test_thresholds_both_ways(zoo, cnn_ema):
    flt, q, cfg, _ = cnn_ema
    data = str(zoo.heldout_dir("cnn"))
    ok = validate(flt, q, cfg, data=data, num=3, min_cosine=0.9, min_agreement=0.0, layers=False)
    assert ok.passed and ok.verdict == "PASS" and ok.render().endswith("PASS (min-cosine 0.9, min-agreement 0.0)")
    bad = validate(flt, q, cfg, data=data, num=3, min_cosine=0.9999999, layers=False)
    assert not bad.passed and bad.verdict == "FAIL"
    assert [f.split(" ")[0] for f in bad.failures] == ["seg.cosine", "prob.cosine"]
    assert all(f.endswith("< min-cosine 0.9999999") for f in bad.failures)
    # cnn quant_kl: MNN's int8 LESS breaks the PReLU (mnnlite.int8.ops.packed_int_output), the classifier
    # output disagrees with float on most images
    flt_kl, q_kl, cfg_kl = _paths(zoo, "cnn", "quant_kl")
    kl = validate(flt_kl, q_kl, cfg_kl, data=data, num=4, min_agreement=0.9, layers=False)
    assert kl.metrics()["prob.top1_agreement"] < 0.9
    assert kl.failures == [f"prob.top1_agreement {kl.metrics()['prob.top1_agreement']:.4f} < min-agreement 0.9"]


def test_cli_exit_codes(zoo, cnn_ema, tmp_path, capsys):
    flt, q, _, cfg_path = cnn_ema
    data = str(zoo.heldout_dir("cnn"))
    out = tmp_path / "report.json"
    assert cli(["validate", flt, q, cfg_path, "--data", data, "--num", "2", "--min-cosine", "0.9",
                "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and "prob" in text
    saved = json.loads(out.read_text())
    assert saved["passed"] is True and "prob.cosine" in saved["metrics"] and len(saved["samples"]) == 2
    assert cli(["validate", flt, q, cfg_path, "--data", data, "--num", "2", "--min-cosine", "0.9999999",
                "--worst", "0"]) == 1
    assert "FAIL: " in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing model", "missing data", "bad threshold", "all calibration",
                                  "bad labels", "bad config"])
def test_cli_bad_input_exits_2(zoo, cnn_ema, tmp_path, capsys, case):
    flt, q, cfg, cfg_path = cnn_ema
    args = [flt, q, cfg_path, "--num", "1", "--worst", "0"]
    if case == "missing model":
        args[0] = str(tmp_path / "nope.mnn")
    elif case == "missing data":
        args += ["--data", str(tmp_path / "nowhere")]
    elif case == "bad threshold":
        args += ["--min-cosine", "1.5"]
    elif case == "all calibration":
        everything = dict(cfg)
        everything.pop("used_image_num")                 # every file of "path" is a calibration sample
        path = tmp_path / "all.json"
        path.write_text(json.dumps(everything))
        args[2] = str(path)
    elif case == "bad labels":
        labels = tmp_path / "labels.txt"
        labels.write_text("only-one-column\n")
        args += ["--labels", str(labels)]
    elif case == "bad config":
        path = tmp_path / "cfg.json"
        path.write_text(json.dumps({**cfg, "feature_quantize_method": "NOPE"}))
        args[2] = str(path)
    assert cli(["validate", *args]) == 2
    assert "mnnlite: error:" in capsys.readouterr().err


def test_labelled_accuracy(zoo, cnn_ema, tmp_path):
    """Labels = the float model's own top-1: float accuracy 100 %, quantized = its top-1 agreement."""
    from mnnlite.runtime import Interpreter

    flt, q, cfg, _ = cnn_ema
    data = zoo.heldout_dir("cnn")
    names = sorted(os.listdir(data))[:4]
    interp = Interpreter(flt, precision="float")
    feeds = zoo.image_feeds("cnn", data)
    lines = [f"{n} {int(np.argmax(interp.run(f)['prob']))}" for n, f in zip(names, feeds)]
    labels = tmp_path / "labels.txt"
    labels.write_text("# name label\n" + "\n".join(lines) + "\n")
    report = validate(flt, q, cfg, data=str(data), num=4, labels=str(labels), layers=False)
    m = report.metrics()
    # zoo.image_feeds resizes with Pillow, validate with MNN's preprocessing: close, not identical inputs
    assert m["labels.accuracy_float"] >= 0.75
    assert 0.0 <= m["labels.accuracy_quant"] <= 1.0


def test_ppocr_det_documented_oracle_accuracy_case(zoo):
    """model_zoo.ORACLE_ACCURACY_NOTES: ppocr_det's 8-bit files give a probability map far from float
    in the official runtime (its head conv with alpha ~1e-6).  mnnlite's int8 runtime reproduces the
    runtime bit for bit (test_int8_zoo_agreement.py), so validate reports the same loss -- and fails
    a cosine threshold the other models meet."""
    assert ("ppocr_det", "quant_kl") in zoo.ORACLE_ACCURACY_NOTES
    flt, q, cfg = _paths(zoo, "ppocr_det", "quant_kl")
    report = validate(flt, q, cfg, data=str(zoo.heldout_dir("ppocr_det")), num=1, min_cosine=0.9, layers=False)
    assert not report.passed
    assert report.metrics()["sigmoid_0.tmp_0.cosine"] < 0.9


@pytest.mark.parametrize("name", ["ppocr_cls", "ppocr_rec"])
def test_ppocr_thresholds_both_ways_from_the_cli(zoo, name, tmp_path, capsys):
    flt, q, cfg = _paths(zoo, name, "quant_kl")
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    args = ["validate", flt, q, str(cfg_path), "--data", str(zoo.heldout_dir(name)), "--num", "2", "--worst", "0"]
    assert cli(args + ["--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    worst = min(v for k, v in report["metrics"].items() if k.endswith(".cosine"))
    capsys.readouterr()
    assert cli(args + ["--min-cosine", f"{worst - 0.01:.6f}"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert cli(args + ["--min-cosine", f"{worst + 1e-4:.6f}"]) == 1
    assert "FAIL: " in capsys.readouterr().out


def _contribution_direct(ref, test, saturated=0):
    """The per-layer terms as plain numpy expressions (fresh float64 arrays, numpy's pairwise sums)."""
    r, t = np.asarray(ref, np.float64).ravel(), np.asarray(test, np.float64).ravel()
    d = t - r
    return (float(np.sum(r * t)), float(np.sum(r * r)), float(np.sum(t * t)), float(np.sum(d * d)),
            float(np.abs(d).max()) if d.size else 0.0, r.size, saturated)


@pytest.mark.parametrize("n", [1, 7, 9, 128, 129, 4097, 65537, 1 << 19])
def test_layer_contribution_is_the_direct_formula_bit_for_bit(n):
    """contribution() computes in a reused scratch buffer; its sums must stay those of the direct
    formula (validate/regress results and Ray shards fold them, golden files compare them)."""
    from mnnlite.validation import contribution

    rng = np.random.default_rng(n)
    a = rng.standard_normal(n).astype(np.float32) * 10
    b = a + rng.standard_normal(n).astype(np.float32)
    for ref, test in ((a, b), (b, a), (a.astype(np.int32), b), (a.reshape(1, -1), b)):
        assert contribution(ref, test, 2) == _contribution_direct(ref, test, 2)
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)[:, ::2]      # strided
    assert contribution(x, x * 3) == _contribution_direct(x, x * 3)
