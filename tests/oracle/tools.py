"""The official converter (MNNConvert) and offline quantizer (quantized.out), each run as
``_tools.mnnconvert([...])`` / ``_tools.mnnquant([...])`` in a child Python process: they print a lot and
may abort the process.  Paths given to them must be absolute: they run in a temporary working directory."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

CONVERT_TIMEOUT_S = 600
QUANT_TIMEOUT_S = 900


class OracleToolError(RuntimeError):
    """An official MNN tool (converter / quantizer / runtime) did not do what was asked; ``returncode`` is the
    child's exit status when there was one (negative: the signal that killed it)."""

    def __init__(self, message: str, returncode: Optional[int] = None):
        super().__init__(message)
        self.returncode = returncode


def tail(text: str, limit: int = 4000) -> str:
    """The end of a tool's output, with \r-progress lines collapsed to their last state."""
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.rstrip("\r").split("\n"))
    return text if len(text) <= limit else "...\n" + text[-limit:]


def run_tool(func: str, argv: List[str], timeout: float, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``_tools.<func>(argv)`` in a child interpreter with captured output."""
    code = f"import sys, _tools; _tools.{func}(sys.argv[1:])"
    try:
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                              errors="replace", timeout=timeout, cwd=str(cwd))
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        raise OracleToolError(f"_tools.{func} timed out after {timeout}s: {argv}\n{tail(out)}") from None


def describe_exit(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def convert(argv: List[str], expected: Sequence[Path], log: Optional[Path] = None) -> None:
    """Run the official converter; raise OracleToolError unless every expected file appeared."""
    with tempfile.TemporaryDirectory(prefix="mnnconvert-") as cwd:
        proc = run_tool("mnnconvert", ["MNNConvert", *argv], CONVERT_TIMEOUT_S, Path(cwd))
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    missing = [str(p) for p in expected if not Path(p).exists() or Path(p).stat().st_size == 0]
    if missing or proc.returncode != 0:
        raise OracleToolError(f"MNNConvert {' '.join(argv)} failed ({describe_exit(proc.returncode)}); "
                              f"missing: {missing}\n{tail(output)}", proc.returncode)


_CONVERT_BATCH = """
import json, sys, _tools
for src, dst, flags in json.loads(sys.argv[1]):
    _tools.mnnconvert(["MNNConvert", "-f", "ONNX", "--modelFile", src, "--MNNModel", dst, "--bizCode", "t", *flags])
"""


def convert_batch(jobs) -> None:
    """Convert many ONNX files in one child process: ``jobs`` = [(src .onnx, dst .mnn, [flags])].  A graph
    the converter aborts on stops the batch, so the rest is redone one by one; the caller checks which
    ``dst`` exist (a missing one is the converter's failure on that graph)."""
    run = lambda batch: subprocess.run([sys.executable, "-c", _CONVERT_BATCH, json.dumps(batch)],  # noqa: E731
                                       capture_output=True, timeout=CONVERT_TIMEOUT_S)
    run(jobs)
    for job in jobs:
        if not Path(job[1]).exists():
            run([job])


def convert_onnx(model, path, *flags: str) -> Path:
    """Convert an ONNX model (a ModelProto, saved beside ``path`` as .onnx, or an .onnx path) to ``path``
    with the official converter and the extra converter ``flags``."""
    path = Path(path).absolute()
    if isinstance(model, (str, os.PathLike)):
        src = Path(model).absolute()
    else:
        import onnx

        src = path.with_suffix(".onnx")
        onnx.save(model, str(src))
    convert(["-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(path), "--bizCode", "t", *flags], [path])
    return path


def quantize(src, dst, config, log: Optional[Path] = None, timeout: float = QUANT_TIMEOUT_S, cwd=None):
    """Run the official offline quantizer (``quantized.out src dst config``); it returns 0 even on most
    errors, so a missing output raises OracleToolError too.  ``config`` is a JSON file or a dict (then
    written to ``<dst>.cfg.json``).  ``cwd``: the working directory, against which relative paths (the
    arguments, the config's calibration ``path``) resolve; a temporary one by default.  The quantizer leaves its
    scale dump at ``<dst>.json`` (scale_dump)."""
    if cwd is not None:
        src, dst = Path(cwd) / src, Path(cwd) / dst
    src, dst = Path(src).absolute(), Path(dst).absolute()
    if isinstance(config, dict):
        path = Path(str(dst) + ".cfg.json")
        path.write_text(json.dumps(config))
        config = path
    with tempfile.TemporaryDirectory(prefix="mnnquant-") as tmp:
        proc = run_tool("mnnquant", ["quantized.out", str(src), str(dst), str(config)], timeout, Path(cwd or tmp))
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    if proc.returncode != 0 or not dst.exists() or dst.stat().st_size == 0:
        raise OracleToolError(f"quantized.out {src} {dst} {config} failed ({describe_exit(proc.returncode)})"
                              f"\n{tail(output)}", proc.returncode)


def scale_dump(dst) -> list:
    """The quantizer's scale dump ``<dst>.json`` (MNN prints non-finite floats as nan / inf)."""
    text = re.sub(r"-?\bnan\b", "NaN", Path(str(dst) + ".json").read_text())
    return json.loads(re.sub(r"(-?)\binf\b", r"\1Infinity", text))


def dump_scales(dump: list) -> Dict[int, float]:
    """Tensor index -> scale, from a quantizer scale dump."""
    out = {}
    for op in dump:
        for t in op.get("inputs", []) + op.get("outputs", []):
            out[t["tensorIndex"]] = t["scales"][0]
    return out


def mnn_op_types(path, detail: bool = False) -> Dict[str, Counter]:
    """{"main": Counter(op type), <subgraph name>: Counter} from the converter's JSON dump.

    With ``detail`` the parameterised families are split by their sub-type, e.g. "UnaryOp.GELU",
    "BinaryOp.ADD", "Reduction.MEAN", "Pooling.AVEPOOL.global", "Interp.2", "Padding.REFLECT",
    "Convolution.relu6".
    """
    with tempfile.TemporaryDirectory(prefix="mnnjson-") as tmp:
        dump = Path(tmp) / "model.json"
        convert(["-f", "MNN", "--modelFile", str(path), "--JsonFile", str(dump)], [dump])
        net = json.loads(dump.read_text())
    name = _op_label if detail else (lambda op: op["type"])
    out = {"main": Counter(name(op) for op in net.get("oplists", []))}
    for sub in net.get("subgraphs") or []:
        out[sub["name"]] = Counter(name(op) for op in sub.get("nodes", []))
    return out


def _op_label(op: dict) -> str:
    kind, main = op["type"], op.get("main") or {}
    if kind in ("UnaryOp", "BinaryOp"):
        return f"{kind}.{main.get('opType', '?')}"
    if kind == "Reduction":
        return f"{kind}.{main.get('operation', '?')}"
    if kind == "Eltwise":
        return f"{kind}.{main.get('type', '?')}"
    if kind in ("Pooling", "Pooling3D"):
        return f"{kind}.{main.get('type', 'MAXPOOL')}" + (".global" if main.get("isGlobal") else "")
    if kind == "Interp":
        return f"{kind}.{main.get('resizeType', '?')}"
    if kind == "Padding":
        return f"{kind}.{main.get('mode', 'CONSTANT')}"
    if kind in ("Convolution", "ConvolutionDepthwise", "Deconvolution"):
        common = main.get("common", {})
        act = "relu6" if common.get("relu6") else "relu" if common.get("relu") else ""
        quant = ".quant" if main.get("quanParameter") else ""
        return kind + (f".{act}" if act else "") + quant
    return kind
