"""Progress a person can read: whole plain lines with count, rate and ETA when the stream is not a terminal
(or tqdm is not installed), a tqdm bar on a terminal; MNN's exact ``\\r`` lines only with mnn_lines."""
from __future__ import annotations

import io
import re

import pytest

from mnnlite.progress import ProgressDisplay, format_seconds
from mnnlite.quant.log import QuantLog


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _drive(label: str, total: int, seconds_per_step: float) -> str:
    """What a plain display prints for a loop of ``total`` steps of ``seconds_per_step`` each."""
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, clock=clock)
    display.start(label, total)
    for done in range(1, total + 1):
        clock.now += seconds_per_step
        display.update(label, done, total)
    return out.getvalue()


def test_plain_lines_every_step_of_a_short_loop():
    text = _drive("validate", 4, 2.0)
    lines = text.splitlines()
    assert lines == ["validate: 1/4 (25%), 2 s/sample, elapsed 0:00:02, ETA 0:00:06",
                     "validate: 2/4 (50%), 2 s/sample, elapsed 0:00:04, ETA 0:00:04",
                     "validate: 3/4 (75%), 2 s/sample, elapsed 0:00:06, ETA 0:00:02",
                     "validate: 4/4 (100%), 2 s/sample, elapsed 0:00:08"]
    assert "\r" not in text


def test_plain_lines_every_tenth_of_a_long_loop():
    lines = _drive("CollectFeatureDistribution", 600, 0.1).splitlines()
    # the first step (an early rate and ETA), then each tenth
    assert len(lines) == 11 and lines[-1].startswith("CollectFeatureDistribution: 600/600 (100%), 10 samples/s")
    assert lines[0] == "CollectFeatureDistribution: 1/600 (0%), 10 samples/s, elapsed 0:00:00, ETA 0:01:00"
    assert lines[1] == "CollectFeatureDistribution: 60/600 (10%), 10 samples/s, elapsed 0:00:06, ETA 0:00:54"


def test_bar_on_a_terminal_with_tqdm():
    pytest.importorskip("tqdm")   # an optional extra; the test extra installs it

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    out = Terminal()
    display = ProgressDisplay(out)
    assert display.uses_bar
    display.start("quantize with EMA", 8)
    for done in range(1, 9):
        display.update("quantize with EMA", done, 8)
    text = out.getvalue()
    assert "quantize with EMA" in text and "8/8" in text and re.search(r"sample/s|s/sample", text)
    assert ProgressDisplay(io.StringIO()).uses_bar is False          # not a terminal: plain lines


def test_quant_log_readable_and_exact_forms():
    clock = lambda: (2026, 1, 2, 3, 4, 5, 0, 2, 0)   # noqa: E731
    readable, exact = io.StringIO(), io.StringIO()
    calls = []
    for stream, mnn in ((readable, False), (exact, True)):
        log = QuantLog(stream, clock=lambda: __import__("time").struct_time(clock()), mnn_lines=mnn,
                       progress=lambda *a: calls.append(a))
        log.line("model_file", "m.mnn")
        log.progress("CollectFeatureRange", 0, 2, mnn=False)
        log.progress("CollectFeatureRange", 2, 2, mnn=False)
        log.end_progress(mnn=False)
        log.progress("CollectFeatureDistribution", 0, 2)
        log.progress("CollectFeatureDistribution", 1, 2)
        log.progress("CollectFeatureDistribution", 2, 2)
        log.end_progress()
    assert exact.getvalue() == ("[03:04:05] @ 1725: >>> modelFile: m.mnn\n"
                                "\rCollectFeatureDistribution: 50.00 %\rCollectFeatureDistribution: 100.00 %\n")
    lines = readable.getvalue().splitlines()
    assert lines[0] == "[03:04:05] >>> modelFile: m.mnn"
    assert lines[1].startswith("CollectFeatureRange: 2/2 (100%)")
    assert [l.split(",")[0] for l in lines[2:]] == ["CollectFeatureDistribution: 1/2 (50%)",
                                                    "CollectFeatureDistribution: 2/2 (100%)"]
    assert calls[:4] == [("CollectFeatureRange", 0, 2), ("CollectFeatureRange", 2, 2),
                         ("CollectFeatureDistribution", 0, 2), ("CollectFeatureDistribution", 1, 2)]


def test_format_seconds():
    assert format_seconds(0.4) == "0:00:00" and format_seconds(3725) == "1:02:05"
