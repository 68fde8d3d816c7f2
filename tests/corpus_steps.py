"""The checks run on every corpus model (tests/corpus.py), shared by the slow tests
(tests/corpus/test_corpus.py) and the table of tools/bench_corpus.py.

Each ``step_*`` returns a dict of figures (``cosine``: the step's worst cosine, ``detail``) and raises
``StepFailed`` (an AssertionError) naming what went wrong; any other exception is a crash of ours.

Inputs and outputs are in the model's declared layout on both sides: the official runtime is fed through
host tensors of each input's own dimension type and its outputs are read the same way (NHWC for TFLite
models), which is what MNN's Module API hands a user.  The official runtime runs in child processes: a
crash of MNN on a file is reported, and MNN's int8 kernels that read memory they never wrote
(tests/oracle/runtime.py) see fresh zeroed pages, one sample per process when the file needs it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

import corpus
import model_zoo as zoo
from mnnlite.metrics import cosine
from oracle import OracleToolError, REL_ERR_MAX, assert_close_to_oracle, oracle_input_info
from oracle.tools import describe_exit

# the int8 agreement budget (one quantization step of an output) lives with the int8 runtime tests

# Float run against the official runtime: the oracle tests' budget (tests/runtime/test_zoo_accuracy.py):
# max abs err <= 1e-4 * max|ref|, cosine >= 0.999999; models whose many 3x3 convs go through MNN's
# Winograd (its own error, up to 2e-3 of the output at the end of a deep net) get that budget.
FLOAT_REL_ERR = REL_ERR_MAX
FLOAT_REL_ERR_WINOGRAD = 2e-3
# MTCNN P/R-Net: MNN's F(6x6)/F(4x4) Winograd on the 3x3 convs after the first turns last-bit input
# differences into 2e-4 of a conv's range (P-Net's second conv, 0.0039 on 18); with impl="mnn" (MNN's
# Winograd units and its tiled GEMM where no unit pays) they are bit-identical, which step_run checks.
# ddddocr det (a YOLOX-style net of 3x3 convs): 1.2-1.9e-4 of the output's range with the default kernels
# and with the numpy reference alike, 0 with impl="mnn" (measured on its 3 held-out samples).
FLOAT_REL_ERR_BUDGET = {"ppocr_det": FLOAT_REL_ERR_WINOGRAD, "mtcnn_pnet": FLOAT_REL_ERR_WINOGRAD,
                        "mtcnn_rnet": FLOAT_REL_ERR_WINOGRAD, "ddddocr_det": FLOAT_REL_ERR_WINOGRAD}
FLOAT_SAMPLES = 3
# Int8 agreement with the official runtime (tests/int8/test_zoo_agreement.py): max abs diff
# <= one quantization step of the output, cosine >= 0.99999.
INT8_MIN_COSINE = 0.99999
STEP_ROUNDING = 1e-5
# Our file in the official runtime is never worse than quantized.out's own file on the same config and
# held-out samples (issue 10, deliverable 5): mean cosine to the float model at least MNN's - 0.001.
NO_WORSE_MARGIN = 1e-3
QUANT_TIMEOUT_S = 1800
QUANT_CASES = (("KL", "MAX_ABS"), ("EMA", "MAX_ABS"), ("ADMM", "MAX_ABS"), ("KL", "ADMM"))
MNN_FILE_CASES = corpus.DEFAULT_MNN_CASES


class StepFailed(AssertionError):
    pass


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------
def _child_env() -> dict:
    """The children's environment: this checkout first on the path, and bytecode cached as in an installed
    package (with PYTHONDONTWRITEBYTECODE every start would time ~0.3 s of source compilation)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = _pythonpath()
    return env


# The measured command runs as the child of a small launcher, which reports that child's peak RSS.  A child
# started straight from this process would report at least this process's own RSS: Linux keeps the larger
# of the forked copy's and the exec'd program's peaks in ru_maxrss (kernel/exit.c, fs/exec.c
# setmax_mm_hiwater_rss), so every small calibration measured as this bench process's ~50 MiB, ours and
# quantized.out's alike.  The launcher (``python -S``, ~8 MiB) is below every figure it reports.
_RSS_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss))
if os.WIFSIGNALED(status):          # die the same way, so callers see the command's signal
    import signal
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured_argv(argv: List[str], rss_file: str) -> List[str]:
    """``argv`` run under the peak-RSS launcher, which writes the peak in KiB to ``rss_file``."""
    return [sys.executable, "-S", "-c", _RSS_LAUNCHER, rss_file, *argv]


