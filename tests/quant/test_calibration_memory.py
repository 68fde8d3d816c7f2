"""What keeps the ``quantize`` command's peak RSS near quantized.out's on small models (issue 10, item 6):
a calibration that needs neither images nor a progress bar loads neither Pillow nor tqdm (nor OpenSSL through
``secrets``), and the command fixes glibc's mmap threshold so freed activations leave the process
(csrc/heap.h).  The figures themselves are measured by tools/bench_corpus.py, not asserted here."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np

import mnnlite
from mnnlite.kernels import cpu
from mnnlite.layout import input_specs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the command in a child process, run the way the console script runs it; prints what it loaded
_CHILD = """
import json, sys
from mnnlite.kernels import cpu
calls = []
real = cpu.fix_mmap_threshold
cpu.fix_mmap_threshold = lambda n: calls.append(n) or real(n)
from mnnlite.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "threshold_calls": calls,
                  "loaded": sorted(m for m in ("tqdm", "PIL", "PIL.Image", "_hashlib", "email") if m in sys.modules)}))
"""


def _quantize_in_child(args, cwd) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, "quantize", *map(str, args), "--quiet"],
                          capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sequence_calibration_loads_no_image_or_bar_library(zoo, tmp_path):
    src = zoo.model_path("cnn", "float")
    (spec,) = input_specs(mnnlite.load_model(src), "model")
    folder = tmp_path / "samples"
    folder.mkdir()
    rng = np.random.default_rng(0)
    shape = [d if d > 0 else (1 if axis == 0 else 32) for axis, d in enumerate(spec.shape)]   # dynamic dims
    for k in range(3):
        np.save(folder / f"{k}.npy", rng.standard_normal(shape).astype(np.float32))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"input_type": "sequence", "path": str(folder), "feature_quantize_method": "KL"}))
    got = _quantize_in_child([src, tmp_path / "q.mnn", cfg], REPO)
    assert got["code"] == 0 and (tmp_path / "q.mnn").stat().st_size > 0
    assert got["loaded"] == [], got           # stdout is a pipe, not a terminal: no bar, so no tqdm
    assert got["threshold_calls"] == [256 * 1024]


def test_mmap_threshold_is_fixed_on_glibc_and_bounded():
    if platform.libc_ver()[0] != "glibc":
        assert cpu.fix_mmap_threshold(256 * 1024) is False
        return
    assert cpu.fix_mmap_threshold(256 * 1024) is True
    assert cpu.fix_mmap_threshold(0) is False and cpu.fix_mmap_threshold(-1) is False
    assert cpu.fix_mmap_threshold(64 << 20) is False       # above glibc's DEFAULT_MMAP_THRESHOLD_MAX
