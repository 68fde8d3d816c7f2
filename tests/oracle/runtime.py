"""The official runtime: run a .mnn file (Session or Module API), in a fresh child process, a timing
session, a per-command trace, and MNN's own image preprocessing (``CVImageProcess``)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .tools import OracleToolError

_TESTS_DIR = str(Path(__file__).resolve().parent.parent)


@dataclasses.dataclass(frozen=True)
class InputInfo:
    shape: Tuple[int, ...]   # as declared; -1 marks a dynamic dim
    dtype: np.dtype          # element type of the runtime tensor (int64 ONNX inputs show as int32)
    layout: str              # "NCHW" (Caffe), "NC4HW4" (Caffe_C4) or "NHWC" (Tensorflow)


def _mnn():
    import MNN  # noqa: imported lazily: importing it prints a CPU-feature line on stdout

    return MNN


def _np_dtype(MNN, halide_type) -> np.dtype:
    # Tensor.getDataType() returns a PyCapsule; the binding hands out the same cached capsule objects
    # as MNN.Halide_Type_*, so identity comparison is the only reliable test.
    table = [("Halide_Type_Float", np.float32), ("Halide_Type_Int", np.int32),
             ("Halide_Type_Uint8", np.uint8), ("Halide_Type_Int64", np.int64),
             ("Halide_Type_Double", np.float64)]
    for attr, dtype in table:
        if halide_type is getattr(MNN, attr):
            return np.dtype(dtype)
    raise OracleToolError(f"unsupported MNN tensor data type {halide_type!r}")


def _halide_type(MNN, dtype: np.dtype):
    return {np.dtype(np.float32): MNN.Halide_Type_Float, np.dtype(np.int32): MNN.Halide_Type_Int,
            np.dtype(np.uint8): MNN.Halide_Type_Uint8}[np.dtype(dtype)]


_LAYOUTS = {0: "NHWC", 1: "NCHW", 2: "NC4HW4"}  # Tensor_DimensionType_{Tensorflow, Caffe, Caffe_C4}


def has_subgraphs(path) -> bool:
    """True if the .mnn file has control-flow subgraphs (Net.subgraphs, slot 10): While/If models.

    Reads only the FlatBuffers root table (docs/mnn-format.md §1), no dependency on mnnlite itself.
    """
    import struct

    data = Path(path).read_bytes()
    root = struct.unpack_from("<I", data, 0)[0]
    vtable = root - struct.unpack_from("<i", data, root)[0]
    vt_size = struct.unpack_from("<H", data, vtable)[0]
    slot_off = 4 + 2 * 10
    if slot_off + 2 > vt_size:
        return False
    field = struct.unpack_from("<H", data, vtable + slot_off)[0]
    if field == 0:
        return False
    vec = root + field + struct.unpack_from("<I", data, root + field)[0]
    return struct.unpack_from("<I", data, vec)[0] > 0


def oracle_input_info(path) -> Dict[str, InputInfo]:
    """Inputs of a model as the official runtime sees them (Interpreter/Session API; Express API for
    files with control-flow subgraphs, where creating a session only prints shape errors)."""
    MNN = _mnn()
    if has_subgraphs(path):
        return _express_input_info(MNN, path)
    interp = MNN.Interpreter(str(path))
    session = interp.createSession({"numThread": 1})
    info = {}
    for name, tensor in interp.getSessionInputAll(session).items():
        info[name] = InputInfo(tuple(tensor.getShape()), _np_dtype(MNN, tensor.getDataType()),
                               _LAYOUTS.get(tensor.getDimensionType(), str(tensor.getDimensionType())))
    return info


def _express_input_info(MNN, path) -> Dict[str, InputInfo]:
    F = MNN.expr
    dtypes = {F.dtype.float: np.float32, F.dtype.int: np.int32, F.dtype.uint8: np.uint8,
              F.dtype.int64: np.int64, F.dtype.double: np.float64, F.dtype.int8: np.int8}
    layouts = {F.NCHW: "NCHW", F.NC4HW4: "NC4HW4", F.NHWC: "NHWC"}
    inputs, _ = F.get_inputs_and_outputs(F.load_as_dict(str(path)))
    return {name: InputInfo(tuple(var.shape), np.dtype(dtypes[var.dtype]), layouts[var.data_format])
            for name, var in sorted(inputs.items())}


def _as_input_array(name: str, value, dtype: np.dtype) -> np.ndarray:
    arr = np.asarray(value)
    if dtype.kind in "iu" and arr.dtype.kind in "iu" and arr.size:
        lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
        if arr.min() < lo or arr.max() > hi:
            raise ValueError(f"input {name!r}: values out of range for the runtime's {dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def run_oracle(path, feeds: Dict[str, np.ndarray], *, precision: str = "normal",
               api: str = "auto", layout: str = "model") -> Dict[str, np.ndarray]:
    """Run a .mnn model in the official MNN runtime (CPU, 1 thread); return every graph output.

    ``feeds`` maps every model input name to an array in the input's declared layout (``layout="model"``,
    as MNN's Module API takes them: [N, H, W, C] for an NHWC input), or in NCHW (Caffe) order whatever
    the declared layout (``layout="nchw"``).  Float outputs come back as float32, integer outputs
    (ArgMax, TopK indices, ...) as int32, in the same convention (an NC4HW4 output as NCHW) with the
    runtime's shapes.

    ``api``: "session" = Interpreter/Session API, "module" = Express Module API, "auto" = Session
    unless the file has control-flow subgraphs.  ``precision`` is MNN's BackendConfig precision
    ("normal", "high", "low"; normal == fp32 on x86).

    Quirks of the official runtime handled here:
      * The Session API cannot run While/If (resizeSession prints "Compute Shape Error for While..",
        runSession returns COMPUTE_SIZE_ERROR and outputs are empty); such models go through the
        Module API (as the converter itself advises: "please use MNN::Express::Module to run it").
      * Errors are return codes, not exceptions (resizeSession/runSession): checked and raised here.
      * Dynamic dims are -1 until every input is resized; an input that is not fed keeps stale data,
        so every input must be fed (missing or unknown names raise KeyError).
      * ONNX int64 inputs become int32 tensors: int feeds are range-checked and narrowed.
      * Tensor.getDataType() returns a capsule comparable only by identity (see _np_dtype).
      * Outputs may live in NC4HW4 internally; they are copied into Caffe (NCHW) host tensors, NHWC
        ones into Tensorflow (NHWC) host tensors unless ``layout="nchw"``.
      * Outputs are the file's Net.outputName; a file without it (EMA-quantized) reports every
        produced-but-unconsumed tensor.  Output tensors are owned by the session: data is copied out
        before the session goes away.
    """
    if api not in ("auto", "session", "module"):
        raise ValueError(f"api must be 'auto', 'session' or 'module', not {api!r}")
    if layout not in ("model", "nchw"):
        raise ValueError(f"layout must be 'model' or 'nchw', not {layout!r}")
    if api == "module" or (api == "auto" and has_subgraphs(path)):
        return _run_module(path, feeds, precision, layout)
    return _run_session(path, feeds, precision, layout)


_ORACLE_CHILD = """
import json, sys, numpy as np
sys.path.insert(0, sys.argv[4])
import oracle
feeds = dict(np.load(sys.argv[2]))
np.savez(sys.argv[3], **oracle.run_oracle(sys.argv[1], feeds, **json.loads(sys.argv[5])))
"""


# glibc fills every block malloc hands out with MALLOC_PERTURB_ ^ 0xff: 255 makes them zero, so the bytes an
# MNN kernel reads without writing are zeros however the child's heap was used before (Python's start-up,
# the modules it imports, even the length of its arguments moved them otherwise; mallopt(3) M_PERTURB)
_ZERO_MALLOC_ENV = {**os.environ, "MALLOC_PERTURB_": "255"}


def run_oracle_isolated(path, feeds: Dict[str, np.ndarray], **options) -> Dict[str, np.ndarray]:
    """``run_oracle(path, feeds, **options)`` in a fresh child process.

    For files where MNN reads memory it never wrote (an int8 kernel writing an int32 tensor, see
    tests/int8), the result depends on what the process allocated before, and a fresh process has those
    bytes zeroed, so only fresh-process runs are reproducible; hand-built graphs can also make the
    runtime abort, which then fails the test instead of killing it.
    """
    with tempfile.TemporaryDirectory(prefix="mnnlite-oracle-") as tmp:
        fin, fout = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(fin, **feeds)
        proc = subprocess.run([sys.executable, "-c", _ORACLE_CHILD, str(path), fin, fout, _TESTS_DIR,
                               json.dumps(options)],
                              capture_output=True, text=True, timeout=600, env=_ZERO_MALLOC_ENV)
        if proc.returncode != 0:
            raise OracleToolError(f"oracle child for {path} failed ({proc.returncode}): {proc.stderr[-2000:]}",
                                  proc.returncode)
        with np.load(fout) as data:
            return {k: data[k] for k in data.files}


class OracleSession:
    """One official-runtime Session (``threads`` threads, default 1) resized once, for timing: ``run()``
    copies the feeds in (an int8 session overwrites its input tensor while running) and runs the session."""

    def __init__(self, path, feeds: Dict[str, np.ndarray], threads: int = 1):
        self.MNN = _mnn()
        self.feeds = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
        self.interp = self.MNN.Interpreter(str(path))
        self.session = self.interp.createSession({"numThread": int(threads)})
        self.inputs = self.interp.getSessionInputAll(self.session)
        for name, tensor in self.inputs.items():
            self.interp.resizeTensor(tensor, self.feeds[name].shape)
        self.interp.resizeSession(self.session)

    def run(self) -> None:
        MNN = self.MNN
        for name, tensor in self.inputs.items():
            a = self.feeds[name]
            tensor.copyFrom(MNN.Tensor(a.shape, MNN.Halide_Type_Float, a, MNN.Tensor_DimensionType_Caffe))
        code = self.interp.runSession(self.session)
        if code != 0:
            raise OracleToolError(f"runSession returned {code}")


def _run_session(path, feeds, precision, layout="model") -> Dict[str, np.ndarray]:
    MNN = _mnn()
    interp = MNN.Interpreter(str(path))
    session = interp.createSession({"numThread": 1, "precision": precision})
    inputs = interp.getSessionInputAll(session)
    _check_feed_names(path, set(inputs), feeds)
    arrays = {}
    for name, tensor in inputs.items():
        arrays[name] = _as_input_array(name, feeds[name], _np_dtype(MNN, tensor.getDataType()))
        # Caffe (NCHW) order feeds: an NHWC input is resized with its own dim order
        shape = arrays[name].shape if layout == "model" else _own_order(MNN, tensor, arrays[name].shape)
        interp.resizeTensor(tensor, shape)
    interp.resizeSession(session)
    for name, tensor in inputs.items():
        arr = arrays[name]
        host = MNN.Tensor(tuple(arr.shape), _halide_type(MNN, arr.dtype), arr, _host_type(MNN, tensor, layout))
        tensor.copyFrom(host)
    code = interp.runSession(session)
    if code != 0:
        raise OracleToolError(f"MNN runSession on {path} returned error code {code} "
                              f"(feeds: { {k: v.shape for k, v in arrays.items()} })")
    results = {}
    for name, tensor in interp.getSessionOutputAll(session).items():
        shape = tuple(tensor.getShape())
        dtype = _np_dtype(MNN, tensor.getDataType())
        if any(d < 0 for d in shape):
            raise OracleToolError(f"output {name!r} of {path} has unresolved shape {shape}")
        if int(np.prod(shape)) == 0:
            results[name] = np.zeros(shape, dtype)
            continue
        # a Caffe host tensor takes the values in NCHW order: give it the NCHW shape of an NHWC output
        host_shape = shape if layout == "model" else _caffe_order(MNN, tensor, shape)
        host = MNN.Tensor(host_shape, tensor.getDataType(), _host_type(MNN, tensor, layout))
        tensor.copyToHostTensor(host)
        results[name] = np.array(host.getNumpyData(), dtype=dtype, copy=True).reshape(host_shape)
    return results


def _host_type(MNN, tensor, layout):
    """The host tensor type feeds/outputs are copied through: the tensor's own order for NHWC tensors
    in ``layout="model"``, Caffe (NCHW) otherwise (NC4HW4 tensors are exchanged as NCHW)."""
    if layout == "model" and tensor.getDimensionType() == MNN.Tensor_DimensionType_Tensorflow:
        return MNN.Tensor_DimensionType_Tensorflow
    return MNN.Tensor_DimensionType_Caffe


def _is_nhwc(MNN, tensor, rank) -> bool:
    return rank >= 3 and tensor.getDimensionType() == MNN.Tensor_DimensionType_Tensorflow


def _own_order(MNN, tensor, caffe_shape) -> Tuple[int, ...]:
    shape = tuple(int(d) for d in caffe_shape)
    return (shape[0], *shape[2:], shape[1]) if _is_nhwc(MNN, tensor, len(shape)) else shape


def _caffe_order(MNN, tensor, own_shape) -> Tuple[int, ...]:
    shape = tuple(int(d) for d in own_shape)
    return (shape[0], shape[-1], *shape[1:-1]) if _is_nhwc(MNN, tensor, len(shape)) else shape


def _check_feed_names(path, names, feeds) -> None:
    missing, extra = names - set(feeds), set(feeds) - names
    if missing or extra:
        raise KeyError(f"{path}: model inputs are {sorted(names)}; missing feeds {sorted(missing)}, "
                       f"unknown feeds {sorted(extra)}")


def _run_module(path, feeds, precision, layout="model") -> Dict[str, np.ndarray]:
    MNN = _mnn()
    F = MNN.expr
    modes = {"normal": F.PrecisionMode.Normal, "high": F.PrecisionMode.High, "low": F.PrecisionMode.Low}
    module = MNN.nn.load_module_from_file(str(path), [], [], thread_num=1, precision_mode=modes[precision])
    info = module.get_info()
    in_names, out_names = list(info["inputNames"]), list(info["outputNames"])
    _check_feed_names(path, set(in_names), feeds)
    decl = oracle_input_info(path)
    args = []
    for name in in_names:
        dtype = decl[name].dtype if name in decl else np.dtype(np.float32)
        arr = _as_input_array(name, feeds[name], dtype)
        # a feed in the declared layout is a Variable of that layout; an NCHW feed of an NHWC input is
        # converted by the module itself
        order = F.NHWC if layout == "model" and name in decl and decl[name].layout == "NHWC" else F.NCHW
        args.append(F.const(arr, list(arr.shape), order, F.int if dtype.kind in "iu" else F.float))
    outs = module.forward(args)
    results = {}
    for name, var in zip(out_names, outs):
        if var.data_format == F.NC4HW4 or (layout == "nchw" and var.data_format == F.NHWC):
            var = F.convert(var, F.NCHW)
        arr = np.array(var.read(), copy=True)
        results[name] = arr.astype(np.int32 if arr.dtype.kind in "iu" else np.float32, copy=False)
    return results


# ------------------------------------------------------------------------------ per-command traces

def trace(path, feeds: Dict[str, np.ndarray], tensors: bool = True, only=None) -> List[tuple]:
    """Every command the official runtime executes on ``feeds`` (declared layout), through the Session
    API's debug callbacks: ``(name, type, input arrays, output arrays)``, the arrays float32 in Caffe
    order (None for tensors that do not copy out as float), or empty lists without ``tensors`` (or for
    the commands not named in ``only``, when given).  MNN
    appends " [ DT_INT8 ] " to the type of commands whose output holds int8 (``OperatorInfo`` in
    source/core/Pipeline.cpp) and names unnamed commands ``<op>_raster_<k>``."""
    MNN = _mnn()
    interp = MNN.Interpreter(str(path))
    interp.setSessionMode(0)                        # Session_Debug: callbacks per command
    session = interp.createSession({"numThread": 1})
    inputs = interp.getSessionInputAll(session)
    # each input in its own element type (token ids as int32: a float host tensor is refused)
    arrays = {name: _as_input_array(name, feeds[name], _np_dtype(MNN, tensor.getDataType()))
              for name, tensor in inputs.items()}
    for name, tensor in inputs.items():
        interp.resizeTensor(tensor, arrays[name].shape)
    interp.resizeSession(session)
    for name, tensor in inputs.items():
        arr = arrays[name]
        tensor.copyFrom(MNN.Tensor(arr.shape, _halide_type(MNN, arr.dtype), arr, _host_type(MNN, tensor, "model")))
    steps, pending = [], {}

    def grab(ts, name):
        if not tensors or (only is not None and name not in only):
            return []
        out = []
        for t in ts:
            shape = tuple(t.getShape())
            try:
                host = MNN.Tensor(shape, MNN.Halide_Type_Float, MNN.Tensor_DimensionType_Caffe)
                t.copyToHostTensor(host)
                out.append(np.array(host.getNumpyData(), np.float32, copy=True).reshape(shape))
            except Exception:                           # non-float tensors: not needed by the callers
                out.append(None)
        return out

    def before(ts, info):
        pending[info.getName()] = grab(ts, info.getName())
        return True

    def after(ts, info):
        steps.append((info.getName(), info.getType(), pending.pop(info.getName(), []), grab(ts, info.getName())))
        return True
    interp.runSessionWithCallBackInfo(session, before, after)
    return steps


def commands(path, feeds: Dict[str, np.ndarray]) -> List[Tuple[str, str, bool]]:
    """(command name, MNN op type, int8) for every command of one Session run, in order."""
    return [(name, kind.replace("[ DT_INT8 ]", "").strip(), "DT_INT8" in kind)
            for name, kind, _, _ in trace(path, feeds, tensors=False)]


def capture(path, inputs: List[np.ndarray]) -> List[dict]:
    """Run a float model with one input on each of ``inputs``; per input, ``{(op name, output k): float32
    NCHW}`` of every command."""
    records = []
    for x in inputs:
        feeds = {name: x for name in oracle_input_info(path)}
        records.append({(name, k): a for name, _, _, outs in trace(path, feeds) for k, a in enumerate(outs)})
    return records


# ------------------------------------------------------------------------------- preprocessing

def preprocess(path: str, config: dict, shape) -> np.ndarray:
    """An image file through ``MNN.CVImageProcess`` set up exactly as the quantizer does it
    (Helper::preprocessInput), into a float32 Caffe tensor of ``shape``."""
    from PIL import Image

    MNN = _mnn()
    img = np.asarray(Image.open(path).convert("RGBA"))
    h, w = img.shape[:2]
    fmt = config.get("format", "BGR")
    mean = list(config.get("mean", [])) + [0.0] * (4 - len(config.get("mean", [])))
    normal = list(config.get("normal", [])) + [1.0] * (4 - len(config.get("normal", [])))
    proc = MNN.CVImageProcess({"filterType": MNN.CV_Filter_BILINEAL, "sourceFormat": MNN.CV_ImageFormat_RGBA,
                               "destFormat": getattr(MNN, "CV_ImageFormat_" + fmt),
                               "mean": tuple(mean), "normal": tuple(normal), "wrap": MNN.CV_Wrap_CLAMP_TO_EDGE})
    hc = int(np.float32(h) * np.float32(config.get("center_crop_h", 1.0)))
    wc = int(np.float32(w) * np.float32(config.get("center_crop_w", 1.0)))
    y0, x0 = (h - hc) // 2, (w - wc) // 2
    oh, ow = config["height"], config["width"]
    src = [x0, y0, x0, y0 + hc - 1, x0 + wc - 1, y0, x0 + wc - 1, y0 + hc - 1]
    dst = [0, 0, 0, oh - 1, ow - 1, 0, ow - 1, oh - 1]
    matrix = MNN.CVMatrix()
    matrix.setPolyToPoly([float(v) for v in dst], [float(v) for v in src])
    proc.setMatrix(matrix)
    out = MNN.Tensor(tuple(shape), MNN.Halide_Type_Float, np.zeros(shape, np.float32), MNN.Tensor_DimensionType_Caffe)
    # the binding checks the source length against the destination size: pad the RGBA bytes
    data = np.zeros(max(img.size, int(np.prod(shape)) * 4), np.uint8)
    data[:img.size] = img.reshape(-1)
    proc.convert(data, w, h, 0, out)
    return np.array(out.getData(), np.float32).reshape(shape)
