"""Issue 15, item 7: mutants of real models through info, run and quantize, in worker processes with an
address-space limit and a per-mutant timeout (tools/fuzz_cli.py): no traceback, signal or timeout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "fuzz_cli.py"


def _campaign(tmp_path, *args, timeout):
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(TOOL), *map(str, args), "--json", out, "--progress", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout)
    assert out.exists(), proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_a_short_campaign_over_real_models(zoo, tmp_path):
    models = [zoo.model_path("ppocr_cls", v) for v in ("float", "quant_kl", "external")]
    models += [zoo.model_path("ppocr_det", "wq4"), zoo.model_path("ppocr_rec", "wq4")]
    proc, summary = _campaign(tmp_path, "--mutants", 60, "--workers", 1, "--quantize-every", 15,
                              "--max-as", "3G", "--timeout", 120, "--models", *models, timeout=1800)
    counts = summary["counts"]
    assert sum(counts.values()) == 60 and summary["mutants"] == 60
    assert counts["traceback"] == counts["signal"] == counts["timeout"] == 0, summary["failures"]
    assert counts["ok"] > 0 and counts["clean"] > 0, counts       # mutants reach both outcomes
    assert proc.returncode == 0


def test_the_harness_counts_a_crash_as_a_signal(tmp_path):
    """A worker that dies from a signal is counted, and the campaign goes on with a new worker."""
    bad = tmp_path / "crash.mnn"
    bad.write_bytes(b"x")
    env = dict(os.environ, MNNLITE_FUZZ_SELFTEST_CRASH="1")
    out = tmp_path / "fuzz.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--mutants", "3", "--workers", "1", "--models", str(bad),
                           "--json", str(out), "--progress", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    summary = json.loads(out.read_text())
    assert summary["counts"]["signal"] == 3 and proc.returncode == 1, summary


@pytest.mark.slow
def test_fifty_thousand_mutants(tmp_path):
    """The acceptance run: >= 50,000 mutants of the PP-OCR fixtures and the corpus's small real models
    (MNNLITE_CORPUS) with a 3 GB address-space limit and a 60 s per-mutant timeout."""
    proc, summary = _campaign(tmp_path, "--mutants", 50_000, "--workers", 2, "--max-as", "3G", "--timeout", 60,
                              timeout=48 * 3600)
    counts = summary["counts"]
    assert len(summary["models"]) >= 5 and summary["mutants"] == 50_000
    assert counts["traceback"] == counts["signal"] == counts["timeout"] == 0, summary["failures"][:5]
