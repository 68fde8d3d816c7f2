"""Our int8 execution against the official MNN runtime on every quantized zoo file, on held-out images.

Budget per output: max abs diff <= one quantization step (the output's scale; for a float output, the
largest scale of the int8 tensors it is computed from) and cosine >= 0.99999.  In practice outputs are
bit-identical except where a float kernel (softmax, sigmoid) differs from MNN's by float rounding.

Documented oracle quirks handled here:
* cnn quant_kl: MNN runs the PReLU's LESS in int8 and the Select then reads its int32 output buffer,
  of which the int8 kernel wrote only the first quarter (mnnlite.int8.ops.packed_int_output).  The rest
  is memory MNN never wrote: zero in a fresh process, garbage after earlier runs in the same process.
  Files with such a command (``needs_fresh_process``) get a fresh child process per image.
* ppocr_det (model_zoo.ORACLE_ACCURACY_NOTES): its quantized files are far from the float model in
  the oracle itself; that is about accuracy, not agreement -- mnnlite reproduces the same outputs, so
  no exception is needed here (see test_validate_cli.py for the accuracy side).
"""
from __future__ import annotations

import importlib.util
import io

import numpy as np
import pytest

import model_zoo as zoo
from oracle.compare import compare, needs_fresh_process
from mnnlite.int8 import int8_plan
from mnnlite.runtime import Interpreter
from oracle import run_oracle, run_oracle_isolated

MIN_COSINE = 0.99999
# a difference of exactly one step, computed from float32 dequantized values, may exceed the float32
# scale by rounding: allow that much
STEP_ROUNDING = 1e-5
VARIANTS = ("quant_kl", "quant_ema")
CASES = [(n, v) for n in zoo.model_names() for v in VARIANTS if v in zoo.variants_for(n)]


def _check_model(path, name, images):
    interp = Interpreter(path)
    graph = interp.model.graph
    fresh = needs_fresh_process(int8_plan(interp, images[0]))
    worst = {}
    for k, feeds in enumerate(images):
        ours = interp.run(feeds)
        theirs = run_oracle_isolated(path, feeds) if fresh else run_oracle(path, feeds)
        for out, (diff, budget, cos) in compare(ours, theirs, graph).items():
            assert diff <= budget * (1 + STEP_ROUNDING), (f"{name} image {k} output {out!r}: max abs diff "
                                                          f"{diff:.6g} exceeds one quantization step {budget:.6g}")
            assert cos >= MIN_COSINE, f"{name} image {k} output {out!r}: cosine {cos:.7f} < {MIN_COSINE}"
            prev = worst.get(out, (0.0, budget, 1.0))
            worst[out] = (max(prev[0], diff), budget, min(prev[2], cos))
    return worst


@pytest.mark.oracle
@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_int8_outputs_match_official_runtime(mnn_oracle, name, variant):
    _check_model(zoo.model_path(name, variant), name, zoo.image_feeds(name))


# Our own quantizer's files (mnnlite.quant.quantize, when it exists) must run the same way.
OWN_CASES = ([(n, v) for n in ("cnn", "nhwc_like", "ppocr_cls", "blazeface") for v in VARIANTS]
             if importlib.util.find_spec("mnnlite.quant.quantize") else [])


@pytest.mark.oracle
@pytest.mark.parametrize("name, variant", OWN_CASES, ids=[f"{n}-{v}" for n, v in OWN_CASES])
def test_int8_on_our_quantizer_output_matches_official_runtime(mnn_oracle, tmp_path, name, variant):
    from mnnlite.quant.quantize import quantize

    out = tmp_path / f"{name}.{variant}.mnn"
    quantize(str(zoo.quant_source_path(name, variant)), str(out), zoo.quant_config(name, variant), log=io.StringIO())
    _check_model(out, name, zoo.image_feeds(name)[:3])


@pytest.mark.oracle
def test_nonzero_zero_points_and_codes_outside_the_range(mnn_oracle):
    """EMA files carry asymmetric attributes (zero points != 0, min -128 on conv outputs): the int8
    outputs of ppocr_rec's EMA file still agree, including codes -128 moved by int8 Rasters."""
    path = zoo.model_path("ppocr_rec", "quant_ema")
    graph = Interpreter(path).model.graph
    assert any(q.zero != 0 for q in graph.quant_info.values())
    assert any(q.min == -128 for q in graph.quant_info.values())
    _check_model(path, "ppocr_rec", zoo.image_feeds("ppocr_rec")[:2])


def test_float_precision_matches_the_float_runtime(zoo):
    """precision='float' runs the quantized file with dequantized weights, like the float runtime did."""
    path = zoo.model_path("mobilenet", "quant_kl")
    feeds = zoo.image_feeds("mobilenet")[0]
    a = Interpreter(path, precision="float").run(feeds)
    b = Interpreter(path).run(feeds)
    assert a.keys() == b.keys()
    assert not np.array_equal(a["logits"], b["logits"])      # int8 differs from float
    np.testing.assert_allclose(a["logits"], b["logits"], atol=1.0)