def read_peak_kib(rss_file: str, fallback_kib: float) -> float:
    try:
        with open(rss_file) as f:
            return float(f.read())
    except (OSError, ValueError):      # killed before it wrote: the launcher's own figure, an upper bound
        return fallback_kib


def run_child(argv: List[str], timeout: float, cwd: Optional[str] = None) -> dict:
    """Run ``argv``; {"code", "output", "seconds", "peak_rss_mb"} (peak RSS of the child from wait4)."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory(prefix="mnnlite-rss-") as rss_dir:
        rss_file = os.path.join(rss_dir, "peak")
        proc = subprocess.Popen(measured_argv(argv, rss_file), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env=_child_env(), start_new_session=True)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)          # the launcher and the command it runs
                pid, status, usage = os.wait4(proc.pid, 0)
                status = -9
                break
            time.sleep(0.02)
        proc.returncode = 0  # reaped by wait4: keep Popen from waiting again
        code = status if status == -9 else (os.waitstatus_to_exitcode(status))
        out.seek(0)
        text = out.read().decode(errors="replace")
        peak_kib = read_peak_kib(rss_file, usage.ru_maxrss)
    return {"code": code, "output": text, "seconds": time.monotonic() - start,
            "peak_rss_mb": peak_kib / 1024.0, "timed_out": status == -9}


def _pythonpath() -> str:
    """The checkout under test first, so a child imports this worktree's mnnlite, then the test helpers."""
    parts = [str(zoo.REPO_ROOT), str(Path(__file__).resolve().parent)]
    old = os.environ.get("PYTHONPATH")
    return os.pathsep.join(parts + ([old] if old else []))


def _exit_text(result: dict) -> str:
    if result["timed_out"]:
        return "timed out"
    return describe_exit(result["code"])


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


_ORACLE_CHILD = """
import os, sys, numpy as np
from oracle import run_oracle
path, fin, fout, fresh = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
data = np.load(fin)
samples = [{k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
           for i in range(int(data["count"]))]
out = {}
for i, feeds in enumerate(samples):
    if not fresh:
        out.update({f"{i}/{k}": v for k, v in run_oracle(path, feeds).items()})
        continue
    # one forked process per sample: MNN's heap starts as a new process's would (nothing of an
    # earlier run's buffers), without paying the interpreter start-up per sample
    part = f"{fout}.{i}.npz"
    pid = os.fork()
    if pid == 0:
        try:
            np.savez(part, **run_oracle(path, feeds))
            os._exit(0)
        except BaseException as exc:
            print(f"sample {i}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"sample {i}: the run exited {code}", file=sys.stderr, flush=True)
        sys.exit(code if code > 0 else 4)
    with np.load(part) as got:
        out.update({f"{i}/{k}": got[k] for k in got.files})
np.savez(fout, **out)
"""

_oracle_cache: Dict[tuple, List[Dict[str, np.ndarray]]] = {}


