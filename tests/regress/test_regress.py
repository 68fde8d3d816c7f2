"""The regression harness on the repository's own cases: pass, fail on a stricter golden, fail on a
corrupted model, JUnit XML well-formed, and the same verdicts with --jobs 1 and --jobs 2."""
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from model_zoo import calibration_dir, heldout_dir, model_path

HERE = Path(__file__).parent
CASES = HERE / "cases.toml"
ZOO_MODELS = ("cnn", "ppocr_cls")


@pytest.fixture(scope="module")
def zoo_env():
    """Build the zoo models the cases name, and point the case file's variable at the zoo."""
    for name in ZOO_MODELS:
        model_path(name), calibration_dir(name), heldout_dir(name)
    zoo = model_path("cnn").parent.parent
    return {"MNNLITE_FIXTURE_ZOO": str(zoo)}


def regress(env, *args, cwd=None):
    import os
    proc = subprocess.run([sys.executable, "-m", "mnnlite", "regress", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=cwd, timeout=1200)
    return proc.returncode, proc.stdout, proc.stderr


def verdicts(report_path):
    return {c["name"]: c["verdict"] for c in json.loads(Path(report_path).read_text())["cases"]}


def check_junit(path, expect_failures, expect_errors):
    """The common JUnit schema (Jenkins/Ant): testsuites > testsuite > testcase [> failure|error]."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for attr in ("name", "tests", "failures", "errors", "time"):
        assert attr in suite.attrib, attr
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == expect_failures == sum(len(c.findall("failure")) for c in cases)
    assert int(suite.get("errors")) == expect_errors == sum(len(c.findall("error")) for c in cases)
    float(suite.get("time"))
    for case in cases:
        assert case.get("name") and case.get("classname")
        float(case.get("time"))
        for bad in case.findall("failure") + case.findall("error"):
            assert bad.get("message") and bad.get("type")
        assert set(child.tag for child in case) <= {"failure", "error", "system-out", "system-err", "skipped"}
    return {c.get("name") for c in cases}


def test_cases_pass_with_the_same_verdicts_for_1_and_2_jobs(zoo_env, tmp_path):
    runs = {}
    for jobs in (1, 2):
        code, out, err = regress(zoo_env, CASES, "--jobs", jobs, "--json", tmp_path / f"r{jobs}.json",
                                 "--junit", tmp_path / f"r{jobs}.xml")
        assert code == 0, out + err
        runs[jobs] = verdicts(tmp_path / f"r{jobs}.json")
        assert check_junit(tmp_path / f"r{jobs}.xml", 0, 0) == set(runs[jobs])
    assert runs[1] == runs[2]
    assert set(runs[1].values()) == {"pass"}
    assert "3 passed, 0 failed" in out


def _copy_cases(tmp_path):
    """The repository's case file and goldens in a scratch folder (goldens live beside the case file)."""
    shutil.copytree(HERE / "golden", tmp_path / "golden")
    text = CASES.read_text()
    (tmp_path / "cases.toml").write_text(text)
    return tmp_path / "cases.toml"


def test_a_stricter_golden_is_a_regression(zoo_env, tmp_path):
    cases = _copy_cases(tmp_path)
    golden = tmp_path / "golden" / "cnn-kl.json"
    data = json.loads(golden.read_text())
    data["metrics"]["prob.cosine"] = min(1.0, data["metrics"]["prob.cosine"] + 0.05)
    golden.write_text(json.dumps(data))
    code, out, err = regress(zoo_env, cases, "--only", "cnn-kl", "--junit", tmp_path / "r.xml")
    assert code == 1, out + err
    assert "REGRESSED" in out and "prob.cosine" in out and "vs golden" in out
    check_junit(tmp_path / "r.xml", 1, 0)


def test_a_corrupted_model_errors_and_the_other_cases_still_run(zoo_env, tmp_path):
    cases = _copy_cases(tmp_path)
    bad_model = tmp_path / "cnn.float.mnn"
    data = bytearray(model_path("cnn").read_bytes())
    bad_model.write_bytes(bytes(data[: len(data) // 3]))
    text = cases.read_text().replace("${MNNLITE_FIXTURE_ZOO}/cnn/cnn.float.mnn", str(bad_model), 1)
    cases.write_text(text)
    code, out, err = regress(zoo_env, cases, "--json", tmp_path / "r.json", "--junit", tmp_path / "r.xml")
    assert code == 1, out + err
    v = verdicts(tmp_path / "r.json")
    assert v == {"cnn-kl": "error", "cnn-ema-admm": "pass", "ppocr_cls-kl": "pass"}
    report = json.loads((tmp_path / "r.json").read_text())
    message = next(c["message"] for c in report["cases"] if c["name"] == "cnn-kl")
    assert str(bad_model) in message and "\n" not in message
    check_junit(tmp_path / "r.xml", 0, 1)


def test_bad_case_files(zoo_env, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[[case]\nname = ")
    code, out, err = regress(zoo_env, broken)
    assert code == 2 and "not valid TOML" in err and len(err.strip().splitlines()) == 1

    cases = _copy_cases(tmp_path)
    head, tail = cases.read_text().split('name = "cnn-ema-admm"')
    tail = tail.replace('heldout = "${MNNLITE_FIXTURE_ZOO}/cnn/heldout"', 'heldout = "missing/folder"', 1)
    text = head + 'name = "cnn-ema-admm"' + tail
    before, cls_case = text.split('name = "ppocr_cls-kl"')
    text = before + 'name = "ppocr_cls-kl"' + cls_case.replace(
        '[case.thresholds]', '[case.tolerances]\n"save_infer_model/scale_0.tmp_1.speed" = 1\n[case.thresholds]', 1)
    cases.write_text(text)
    code, out, err = regress(zoo_env, cases, "--json", tmp_path / "r.json")
    assert code == 1
    report = {c["name"]: c for c in json.loads((tmp_path / "r.json").read_text())["cases"]}
    assert report["cnn-kl"]["verdict"] == "pass"
    assert report["cnn-ema-admm"]["verdict"] == "error" and "missing/folder" in report["cnn-ema-admm"]["message"]
    assert report["ppocr_cls-kl"]["verdict"] == "error" and "speed" in report["ppocr_cls-kl"]["message"]


def test_update_golden_shows_the_differences_first(zoo_env, tmp_path):
    cases = _copy_cases(tmp_path)
    golden = tmp_path / "golden" / "cnn-ema-admm.json"
    data = json.loads(golden.read_text())
    data["metrics"]["prob.cosine"] = 0.5
    golden.write_text(json.dumps(data))
    code, out, err = regress(zoo_env, cases, "--only", "cnn-ema-admm", "--update-golden")
    assert code == 0, out + err
    assert "Golden changes:" in out and "cnn-ema-admm: prob.cosine 0.5 ->" in out
    assert json.loads(golden.read_text())["metrics"]["prob.cosine"] > 0.9


def test_case_layout_key(tmp_path):
    from mnnlite.regress.cases import load_cases

    (tmp_path / "m.mnn").write_bytes(b"x")
    (tmp_path / "c.json").write_text("{}")
    (tmp_path / "cases.toml").write_text(
        '[[case]]\nname = "a"\nmodel = "m.mnn"\nconfig = "c.json"\n'
        '[[case]]\nname = "b"\nmodel = "m.mnn"\nconfig = "c.json"\nlayout = "nchw"\n'
        '[[case]]\nname = "c"\nmodel = "m.mnn"\nconfig = "c.json"\nlayout = "nhwc"\n')
    a, b, c = load_cases(str(tmp_path / "cases.toml"))
    assert (a.layout, a.error) == ("model", None) and a.to_job()["layout"] == "model"
    assert (b.layout, b.error) == ("nchw", None)
    assert "case 'c': layout must be one of 'model', 'nchw'" in c.error
