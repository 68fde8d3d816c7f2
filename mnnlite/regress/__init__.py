"""Regression harness: quantize + validate a set of declared cases and compare with golden metrics.

``cases.py`` reads the case file, ``runner.py`` runs each case in its own process, ``golden.py`` keeps
and compares the recorded metrics, ``report.py`` prints the table and writes JSON and JUnit XML.
"""
from .cases import Case, load_cases  # noqa: F401
from .runner import RegressionRun, run_cases  # noqa: F401