def oracle_outputs(path, samples: List[Dict[str, np.ndarray]], fresh: bool = False,
                   key: Optional[str] = None) -> List[Dict[str, np.ndarray]]:
    """The official runtime's outputs on each sample, in a child process (with ``fresh``, each sample
    in a process of its own, forked from it).  Raises OracleToolError when MNN fails or crashes.
    Cached per (path, key) within this process."""
    cache_key = (str(path), os.path.getmtime(path), key, fresh, len(samples))
    if key is not None and cache_key in _oracle_cache:
        return _oracle_cache[cache_key]
    with tempfile.TemporaryDirectory(prefix="mnnlite-corpus-") as tmp:
        fin, fout = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        arrays = {f"{i}/{k}": v for i, s in enumerate(samples) for k, v in s.items()}
        np.savez(fin, count=len(samples), **arrays)
        res = run_child([sys.executable, "-c", _ORACLE_CHILD, str(path), fin, fout, "1" if fresh else "0"], 1800)
        if res["code"] != 0 or not os.path.exists(fout):
            raise OracleToolError(f"official runtime on {Path(path).name} failed ({_exit_text(res)}): "
                                      f"{_last_line(res['output'])}")
        with np.load(fout) as data:
            results = [{k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{i}/")}
                       for i in range(len(samples))]
    if key is not None:
        _oracle_cache[cache_key] = results
    return results


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------
def step_info(name: str) -> dict:
    """``python -m mnnlite info --json`` on the float model: exit 0, the oracle's inputs with their
    declared shapes and layout."""
    path = corpus.float_model(name)
    res = run_child([sys.executable, "-m", "mnnlite", "info", str(path), "--json"], 300)
    if res["code"] != 0:
        raise StepFailed(f"{name}: mnnlite info exited {res['code']}: {_last_line(res['output'])}")
    info = json.loads(res["output"][res["output"].index("{"):])
    oracle = oracle_input_info(path)
    ours = {i["name"]: i for i in info.get("inputs", [])}
    if set(ours) != set(oracle):
        raise StepFailed(f"{name}: info lists inputs {sorted(ours)}, the official runtime {sorted(oracle)}")
    wrong = [f"{k}: layout {ours[k].get('layout')!r} != {v.layout!r}" for k, v in oracle.items()
             if str(ours[k].get("layout", "")).upper() != v.layout]
    if wrong:
        raise StepFailed(f"{name}: info does not show the declared layout: {'; '.join(wrong)}")
    return {"seconds": res["seconds"], "detail": ", ".join(f"{k} {v.layout}" for k, v in oracle.items())}


def step_run(name: str) -> dict:
    """Our float runtime against the official runtime on held-out samples, declared layout both sides;
    models with dynamic input dims also at a second size."""
    from mnnlite.runtime import Interpreter

    path = corpus.float_model(name)
    interp = Interpreter(path)
    # a model given the Winograd budget must meet the tight one with MNN's rounding (impl="mnn")
    exact = Interpreter(path, impl="mnn") if name in FLOAT_REL_ERR_BUDGET else None
    sizes = [None] + ([corpus.spec(name).other_size] if corpus.spec(name).other_size else [])
    worst, count = 1.0, 0
    for size in sizes:
        samples = corpus.heldout_samples(name, size)[:FLOAT_SAMPLES]
        refs = oracle_outputs(path, samples, key=f"float-{size}")
        for i, (feeds, ref) in enumerate(zip(samples, refs)):
            label = f"sample {i}" + (f" at {size[0]}x{size[1]}" if size else "")
            worst = min(worst, _check_float(interp, name, label, feeds, ref))
            if exact is not None:
                _check_float(exact, name, label + " (impl mnn)", feeds, ref, FLOAT_REL_ERR)
            count += 1
    return {"cosine": worst, "detail": f"{count} runs" + (", 2 sizes" if len(sizes) > 1 else "")}


def _check_float(interp, name: str, label: str, feeds, ref, rel_err=None) -> float:
    try:
        got = interp.run(feeds)
    except Exception as exc:  # noqa: BLE001 -- a refusal is the finding, reported as such
        raise StepFailed(f"{name}: our runtime refused {label}: {type(exc).__name__}: {exc}") from None
    worst = 1.0
    for out, r in ref.items():
        if out not in got:
            raise StepFailed(f"{name}: our outputs {sorted(got)} lack {out!r}")
        if got[out].shape != r.shape:
            raise StepFailed(f"{name} {label} output {out!r}: shape {got[out].shape}, the official runtime's {r.shape}")
        try:
            assert_close_to_oracle(got[out], r, f"{name} {label} output {out!r}",
                                   rel_err=rel_err or FLOAT_REL_ERR_BUDGET.get(name, FLOAT_REL_ERR))
        except AssertionError as exc:
            raise StepFailed(str(exc)) from None
        worst = min(worst, cosine(got[out], r))
    return worst


def our_quantize(name: str, feature: str, weight: str, out_dir, threads: Optional[int] = None,
                 preset: Optional[str] = None) -> dict:
    """``python -m mnnlite quantize`` (the user's command) on the corpus config; {"path", "seconds",
    "peak_rss_mb"}; StepFailed on a non-zero exit.  ``threads``: its --threads (default: its own);
    ``preset``: its --preset."""
    tag = f".{preset}" if preset else ""
    out = Path(out_dir) / f"{name}.ours.{feature}.{weight}{tag}.mnn"
    cfg = corpus.config_path(name, feature, weight)
    extra = (["--threads", str(threads)] if threads else []) + (["--preset", preset] if preset else [])
    res = run_child([sys.executable, "-m", "mnnlite", "quantize", str(corpus.float_model(name)), str(out),
                     str(cfg), *extra], QUANT_TIMEOUT_S)
    if res["code"] != 0 or not out.exists():
        raise StepFailed(f"{name} {feature}/{weight}: mnnlite quantize {_exit_text(res)}: "
                         f"{_last_line(res['output'])}")
    return {"path": out, "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"]}


