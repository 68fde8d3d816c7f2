"""The quantizer's console output: MNN's messages (docs/mnn-quantization.md §11), readable or exact.

By default a log line is ``[HH:MM:SS] <message>`` and progress is a bar on a terminal (with the optional
tqdm) or one plain line per step elsewhere (``mnnlite.progress``).  ``mnn_lines=True`` (``--mnn-log`` on
the command line) writes exactly what ``quantized.out`` writes: ``[HH:MM:SS] @ <line>: <message>`` where
``<line>`` is the message's source line in MNN 3.6.1's ``calibration.cpp`` (or ``Helper.cpp`` /
``quantizeWeight.cpp``), and progress as ``\\r<label>: <pct> %`` with one newline after the loop.
Everything goes to the stream the caller passes (the CLI passes ``sys.stdout``); library code never prints.
"""
from __future__ import annotations

import time
from typing import Callable, TextIO

import numpy as np

from ..progress import ProgressCallback, ProgressDisplay

# message key -> (MNN source line, message template)
MESSAGES: dict[str, tuple[int, str]] = {
    "usage": (1719, "Usage: ./quantized.out src.mnn dst.mnn preTreatConfig.json\n"),
    "model_file": (1725, ">>> modelFile: {}"),
    "config_file": (1726, ">>> preTreatConfig: {}"),
    "dst_file": (1727, ">>> dstFile: {}"),
    "calibrate": (1755, "Calibrate the feature and quantize model..."),
    "feature_method": (512, "Use feature quantization method: {}"),
    "weight_method": (513, "Use weight quantization method: {}"),
    "feature_clamp": (533, "feature_clamp_value: {}"),
    "weight_clamp": (534, "weight_clamp_value: {}"),
    "winograd_only_ema": (538, "winogradOpt only be available under EMA"),
    "winograd_off": (541, "Close winogradOpt because set winogradOpt as false"),
    "skip_op": (549, "skip quant op name: {}"),
    "dataset_num": (137, "used dataset num: {}"),
    "has_batchnorm": (642, "this model has BatchNorm, use EMA quantize method instead"),
    "has_batchnorm_subgraph": (650, "this model has BatchNorm, use EMA quantize method instead"),
    "fake_quant_done": (1107, "fake quant weights done."),
    "admm_weight": (100, "iter: 1000 with diff {}"),
    "batch_not_set": (1342, "batch_size not set, use model batch: {}"),
    "batch_size": (1358, "batch size: {}"),
    "quant_bits": (1359, "quant bits: {}"),
    "done": (1763, "Quantize model done!"),
}

# progress labels (docs/mnn-quantization.md §11.2)
COLLECT = "CollectFeatureDistribution"
PROCESS_FILES = "ProcessCalibrationFiles"
COMPUTE_ADMM = "ComputeADMM"
EMA = "quantize with EMA"
DISTANCE = "computeDistance"
RANGES = "CollectFeatureRange"     # ours: the first pass of KL/ADMM, which MNN runs without a progress line


class QuantLog:
    """Writes MNN-style lines to ``stream`` (nothing at all when ``stream`` is None).

    ``clock`` returns the local time as a ``time.struct_time`` (tests pass a fixed one).
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], time.struct_time] = time.localtime, *,
                 mnn_lines: bool = False, progress: ProgressCallback | None = None, bar: bool | None = None):
        self.stream = stream
        self.clock = clock
        self.mnn_lines = mnn_lines
        self.callback = progress
        self.display = None if mnn_lines else ProgressDisplay(stream, bar)
        self._progress_open = False

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    def line(self, key: str, *args) -> None:
        """One ``DLOG(INFO)`` line: ``[HH:MM:SS] <message>``, or MNN's ``[HH:MM:SS] @ <line>: <message>``."""
        line_no, template = MESSAGES[key]
        stamp = time.strftime("%H:%M:%S", self.clock())
        where = f"@ {line_no}: " if self.mnn_lines else ""
        self._write(f"[{stamp}] {where}{template.format(*args)}\n")

    def text(self, message: str) -> None:
        """An ``MNN_PRINT`` line: no prefix (``message`` carries its own newline)."""
        self._write(message)

    def progress(self, label: str, done: int, total: int, mnn: bool = True) -> None:
        """``done`` of ``total`` steps of the loop ``label`` (``done`` 0 starts it).  MNN's form is
        ``\\r<label>: 12.50 %`` (the percentage computed in float, printed with %.2f); ``mnn=False`` marks
        a loop of ours that MNN does not show (left out of the exact log)."""
        if self.callback is not None:
            self.callback(label, done, total)
        if not self.mnn_lines:
            if self.display is not None:
                if done == 0:
                    self.display.start(label, total)
                else:
                    self.display.update(label, done, total)
            return
        if not mnn or done == 0:
            return
        pct = np.float32(done) * np.float32(100) / np.float32(max(total, 1))
        self._write(f"\r{label}: {float(pct):.2f} %")
        self._progress_open = True

    def end_progress(self, mnn: bool = True) -> None:
        """The newline MNN prints after a progress loop (the end of the bar otherwise)."""
        if not self.mnn_lines:
            if self.display is not None:
                self.display.close()
            return
        if not mnn:
            return
        self._write("\n")
        self._progress_open = False

    def warning(self, message: str) -> None:
        """A problem that does not stop the run (e.g. an unreadable calibration image)."""
        if self._progress_open:
            self._write("\n")
            self._progress_open = False
        if self.display is not None and self.display.uses_bar:
            self.display.close()
        self._write(f"warning: {message}\n")

    def summary(self, message: str) -> None:
        """Our own closing lines (not in MNN's log): ops quantized, skipped, time."""
        self._write(message.rstrip("\n") + "\n")


__all__ = ["QuantLog", "MESSAGES", "COLLECT", "PROCESS_FILES", "COMPUTE_ADMM", "EMA", "DISTANCE", "RANGES"]
