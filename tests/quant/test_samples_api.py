"""``mnnlite.quantize(..., samples=)`` / ``mnnlite.validate(..., samples=)``: calibration and validation from
arrays in memory.  The arrays are made with mnnlite's own image preprocessing (``mnnlite.preprocess``), so
quantizing from them must give the same bytes as quantizing from the folder; the official runtime runs the
result.  Bad samples are TypeError/ValueError naming the sample index and the input."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_oracle import calib_config

import mnnlite
from oracle import run_oracle


def _digest(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _without_path(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "path"}


@pytest.mark.parametrize("name, method", [("ppocr_cls", "KL"), ("nhwc_like", "EMA"), ("cnn", "ADMM")])
def test_arrays_give_the_same_file_as_the_folder(zoo, tmp_path, name, method):
    src = zoo.model_path(name, "float")
    cfg = calib_config(name, method)
    arrays = mnnlite.preprocess(src, cfg)
    assert len(arrays) == len(list(Path(cfg["path"]).iterdir()))
    folder = mnnlite.quantize(src, tmp_path / "folder.mnn", cfg)
    seen = []
    given = mnnlite.quantize(src, tmp_path / "arrays.mnn", _without_path(cfg), samples=arrays,
                             progress=lambda *a: seen.append(a))
    assert _digest(tmp_path / "folder.mnn") == _digest(tmp_path / "arrays.mnn")
    assert _digest(tmp_path / "folder.mnn.json") == _digest(tmp_path / "arrays.mnn.json")
    assert given.samples == folder.samples and given.quantized_ops == folder.quantized_ops
    # the callback sees every loop start (done 0) and end (done == total)
    stages = {s for s, _, _ in seen}
    assert all((s, 0) in {(a, d) for a, d, _ in seen} for s in stages)
    assert all(any(d == t and a == s for a, d, t in seen) for s in stages)


def test_official_runtime_runs_the_array_calibrated_file(zoo, tmp_path):
    src = zoo.model_path("ppocr_cls", "float")
    cfg = calib_config("ppocr_cls")
    arrays = mnnlite.preprocess(src, cfg)
    mnnlite.quantize(src, tmp_path / "q.mnn", _without_path(cfg), samples=[a["x"] for a in arrays])
    x = arrays[0]["x"]
    theirs = run_oracle(tmp_path / "q.mnn", {"x": x})          # the official runtime runs it
    ours = mnnlite.Interpreter(str(tmp_path / "q.mnn")).run({"x": x})
    np.testing.assert_allclose(next(iter(theirs.values())), next(iter(ours.values())), atol=1e-5)


def test_validate_from_arrays_equals_the_folder(zoo):
    flt, q = zoo.quant_source_path("ppocr_cls", "quant_kl"), zoo.model_path("ppocr_cls", "quant_kl")
    cfg = zoo.quant_config("ppocr_cls", "quant_kl")
    heldout = zoo.heldout_dir("ppocr_cls")
    arrays = mnnlite.preprocess(flt, dict(cfg, path=str(heldout), used_image_num=3))
    seen = []
    by_folder = mnnlite.validate(flt, q, cfg, data=str(heldout), num=3)
    by_arrays = mnnlite.validate(flt, q, _without_path(cfg), samples=arrays, labels=[0, 0, 1],
                                 progress=lambda *a: seen.append(a))
    assert by_arrays.metrics().keys() - {"labels.accuracy_float", "labels.accuracy_quant"} == by_folder.metrics().keys()
    for key, value in by_folder.metrics().items():
        assert by_arrays.metrics()[key] == pytest.approx(value, abs=1e-9), key
    assert by_arrays.samples == ["samples[0]", "samples[1]", "samples[2]"]
    assert seen == [("validate", 0, 3), ("validate", 1, 3), ("validate", 2, 3), ("validate", 3, 3)]
    assert by_arrays.accuracy_float is not None


def _err(kind, match, samples, **kw):
    return kind, match, samples, kw


BAD = [
    (TypeError, r"samples must be an iterable of samples .* got one array", np.zeros((1, 3, 48, 192), np.float32)),
    (TypeError, r"samples must be an iterable .* got dict", {"x": np.zeros((1, 3, 48, 192), np.float32)}),
    (ValueError, r"samples: the iterable holds no sample", []),
    (ValueError, r"samples\[1\]: the model has no input 'X' \(did you mean 'x'\?\)",
     [{"x": np.zeros((1, 3, 48, 192), np.float32)}, {"X": np.zeros((1, 3, 48, 192), np.float32)}]),
    (TypeError, r"samples\[0\]\['x'\]: expected a numpy array, got list", [{"x": [[1.0]]}]),
    (TypeError, r"samples\[0\]\['x'\]: expected a numeric array, got dtype <U1", [np.array(["a"])]),
    (ValueError, r"samples\[0\]\['x'\]: shape \[48, 192\] does not fit input 'x' of shape \[1, 3, -1, -1\]",
     [np.zeros((48, 192), np.float32)]),
    (ValueError, r"samples\[0\]\['x'\]: shape \[1, 48, 192\] .* axis 1 is 1, the model needs 3",
     [np.zeros((1, 48, 192), np.float32)]),
    (ValueError, r"samples\[2\]\['x'\]: shape \[1, 1, 48, 192\] .* axis 1 is 1, the model needs 3",
     [np.zeros((1, 3, 48, 192), np.float32)] * 2 + [np.zeros((1, 1, 48, 192), np.float32)]),
    (ValueError, r"samples\[0\]\['x'\]: holds NaN or infinite values", [np.full((1, 3, 48, 192), np.nan, np.float32)]),
]


@pytest.mark.parametrize("kind, match, samples", BAD)
def test_bad_samples_name_the_index_and_input(zoo, tmp_path, kind, match, samples):
    src = zoo.model_path("ppocr_cls", "float")
    with pytest.raises(kind, match=match):
        mnnlite.quantize(src, tmp_path / "q.mnn", _without_path(calib_config("ppocr_cls")), samples=samples)
    assert not (tmp_path / "q.mnn").exists()


def test_a_sample_without_its_batch_dim_is_accepted(zoo, tmp_path):
    src = zoo.model_path("ppocr_cls", "float")
    arrays = mnnlite.preprocess(src, calib_config("ppocr_cls"))[:4]
    cfg = _without_path(calib_config("ppocr_cls"))
    mnnlite.quantize(src, tmp_path / "a.mnn", cfg, samples=[a["x"] for a in arrays])
    mnnlite.quantize(src, tmp_path / "b.mnn", cfg, samples=[a["x"][0] for a in arrays])
    assert _digest(tmp_path / "a.mnn") == _digest(tmp_path / "b.mnn")


def test_a_multi_input_model_needs_dicts(tmp_path):
    from mnnlite.quant.dataset import ArraySamples, InputSpec

    specs = [InputSpec("a", (1, 4)), InputSpec("b", (1, 4))]
    with pytest.raises(TypeError, match=r"samples\[0\]: got ndarray; this model has inputs \['a', 'b'\]"):
        ArraySamples([np.zeros((1, 4), np.float32)], specs)
    with pytest.raises(ValueError, match=r"samples\[0\]: input 'b' is missing"):
        ArraySamples([{"a": np.zeros((1, 4), np.float32)}], specs)
    source = ArraySamples([{"a": np.ones((1, 4)), "b": np.zeros((1, 4), np.int64)}], specs)
    (_, got), = source.samples()
    assert got["a"].dtype == np.float32 and got["b"].dtype == np.float32
