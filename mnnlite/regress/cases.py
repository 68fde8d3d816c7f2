"""The case file (TOML): what to quantize, on which data, checked against which golden file.

The format, with every key, is in README ("Regression harness").  Cases without ``[case.thresholds]`` get
``DEFAULT_THRESHOLDS``; an empty table means no absolute gate (only the golden comparison).  A problem in
one case (missing file, bad key, unknown metric) is reported for that case only.
"""
from __future__ import annotations

import fnmatch
import json
import os
import sys
from dataclasses import dataclass, field

from ..errors import ConfigError, did_you_mean
from ..layout import DEFAULT_LAYOUT, check_layout

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older interpreters only
    import tomli as tomllib

CASE_KEYS = {"name", "model", "config", "calibration", "heldout", "labels", "num", "golden", "thresholds",
             "tolerances", "layout"}
THRESHOLD_KEYS = {"min_cosine", "min_agreement"}
# A case that declares no [case.thresholds] is gated by these: a floor that catches a broken
# quantization (every output's cosine to the float model, top-1 agreement of classifier outputs).
DEFAULT_THRESHOLDS = {"min_cosine": 0.95, "min_agreement": 0.90}
DEFAULT_TOLERANCE = 1e-4


@dataclass
class Case:
    name: str
    model: str
    config: dict
    golden: str
    calibration: str | None = None
    heldout: str | None = None
    labels: str | None = None
    num: int | None = None
    layout: str = DEFAULT_LAYOUT
    thresholds: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    error: str | None = None  # set when the case cannot run; the others still do

    def tolerance(self, metric: str) -> float:
        """Slack for ``metric``: the most specific matching pattern wins (exact name first)."""
        if metric in self.tolerances:
            return float(self.tolerances[metric])
        matches = [p for p in self.tolerances if fnmatch.fnmatchcase(metric, p)]
        if not matches:
            return DEFAULT_TOLERANCE
        return float(self.tolerances[max(matches, key=len)])

    def to_job(self) -> dict:
        return {k: getattr(self, k) for k in ("name", "model", "config", "golden", "calibration", "heldout",
                                               "labels", "num", "thresholds", "layout")}


def load_cases(path: str) -> list[Case]:
    """Parse a case file; a malformed file is a ConfigError, a malformed case an errored Case."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"defaults", "tolerances", "case"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; allowed: defaults, tolerances, case")
    entries = doc.get("case", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[case]] entries")
    base = os.path.dirname(os.path.abspath(path))
    defaults, tolerances = doc.get("defaults", {}), doc.get("tolerances", {})
    cases, seen = [], set()
    for i, entry in enumerate(entries):
        raw = {**defaults, **entry}
        case = _parse_case(raw, i, base, tolerances)
        if case.name in seen:
            case.error = f"case name {case.name!r} is used twice"
        seen.add(case.name)
        cases.append(case)
    return cases


def _parse_case(raw: dict, i: int, base: str, file_tolerances: dict) -> Case:
    name = str(raw.get("name") or f"case{i + 1}")
    case = Case(name=name, model="", config={}, golden=os.path.join(base, "golden", f"{name}.json"))
    try:
        _fill_case(case, raw, base, file_tolerances)
    except ConfigError as exc:
        case.error = str(exc)
    return case


def _fill_case(case: Case, raw: dict, base: str, file_tolerances: dict) -> None:
    def path_of(key, must_exist=True, kind="file"):
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ConfigError(f"case {case.name!r}: {key} must be a path string, got {value!r}")
        expanded = os.path.expandvars(os.path.expanduser(value))
        if "$" in expanded:
            raise ConfigError(f"case {case.name!r}: {key} {value!r} names an environment variable that is not set")
        full = os.path.normpath(os.path.join(base, expanded))
        exists = os.path.isdir(full) if kind == "folder" else os.path.isfile(full)
        if must_exist and not exists:
            raise ConfigError(f"case {case.name!r}: {key} {kind} {value!r} does not exist ({full})")
        return full

    unknown = set(raw) - CASE_KEYS
    if unknown:
        first = sorted(unknown)[0]
        raise ConfigError(f"case {case.name!r}: unknown key(s) {sorted(unknown)}{did_you_mean(first, CASE_KEYS)}; "
                          f"allowed: {sorted(CASE_KEYS)}")
    if "model" not in raw or "config" not in raw:
        raise ConfigError(f"case {case.name!r}: needs both 'model' and 'config'")
    case.model = path_of("model")
    case.config = _config_of(case, raw["config"], path_of)
    case.calibration = path_of("calibration", kind="folder")
    case.heldout = path_of("heldout", kind="folder")
    case.labels = path_of("labels")
    case.golden = path_of("golden", must_exist=False) or case.golden
    if case.calibration:
        case.config["path"] = case.calibration
    num = raw.get("num")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num <= 0):
        raise ConfigError(f"case {case.name!r}: num must be a positive integer, got {num!r}")
    case.num = num
    try:
        case.layout = check_layout(raw.get("layout", DEFAULT_LAYOUT))
    except ConfigError as exc:
        raise ConfigError(f"case {case.name!r}: {exc}") from None
    thresholds = raw.get("thresholds", DEFAULT_THRESHOLDS)
    if not isinstance(thresholds, dict):
        raise ConfigError(f"case {case.name!r}: thresholds must be a table, got {thresholds!r}")
    case.thresholds = dict(thresholds)
    bad = set(case.thresholds) - THRESHOLD_KEYS
    if bad:
        first = sorted(bad)[0]
        raise ConfigError(f"case {case.name!r}: unknown threshold(s) {sorted(bad)}"
                          f"{did_you_mean(first, THRESHOLD_KEYS)}; allowed: {sorted(THRESHOLD_KEYS)}")
    for key, value in case.thresholds.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ConfigError(f"case {case.name!r}: threshold {key} must be a number in [0, 1], got {value!r}")
    case.tolerances = {**file_tolerances, **raw.get("tolerances", {})}
    for key, value in case.tolerances.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"case {case.name!r}: tolerance for {key!r} must be a number >= 0, got {value!r}")


def _config_of(case: Case, value, path_of) -> dict:
    if isinstance(value, dict):
        return dict(value)
    config_path = path_of("config")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"case {case.name!r}: config {config_path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"case {case.name!r}: config {config_path} is not a JSON object")
    # a relative calibration path in a config file is relative to that file, as the quantizer reads it
    if isinstance(config.get("path"), str) and not os.path.isabs(config["path"]):
        config["path"] = os.path.normpath(os.path.join(os.path.dirname(config_path), config["path"]))
    return config