def mnn_quantize_measured(name: str, feature: str, weight: str, out_dir) -> dict:
    """quantized.out on the same config, timed and its peak RSS measured (the corpus keeps its own
    copy; this is a fresh run for the figures)."""
    out = Path(out_dir) / f"{name}.mnn.{feature}.{weight}.mnn"
    code = "import sys, _tools; _tools.mnnquant(sys.argv[1:])"
    res = run_child([sys.executable, "-c", code, "quantized.out", str(corpus.float_model(name)), str(out),
                     str(corpus.config_path(name, feature, weight))], corpus.MNN_QUANT_TIMEOUT_S, cwd=str(out_dir))
    ok = res["code"] == 0 and out.exists() and out.stat().st_size > 0
    return {"ok": ok, "seconds": res["seconds"], "peak_rss_mb": res["peak_rss_mb"],
            "detail": "" if ok else f"quantized.out {_exit_text(res)}"}


def output_cosines(name: str, quant_path, key: str) -> Dict[str, List[float]]:
    """Per output of the float model that the quantized file also has, the cosine to the float model on
    each held-out sample, both files in the official runtime (one child process per sample: quantized
    files may read unwritten memory).  quantized.out's EMA files can lose an output that another op also
    reads (it renames it, docs/mnn-quantization.md §14.11): such an output is left out here."""
    samples = corpus.heldout_samples(name)
    refs = oracle_outputs(corpus.float_model(name), samples, key="float")
    outs = oracle_outputs(quant_path, samples, fresh=True, key=key)
    values: Dict[str, List[float]] = {}
    for ref, out in zip(refs, outs):
        for k, r in ref.items():
            if k not in out:
                continue
            if not np.all(np.isfinite(out[k])):
                raise StepFailed(f"{name}: the official runtime gives non-finite values in {k!r} on {key}")
            values.setdefault(k, []).append(cosine(out[k], r))
    return values


def fidelity(name: str, quant_path, key: str, outputs=None) -> float:
    """Mean cosine to the float model over the held-out samples and every output (or ``outputs``), both
    files in the official runtime; StepFailed when the file lacks an output of the float model."""
    values = output_cosines(name, quant_path, key)
    wanted = list(outputs) if outputs is not None else list(oracle_outputs(
        corpus.float_model(name), corpus.heldout_samples(name), key="float")[0])
    missing = [k for k in wanted if k not in values]
    if missing:
        raise StepFailed(f"{name}: the official runtime gives no output {missing} on {key}")
    return float(np.mean([c for k in wanted for c in values[k]]))


def step_official_on_ours(name: str, ours_path, feature: str, weight: str) -> dict:
    """The official runtime runs our file (finite outputs, every output of the float model) and its
    held-out cosine to the float model is no worse than that of quantized.out's own file on the same
    config (when MNN's tool made one), on the outputs MNN's file still has."""
    try:
        ours = fidelity(name, ours_path, f"ours-{feature}-{weight}")
    except OracleToolError as exc:
        raise StepFailed(f"{name} {feature}/{weight}: the official runtime cannot run our file: {exc}") from None
    theirs = corpus.mnn_quantized(name, feature, weight, build=(feature, weight) in MNN_FILE_CASES)
    if not isinstance(theirs, Path):
        return {"cosine": ours, "detail": f"MNN: {theirs or 'not built'}"}
    try:
        kept = output_cosines(name, theirs, f"mnn-{feature}-{weight}")
    except OracleToolError as exc:
        return {"cosine": ours, "detail": f"MNN's own file does not run: {exc}"}
    lost = sorted(set(output_cosines(name, ours_path, f"ours-{feature}-{weight}")) - set(kept))
    mnn = float(np.mean([c for v in kept.values() for c in v]))
    same = fidelity(name, ours_path, f"ours-{feature}-{weight}", outputs=kept) if lost else ours
    if same < mnn - NO_WORSE_MARGIN:
        raise StepFailed(f"{name} {feature}/{weight}: held-out cosine of our file {same:.4f} < quantized.out's "
                         f"{mnn:.4f} (official runtime, same config and samples)")
    detail = f"MNN's file {mnn:.4f}"
    if lost:
        detail += f" without output(s) {', '.join(lost)} (ours {same:.4f} on the rest)"
    return {"cosine": ours, "mnn_cosine": mnn, "detail": detail}


