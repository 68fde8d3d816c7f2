"""Every fixture model and variant: read, write, read again equal; the official runtime gives
bit-identical outputs on our re-written file."""
import numpy as np
import pytest

import mnnlite
from mnnlite.runtime import Interpreter
from model_zoo import model_names, model_path, random_feeds, variants_for
from oracle import run_oracle

CASES = [(name, variant) for name in model_names() for variant in variants_for(name)]
# Files on which MNN's int8 kernels read bytes they never wrote (cnn quant_kl: an int8 kernel writing an int32
# tensor, tests/int8): what they find depends on the heap layout of the process, even a fresh one (the
# length of the model's path changed it; 7 of 10 probabilities moved by up to 0.008 after an unrelated merge).
MNN_READS_UNWRITTEN_MEMORY = {("cnn", "quant_kl")}


@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}-{v}" for n, v in CASES])
def test_round_trip_bit_identical(name, variant, tmp_path):
    src = model_path(name, variant)
    model = mnnlite.load_model(src)
    out = tmp_path / "rewritten.mnn"
    mnnlite.save_model(model, out)
    assert mnnlite.load_model(out) == model

    feeds = random_feeds(name)
    if (name, variant) in MNN_READS_UNWRITTEN_MEMORY:
        # the official runtime's output is not a function of the model here: judge the rewrite by our
        # runtime, which reads only what it wrote (the decoded models are equal, asserted above)
        expected, got = Interpreter(src).run(feeds), Interpreter(out).run(feeds)
    else:
        expected, got = run_oracle(src, feeds), run_oracle(out, feeds)
    assert expected.keys() == got.keys()
    for key in expected:
        assert expected[key].dtype == got[key].dtype
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}/{variant} output {key}")



@pytest.mark.parametrize("name", ["cnn", "ppocr_rec"])
def test_external_weights_are_read_inline(name):
    external = mnnlite.load_model(model_path(name, "external"))
    inline = mnnlite.load_model(model_path(name, "float"))
    assert external.external_weights and external.external_weights.endswith(".mnn.weight")
    assert inline.external_weights is None
    # same weights, now inline; only the converter's random uuid may differ
    external.net.mnn_uuid = inline.net.mnn_uuid
    assert external == inline
