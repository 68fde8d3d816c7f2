"""Test-only helpers of the quantizer tests: small conv models, random calibration images, a reference
convolution, MNN's packed memory order and the NC4HW4-input form ADMM needs.  The official tools and
runtime themselves are in tests/oracle/."""
from __future__ import annotations

import os

import numpy as np
import pytest
from builders.onnx_graph import save_onnx

# the oracle is a declared test dependency: a test that needs it fails without it, never skips
needs_oracle = pytest.mark.oracle


# --------------------------------------------------------------------------------------------- models

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
    save_onnx(path, nodes, [("x", [1, 3, size, size])], [("y", "FLOAT", [1, 4, size, size])], init)
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
