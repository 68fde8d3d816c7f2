"""Weight-side corrections (issue 11 item 5): MSE weight ranges, bias correction, cross-layer equalization.

Small graphs where the right answer is known, then the keys on a real model (ppocr_cls) with the
official runtime running every file.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

import mnnlite
from mnnlite.errors import ConfigError
from mnnlite.format.tables import OpType
from mnnlite.quant.bias_correction import ChannelMeans, mean_shift
from mnnlite.quant.config import load_config
from mnnlite.quant.equalize import equalize, find_pairs
from mnnlite.quant.quantize import quantize
from mnnlite.quant.weight import _channel_errors, max_abs_alpha, mse_alpha, quantize_weights
from builders.onnx_graph import save_onnx
from oracle import convert_onnx
from quant_helpers import make_images, needs_oracle
from test_pipeline_oracle import fidelity

KEYS = ({"bias_correction": True}, {"cross_layer_equalization": True}, {"weight_range_method": "mse"})


# ------------------------------------------------------------------------------------------- config

def test_keys_default_off_and_validated(tmp_path):
    cfg = load_config({"path": str(tmp_path)})
    assert (cfg.bias_correction, cfg.cross_layer_equalization, cfg.weight_range_method) == (False, False, "max_abs")
    cfg = load_config({"path": str(tmp_path), **{k: v for d in KEYS for k, v in d.items()}})
    assert (cfg.bias_correction, cfg.cross_layer_equalization, cfg.weight_range_method) == (True, True, "mse")
    with pytest.raises(ConfigError, match='"weight_range_method" must be one of max_abs, mse'):
        load_config({"path": str(tmp_path), "weight_range_method": "MSE"})
    with pytest.raises(ConfigError, match='"bias_correction" must be true or false'):
        load_config({"path": str(tmp_path), "bias_correction": 1})


# -------------------------------------------------------------------------------------- MSE weights

def test_mse_range_beats_max_abs_on_heavy_tailed_channel():
    rng = np.random.default_rng(0)
    w = np.stack([rng.laplace(size=4608), rng.uniform(-1, 1, 4608)]).astype(np.float32)  # heavy-tailed, flat
    for clamp, gain in ((7, 0.7), (127, 0.97)):       # 4-bit and 8-bit weights
        plain, clipped = max_abs_alpha(w, clamp), mse_alpha(w, clamp)
        e_plain, e_clipped = _channel_errors(w, plain, clamp), _channel_errors(w, clipped, clamp)
        assert clipped[0] < plain[0] and e_clipped[0] < gain * e_plain[0], (clamp, e_clipped / e_plain)
        assert np.all(e_clipped <= e_plain)
    codes, alpha = quantize_weights(w, "MAX_ABS", 4, 7, range_method="mse")
    np.testing.assert_array_equal(alpha, mse_alpha(w, 7))
    assert codes.min() >= -7 and codes.max() <= 7      # clipped ranges stay symmetric: never -8


def test_mse_range_keeps_codes_of_tiny_channels():
    # a channel whose alpha is below MNN's 1e-6 encoder cut (PP-OCRv4 det's head after batch-norm folding):
    # MAX_ABS's encoder writes zeros there, the MSE path keeps the weights
    rng = np.random.default_rng(3)
    w = rng.uniform(-1e-4, 1e-4, (1, 216)).astype(np.float32)
    assert not quantize_weights(w, "MAX_ABS", 8, 127)[0].any()
    codes, alpha = quantize_weights(w, "MAX_ABS", 8, 127, range_method="mse")
    assert 0 < alpha[0] < 1e-6
    assert np.linalg.norm(codes.astype(np.float32) * alpha[0] - w) < 0.01 * np.linalg.norm(w)


def test_mse_range_keeps_max_abs_where_it_is_exact():
    w = (np.arange(-127, 128, dtype=np.float32) / 127 * 0.3)[None, :]   # every value on the MAX_ABS grid
    np.testing.assert_array_equal(mse_alpha(w, 127), max_abs_alpha(w, 127))


# ----------------------------------------------------------------------------------- bias correction

def test_mean_shift_of_grouped_and_depthwise_convs():
    rng = np.random.default_rng(1)
    means = rng.uniform(1, 3, 4)
    w = rng.standard_normal((6, 2 * 9))               # 6 outputs, 2 groups of 2 input channels, 3x3
    dq = rng.standard_normal(w.shape) * 0.01
    got = mean_shift(w, w + dq, 9, 2, means)
    d = dq.reshape(6, 2, 9).sum(axis=2)
    want = [d[o] @ means[(o // 3) * 2:(o // 3) * 2 + 2] for o in range(6)]
    np.testing.assert_allclose(got, want)
    dw = rng.standard_normal((4, 9))                  # depthwise: channel o reads input o
    np.testing.assert_allclose(mean_shift(dw, dw + 0.1, 9, 4, means), 0.9 * means)


def test_channel_means_do_not_depend_on_sample_order():
    rng = np.random.default_rng(2)
    batches = [rng.standard_normal((1, 3, 5, 4 + i)).astype(np.float32) + 2 for i in range(6)]

    def run(order):
        obs = ChannelMeans(1)
        for p in range(2):
            obs.start_pass(p)
            for i in order:
                obs.update(batches[i])
        return obs.compute()
    a, b = run(range(6)), run([5, 2, 0, 4, 1, 3])
    assert a.tobytes() == b.tobytes()
    exact = np.concatenate([x.transpose(1, 0, 2, 3).reshape(3, -1) for x in batches], axis=1).mean(axis=1)
    np.testing.assert_allclose(a, exact, rtol=1e-6)


def _offset_conv(tmp_path, seed=3):
    """x[1,3,16,16] -> conv 3x3 (16 outputs) -> y: inputs in [0, 10] (mean ~5) make weight rounding
    shift every output's mean by sum(dW) * 5; one large weight per channel makes the rounding coarse."""
    from onnx import helper
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3
    w[:, 0, 1, 1] = 8.0
    init = {"W": w, "B": rng.standard_normal(16).astype(np.float32)}
    save_onnx(tmp_path / "m.onnx", [helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])],
              [("x", [1, 3, 16, 16])], [("y", "FLOAT", [1, 16, 16, 16])], init)
    convert_onnx(tmp_path / "m.onnx", tmp_path / "m.mnn")
    make_images(tmp_path / "calib", count=6, seed=4)
    make_images(tmp_path / "held", count=4, seed=5)
    return {"path": str(tmp_path / "calib"), "format": "RGB", "mean": [0, 0, 0], "normal": [1 / 25.5] * 3,
            "width": 16, "height": 16, "feature_quantize_method": "KL"}


