"""NHWC (TFLite) models end to end, and EMA on a graph that fixes its batch inside (issue 10 items 2-3).

BlazeFace (zoo ``blazeface``: MediaPipe's TFLite face detector, NHWC input [1, 128, 128, 3], NHWC outputs
[1, 896, 16] and [1, 896, 1]) runs, quantizes and validates with feeds and outputs in its declared layout,
as MNN's Module API takes and returns them; ``layout="nchw"`` keeps the Caffe order of the Session API.
``minilm_block`` reshapes to the constant shape [1, S, heads, D]: a batch of samples cannot pass, and
EMA calibration falls back to MNN's one sample per batch.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_pipeline_oracle import calib_config, conv_params, image_feeds, oracle_quant, our_quant, rel, scale_map

import mnnlite
from mnnlite.runtime import Interpreter
from oracle import assert_close_to_oracle, run_oracle

TOL = 1e-5
pytestmark = pytest.mark.oracle


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------------------------------ float runs

def test_float_outputs_in_declared_layout_match_module_api(zoo):
    path = zoo.model_path("blazeface", "float")
    interp = Interpreter(path)
    info = interp.input_info()["input"]
    assert info.layout == "NHWC" and info.shape == (1, 128, 128, 3) == info.feed_shape
    assert interp.output_layouts() == {"regressors": "NHWC", "classificators": "NHWC"}
    for feeds in image_feeds("blazeface", "heldout")[:2]:
        assert feeds["input"].shape == (1, 128, 128, 3)
        ours = interp.run(feeds)
        theirs = run_oracle(path, feeds, api="module")          # MNN's Module API
        assert ours["regressors"].shape == theirs["regressors"].shape == (1, 896, 16)
        assert ours["classificators"].shape == theirs["classificators"].shape == (1, 896, 1)
        for k in theirs:
            assert_close_to_oracle(ours[k], theirs[k], f"blazeface/{k}")
        session = run_oracle(path, feeds, api="session")        # Session API, NHWC host tensors
        for k in theirs:
            assert_close_to_oracle(ours[k], session[k], f"blazeface/{k} (session)")


def test_nchw_layout_keeps_caffe_order(zoo):
    path = zoo.model_path("blazeface", "float")
    feeds = image_feeds("blazeface", "heldout")[0]
    caffe = {"input": np.ascontiguousarray(feeds["input"].transpose(0, 3, 1, 2))}
    interp = Interpreter(path, layout="nchw")
    assert interp.input_info()["input"].feed_shape == (1, 3, 128, 128)
    ours = interp.run(caffe)
    assert ours["regressors"].shape == (1, 16, 896)
    theirs = run_oracle(path, caffe, layout="nchw")
    for k in theirs:
        assert_close_to_oracle(ours[k], theirs[k], f"blazeface/{k} (nchw)")
    declared = Interpreter(path).run(feeds)
    np.testing.assert_array_equal(np.moveaxis(ours["regressors"], 1, -1), declared["regressors"])
    with pytest.raises(mnnlite.errors.ShapeError, match=r"expects shape \[1, 3, 128, 128\]"):
        interp.run(feeds)
    with pytest.raises(mnnlite.errors.ConfigError, match="layout must be one of"):
        Interpreter(path, layout="NHWCX")


def test_int8_declared_layout_matches_official_runtime_on_mnn_file(zoo):
    path = zoo.model_path("blazeface", "quant_kl")
    feeds = image_feeds("blazeface", "heldout")[0]
    ours, theirs = Interpreter(path).run(feeds), run_oracle(path, feeds)
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert ours[k].shape == theirs[k].shape
        np.testing.assert_array_equal(ours[k], theirs[k])     # KL files: bit-identical


# ---------------------------------------------------------------------------------------- quantizer

def test_kl_scales_equal_quantized_out(zoo):
    """Every tensor's scale is quantized.out's but the input's (deviation 2: MAX threshold there; with
    MNN's KL threshold on the input too, our file equals MNN's in every scale)."""
    cfg = calib_config("blazeface")
    ours_path, report = our_quant("blazeface", cfg)
    theirs_path = oracle_quant("blazeface", cfg)
    graph = mnnlite.load_model(zoo.model_path("blazeface", "float")).graph
    ours, theirs = scale_map(ours_path), scale_map(theirs_path)
    inputs = set(graph.inputs) | {int(op.outputIndexes[0]) for op in graph.ops
                                  if op.inputIndexes is not None and list(op.inputIndexes) == list(graph.inputs)
                                  and op.type == mnnlite.graph.OpType.ConvertTensor}
    assert set(ours) == set(theirs) and len(ours) > 80
    off = [(graph.tensors[t], ours[t], theirs[t]) for t in ours if t not in inputs and rel(ours[t], theirs[t]) > TOL]
    assert not off
    assert report.feature_method == "KL" and len(report.quantized_ops) == 37
    out = run_oracle(ours_path, image_feeds("blazeface", "heldout")[0])     # MNN runs our file
    assert out["regressors"].shape == (1, 896, 16) and all(np.isfinite(v).all() for v in out.values())


def test_ema_params_equal_quantized_out(zoo):
    """EMA builds [batch, 128, 128, 3] batches, as MNN (calibration.cpp: the model's own dims/order)."""
    cfg = calib_config("blazeface", "EMA", winogradOpt=False)
    ours_path, report = our_quant("blazeface", cfg)
    theirs_path = oracle_quant("blazeface", cfg)
    ours, theirs = conv_params(ours_path), conv_params(theirs_path)
    assert len(ours) == len(theirs) == len(report.quantized_ops) == 37
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert max(rel(a[0], b[0]), rel(a[2], b[2])) <= TOL and a[1] == b[1] and a[3] == b[3], (k, a, b)


def test_validate_in_declared_layout_api_and_cli(zoo, tmp_path):
    cfg = dict(zoo.quant_config("blazeface", "quant_kl"), used_image_num=8)
    float_path, quant_path = zoo.model_path("blazeface", "float"), zoo.model_path("blazeface", "quant_kl")
    report = mnnlite.validate(float_path, quant_path, cfg, num=4)
    assert len(report.samples) == 4 and {o.name for o in report.outputs} == {"regressors", "classificators"}
    assert all(o.cosine > 0.9 for o in report.outputs), report.render()
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(cfg))
    for extra in ([], ["--layout", "nchw"]):      # images are built in the model's layout either way
        proc = subprocess.run([sys.executable, "-m", "mnnlite", "validate", str(float_path), str(quant_path),
                               str(cfg_file), "--num", "2", "--min-cosine", "0.5", *extra],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "regressors" in proc.stdout


def test_run_and_info_cli_show_layouts(zoo, tmp_path):
    path = zoo.model_path("blazeface", "float")
    x = image_feeds("blazeface", "heldout")[0]["input"]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x_nchw.npy", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "mnnlite", *map(str, args)], capture_output=True, text=True,
                              timeout=300)
        return proc.returncode, proc.stdout + proc.stderr

    code, out = cli("info", path)
    assert code == 0 and "input      input: 1x128x128x3 DT_FLOAT NHWC" in out
    assert "output     regressors: NHWC" in out and "output     classificators: NHWC" in out
    code, out = cli("run", path, "--input", tmp_path / "x.npy", "--output", tmp_path / "o.npz")
    assert code == 0 and "output regressors: shape [1, 896, 16] float32 NHWC" in out, out
    code, out = cli("run", path, "--input", tmp_path / "x_nchw.npy", "--layout", "nchw", "--output",
                    tmp_path / "o_nchw.npz")
    assert code == 0 and "output regressors: shape [1, 16, 896] float32 NCHW" in out, out
    with np.load(tmp_path / "o.npz") as a, np.load(tmp_path / "o_nchw.npz") as b:
        np.testing.assert_array_equal(a["regressors"], np.moveaxis(b["regressors"], 1, -1))
    code, out = cli("run", path, "--input", tmp_path / "x_nchw.npy")       # NCHW data, declared NHWC
    assert code == 2 and "expects shape [1, 128, 128, 3]" in out and "Traceback" not in out


