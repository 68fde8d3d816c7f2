"""Calibration data: MNN's image preprocessing (oracle: MNN.CVImageProcess), file selection, sequences."""
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from oracle.runtime import preprocess as oracle_preprocess
from quant_helpers import needs_oracle
from mnnlite.errors import ConfigError, DataError
from mnnlite.quant import dataset
from mnnlite.quant import image as mnn_image
from mnnlite.quant.config import load_config
from mnnlite.quant.dataset import CalibrationSet, InputSpec

# docs/mnn-quantization.md §4.3: equal up to one uint8 step on at most 0.5 % of the values (we replicate MNN's float32 matrix
# and stepping, so in practice every value is equal)
MAX_OFF_FRACTION = 0.005


def _png(path, h, w, mode="RGBA", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGBA": 4, "RGB": 3, "L": 1, "LA": 2}[mode]
    data = (rng.random((h, w, channels)) * 255).astype(np.uint8)
    Image.fromarray(data[..., 0] if channels == 1 else data, mode).save(path)
    return str(path)


def _assert_close_to_oracle(ours, ref, normal):
    step = np.abs(np.asarray(normal, np.float32))[:ours.shape[0], None, None]
    off = np.abs(ours - ref) / step
    assert off.max() <= 1.0 + 1e-4, f"off by {off.max()} uint8 steps"
    assert (off > 1e-4).mean() <= MAX_OFF_FRACTION


CASES = [  # (image h, w, mode), config, output h, w
    ((23, 31, "RGBA"), {"format": "BGR", "mean": [1, 2, 3], "normal": [0.5, 0.25, 2]}, 16, 12),
    ((200, 150, "RGB"), {"format": "RGB", "mean": [127.5] * 3, "normal": [0.0078125] * 3}, 224, 224),
    ((64, 64, "RGBA"), {"format": "RGBA", "mean": [10, 20, 30, 40], "normal": [1, 2, 3, 4]}, 64, 64),
    ((90, 47, "L"), {"format": "GRAY", "mean": [100], "normal": [0.017]}, 33, 700),
    ((33, 700, "LA"), {"format": "BGRA", "center_crop_h": 0.875, "center_crop_w": 0.6}, 31, 29),
    ((480, 640, "RGB"), {"format": "BGR", "mean": [103.94, 116.78, 123.68], "normal": [0.017] * 3,
                         "center_crop_h": 0.875, "center_crop_w": 0.875}, 224, 224),
    ((5, 3, "RGB"), {"format": "RGB"}, 2, 1030),                 # upscale, three 512-pixel tiles
]


@needs_oracle
@pytest.mark.parametrize("image,patch,out_h,out_w", CASES)
def test_preprocessing_matches_cvimageprocess(tmp_path, image, patch, out_h, out_w):
    h, w, mode = image
    path = _png(tmp_path / "a.png", h, w, mode, seed=h * w)
    raw = {"path": str(tmp_path), "width": out_w, "height": out_h, **patch}
    cfg = load_config(raw)
    ref = oracle_preprocess(path, raw, (1, cfg.channels, out_h, out_w))[0]
    ours = mnn_image.preprocess_rgba(mnn_image.decode_rgba(path), cfg, out_h, out_w)
    _assert_close_to_oracle(ours, ref, cfg.normal4)
    # and through the public iterator, with the model input given by name and shape
    (batch,) = list(CalibrationSet(cfg, {"data": (1, cfg.channels, -1, -1)}))
    assert batch["data"].shape == (1, cfg.channels, out_h, out_w) and batch["data"].dtype == np.float32
    assert np.array_equal(batch["data"][0], ours)


@needs_oracle
def test_matrix_equals_mnn_cvmatrix():
    import MNN
    cases = [(23, 31, 16, 12, 1, 1), (480, 640, 224, 224, 0.875, 0.875), (7, 900, 300, 2, 1, 0.5)]
    for (h, w, oh, ow, ch, cw) in cases:
        ours = mnn_image.calibration_matrix(h, w, oh, ow, ch, cw)
        corners = mnn_image.crop_corners(h, w, ch, cw)
        m = MNN.CVMatrix()
        m.setPolyToPoly([0.0, 0.0, 0.0, oh - 1.0, ow - 1.0, 0.0, ow - 1.0, oh - 1.0],
                        [float(v) for p in corners for v in p])
        assert np.array_equal(np.array(ours, np.float32), np.array(m.read(), np.float32))


def test_bilinear_reference_on_a_ramp():
    # a horizontal ramp resized 5 -> 9 columns: positions 0, .5, 1, ... give exact midpoints (trunc of .5)
    rgba = np.zeros((1, 5, 4), np.uint8)
    rgba[0, :, 0] = [0, 10, 20, 30, 41]
    m = mnn_image.calibration_matrix(1, 5, 1, 9)
    xs, ys = mnn_image.sample_positions(m, 1, 9)
    assert np.allclose(xs, np.arange(9) / 2, atol=1e-5)
    out = mnn_image.bilinear_rgba(rgba, xs, ys)[0, :, 0]
    assert out[0] == 0 and out[1] == 5 and out[-2] == 35 and out[-1] == 41


def test_gray_formula():
    rgba = np.array([[[255, 0, 0, 9], [0, 255, 0, 9], [0, 0, 255, 9], [255, 255, 255, 0]]], np.uint8)
    assert mnn_image.convert_format(rgba, "GRAY")[0, :, 0].tolist() == [75, 151, 27, 255]
    assert mnn_image.convert_format(rgba, "BGRA")[0, 0].tolist() == [0, 0, 255, 9]


# ------------------------------------------------------------------------------------- file selection

def _folder(tmp_path, names, size=(8, 8)):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(names):
        _png(folder / name, *size, "RGB", seed=i)
    return folder


def test_sorted_first_n_hidden_and_folders_skipped(tmp_path):
    folder = _folder(tmp_path, ["c.png", "a.png", ".hidden.png", "b.png", "d.png"])
    (folder / "sub").mkdir()
    cfg = load_config({"path": str(folder), "width": 4, "height": 4, "used_image_num": 3,
                       "file_order": "sorted"})
    cs = CalibrationSet(cfg, [InputSpec("x", (1, 3, 4, 4))])
    assert [os.path.basename(p) for p in cs.files] == ["a.png", "b.png", "c.png"]
    assert len(cs) == 3 and cs.batch_size == 1 and len(list(cs)) == 3


def test_default_takes_the_first_n_in_directory_order_then_sorts(tmp_path):
    """MNN's selection (docs/mnn-quantization.md §4): the first N entries readdir lists, then sorted."""
    folder = _folder(tmp_path, [f"{c}.png" for c in "qwertyuiop"])
    listed = [n for n in os.listdir(folder) if not n.startswith(".")]
    cfg = load_config({"path": str(folder), "width": 4, "height": 4, "used_image_num": 4})
    cs = CalibrationSet(cfg, [InputSpec("x", (1, 3, 4, 4))])
    assert [os.path.basename(p) for p in cs.files] == sorted(listed[:4])
    every = CalibrationSet(load_config({"path": str(folder), "width": 4, "height": 4}), [InputSpec("x", (1, 3, 4, 4))])
    assert [os.path.basename(p) for p in every.files] == sorted(listed)


def test_corrupt_image_is_warned_and_skipped(tmp_path, caplog):
    folder = _folder(tmp_path, ["a.png", "c.png"])
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (folder / "notes.txt").write_text("not an image")
    cfg = load_config({"path": str(folder), "width": 4, "height": 4})
    messages = []
    cs = CalibrationSet(cfg, {"x": (1, 3, 4, 4)}, on_warning=messages.append)
    assert len(list(cs)) == 2 and len(messages) == 2
    assert "b.png skipped" in messages[0] and "notes.txt skipped" in messages[1]
    assert len(list(cs)) == 2 and len(messages) == 2 and len(cs) == 2     # warned once, count updated
    with caplog.at_level(logging.WARNING, logger="mnnlite.quant.dataset"):
        list(CalibrationSet(cfg, {"x": (1, 3, 4, 4)}))
    assert "b.png skipped" in caplog.text


def test_no_usable_sample(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        CalibrationSet(load_config({"path": str(folder), "width": 4, "height": 4}), {"x": (1, 3, 4, 4)})
    (folder / "x.jpg").write_bytes(b"nope")
    cs = CalibrationSet(load_config({"path": str(folder), "width": 4, "height": 4}), {"x": (1, 3, 4, 4)},
                        on_warning=lambda m: None)
    with pytest.raises(DataError, match=r"no usable calibration sample .* \(1 file\(s\) tried\)"):
        list(cs)
    with pytest.raises(DataError, match="cannot be listed"):
        CalibrationSet(load_config({"path": str(tmp_path / "nope")}), {"x": (1, 3, 4, 4)})


def test_streams_one_image_at_a_time(tmp_path, monkeypatch):
    folder = _folder(tmp_path, [f"{i}.png" for i in range(5)])
    decoded = []
    real = dataset.decode_rgba
    monkeypatch.setattr(dataset, "decode_rgba", lambda p: decoded.append(p) or real(p))
    it = iter(CalibrationSet(load_config({"path": str(folder), "width": 4, "height": 4}), {"x": (1, 3, 4, 4)}))
    next(it)
    assert len(decoded) == 1


def test_ema_batches(tmp_path):
    folder = _folder(tmp_path, [f"{i}.png" for i in range(7)])
    base = {"path": str(folder), "width": 4, "height": 4, "feature_quantize_method": "EMA"}
    cs = CalibrationSet(load_config({**base, "batch_size": 3}), {"x": (1, 3, 4, 4)})
    shapes = [b["x"].shape for b in cs]
    assert len(cs) == 2 and shapes == [(3, 3, 4, 4)] * 2                   # remainder dropped
    assert CalibrationSet(load_config(base), {"x": (1, 3, 4, 4)}).batch_size == 1      # model batch
    assert CalibrationSet(load_config(base), {"x": (-1, 3, 4, 4)}).batch_size == 7     # 32, capped at N
    assert CalibrationSet(load_config({**base, "batch_size": 50}), {"x": (1, 3, 4, 4)}).batch_size == 7


def test_shapes_layouts_and_channels(tmp_path):
    folder = _folder(tmp_path, ["a.png"], size=(10, 12))
    cfg = load_config({"path": str(folder), "format": "GRAY"})
    # no width/height in the config: the model input's own size (MNN would use garbage)
    (b,) = list(CalibrationSet(cfg, [InputSpec("x", (1, 1, 6, 5))]))
    assert b["x"].shape == (1, 1, 6, 5)
    (b,) = list(CalibrationSet(cfg, [InputSpec("x", (1, 6, 5, 1), layout="NHWC")]))
    assert b["x"].shape == (1, 6, 5, 1)
    with pytest.raises(ConfigError, match=r'"format" GRAY gives 1 channel\(s\) but model input \'x\' has 3'):
        CalibrationSet(cfg, {"x": (1, 3, 6, 5)})
    with pytest.raises(ConfigError, match=r'"width" and "height" are needed'):
        CalibrationSet(cfg, {"x": (1, 1, -1, -1)})
    cfg = load_config({"path": str(folder), "width": 8, "height": 4, "inputs": [{"name": "x", "shape": [1, 3, 5, 7]}]})
    (b,) = list(CalibrationSet(cfg, {"x": (1, 3, 224, 224)}))
    assert b["x"].shape == (1, 3, 5, 7)


# ------------------------------------------------------------------------------------ sequence samples

def _sequence_folder(tmp_path):
    root = tmp_path / "seq"
    for i in range(3):
        d = root / f"input_{i}"
        d.mkdir(parents=True)
        (d / "input.json").write_text(json.dumps({"inputs": [{"name": "a", "shape": [1, 2, 3]},
                                                             {"name": "b", "shape": [2]}], "outputs": ["o"]}))
        (d / "a.txt").write_text("\n".join(" ".join(str(i * 10 + r * 3 + c) for c in range(3)) for r in range(2)))
        (d / "b.txt").write_text(f"{i}\t-1.5\n")
        (d / "o.txt").write_text("ignored")
    return root


def test_sequence_folders(tmp_path):
    root = _sequence_folder(tmp_path)
    cfg = load_config({"path": str(root), "input_type": "sequence"})
    samples = list(CalibrationSet(cfg, [InputSpec("a", (1, 2, 3)), InputSpec("b", (2,), dtype="int32")]))
    assert len(samples) == 3
    assert samples[1]["a"].tolist() == [[[10, 11, 12], [13, 14, 15]]] and samples[1]["a"].dtype == np.float32
    assert samples[2]["b"].tolist() == [2, -1] and samples[2]["b"].dtype == np.int32    # read as float, cast


def test_sequence_problems_are_warnings(tmp_path):
    root = _sequence_folder(tmp_path)
    (root / "input_1" / "b.txt").unlink()
    (root / "input_2" / "input.json").write_text("{broken")
    (root / "input_2" / "a.txt").write_text("1 2 3 4 5 6 7 8")         # extra numbers are ignored
    messages = []
    cfg = load_config({"path": str(root), "input_type": "sequence",
                       "inputs": [{"name": "a", "shape": [2, 3]}, {"name": "b", "shape": [1, 2]}]})
    samples = list(CalibrationSet(cfg, {"a": (1, 2, 3), "b": (2,)}, on_warning=messages.append))
    assert len(samples) == 2 and samples[1]["a"].shape == (2, 3)          # config shape after bad json
    assert any("input_1: no b.txt" in m for m in messages) and any("input.json: unusable" in m for m in messages)


def test_sequence_npy_npz_and_batching(tmp_path):
    root = tmp_path / "arrays"
    root.mkdir()
    for i in range(5):
        np.savez(root / f"s{i}.npz", a=np.full((1, 4), i, np.float32), b=np.arange(3.0)[None])
    cfg = load_config({"path": str(root), "input_type": "sequence", "feature_quantize_method": "EMA",
                       "batch_size": 2, "ema_sequence_batch": "full", "file_order": "sorted"})
    batches = list(CalibrationSet(cfg, {"a": (1, 4), "b": (1, 3)}))
    assert [b["a"][:, 0].tolist() for b in batches] == [[0, 1], [2, 3]] and batches[0]["b"].shape == (2, 3)
    # MNN's EMA on sequence input (default): each sample of a batch overwrites the same input, so only
    # the last one runs (docs/mnn-quantization.md §14.18)
    cfg = load_config({"path": str(root), "input_type": "sequence", "feature_quantize_method": "EMA",
                       "batch_size": 2, "file_order": "sorted"})
    batches = list(CalibrationSet(cfg, {"a": (1, 4), "b": (1, 3)}))
    assert [b["a"][:, 0].tolist() for b in batches] == [[1], [3]] and batches[0]["b"].shape == (1, 3)
    np.save(root / "single.npy", np.zeros((1, 4), np.float32))
    cfg = load_config({"path": str(root), "input_type": "sequence"})
    messages = []
    samples = list(CalibrationSet(cfg, {"a": (1, 4), "b": (1, 3)}, on_warning=messages.append))
    assert len(samples) == 5 and "single-input model" in messages[0]