def _held_feeds(tmp_path):
    from PIL import Image
    feeds = []
    for f in sorted((tmp_path / "held").glob("*.png")):
        img = np.asarray(Image.open(f).convert("RGB").resize((16, 16), Image.BILINEAR), np.float32) / 25.5
        feeds.append({"x": np.ascontiguousarray(img.transpose(2, 0, 1)[None])})
    return feeds


@needs_oracle
@pytest.mark.parametrize("feature", ["KL", "EMA"])
def test_bias_correction_removes_planted_mean_shift(tmp_path, feature):
    from oracle import run_oracle
    cfg = _offset_conv(tmp_path)
    cfg["feature_quantize_method"] = feature
    quantize(tmp_path / "m.mnn", tmp_path / "plain.mnn", cfg)
    quantize(tmp_path / "m.mnn", tmp_path / "fixed.mnn", {**cfg, "bias_correction": True})
    shift = {}
    for which in ("plain", "fixed"):
        diffs = []
        for feeds in _held_feeds(tmp_path):
            ref = run_oracle(tmp_path / "m.mnn", feeds)["y"]
            got = run_oracle(tmp_path / f"{which}.mnn", feeds)["y"]
            diffs.append((got - ref).mean(axis=(0, 2, 3)))          # per output channel
        shift[which] = np.abs(np.mean(diffs, axis=0))
    # the mean error per channel falls to what activation rounding and padding borders leave
    assert shift["fixed"].mean() < 0.3 * shift["plain"].mean(), shift


# ------------------------------------------------------------------------------- cross-layer equalization

