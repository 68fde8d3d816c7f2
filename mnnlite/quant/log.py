"""The quantizer's console output, in MNN's own format (quantization doc §11).

Log lines look like ``[HH:MM:SS] @ <line>: <message>`` where ``<line>`` is the source line of the message in
MNN 3.6.1's ``calibration.cpp`` (or ``Helper.cpp`` / ``quantizeWeight.cpp``), so a log of ours reads like
one of ``quantized.out``.  Progress lines are ``\\r<label>: <pct> %`` with one newline after the loop.
Everything goes to the stream the caller passes (the CLI passes ``sys.stdout``); library code never prints.
"""
from __future__ import annotations

import time
from typing import Callable, TextIO

import numpy as np

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

# progress labels (doc §11.2)
COLLECT = "CollectFeatureDistribution"
PROCESS_FILES = "ProcessCalibrationFiles"
COMPUTE_ADMM = "ComputeADMM"
EMA = "quantize with EMA"
DISTANCE = "computeDistance"


class QuantLog:
    """Writes MNN-style lines to ``stream`` (nothing at all when ``stream`` is None).

    ``clock`` returns the local time as a ``time.struct_time`` (tests pass a fixed one).
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], time.struct_time] = time.localtime):
        self.stream = stream
        self.clock = clock
        self._progress_open = False

    def _write(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()

    def line(self, key: str, *args) -> None:
        """One ``DLOG(INFO)`` line: ``[HH:MM:SS] @ <line>: <message>``."""
        line_no, template = MESSAGES[key]
        stamp = time.strftime("%H:%M:%S", self.clock())
        self._write(f"[{stamp}] @ {line_no}: {template.format(*args)}\n")

    def text(self, message: str) -> None:
        """An ``MNN_PRINT`` line: no prefix (``message`` carries its own newline)."""
        self._write(message)

    def progress(self, label: str, done: int, total: int) -> None:
        """``\\r<label>: 12.50 %`` (MNN computes the percentage in float and prints it with %.2f)."""
        pct = np.float32(done) * np.float32(100) / np.float32(max(total, 1))
        self._write(f"\r{label}: {float(pct):.2f} %")
        self._progress_open = True

    def end_progress(self) -> None:
        """The newline MNN prints after a progress loop."""
        self._write("\n")
        self._progress_open = False

    def warning(self, message: str) -> None:
        """A problem that does not stop the run (e.g. an unreadable calibration image)."""
        if self._progress_open:
            self._write("\n")
            self._progress_open = False
        self._write(f"warning: {message}\n")

    def summary(self, message: str) -> None:
        """Our own closing lines (not in MNN's log): ops quantized, skipped, time."""
        self._write(message.rstrip("\n") + "\n")


__all__ = ["QuantLog", "MESSAGES", "COLLECT", "PROCESS_FILES", "COMPUTE_ADMM", "EMA", "DISTANCE"]
