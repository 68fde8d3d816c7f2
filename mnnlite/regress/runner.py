"""Run cases in parallel child processes and judge each against its golden file."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from ..errors import ConfigError
from .cases import Case
from .golden import compare, read_golden, unknown_metric_patterns, write_golden


@dataclass
class CaseResult:
    case: Case
    verdict: str                   # "pass", "regressed", "failed" (threshold), "error", "new"
    message: str = ""
    checks: list = field(default_factory=list)
    result: dict | None = None
    golden: dict | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict in ("pass", "new")


@dataclass
class RegressionRun:
    results: list[CaseResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)


def run_cases(cases: list[Case], jobs: int | None = 1, update_golden: bool = False, progress=None,
              timeout: float = 3600.0, threads: int | None = None, ray: str | None = None,
              ship_data: bool = False) -> RegressionRun:
    """Every case in a child process, ``jobs`` at a time; results in case order, whatever the jobs.

    ``threads``: calibration threads per case (default: the quantizer's).  ``ray``: a Ray cluster
    address (``mnnlite.distributed``): each case is then a Ray task with ``threads`` CPUs (default 1),
    ``jobs`` caps the cases in flight (None: the cluster's CPUs decide) and ``ship_data`` sends the
    models and sample folders through Ray's object store instead of relying on a shared file system.
    Judging against the goldens happens here, on the driver, in both cases.
    """
    results: dict[int, CaseResult] = {}
    runnable = [(i, c) for i, c in enumerate(cases) if c.error is None]
    for i, c in enumerate(cases):
        if c.error is not None:
            results[i] = CaseResult(c, "error", c.error)
    done = len(results)
    if progress:
        for r in results.values():
            progress(done, len(cases), r)
    with _executor(runnable, jobs, timeout, threads, ray, ship_data) as finished:
        for i, outcome in finished:
            results[i] = judge(cases[i], *outcome, update_golden=update_golden)
            done += 1
            if progress:
                progress(done, len(cases), results[i])
    return RegressionRun([results[i] for i in range(len(cases))])


@contextlib.contextmanager
def _executor(runnable, jobs, timeout, threads, ray, ship_data):
    """``(case index, (result, crash message, seconds))`` as cases finish: child processes here, or
    Ray tasks."""
    if ray is not None:
        from ..distributed import cluster, run_case_results

        with cluster(ray) as connected:
            yield run_case_results(runnable, connected, jobs, threads, ship_data, timeout)
        return
    with ThreadPoolExecutor(max_workers=max(1, jobs or 1)) as pool:
        futures = {pool.submit(run_child, dict(c.to_job(), threads=threads), timeout): i for i, c in runnable}
        yield ((futures[fut], fut.result()) for fut in as_completed(futures))


def run_child(job: dict, timeout: float, env=None, die_with_parent: bool = False) -> tuple[dict | None, str, float]:
    """One case's job in a child process (``regress.worker``): ``(result, crash message, seconds)``.

    ``die_with_parent``: the child is killed when this process dies (Linux), so a Ray worker killed
    mid-case leaves no orphan behind when Ray retries the case elsewhere.
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mnnlite-case-") as tmp:
        job_path, result_path = os.path.join(tmp, "job.json"), os.path.join(tmp, "result.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump(job, f)
        try:
            proc = subprocess.run([sys.executable, "-m", "mnnlite.regress.worker", job_path, result_path],
                                  capture_output=True, text=True, timeout=timeout, env=env,
                                  preexec_fn=_die_with_parent if die_with_parent else None)
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s", time.perf_counter() - started
        elapsed = time.perf_counter() - started
        if not os.path.exists(result_path):
            tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            return None, f"crashed (exit code {proc.returncode}): {tail}", elapsed
        with open(result_path, encoding="utf-8") as f:
            return json.load(f), "", elapsed


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG; Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))     # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def judge(case: Case, result: dict | None, crash: str, seconds: float, update_golden: bool) -> CaseResult:
    if result is None:
        return CaseResult(case, "error", crash, seconds=seconds)
    if "error" in result:
        return CaseResult(case, "error", result["error"], seconds=seconds)
    bad = unknown_metric_patterns(case.tolerances, result["metrics"])
    if bad:
        return CaseResult(case, "error", f"tolerance names unknown metric(s) {bad}; this case produces "
                                         f"{sorted(result['metrics'])}", result=result, seconds=seconds)
    try:
        golden = read_golden(case.golden)
    except ConfigError as exc:
        return CaseResult(case, "error", str(exc), result=result, seconds=seconds)
    if golden is None:
        if update_golden:
            write_golden(case.golden, result)
        gate = _threshold_note(case, result)
        if not result["thresholds_passed"]:
            return CaseResult(case, "failed", gate + "; no golden file yet", result=result, seconds=seconds)
        return CaseResult(case, "new", "no golden file yet" + (" (written)" if update_golden else
                                                              "; run with --update-golden to record one")
                          + f"; {gate}", result=result, seconds=seconds)
    checks = compare(result["metrics"], golden["metrics"], case.tolerance)
    out = CaseResult(case, "pass", "", checks, result, golden, seconds)
    regressed = [c for c in checks if c.failed]
    if regressed:
        worst = regressed[0]
        out.verdict = "regressed"
        out.message = (f"{len(regressed)} metric(s) regressed, e.g. {worst.name}: {_fmt(worst.value)} vs golden "
                       f"{_fmt(worst.golden)} (tolerance {worst.tolerance:g})")
    elif not result["thresholds_passed"]:
        out.verdict = "failed"
        out.message = "threshold missed: " + "; ".join(result["threshold_failures"] or ["see validate report"])
    if update_golden:
        write_golden(case.golden, result)
        out.message = (out.message + "; " if out.message else "") + "golden updated"
        out.verdict = "pass" if out.verdict == "regressed" else out.verdict
    return out


def _threshold_note(case: Case, result: dict) -> str:
    """What the absolute gates said: met, missed (which), or that none was set (measured only)."""
    if not case.thresholds:
        return "measured only (no threshold set)"
    if not result["thresholds_passed"]:
        return "threshold missed: " + "; ".join(result["threshold_failures"] or ["see validate report"])
    return "thresholds met (" + ", ".join(f"{k} {v}" for k, v in sorted(case.thresholds.items())) + ")"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.6g}"
