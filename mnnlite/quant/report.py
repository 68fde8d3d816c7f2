"""What a quantization run hands back: the ``<dst>.json`` scale dump, the debug JSON and ``QuantReport``.

The scale dump has the layout of MNN's ``Calibration::dumpTensorScales`` (docs/mnn-quantization.md §11.3): one
object per op of the source model's main graph (``Raster`` ops excepted), ``inputs`` only for ops with
inputs and only for tensors the calibration saw, every output (0.0 for tensors without statistics).  It
is pretty-printed with 4 spaces like rapidjson's ``PrettyWriter``; numbers are the shortest text that
reads back as the same double (rapidjson prints up to 17 digits, e.g. ``0.042420290410518649`` for our
``0.04242029041051865``: the same value).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..format.model_io import write_atomic
from ..format.tables import OpType


@dataclass(frozen=True)
class TensorStat:
    """Debug mode (docs/mnn-quantization.md §10): averages over the calibration samples of one tracked tensor."""

    name: str                  # MNN's statistics name, e.g. "conv_3 output_tensor_0"
    tensor: int                # tensor index
    cosine: float              # cosine between float and fake-quantized values (NaN for all-zero tensors)
    overflow: float            # share of codes at the clamp value


@dataclass
class QuantReport:
    """The result of ``mnnlite.quantize``."""

    src: str
    dst: str
    feature_method: str                        # the method used (EMA when a BatchNorm forced it)
    weight_method: str
    samples: int                               # calibration samples used
    quantized_ops: list[str] = field(default_factory=list)   # ops whose weights became int8
    skipped_ops: list[str] = field(default_factory=list)     # convs left in float (skip list, no stats, ...)
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)   # tensor name -> (scale, zero)
    debug: list[TensorStat] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    scale_file: str = ""
    debug_file: str | None = None
    accuracy: object = None                    # accurate.AccuracyReport when mnnlite's accurate flow ran
    report_file: str | None = None             # <dst>.report.json (accurate flow)

    @property
    def tensors(self) -> int:
        """Tensors that carry int8 quant info in the output."""
        return len(self.scales)

    def to_dict(self) -> dict:
        """The machine-readable summary (``--json``): files, methods, counts, op lists, time, warnings."""
        return {
            "src": self.src, "dst": self.dst, "scale_file": self.scale_file, "debug_file": self.debug_file,
            "feature_method": self.feature_method, "weight_method": self.weight_method,
            "samples": self.samples, "quantized_ops": list(self.quantized_ops),
            "skipped_ops": list(self.skipped_ops), "tensors_with_scales": self.tensors,
            "seconds": round(self.seconds, 3), "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        return (f"quantized {len(self.quantized_ops)} op(s), skipped {len(self.skipped_ops)}, "
                f"{self.tensors} tensor(s) with int8 scales, {self.samples} sample(s), "
                f"{self.feature_method}/{self.weight_method}, {self.seconds:.2f} s")


def scale_dump(graph, seen, scales: dict[int, tuple[float, float]]) -> list[dict]:
    """The objects of MNN's ``<dst>.json``; ``seen`` = tensors the calibration touched (``_tensorMap``)."""
    out = []
    for op in graph.ops:
        if op.type == OpType.Raster:
            continue
        entry: dict = {"name": op.name or ""}
        ins = [int(i) for i in op.inputIndexes] if op.inputIndexes is not None else []
        if ins:
            entry["inputs"] = [_tensor_entry(t, scales) for t in ins if t in seen]
        outs = [int(i) for i in op.outputIndexes] if op.outputIndexes is not None else []
        if outs:
            entry["outputs"] = [_tensor_entry(t, scales if t in seen else {}) for t in outs]
        out.append(entry)
    return out


def _tensor_entry(t: int, scales) -> dict:
    scale, zero = scales.get(t, (0.0, 0.0))
    return {"tensorIndex": t, "scales": [float(scale)], "zeropoint": [float(zero)]}


def dumps_scales(entries: list[dict]) -> str:
    return json.dumps(entries, indent=4) + "\n"


def write_scale_dump(path: str, entries: list[dict]) -> None:
    write_atomic(path, dumps_scales(entries).encode())


def debug_json(stats: list[TensorStat], samples: int) -> str:
    """The debug numbers of docs/mnn-quantization.md §10 as JSON (MNN only prints them)."""
    rows = [{"name": s.name, "tensorIndex": s.tensor, "cosine": _num(s.cosine), "overflow": _num(s.overflow)}
            for s in stats]
    return json.dumps({"samples": samples, "tensors": rows}, indent=2) + "\n"


def _num(x: float):
    return None if x != x else float(x)       # NaN -> null (JSON has no NaN)


def debug_lines(stats: list[TensorStat]) -> str:
    """MNN's text: ``<name>:  cos distance: %f, overflow ratio: %f`` per tensor, names sorted."""
    lines = []
    for s in sorted(stats, key=lambda s: s.name.encode()):
        cos = "-nan" if s.cosine != s.cosine else f"{s.cosine:f}"
        lines.append(f"{s.name}:  cos distance: {cos}, overflow ratio: {s.overflow:f}\n")
    return "".join(lines)


__all__ = ["QuantReport", "TensorStat", "scale_dump", "dumps_scales", "write_scale_dump", "debug_json",
           "debug_lines"]