# --------------------------------------------------------------------------------- batch fixed inside

def _sequence_data(folder, count=12):
    """Per-sample folders (MNN's sequence format), each a differently scaled sample: which samples a
    calibration uses shows in the scales."""
    rng = np.random.default_rng(7)
    for i in range(count):
        d = folder / f"s{i:02d}"
        d.mkdir(parents=True)
        x = rng.standard_normal((1, 16, 32)).astype(np.float32) * (1 + 0.3 * i)
        (d / "input.json").write_text(json.dumps({"inputs": [{"name": "hidden", "shape": [1, 16, 32]}]}))
        np.savetxt(d / "hidden.txt", x.reshape(-1))
    return folder


@pytest.mark.parametrize("batch", [4, 32])
def test_ema_on_graph_with_fixed_batch_equals_quantized_out(zoo, tmp_path, batch):
    """MNN's sequence EMA feeds the last sample of each batch (batch 1 forwards, N / batch of them); with
    12 samples and batch 32 it sets the batch to 1 and uses all 12.  Our batched forward fails on the
    Reshape to [1, 16, 4, 8]; calibration falls back and gives MNN's parameters exactly."""
    src = zoo.model_path("minilm_block", "float")
    cfg = {"input_type": "sequence", "path": str(_sequence_data(tmp_path / "data")), "used_sample_num": 12,
           "feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS", "batch_size": batch}
    with pytest.raises(mnnlite.errors.ShapeError, match=r"to \[1, 16, 4, 8\]"):
        Interpreter(src).run({"hidden": np.zeros((4, 16, 32), np.float32)})
    import io
    log = io.StringIO()
    report = mnnlite.quantize(src, tmp_path / "ours.mnn", cfg, log=log)
    theirs_path = oracle_quant("minilm_block", cfg, src=src)
    ours, theirs = conv_params(tmp_path / "ours.mnn"), conv_params(theirs_path)
    assert len(ours) == len(theirs) == len(report.quantized_ops) == 5
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert max(rel(a[0], b[0]), rel(a[2], b[2])) <= TOL and a[1] == b[1] and a[3] == b[3], (k, a, b)
    # MNN's sequence EMA runs only the last sample of each batch (batch-1 forwards): no fallback needed
    assert "cannot take" not in log.getvalue()
    if batch == 4:
        full = mnnlite.quantize(src, tmp_path / "full.mnn", {**cfg, "ema_sequence_batch": "full"}, log=log)
        assert "cannot take a batch of 4" in log.getvalue() and full.samples == 12
    out = run_oracle(tmp_path / "ours.mnn", {"hidden": np.ones((1, 16, 32), np.float32)})
    assert np.isfinite(out["out"]).all()


