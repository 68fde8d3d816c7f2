"""Sanity tests of the fixture zoo: every model builds, loads and runs in the official MNN runtime."""
from __future__ import annotations

import numpy as np
import pytest

from model_zoo import (ORACLE_ACCURACY_NOTES, ORACLE_FAILURES, QUANT_METHODS, VARIANTS, excluded_variants,
                       model_names, variants_for)
from oracle import has_subgraphs, oracle_input_info, run_oracle
from zoo_graphs import onnx_models

ALL_MODELS = model_names()
IMAGE_MODELS = ["cnn", "mobilenet", "nhwc_like", "ppocr_det", "ppocr_cls", "ppocr_rec", "blazeface"]

# Minimum cosine similarity of a variant's outputs to the float model's: named
# budgets rather than magic numbers (observed values are well above these).
COSINE_BUDGET = {"fp16": 0.99, "wq8": 0.95, "wq8sym": 0.95, "wq4": 0.75, "wq4sym": 0.75,
                 "quant_kl": 0.7, "quant_ema": 0.7}
EXACT_VARIANTS = ("external", "float_static")  # same weights, same kernels: identical outputs
# random pixels make the text detector output ~0 everywhere: cosine similarity means nothing there
ONLY_IMAGES_MEANINGFUL = {"ppocr_det"}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if denom == 0 else float(a @ b / denom)


def _shape_sets(zoo, name):
    return range(len(next(iter(zoo.input_shapes(name).values()))))


# -- specs (no oracle needed) ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_spec_is_consistent(name):
    import model_zoo as zoo

    shapes = zoo.input_shapes(name)
    counts = {len(v) for v in shapes.values()}
    assert len(counts) == 1, f"{name}: inputs list different numbers of shape sets: {shapes}"
    assert set(zoo.input_dtypes(name)) == set(shapes)
    feeds = zoo.random_feeds(name, 0)
    assert {k: v.shape for k, v in feeds.items()} == {k: tuple(v[0]) for k, v in shapes.items()}
    if name in IMAGE_MODELS:
        spec = zoo.image_spec(name)
        ((inp, sizes),) = shapes.items()
        first = (1, spec.height, spec.width, 3) if zoo.input_layout(name) == "NHWC" else (1, 3, spec.height, spec.width)
        assert sizes[0] == first, "calibration size must be the first test size"
        assert set(variants_for(name)) >= {"quant_kl", "quant_ema"}
    else:
        with pytest.raises(ValueError):
            zoo.image_spec(name)
        assert not set(variants_for(name)) & set(QUANT_METHODS)


def test_exclusions_have_reasons():
    for (name, variant), why in ORACLE_FAILURES.items():
        assert name in ALL_MODELS and variant in VARIANTS and why
        assert variant not in variants_for(name)
        assert excluded_variants(name)[variant] == why
    for (name, variant), why in ORACLE_ACCURACY_NOTES.items():
        assert variant in variants_for(name) and why


# -- ONNX builders ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(set(ALL_MODELS) - {"ppocr_det", "ppocr_cls", "ppocr_rec", "blazeface"}))
def test_onnx_builder_is_deterministic(mnn_oracle, name):
    build = onnx_models()[name]
    assert build().SerializeToString() == build().SerializeToString()


# -- float models in the oracle --------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL_MODELS)
def test_float_model_runs_in_oracle(zoo, zoo_float_paths, name):
    path = zoo_float_paths[name]
    info = oracle_input_info(path)
    shapes = zoo.input_shapes(name)
    assert set(info) == set(shapes)
    for inp, meta in info.items():
        declared, first = meta.shape, shapes[inp][0]
        assert len(declared) == len(first)
        assert all(d in (-1, s) for d, s in zip(declared, first)), f"{inp}: {declared} vs {first}"
        assert meta.layout == (zoo.input_layout(name) if name in IMAGE_MODELS else "NCHW")
    for i in _shape_sets(zoo, name):
        outputs = run_oracle(path, zoo.random_feeds(name, i))
        assert outputs, f"{name}: no outputs"
        for out, arr in outputs.items():
            assert arr.dtype in (np.float32, np.int32), f"{name}/{out}: {arr.dtype}"
            assert arr.size > 0, f"{name}/{out}: empty output {arr.shape}"
            if arr.dtype == np.float32:
                assert np.isfinite(arr).all(), f"{name}/{out}: non-finite values"


def test_dynamic_models_follow_the_input_size(zoo, zoo_float_paths):
    a = run_oracle(zoo_float_paths["cnn"], zoo.random_feeds("cnn", 0))
    b = run_oracle(zoo_float_paths["cnn"], zoo.random_feeds("cnn", 1))
    assert a["seg"].shape == (1, 2, 64, 64) and b["seg"].shape == (1, 2, 96, 80)
    assert a["prob"].shape == b["prob"].shape == (1, 10)
    np.testing.assert_allclose(a["prob"].sum(), 1.0, rtol=1e-5)


