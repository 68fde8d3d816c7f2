"""Every float zoo model and its weight-storage variants against the official runtime, at both input
sizes of dynamic models."""
from __future__ import annotations

import os

import numpy as np
import pytest

import MNN  # noqa: F401,E402  (test oracle: a declared test dependency)
import onnx  # noqa: F401,E402
import model_zoo as zoo  # noqa: E402

from mnnlite.format.tables import OpType  # noqa: E402
from mnnlite.runtime import Interpreter  # noqa: E402
from oracle import REL_ERR_MAX, assert_matches, run_oracle, trace  # noqa: E402

# Variants our float runtime runs (quant_* files run in int8 in MNN: compared elsewhere).
FLOAT_VARIANTS = ("float", "fp16", "wq8", "wq8sym", "wq4", "wq4sym", "external", "float_static")

# The oracle's own error: MNN computes 3x3 convolutions with Winograd F(6x6, 3x3) (points 0, +-1, +-2,
# +-3), measured at 2.2e-4 * max|out| from the float64 result on ppocr_det's conv2d_491 (ours: 2.2e-6);
# through the detection head that becomes up to 1.4e-3 of the sigmoid map.  The kernel algorithm
# "winograd_mnn" reproduces MNN's conv bit for bit given MNN's own input tensor (the test below), but
# in a whole run the inputs of those convs already differ from MNN's in the last bits (other ops
# round differently), so the two Winograd rounding noises are independent and the 1e-4 budget stays
# out of reach with either algorithm (measured: 5e-4 .. 2e-3).  The cosine budget stays the default.
ORACLE_WINOGRAD_REL_ERR = 2e-3
REL_ERR_BUDGET = {"ppocr_det": ORACLE_WINOGRAD_REL_ERR}
# Random pixels give ppocr_det an all-background map (max ~1e-3 .. 1e-9), where a relative budget
# means nothing: it gets a real image instead.
REAL_IMAGE = {"ppocr_det"}

CASES = [(n, v) for n in zoo.model_names() for v in zoo.variants_for(n) if v in FLOAT_VARIANTS]


def _feeds(name: str, index: int) -> dict:
    if name not in REAL_IMAGE:
        return zoo.random_feeds(name, index)
    from PIL import Image

    (inp, shapes), = zoo.input_shapes(name).items()
    _, _, h, w = shapes[index]
    spec = zoo.image_spec(name)
    folder = zoo.heldout_dir(name)
    img = Image.open(os.path.join(folder, sorted(os.listdir(folder))[0])).convert("RGB").resize((w, h))
    x = (np.asarray(img, np.float32) - np.array(spec.mean, np.float32)) * np.array(spec.normal, np.float32)
    return {inp: np.ascontiguousarray(x.transpose(2, 0, 1)[None])}


@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_zoo_model_matches_official_runtime(name, variant):
    path = zoo.model_path(name, variant)
    interp = Interpreter(path)
    sizes = len(next(iter(zoo.input_shapes(name).values())))
    if variant == "float_static":   # input dims fixed to the first shape set
        sizes = 1
    for i in range(sizes):
        feeds = _feeds(name, i)
        assert_matches(interp.run(feeds), run_oracle(path, feeds), f"{name}/{variant} size {i}",
                       rel_err=REL_ERR_BUDGET.get(name, REL_ERR_MAX))


def _mnn_conv_io(path, feeds, names):
    """{op name: [input, output]} of the official runtime's ops ``names``, read during one run."""
    return {name: [ins[0], outs[0]] for name, _, ins, outs in trace(path, feeds, only=set(names)) if name in names}


def test_winograd_mnn_reproduces_mnn_convolutions_bit_for_bit():
    """ppocr_det's 3x3 stride-1 convs at both input sizes (Winograd units 4 and 6, full and partial
    tile groups): fed MNN's own input, the "winograd_mnn" kernel gives MNN's output exactly."""
    from mnnlite.kernels.conv import Conv2d
    from mnnlite.ops.weights import conv_weights

    path = zoo.model_path("ppocr_det")
    ops = {op.name: op for op in Interpreter(path).model.graph.ops
           if op.type == OpType.Convolution and op.main.common.kernelX == op.main.common.kernelY == 3
           and op.main.common.strideX == 1}
    assert len(ops) == 5
    for size in range(2):
        for name, (x, want) in _mnn_conv_io(path, _feeds("ppocr_det", size), set(ops)).items():
            c = ops[name].main.common
            w, b = conv_weights(ops[name])
            layer = Conv2d(w, b, pad=(c.padY, c.padX, c.padY, c.padX), act=2 if c.relu6 else int(c.relu),
                           algo="winograd_mnn")
            np.testing.assert_array_equal(layer(np.ascontiguousarray(x)), want, err_msg=f"{name} size {size}")