def test_ema_array_samples_on_graph_with_fixed_batch_fall_back_per_sample(zoo, tmp_path):
    """``samples=`` arrays are stacked into the config's batches too; a graph that cannot take the batch
    falls back to one forward per sample, exactly as a batch size of 1 calibrates (found by
    tools/quant_fingerprint.py: it used to stop with the Reshape's ShapeError)."""
    import io
    src = zoo.model_path("minilm_block", "float")
    rng = np.random.default_rng(3)
    samples = [{"hidden": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(6)]
    cfg = {"feature_quantize_method": "EMA", "weight_quantize_method": "MAX_ABS"}
    log = io.StringIO()
    report = mnnlite.quantize(src, tmp_path / "b3.mnn", {**cfg, "batch_size": 3}, samples=samples, log=log)
    assert "cannot take a batch of 3" in log.getvalue() and report.samples == 6
    mnnlite.quantize(src, tmp_path / "b1.mnn", {**cfg, "batch_size": 1}, samples=samples)
    assert (tmp_path / "b3.mnn").read_bytes() == (tmp_path / "b1.mnn").read_bytes()


def test_sequence_samples_in_either_layout_give_the_same_file(zoo, tmp_path):
    """Sequence samples are read in the declared layout (MNN), or in NCHW order with layout="nchw"."""
    from mnnlite.layout import input_specs

    src = zoo.model_path("blazeface", "float")
    model = mnnlite.load_model(src)
    assert [(s.shape, s.layout) for s in input_specs(model, "model")] == [((1, 128, 128, 3), "NHWC")]
    assert [(s.shape, s.layout) for s in input_specs(model, "nchw")] == [((1, 3, 128, 128), "NCHW")]
    images = image_feeds("blazeface")[:4]
    outputs = {}
    for layout in ("model", "nchw"):
        folder = tmp_path / layout
        folder.mkdir()
        for k, feeds in enumerate(images):
            x = feeds["input"] if layout == "model" else feeds["input"].transpose(0, 3, 1, 2)
            np.save(folder / f"{k}.npy", np.ascontiguousarray(x))
        cfg = {"input_type": "sequence", "path": str(folder), "feature_quantize_method": "KL"}
        out = tmp_path / f"{layout}.mnn"
        mnnlite.quantize(src, out, cfg, layout=layout)
        outputs[layout] = out.read_bytes()
    assert outputs["model"] == outputs["nchw"]
    with pytest.raises(mnnlite.errors.ConfigError, match="layout must be one of"):
        mnnlite.quantize(src, tmp_path / "x.mnn", cfg, layout="nhwc")
