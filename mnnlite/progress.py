"""Progress a person can read: a bar on a terminal, one plain line per step in a log.

On a terminal with the optional ``tqdm`` installed (``pip install "mnnlite[progress]"``) a loop shows a bar
with count, rate and ETA.  Without tqdm, or when the stream is not a terminal (CI logs, pipes, files), it
prints whole lines ``label: 8/32 (25%), 3.1/s, ETA 0:00:08``: every step of a short loop, every tenth of
a long one, and always the last, so a log never holds one long ``\\r``-joined line.
"""
from __future__ import annotations

import time
from typing import Callable, TextIO

PLAIN_STEPS = 10            # a long loop prints a plain line per tenth (and every step when it has <= 10)

ProgressCallback = Callable[[str, int, int], None]     # (stage, done, total)


def _tqdm():
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressDisplay:
    """Shows ``update(label, done, total)`` calls on ``stream``; a new label starts a new loop.

    ``bar``: True = tqdm bar, False = plain lines, None = a bar when ``stream`` is a terminal and tqdm is
    installed.  ``clock`` is ``time.perf_counter`` (tests pass their own).
    """

    def __init__(self, stream: TextIO | None, bar: bool | None = None, unit: str = "sample",
                 clock: Callable[[], float] = time.perf_counter):
        self.stream, self.unit, self.clock = stream, unit, clock
        # tqdm is imported only when a bar can show: it pulls in importlib.metadata and email (~4 MB of a
        # small calibration's peak RSS, issue 10's bound is quantized.out's)
        wants_bar = stream is not None and (bar or (bar is None and is_terminal(stream)))
        self._tqdm = _tqdm() if wants_bar else None
        self._label: str | None = None
        self._bar = None
        self._start = 0.0
        self._shown = -1             # the last tenth (or step) printed as a plain line

    @property
    def uses_bar(self) -> bool:
        return self._tqdm is not None

    def start(self, label: str, total: int) -> None:
        """Begin a loop (rate and ETA count from here); ``update`` also begins one on a new label."""
        self.close()
        self._label, self._start, self._shown = label, self.clock(), -1
        if self._tqdm is not None and self.stream is not None:
            self._bar = self._tqdm(total=total, desc=label, unit=self.unit, file=self.stream, leave=True,
                                   dynamic_ncols=True)

    def update(self, label: str, done: int, total: int) -> None:
        if self.stream is None:
            return
        if label != self._label:
            self.start(label, total)
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
            if done >= total:
                self.close()
            return
        if done <= 0:
            return
        step = done * PLAIN_STEPS // max(total, 1) if total > PLAIN_STEPS else done
        if step == self._shown and done < total:
            return
        self._shown = step
        self.stream.write(self.line(label, done, total, self.clock() - self._start) + "\n")
        self.stream.flush()
        if done >= total:
            self._label = None

    def line(self, label: str, done: int, total: int, elapsed: float) -> str:
        pct = 100.0 * done / max(total, 1)
        text = f"{label}: {done}/{total} ({pct:.0f}%)"
        if elapsed > 0:
            rate = done / elapsed
            text += f", {rate:.3g} {self.unit}s/s" if rate >= 1 else f", {elapsed / done:.3g} s/{self.unit}"
            text += f", elapsed {format_seconds(elapsed)}"
            if done < total:
                text += f", ETA {format_seconds((total - done) / rate)}"
        return text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._label = None


__all__ = ["ProgressDisplay", "ProgressCallback", "format_seconds", "is_terminal"]
