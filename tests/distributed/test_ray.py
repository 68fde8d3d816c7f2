"""Scale-out on Ray (``pytest -m ray``; needs the extra ``pip install ".[ray]"``).

One private head on 127.0.0.1 for the module (2 CPUs, token auth, no dashboard, no usage statistics),
stopped by its own process ids.  Everything is compared with the local run of the same command: the
regression verdicts and metrics, the quantized bytes (KL and EMA), the validation report; a Ray
worker killed mid-run is retried and every case is still reported; an unreachable cluster is one line
and exit code 2.
"""
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_zoo import calibration_dir, heldout_dir, model_path, quant_config
from ray_head import RayHead, free_port

pytestmark = pytest.mark.ray

CASES = Path(__file__).parent.parent / "regress" / "cases.toml"


@pytest.fixture(scope="module")
def head():
    for name in ("cnn", "ppocr_cls"):
        model_path(name), calibration_dir(name), heldout_dir(name)
    h = RayHead(cpus=2).start()
    h.env["MNNLITE_FIXTURE_ZOO"] = str(model_path("cnn").parent.parent)
    try:
        yield h
    finally:
        h.stop()
    assert not h.pids()


def mnnlite(env, *args, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "mnnlite", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def cases_by_name(report: Path) -> dict:
    return {c["name"]: c for c in json.loads(report.read_text())["cases"]}


def same_verdicts_and_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for key in ("verdict", "metrics", "golden", "provenance", "checks"):
            assert a[name][key] == b[name][key], (name, key)


def test_regress_on_ray_gives_the_local_verdicts_and_metrics(head, tmp_path):
    local = mnnlite(head.env, "regress", CASES, "--jobs", 2, "--json", tmp_path / "local.json")
    remote = mnnlite(head.env, "regress", CASES, "--jobs", 2, "--ray", head.address, "--json", tmp_path / "ray.json",
                     "--junit", tmp_path / "ray.xml")
    assert local[0] == remote[0] == 0, local[1] + local[2] + remote[1] + remote[2]
    same_verdicts_and_metrics(cases_by_name(tmp_path / "local.json"), cases_by_name(tmp_path / "ray.json"))
    assert "3 passed, 0 failed" in remote[1]
    assert remote[1].count("PASS (") == 3          # the progress lines stream as cases finish


def test_shipped_data_and_a_broken_case(head, tmp_path):
    """--ship-data: workers get the files from the object store; a case that fails for its own reasons
    (a truncated model) is an error naming the driver's path, and the others pass."""
    shutil.copytree(CASES.parent / "golden", tmp_path / "golden")
    bad = tmp_path / "cnn.float.mnn"
    data = model_path("cnn").read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    text = CASES.read_text().replace("${MNNLITE_FIXTURE_ZOO}/cnn/cnn.float.mnn", str(bad), 1)
    (tmp_path / "cases.toml").write_text(text)
    code, out, err = mnnlite(head.env, "regress", tmp_path / "cases.toml", "--ray", head.address, "--ship-data",
                             "--json", tmp_path / "r.json")
    assert code == 1, out + err
    report = cases_by_name(tmp_path / "r.json")
    assert {n: c["verdict"] for n, c in report.items()} == {"cnn-kl": "error", "cnn-ema-admm": "pass",
                                                          "ppocr_cls-kl": "pass"}
    message = report["cnn-kl"]["message"]
    assert str(bad) in message and "\n" not in message and "mnnlite-shipped" not in message


def test_a_killed_worker_is_retried_and_every_case_reported(head, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "mnnlite", "regress", str(CASES), "--ray", head.address,
                             "--json", str(tmp_path / "r.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=head.env)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        workers = head.worker_pids("ray::_case_task")
        if workers:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=900)
    assert killed is not None, "no case task seen running"
    assert proc.returncode == 0, out + err
    assert set(c["verdict"] for c in cases_by_name(tmp_path / "r.json").values()) == {"pass"}
    assert "3 passed, 0 failed" in out


@pytest.mark.parametrize("variant", ["quant_kl", "quant_ema"])
def test_quantize_on_ray_writes_the_local_bytes(head, tmp_path, variant):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(quant_config("cnn", variant)))
    src = model_path("cnn")
    assert mnnlite(head.env, "quantize", src, tmp_path / "local.mnn", config, "--quiet")[0] == 0
    code, out, err = mnnlite(head.env, "quantize", src, tmp_path / "ray.mnn", config, "--ray", head.address)
    assert code == 0, out + err
    for suffix in ("", ".json"):
        assert (tmp_path / f"ray.mnn{suffix}").read_bytes() == (tmp_path / f"local.mnn{suffix}").read_bytes()


def test_validate_on_ray_gives_the_local_report(head, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(quant_config("ppocr_cls", "quant_kl")))
    quant = model_path("ppocr_cls", "quant_kl")
    common = ["validate", model_path("ppocr_cls"), quant, config, "--data", heldout_dir("ppocr_cls")]
    local = mnnlite(head.env, *common, "--json", tmp_path / "local.json")
    remote = mnnlite(head.env, *common, "--json", tmp_path / "ray.json", "--ray", head.address)
    assert local[0] == remote[0] == 0, local[1] + local[2] + remote[1] + remote[2]
    assert (tmp_path / "local.json").read_text() == (tmp_path / "ray.json").read_text()
    # the printed report is the same; progress lines carry timings and "wrote" names each run's file
    assert _report_lines(local[1]) == _report_lines(remote[1]) and _report_lines(local[1])


def _report_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()
            if not re.match(r"validate: \d+/\d+ ", line) and not line.startswith("wrote ")]


def test_an_unreachable_cluster_is_one_line_and_exit_2(head):
    env = dict(head.env, MNNLITE_RAY_CONNECT_TIMEOUT="5")
    started = time.monotonic()
    code, out, err = mnnlite(env, "regress", CASES, "--ray", f"127.0.0.1:{free_port()}")
    assert code == 2 and out == ""
    assert err.startswith("mnnlite: error: Ray cluster 127.0.0.1:") and len(err.strip().splitlines()) == 1
    assert time.monotonic() - started < 60
    # reachable, but the client does not hold the cluster's token: the connect timeout, then one line
    stranger = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
    code, out, err = mnnlite(stranger, "regress", CASES, "--ray", head.address)
    assert code == 2 and err.startswith(f"mnnlite: error: Ray cluster {head.address}"), err
    assert len(err.strip().splitlines()) == 1, err