def test_integer_outputs_and_inputs(zoo, zoo_float_paths):
    feeds = zoo.random_feeds("misc", 0)
    out = run_oracle(zoo_float_paths["misc"], feeds)
    assert out["argmax"].dtype == np.int32
    np.testing.assert_array_equal(out["argmax"], feeds["x"].argmax(axis=1))
    np.testing.assert_array_equal(np.sort(out["topk_values"], axis=-1)[..., ::-1],
                                  np.sort(feeds["x"], axis=-1)[..., ::-1][..., :3])
    assert oracle_input_info(zoo_float_paths["transformer"])["tokens"].dtype == np.int32
    logits = run_oracle(zoo_float_paths["transformer"], zoo.random_feeds("transformer", 1))["logits"]
    assert logits.shape == (1, 9, zoo.TRANSFORMER_VOCAB)


def test_control_flow_models_use_the_module_api(zoo, zoo_float_paths):
    assert has_subgraphs(zoo_float_paths["ifgraph"]) and has_subgraphs(zoo_float_paths["lstm"])
    assert not has_subgraphs(zoo_float_paths["cnn"])
    x = np.linspace(-1.0, 2.0, 8, dtype=np.float32).reshape(1, 8)     # sum > 0: then-branch
    out = run_oracle(zoo_float_paths["ifgraph"], {"x": x})
    np.testing.assert_allclose(out["if_out"], 2 * x, rtol=1e-6)
    v = 2 * x
    for _ in range(4):
        v = v * 0.5 + x
    np.testing.assert_allclose(out["loop_out"], v, rtol=1e-5)
    assert out["loop_scan"].shape == (4, 1, 8)
    out = run_oracle(zoo_float_paths["ifgraph"], {"x": -x - 1})    # else-branch
    np.testing.assert_allclose(out["if_out"], -x - 2, rtol=1e-6)


def test_session_and_module_api_agree(zoo, zoo_float_paths):
    feeds = zoo.random_feeds("nhwc_like", 1)
    a = run_oracle(zoo_float_paths["nhwc_like"], feeds, api="session")
    b = run_oracle(zoo_float_paths["nhwc_like"], feeds, api="module")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_run_oracle_rejects_wrong_feed_names(zoo, zoo_float_paths):
    with pytest.raises(KeyError, match="missing feeds"):
        run_oracle(zoo_float_paths["misc"], {"x": zoo.random_feeds("misc")["x"]})


# -- calibration images ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_calibration_images(zoo, name):
    from PIL import Image

    spec = zoo.image_spec(name)
    calib = sorted(zoo.calibration_dir(name).glob("*.png"))
    held = sorted(zoo.heldout_dir(name).glob("*.png"))
    assert len(calib) == zoo.CALIB_NUM_IMAGES and len(held) == zoo.HELDOUT_NUM_IMAGES
    for f in calib[:2] + held[:1]:
        with Image.open(f) as img:
            assert img.size == spec.image_size and img.mode == "RGB"
    assert calib[0].read_bytes() != held[0].read_bytes()
    (feeds,) = zoo.image_feeds(name, zoo.heldout_dir(name))[:1]
    nhwc = zoo.input_layout(name) == "NHWC"
    expected = (1, spec.height, spec.width, 3) if nhwc else (1, 3, spec.height, spec.width)
    assert next(iter(feeds.values())).shape == expected


# -- variants --------------------------------------------------------------------------------------
def _check_variant(zoo, name, variant):
    path = zoo.model_path(name, variant)
    assert path.stat().st_size > 0
    if variant == "external":
        assert path.with_name(path.name + ".weight").exists()
    if variant in QUANT_METHODS:
        assert path.with_name(f"{name}.{variant}.config.json").exists()
    ref_path = zoo.model_path(name, "float")
    sets = [0] if variant in ("float_static", "quant_ema", "quant_admm") else _shape_sets(zoo, name)
    for i in sets:
        # image models see a held-out image at the calibration size
        feeds = zoo.image_feeds(name)[0] if i == 0 and name in IMAGE_MODELS else zoo.random_feeds(name, i)
        ref, got = run_oracle(ref_path, feeds), run_oracle(path, feeds)
        assert set(ref) <= set(got), f"{name}/{variant}: outputs {sorted(got)} lack some of {sorted(ref)}"
        if (name, variant) in ORACLE_ACCURACY_NOTES or (i > 0 and name in ONLY_IMAGES_MEANINGFUL):
            continue
        for out, r in ref.items():
            assert got[out].shape == r.shape, f"{name}/{variant}/{out}"
            if variant in EXACT_VARIANTS:
                np.testing.assert_allclose(got[out], r, rtol=1e-5, atol=1e-6, err_msg=f"{name}/{out}")
            elif r.dtype == np.float32:
                cos = _cosine(r, got[out])
                assert cos >= COSINE_BUDGET[variant], f"{name}/{variant}/{out}: cosine {cos:.4f}"


@pytest.mark.parametrize("variant", variants_for("cnn")[1:])
def test_cnn_variants_run_in_oracle(zoo, variant):
    _check_variant(zoo, "cnn", variant)


@pytest.mark.slow
@pytest.mark.parametrize("name,variant", [(n, v) for n in ALL_MODELS for v in variants_for(n)[1:]])
def test_every_variant_runs_in_oracle(zoo, name, variant):
    _check_variant(zoo, name, variant)


@pytest.mark.slow
def test_big_model(zoo):
    path = zoo.big_model_path()
    assert 80e6 < path.stat().st_size < 100e6
    out = run_oracle(path, {"image": np.zeros((1, 3, 64, 64), np.float32)})
    assert out["logits"].shape == (1, 10)