def step_int8_agreement(name: str, quant_path, key: str, impl: str = "mnn") -> dict:
    """Our int8 runtime against the official runtime on a quantized file, held-out samples: max abs diff
    within one quantization step, cosine >= 0.99999.  ``impl="mnn"``: the float ops between int8 ones
    round as MNN's (the default "fast" kernels differ in the last bits, e.g. LayerNorm, Softmax, SiLU,
    and a last bit can flip the code of the next cast: README, Int8 execution)."""
    from oracle.compare import compare
    from mnnlite.runtime import Interpreter

    samples = corpus.heldout_samples(name)
    try:
        refs = oracle_outputs(quant_path, samples, fresh=True, key=key)
    except OracleToolError as exc:
        raise StepFailed(f"{name} {key}: the official runtime cannot run the file: {exc}") from None
    interp = Interpreter(quant_path, impl=impl)
    worst = 1.0
    for i, (feeds, ref) in enumerate(zip(samples, refs)):
        try:
            got = interp.run(feeds)
        except Exception as exc:  # noqa: BLE001
            raise StepFailed(f"{name} {key}: our int8 runtime refused sample {i}: {type(exc).__name__}: {exc}") \
                from None
        try:
            result = compare(got, ref, interp.model.graph)
        except AssertionError as exc:
            raise StepFailed(f"{name} {key} sample {i}: {exc}") from None
        for out, (diff, budget, cos) in result.items():
            worst = min(worst, cos)
            if diff > budget * (1 + STEP_ROUNDING) or cos < INT8_MIN_COSINE:
                raise StepFailed(f"{name} {key} sample {i} output {out!r}: max abs diff {diff:.4g} (one step "
                                 f"{budget:.4g}), cosine {cos:.6f}")
    return {"cosine": worst, "detail": f"{len(samples)} samples, impl {impl}"}


def step_int8_exact(name: str, quant_path, key: str) -> dict:
    """Our int8 runtime (``impl="mnn"``: float ops between int8 ones round as MNN's) gives the official
    runtime's outputs bit for bit on every held-out sample."""
    from mnnlite.runtime import Interpreter

    samples = corpus.heldout_samples(name)
    refs = oracle_outputs(quant_path, samples, fresh=True, key=key)
    interp = Interpreter(quant_path, impl="mnn")
    for i, (feeds, ref) in enumerate(zip(samples, refs)):
        got = interp.run(feeds)
        for out, want in ref.items():
            have = np.asarray(got[out])
            want = np.asarray(want, have.dtype).reshape(have.shape)
            if not np.array_equal(have, want):
                raise StepFailed(f"{name} {key} sample {i} output {out!r}: {int((have != want).sum())} of "
                                 f"{have.size} values differ, max abs diff "
                                 f"{float(np.max(np.abs(have.astype(np.float64) - want))):.4g}")
    return {"detail": f"{len(samples)} samples bit-exact, impl mnn"}


def step_validate(name: str, ours_path, feature: str, weight: str) -> dict:
    """``python -m mnnlite validate`` on the held-out folder: exit 0 and a finite cosine per output."""
    with tempfile.TemporaryDirectory(prefix="mnnlite-validate-") as tmp:
        report = Path(tmp) / "report.json"
        res = run_child([sys.executable, "-m", "mnnlite", "validate", str(corpus.float_model(name)),
                         str(ours_path), str(corpus.config_path(name, feature, weight)),
                         "--data", str(corpus.heldout_dir(name)), "--json", str(report)], 1800)
        if res["code"] != 0 or not report.exists():
            raise StepFailed(f"{name} {feature}/{weight}: mnnlite validate {_exit_text(res)}: "
                             f"{_last_line(res['output'])}")
        data = json.loads(report.read_text())
    cosines = [o["cosine"] for o in data.get("outputs", [])]
    if not cosines or not all(np.isfinite(cosines)):
        raise StepFailed(f"{name}: validate reported no finite cosine: {data.get('outputs')}")
    samples = len(data.get("samples") or [])
    return {"cosine": float(min(cosines)), "seconds": res["seconds"], "detail": f"{samples} samples"}
