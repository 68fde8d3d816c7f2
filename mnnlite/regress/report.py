"""The harness's outputs: a table on the console, a JSON report, JUnit XML for CI systems."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from ..format.model_io import write_atomic
from .runner import RegressionRun

HEADLINE_KINDS = ("cosine", "top1_agreement", "rel_l2")


def table(run: RegressionRun) -> str:
    """One row per case: verdict, time, headline metrics with their golden values, the reason."""
    rows = [("case", "verdict", "time", "metrics (value / golden)", "note")]
    for r in run.results:
        shown = []
        for check in r.checks or []:
            if check.name.rsplit(".", 1)[-1] in HEADLINE_KINDS or check.failed:
                shown.append(f"{check.name}={_f(check.value)}/{_f(check.golden)}")
        if not r.checks and r.result:
            shown = [f"{k}={_f(v)}" for k, v in sorted(r.result["metrics"].items())
                     if k.rsplit(".", 1)[-1] in HEADLINE_KINDS]
        rows.append((r.case.name, r.verdict.upper(), f"{r.seconds:.1f}s", " ".join(shown[:4]) or "-", r.message))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + ("  " + row[4] if row[4] else "")
             for row in rows]
    lines.append(summary_line(run))
    return "\n".join(lines)


def summary_line(run: RegressionRun) -> str:
    """``3 passed, 0 failed`` with the cases that have no golden yet (or no gate at all) said apart."""
    passed = sum(r.verdict == "pass" for r in run.results)
    new = sum(r.verdict == "new" for r in run.results)
    ungated = [r.case.name for r in run.results if r.ok and not r.case.thresholds]
    text = f"{passed} passed, {len(run.results) - passed - new} failed"
    if new:
        text += f", {new} new (no golden yet: measured, compared with nothing)"
    if ungated:
        text += f"; no absolute threshold on {', '.join(ungated)}"
    return text


def to_dict(run: RegressionRun) -> dict:
    return {
        "ok": run.ok,
        "summary": summary_line(run),
        "cases": [{
            "name": r.case.name,
            "verdict": r.verdict,
            "message": r.message,
            "thresholds": dict(r.case.thresholds),
            "seconds": round(r.seconds, 3),
            "metrics": (r.result or {}).get("metrics", {}),
            "provenance": (r.result or {}).get("provenance"),
            "golden": (r.golden or {}).get("metrics"),
            "checks": [{"metric": c.name, "value": c.value, "golden": c.golden, "tolerance": c.tolerance,
                        "verdict": c.verdict} for c in r.checks],
        } for r in run.results],
    }


def write_json(run: RegressionRun, path: str) -> None:
    write_atomic(path, (json.dumps(to_dict(run), indent=2) + "\n").encode())


def junit_xml(run: RegressionRun) -> bytes:
    """JUnit XML in the common (Jenkins/Ant) schema: one testsuite, one testcase per case."""
    failures = sum(r.verdict in ("regressed", "failed") for r in run.results)
    errors = sum(r.verdict == "error" for r in run.results)
    suite = ET.Element("testsuite", name="mnnlite.regress", tests=str(len(run.results)), failures=str(failures),
                       errors=str(errors), skipped="0", time=f"{sum(r.seconds for r in run.results):.3f}")
    for r in run.results:
        case = ET.SubElement(suite, "testcase", classname="mnnlite.regress", name=r.case.name,
                             time=f"{r.seconds:.3f}")
        if r.verdict in ("regressed", "failed"):
            node = ET.SubElement(case, "failure", message=r.message, type=r.verdict)
            node.text = "\n".join(f"{c.name}: {c.value} vs golden {c.golden} (tolerance {c.tolerance}) {c.verdict}"
                                  for c in r.checks if c.failed) or r.message
        elif r.verdict == "error":
            ET.SubElement(case, "error", message=r.message, type="error").text = r.message
        if r.result:
            ET.SubElement(case, "system-out").text = json.dumps(r.result.get("metrics", {}), sort_keys=True)
    suites = ET.Element("testsuites", tests=suite.get("tests"), failures=suite.get("failures"),
                        errors=suite.get("errors"), time=suite.get("time"))
    suites.append(suite)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def write_junit(run: RegressionRun, path: str) -> None:
    write_atomic(path, junit_xml(run))


def golden_diff(run: RegressionRun) -> str:
    """What --update-golden is about to change, metric by metric."""
    lines = []
    for r in run.results:
        if not r.result or r.verdict == "error":
            continue
        if r.golden is None:
            lines.append(f"{r.case.name}: new golden with {len(r.result['metrics'])} metrics")
            continue
        for c in r.checks:
            if c.value != c.golden:
                lines.append(f"{r.case.name}: {c.name} {_f(c.golden)} -> {_f(c.value)}")
    return "\n".join(lines) or "no metric changed"


def _f(v) -> str:
    return "-" if v is None else f"{v:.5g}"