def _depthwise_chain(tmp_path, act="Relu"):
    """x -> conv 3x3 (8, channel ranges spread over 1e3) -> act -> depthwise 3x3 -> act -> conv 1x1 (4)."""
    from onnx import helper
    rng = np.random.default_rng(6)
    spread = np.logspace(-2, 1, 8).astype(np.float32)
    init = {"W1": rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * spread[:, None, None, None],
            "B1": rng.standard_normal(8).astype(np.float32) * spread,
            "W2": rng.standard_normal((8, 1, 3, 3)).astype(np.float32) / spread[:, None, None, None] * 0.1,
            "B2": rng.standard_normal(8).astype(np.float32) * 0.1,
            "W3": rng.standard_normal((4, 8, 1, 1)).astype(np.float32),
            "B3": rng.standard_normal(4).astype(np.float32)}

    def activation(src, dst):
        if act == "Relu6":
            return helper.make_node("Clip", [src, "lo", "hi"], [dst])
        return helper.make_node(act, [src], [dst])
    if act == "Relu6":
        init.update(lo=np.array(0, np.float32), hi=np.array(6, np.float32))
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), activation("c1", "a1"),
             helper.make_node("Conv", ["a1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], group=8), activation("c2", "a2"),
             helper.make_node("Conv", ["a2", "W3", "B3"], ["y"])]
    save_onnx(tmp_path / "chain.onnx", nodes, [("x", [1, 3, 12, 12])], [("y", "FLOAT", [1, 4, 12, 12])], init)
    convert_onnx(tmp_path / "chain.onnx", tmp_path / "chain.mnn")
    return mnnlite.load_model(tmp_path / "chain.mnn")


def _conv_ranges(model):
    from mnnlite.ops.weights import conv_weights
    out = {}
    for op in model.graph.ops:
        if op.type in (OpType.Convolution, OpType.ConvolutionDepthwise):
            w, _ = conv_weights(op)
            out[op.name] = w
    return out


@needs_oracle
def test_cle_equalizes_depthwise_pair_and_keeps_outputs(tmp_path):
    from oracle import run_oracle
    model = _depthwise_chain(tmp_path)
    assert len(find_pairs(model.graph)) == 2
    result = equalize(model)
    assert len(result.pairs) == 2
    mnnlite.save_model(result.model, tmp_path / "cle.mnn")
    before, after = _conv_ranges(model), _conv_ranges(mnnlite.load_model(tmp_path / "cle.mnn"))
    first, dw, last = (after[n] for n in after)
    # after the sweeps settle every pair is balanced: conv1's output range = depthwise's range, and the
    # depthwise range = conv3's input-channel range, channel by channel
    r1 = np.abs(first.reshape(8, -1)).max(axis=1)
    r_dw = np.abs(dw.reshape(8, -1)).max(axis=1)
    r3 = np.abs(last[:, :, 0, 0]).max(axis=0)
    np.testing.assert_allclose(r1, r_dw, rtol=2e-3)
    np.testing.assert_allclose(r_dw, r3, rtol=2e-3)
    spread_before = np.ptp(np.log10(np.abs(next(iter(before.values()))).reshape(8, -1).max(axis=1)))
    assert np.ptp(np.log10(r1)) < 0.5 * spread_before
    rng = np.random.default_rng(7)
    for _ in range(3):
        feeds = {"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)}
        ref, got = run_oracle(tmp_path / "chain.mnn", feeds)["y"], run_oracle(tmp_path / "cle.mnn", feeds)["y"]
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@needs_oracle
def test_cle_leaves_relu6_pairs_alone(tmp_path):
    model = _depthwise_chain(tmp_path, act="Relu6")
    assert find_pairs(model.graph) == []
    assert equalize(model).model is model


# ------------------------------------------------------------------------------------- real model

@pytest.fixture(scope="module")
def zoo():
    import model_zoo
    return model_zoo


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@needs_oracle
@pytest.mark.parametrize("name", ["ppocr_cls", "mobilenet"])
def test_keys_off_keep_mnn_exact_bytes(tmp_path, zoo, name):
    cfg = zoo.quant_config(name, "quant_kl")
    quantize(zoo.model_path(name, "float"), tmp_path / "a.mnn", cfg)
    off = {"bias_correction": False, "cross_layer_equalization": False, "weight_range_method": "max_abs"}
    quantize(zoo.model_path(name, "float"), tmp_path / "b.mnn", {**cfg, **off})
    assert _digest(tmp_path / "a.mnn") == _digest(tmp_path / "b.mnn")
    assert _digest(tmp_path / "a.mnn.json") == _digest(tmp_path / "b.mnn.json")


@needs_oracle
@pytest.mark.parametrize("keys", KEYS + ({k: v for d in KEYS for k, v in d.items()},), ids=json.dumps)
def test_keys_on_ppocr_cls_run_in_mnn_and_keep_cosine(tmp_path, zoo, keys):
    cfg = zoo.quant_config("ppocr_cls", "quant_kl")
    quantize(zoo.model_path("ppocr_cls", "float"), tmp_path / "plain.mnn", cfg)
    quantize(zoo.model_path("ppocr_cls", "float"), tmp_path / "keys.mnn", {**cfg, **keys})
    assert _digest(tmp_path / "plain.mnn") != _digest(tmp_path / "keys.mnn")
    plain, ours = fidelity("ppocr_cls", tmp_path / "plain.mnn"), fidelity("ppocr_cls", tmp_path / "keys.mnn")
    # CLE changes every activation range it touches: with MNN's own KL defaults (KL on the model input,
    # readdir order) ppocr_cls measured 0.9972 -> 0.9911 with it, so it gets a wider bound than the keys
    # that only move weights (README: weight-side keys)
    allowed = 1e-2 if keys.get("cross_layer_equalization") else 2e-3
    assert np.isfinite(ours) and ours >= plain - allowed, (plain, ours)


@needs_oracle
@pytest.mark.parametrize("feature", ["KL", "EMA"])
def test_bias_correction_same_bytes_for_any_thread_count(tmp_path, zoo, feature):
    # mobilenet: a forward long enough that KL really runs samples on several interpreters
    cfg = {**zoo.quant_config("mobilenet", "quant_kl"), "feature_quantize_method": feature, "bias_correction": True}
    quantize(zoo.model_path("mobilenet", "float"), tmp_path / "one.mnn", cfg, threads=1)
    quantize(zoo.model_path("mobilenet", "float"), tmp_path / "three.mnn", cfg, threads=3)
    assert _digest(tmp_path / "one.mnn") == _digest(tmp_path / "three.mnn")
