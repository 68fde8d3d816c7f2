"""One case, in its own process: quantize, validate with the int8 runtime, return metrics.

    python -m mnnlite.regress.worker JOB.json RESULT.json

Run as a child of the harness so a crash (even a segfault) costs only this case.
"""
from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time

from .. import __version__
from ..format.model_io import write_atomic
from .golden import check_metric_names, config_hash, samples_hash


def run_job(job: dict) -> dict:
    from ..quant.config import load_config
    from ..quant.dataset import list_candidates
    from ..quant.quantize import quantize
    from ..validation import validate

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mnnlite-regress-") as tmp:
        quant_path = os.path.join(tmp, "quant.mnn")
        log = io.StringIO()
        layout = job.get("layout", "model")
        quantize(job["model"], quant_path, job["config"], log=log, layout=layout, threads=job.get("threads"))
        vreport = validate(job["model"], quant_path, job["config"], data=job["heldout"], labels=job["labels"],
                           num=job["num"], layout=layout, **job["thresholds"])
    metrics = {k: float(v) for k, v in vreport.metrics().items()}
    check_metric_names(metrics)
    samples = list_candidates(load_config(job["config"])) + list(vreport.samples)
    return {
        "metrics": metrics,
        "thresholds_passed": bool(vreport.passed),
        "threshold_failures": list(getattr(vreport, "failures", [])),
        "seconds": time.perf_counter() - started,
        "provenance": {
            "mnnlite_version": __version__,
            "config_hash": config_hash(job["config"]),
            "samples_hash": samples_hash(samples),
            "samples": len(samples),
            "model": os.path.basename(job["model"]),
        },
    }


def main(argv=None) -> int:
    job_path, result_path = (argv or sys.argv[1:])[:2]
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    write_atomic(result_path, json.dumps(run_job_guarded(job)).encode())
    return 0


def run_job_guarded(job: dict) -> dict:
    """``run_job``, a user error (bad model, config, data) as the result ``{"error": message}``."""
    from ..errors import MnnliteError

    try:
        return run_job(job)
    except MnnliteError as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    sys.exit(main())
