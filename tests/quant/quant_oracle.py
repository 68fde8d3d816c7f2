"""Test-only helpers around the official ``mnn`` wheel (the oracle) and small ONNX test models.

The converter and the quantizer run in subprocesses (``_tools``); the runtime and ``CVImageProcess`` are
used in-process to capture float activations and to preprocess images exactly as the quantizer does.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

HAVE_ORACLE = all(importlib.util.find_spec(m) is not None for m in ("_tools", "MNN", "onnx"))
# the oracle is a declared test dependency: a test that needs it fails without it, never skips
needs_oracle = pytest.mark.oracle


def run_py(code: str, cwd) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def convert(cwd, onnx_name: str, mnn_name: str, *flags: str) -> None:
    args = ["MNNConvert", "-f", "ONNX", "--modelFile", onnx_name, "--MNNModel", mnn_name, "--bizCode", "t", *flags]
    run_py(f"import _tools; _tools.mnnconvert({args!r})", cwd)


def quantize(cwd, src: str, dst: str, config: dict) -> list:
    """Run ``quantized.out src dst cfg``; returns the ``<dst>.json`` scale dump (NaN-tolerant)."""
    (cwd / (dst + ".cfg.json")).write_text(json.dumps(config))
    run_py(f"import _tools; _tools.mnnquant(['quantized.out', {src!r}, {dst!r}, {dst + '.cfg.json'!r}])", cwd)
    return json.loads(re.sub(r"-?\bnan\b", "NaN", (cwd / (dst + ".json")).read_text()))


def dump_scales(dump: list) -> dict[int, float]:
    """Tensor index -> scale, from a quantizer scale dump."""
    out = {}
    for op in dump:
        for t in op.get("inputs", []) + op.get("outputs", []):
            out[t["tensorIndex"]] = t["scales"][0]
    return out


# --------------------------------------------------------------------------------------------- models

def onnx_model(path, nodes, inputs, outputs, initializers) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def conv_relu_conv(path, seed: int = 0, size: int = 16, zero_channel: bool = False) -> dict:
    """x[1,3,s,s] -> conv 3x3 (8) -> relu -> conv 3x3 (4) -> y; returns the initializers."""
    from onnx import helper
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5
    w2 = rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.3
    if zero_channel:
        w1[2] = 0
    init = {"W1": w1, "B1": rng.standard_normal(8).astype(np.float32), "W2": w2,
            "B2": rng.standard_normal(4).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["y"], pads=[1, 1, 1, 1])]
    onnx_model(path, nodes, [("x", [1, 3, size, size])], [("y", [1, 4, size, size])], init)
    return init


def make_images(folder, count: int = 6, seed: int = 1, mode: str = "RGB") -> list[str]:
    """Random PNGs of assorted sizes (smooth enough to give non-trivial histograms)."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(18, 48, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        base = 127 + 100 * np.sin(xx / rng.uniform(2, 9) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(2, 9))
        img = np.clip(base[..., None] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(img).convert(mode).save(path)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------- runtime

_FORMATS = ("RGB", "BGR", "GRAY", "RGBA", "BGRA")


def oracle_preprocess(path: str, config: dict, shape) -> np.ndarray:
    """``MNN.CVImageProcess`` set up exactly as the quantizer does it (Helper::preprocessInput)."""
    import MNN
    from PIL import Image
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


def capture(model_path: str, inputs: list[np.ndarray]) -> list[dict]:
    """Run the float model in the MNN runtime; per input, ``{(op name, output k): float32 NCHW}``."""
    import MNN
    interp = MNN.Interpreter(str(model_path))
    session = interp.createSession({"numThread": 1})
    tensor_in = interp.getSessionInput(session)
    records = []
    for x in inputs:
        interp.resizeTensor(tensor_in, x.shape)
        interp.resizeSession(session)
        tensor_in.copyFrom(MNN.Tensor(x.shape, MNN.Halide_Type_Float, np.ascontiguousarray(x),
                                      MNN.Tensor_DimensionType_Caffe))
        record = {}

        def end(tensors, info, record=record):
            for k, t in enumerate(tensors):
                shape = t.getShape()
                host = MNN.Tensor(shape, MNN.Halide_Type_Float, np.zeros(shape, np.float32),
                                  MNN.Tensor_DimensionType_Caffe)
                t.copyToHostTensor(host)
                record[(info.getName(), k)] = np.array(host.getData(), np.float32).reshape(shape)
            return True
        interp.runSessionWithCallBackInfo(session, lambda t, i: True, end)
        records.append(record)
    return records


def load(path):
    """A model read by our reader (for exact float fields: alpha, scaleIn/Out, quantInfo)."""
    from mnnlite.format.model_io import load_model
    return load_model(os.fspath(path))


def convs(model) -> dict:
    """Op name -> Convolution2D parameters of every conv op."""
    return {op.name: op.main for _, op in model.all_ops() if type(op.main).__name__ == "Convolution2D"}


def conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference 3x3 convolution, stride 1, pad 1 (float64 accumulation, float32 result)."""
    n, c, h, wd = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, :, i:i + h, j:j + wd] for i in range(3) for j in range(3)], axis=2)
    out = np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], c, 9).astype(np.float64))
    return (out + b[None, :, None, None]).astype(np.float32)


def packed_order(x: np.ndarray, pack: int) -> np.ndarray:
    """What MNN's ADMM statistics read (docs/mnn-quantization.md §14.7): the raw NC4HW4 memory of a stacked [N, C, H, W]
    batch with ``pack`` channels per group, padding zeros included, cut after N*C*H*W values."""
    n, c, h, w = x.shape
    cp = -(-c // pack) * pack
    z = np.zeros((n, cp, h, w), np.float32)
    z[:, :c] = x
    return z.reshape(n, cp // pack, pack, h, w).transpose(0, 1, 3, 4, 2).reshape(-1)[:x.size]


def nc4hw4_input_model(src, dst) -> None:
    """Copy of an ONNX-converted model whose input is declared NC4HW4 and feeds the first op directly
    (the form of Caffe models; MNN's ADMM path only runs on such models)."""
    import numpy as np
    from mnnlite.format.model_io import load_model, save_model
    from mnnlite.format.tables import DataFormat, OpType
    model = load_model(os.fspath(src))
    ops = model.net.oplists
    convert = next(i for i, op in enumerate(ops) if op.type == OpType.ConvertTensor)
    source = int(ops[convert].inputIndexes[0])
    target = int(ops[convert].outputIndexes[0])
    ops[0].main.dformat = int(DataFormat.NC4HW4)
    for op in ops:
        if op.inputIndexes is not None and target in op.inputIndexes:
            op.inputIndexes = np.where(op.inputIndexes == target, source, op.inputIndexes).astype(np.int32)
    del ops[convert]
    save_model(model, os.fspath(dst))
