"""EMA path acceptance against the official quantizer (docs/mnn-quantization.md §9).

``quantized.out`` crashes in EMA mode on models with dynamic input dims ("Invalid Tensor, the session may
not be ready": EMA builds its batches from the model's declared dims), which all zoo models have, so the
oracle quantizes a copy with the dims fixed to the calibration size; we quantize the same copy.
winogradOpt is off on both sides: we always write direct int8 convs (README: deviations).

The EMA simulation fake-quantizes every conv's input and output, so a last-bit difference between our
float kernels and MNN's could flip one rounding and move a range; calibration runs with ``impl="mnn"``
(MNN's float rounding), and the scales and zero points are the oracle's.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_pipeline_oracle import (calib_config, conv_params, fidelity, fixed_shape_model, image_feeds, no_worse,
                                  oracle_quant, our_quant, rel)

import mnnlite
from mnnlite.format.tables import OpType
from oracle import convert_onnx, run_oracle

TOL = 1e-5


def _cfg(name):
    return calib_config(name, "EMA", winogradOpt=False)


@pytest.mark.parametrize("name", ["cnn", "nhwc_like", "blazeface", pytest.param("mobilenet", marks=pytest.mark.slow),
                                  pytest.param("ppocr_cls", marks=pytest.mark.slow)])
def test_ema_matches_oracle(zoo, name):
    src = fixed_shape_model(name)
    ours_path, report = our_quant(name, _cfg(name), src=src)
    theirs_path = oracle_quant(name, _cfg(name), src=src)
    ours, theirs = conv_params(ours_path), conv_params(theirs_path)
    assert len(ours) == len(theirs) == len(report.quantized_ops)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert max(rel(a[0], b[0]), rel(a[2], b[2])) <= TOL and a[1] == b[1] and a[3] == b[3], (k, a, b)
    # the same quant info on the same number of tensors (MNN renames tensors: compare the sorted lists)
    qa = sorted((q.min, q.zero, q.scale) for q in mnnlite.load_model(ours_path).graph.quant_info.values())
    qb = sorted((q.min, q.zero, q.scale) for q in mnnlite.load_model(theirs_path).graph.quant_info.values())
    assert len(qa) == len(qb)
    assert all(x[:2] == y[:2] and rel(x[2], y[2]) <= TOL for x, y in zip(qa, qb))
    # (a) the official runtime runs our file; (c) fidelity on held-out images
    out = run_oracle(ours_path, image_feeds(name, "heldout")[0])
    assert all(np.isfinite(v).all() for v in out.values())
    assert no_worse(fidelity(name, ours_path), fidelity(name, theirs_path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ppocr_det", "ppocr_rec"])
def test_ema_matches_oracle_on_ppocr(zoo, name):
    """Every conv's EMA parameters are the oracle's, except where the oracle's are NaN or infinite:
    ppocr_det's SE block conv2d_492 has a ReLU output that is all zero on two calibration images (scale 0,
    zero point NaN); MNN then feeds NaN on (reproduced: the layers after it see what MNN's see) and its
    averages for that output and the next conv's become NaN / infinite, where ours stay finite."""
    src = fixed_shape_model(name)
    ours_path, _ = our_quant(name, _cfg(name), src=src)
    theirs_path = oracle_quant(name, _cfg(name), src=src)
    ours, theirs = conv_params(ours_path), conv_params(theirs_path)
    assert len(ours) == len(theirs)
    degenerate = 0
    for k, (a, b) in enumerate(zip(ours, theirs)):
        for s_a, z_a, s_b, z_b in ((a[0], a[1], b[0], b[1]), (a[2], a[3], b[2], b[3])):
            if not np.isfinite(s_b):
                degenerate += 1
                assert np.isfinite(s_a) and s_a > 0, (k, a, b)
            else:
                assert rel(s_a, s_b) <= TOL and z_a == z_b, (k, a, b)
    assert degenerate == (3 if name == "ppocr_det" else 0)


def test_ema_output_form(zoo):
    """Asymmetric quant info on conv inputs (min -127) and outputs (min -128, Int8ToFloat's default, unless
    only int8 convs read them), a chained conv reads its producer's output parameters, names/outputs/bizCode
    kept (docs/mnn-quantization.md §9.7-9.9)."""
    src = fixed_shape_model("cnn")
    path, _ = our_quant("cnn", _cfg("cnn"), src=src)
    model = mnnlite.load_model(path)
    g, qi = model.graph, model.graph.quant_info
    source = mnnlite.load_model(src)
    assert model.net.bizCode == source.net.bizCode and model.net.outputName == source.net.outputName
    convs = [op for op in g.ops if op.main is not None and getattr(op.main, "quanParameter", None) is not None]
    outputs = {int(op.outputIndexes[0]): op for op in convs}
    for op in convs:
        i, o = int(op.inputIndexes[0]), int(op.outputIndexes[0])
        q, s = op.main.quanParameter, op.main.symmetricQuan
        readers = g.consumers[o]
        only_convs = all(r in convs for r in readers) and o not in g.outputs
        assert qi[o].min == (-127 if only_convs else -128) and qi[o].max == 127 and qi[o].zero == s.outputZeroPoint
        assert qi[i].min == -127 or i in outputs
        assert rel(q.scaleIn, qi[i].scale) < 1e-6 and s.zeroPoint == qi[i].zero      # describe: 1/(1/s)
        assert q.quantScale == 1.0 and s.clampMin == -127 and s.clampMax == 127
        assert op.main.weight is None
    assert any(int(op.inputIndexes[0]) in outputs for op in convs)          # conv_3 -> depthwise
    deconv = [op for op in g.ops if op.type == OpType.Deconvolution]
    assert deconv and all(op.main.quanParameter is None for op in deconv)   # stays float


def test_ema_dynamic_model_uses_config_size(zoo):
    """With dynamic dims (where quantized.out crashes) we calibrate at the config's width x height."""
    path, report = our_quant("cnn", _cfg("cnn"))
    assert report.feature_method == "EMA" and report.quantized_ops
    fixed_path, _ = our_quant("cnn", _cfg("cnn"), src=fixed_shape_model("cnn"))
    assert conv_params(path) == conv_params(fixed_path)


def test_batchnorm_model_switches_to_ema_and_folds(zoo, tmp_path):
    """A model kept with its BatchNorms (``--forTraining``) is quantized with EMA whatever the config says
    (docs/mnn-quantization.md §2); each conv + BN (+ ReLU6) becomes one int8 conv with the BN folded in (running statistics)."""
    import io
    from collections import Counter

    from mnnlite.quant.quantize import quantize
    from test_pipeline_oracle import fidelity

    src = tmp_path / "bn.mnn"
    convert_onnx(zoo.onnx_path("mobilenet"), src, "--forTraining")
    types = Counter(OpType(op.type).name for op in mnnlite.load_model(src).graph.ops)
    assert types["BatchNorm"] > 0 and types["ReLU6"] > 0
    log = io.StringIO()
    report = quantize(src, tmp_path / "q.mnn", calib_config("mobilenet", "KL"), log=log)
    assert report.feature_method == "EMA" and "] this model has BatchNorm" in log.getvalue()
    out = Counter(OpType(op.type).name for op in mnnlite.load_model(tmp_path / "q.mnn").graph.ops)
    assert out["BatchNorm"] == 0 and out["ReLU6"] == 0
    assert len(report.quantized_ops) == types["Convolution"] + types["ConvolutionDepthwise"]
    assert fidelity("mobilenet", tmp_path / "q.mnn") > 0.999       # against the BN-folded float model
