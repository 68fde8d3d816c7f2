"""Interp (ONNX Resize / Upsample) against the official runtime: nearest (floor and round), bilinear and
cubic, every coordinate transformation mode MNN implements, scales or sizes inputs, up and down
scaling, and the legacy parameter-only forms (NotSet with halfPixelCenters / alignCorners,
outputWidth/outputHeight, widthScale/heightScale)."""
import numpy as np
import pytest

from mnnlite.format.tables import OpType
from opcases import check, materialize, node, rng

R = rng(3)
X = R.standard_normal((2, 3, 5, 7)).astype(np.float32)

MODES = {  # case suffix -> Resize attributes
    "nearest_floor": dict(mode="nearest", nearest_mode="floor"),
    "nearest_round": dict(mode="nearest", nearest_mode="round_prefer_floor"),
    "linear": dict(mode="linear"),
    "cubic": dict(mode="cubic"),
}
CTMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]


def resize_scales(case_id, scales, **attrs):
    return node(case_id, "Resize", {"x": X}, inits={"s": np.array(scales, np.float32)}, order=["x", "", "s"],
                **attrs)


def resize_sizes(case_id, sizes, **attrs):
    return node(case_id, "Resize", {"x": X}, inits={"sz": np.array(sizes, np.int64)},
                order=["x", "", "", "sz"], **attrs)


def _interp(model):
    return next(op for op in model.graph.ops if op.type == OpType.Interp)


def _params_only(model, **fields):
    """Drop the size input and describe the resize by the Interp table alone (old converted files)."""
    op = _interp(model)
    op.inputIndexes = op.inputIndexes[:1]
    op.main.ctm = 0
    for k, v in fields.items():
        setattr(op.main, k, v)


def notset_half_pixel(model):
    _params_only(model, halfPixelCenters=True, outputHeight=9, outputWidth=12)


def notset_align(model):
    _params_only(model, alignCorners=True, outputHeight=9, outputWidth=12)


def notset_scale(model):
    _params_only(model, heightScale=1.7, widthScale=2.5)


def nearest_half_pixel_flag(model):
    """NotSet + halfPixelCenters is ignored for nearest-floor (old models), honoured for the others."""
    _params_only(model, halfPixelCenters=True, outputHeight=8, outputWidth=10)


CASES = []
for mode, attrs in MODES.items():
    for ctm in CTMS:
        CASES.append(resize_scales(f"{mode}_{ctm}_up", [1, 1, 2, 2], coordinate_transformation_mode=ctm, **attrs))
        CASES.append(resize_sizes(f"{mode}_{ctm}_sizes", [2, 3, 9, 12], coordinate_transformation_mode=ctm,
                                  **attrs))
        CASES.append(resize_scales(f"{mode}_{ctm}_down", [1, 1, 0.6, 0.45], coordinate_transformation_mode=ctm,
                                   **attrs))
    CASES += [
        resize_scales(f"{mode}_odd_scale", [1, 1, 1.7, 2.3], **attrs),
        resize_sizes(f"{mode}_pytorch_to_1", [2, 3, 1, 6], coordinate_transformation_mode="pytorch_half_pixel",
                     **attrs),
        resize_sizes(f"{mode}_align_to_1", [2, 3, 4, 1], coordinate_transformation_mode="align_corners", **attrs),
        resize_sizes(f"{mode}_notset_half", [2, 3, 9, 12], patch=notset_half_pixel, **attrs),
        resize_sizes(f"{mode}_notset_align", [2, 3, 9, 12], patch=notset_align, **attrs),
        resize_sizes(f"{mode}_notset_scale", [2, 3, 9, 12], patch=notset_scale, **attrs),
        resize_sizes(f"{mode}_notset_halfflag", [2, 3, 8, 10], patch=nearest_half_pixel_flag, **attrs),
    ]
X3 = R.standard_normal((2, 3, 6)).astype(np.float32)
# 3-D [N, C, L] resizes (L is the height).  No linear case: the official runtime reads a width scale
# past the end of the 3-entry scales and its 3-D bilinear result is not reproducible run to run.
for mode in ("nearest_floor", "nearest_round", "cubic"):
    CASES += [node(f"{mode}_3d_{ctm}", "Resize", {"x": X3}, inits={"s": np.array([1, 1, 1.7], np.float32)},
                   order=["x", "", "s"], coordinate_transformation_mode=ctm, **MODES[mode])
              for ctm in ("half_pixel", "asymmetric", "align_corners")]
CASES += [
    node("upsample_nearest", "Upsample", {"x": X}, inits={"s": np.array([1, 1, 2, 3], np.float32)}, opset=9,
         mode="nearest"),
    node("upsample_linear", "Upsample", {"x": X}, inits={"s": np.array([1, 1, 2, 1.5], np.float32)}, opset=9,
         mode="linear"),
]


@pytest.fixture(scope="module")
def paths():
    return materialize(CASES)


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_interp(case, paths):
    check(case, paths[case.id])
