"""Golden files: the metrics a case produced when its goldens were last accepted, with provenance.

A golden records the package version, the config hash and the sample-list hash next to the metrics, so a
reader can tell whether a moved number comes from a code change, a config change or different data.
Goldens are written only by ``mnnlite regress --update-golden``, never by hand.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from dataclasses import dataclass

from ..errors import ConfigError
from ..format.model_io import write_atomic
from ..metrics import DIRECTION, is_known_metric, metric_kind

GOLDEN_FORMAT = 1


def config_hash(config: dict) -> str:
    """Hash of the quantizer settings; the data folder is left out (the samples hash covers the data),
    so the same case hashes alike in every checkout."""
    settings = {k: v for k, v in config.items() if k != "path"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def samples_hash(paths: list[str]) -> str:
    """Hash of the sample list: names and contents, in order (a sample folder counts with its files)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.basename(path).encode() + b"\0")
        files = [path] if not os.path.isdir(path) else sorted(
            os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
        for file in files:
            h.update(os.path.relpath(file, path).encode() + b"\0")
            with open(file, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def read_golden(path: str) -> dict | None:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            golden = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"golden file {path}: {exc}") from None
    if not isinstance(golden, dict) or not isinstance(golden.get("metrics"), dict):
        raise ConfigError(f"golden file {path}: no 'metrics' object (not written by mnnlite regress?)")
    return golden


def write_golden(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    golden = {"format": GOLDEN_FORMAT, **result["provenance"], "metrics": result["metrics"]}
    write_atomic(path, (json.dumps(golden, indent=2, sort_keys=True) + "\n").encode())


@dataclass
class MetricCheck:
    name: str
    value: float | None
    golden: float | None
    tolerance: float
    verdict: str  # "ok", "improved", "regressed", "new", "missing"

    @property
    def failed(self) -> bool:
        return self.verdict in ("regressed", "missing")


def compare(metrics: dict, golden: dict, tolerance_of) -> list[MetricCheck]:
    """Judge every metric against its golden value in the direction that metric improves."""
    checks = []
    for name in sorted(set(metrics) | set(golden)):
        value, ref = metrics.get(name), golden.get(name)
        tol = tolerance_of(name)
        if ref is None:
            verdict = "new"
        elif value is None:
            verdict = "missing"
        else:
            delta = (value - ref) * DIRECTION[metric_kind(name)]
            verdict = "regressed" if delta < -tol else "improved" if delta > tol else "ok"
        checks.append(MetricCheck(name, value, ref, tol, verdict))
    return checks


def unknown_metric_patterns(tolerances: dict, metrics: dict) -> list[str]:
    """Tolerance keys whose kind is no metric kind, and exact names (no wildcard) the case does not produce.

    A wildcard pattern may match nothing in one case: file-level defaults cover every case.
    """
    bad = []
    for pattern in tolerances:
        kind_ok = any(fnmatch.fnmatchcase(kind, metric_kind(pattern)) for kind in DIRECTION)
        exact_missing = not any(c in pattern for c in "*?[") and pattern not in metrics
        if not kind_ok or exact_missing:
            bad.append(pattern)
    return bad


def check_metric_names(metrics: dict) -> None:
    unknown = [m for m in metrics if not is_known_metric(m)]
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; known kinds: {sorted(DIRECTION)}")
