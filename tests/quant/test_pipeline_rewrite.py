"""The model rewrite (docs/mnn-quantization.md §6.7, §8): given the oracle's scales, we write the oracle's file.

Every table the official quantizer writes — int8 conv weights (IDSTQuan codes, alpha, scaleIn/Out,
quantScale), symmetricQuan, inputCount, the UnaryOp lookup tables, the sorted extraTensorDescribe — must
come out equal when our rewrite is given the same tensor scales.
"""
from __future__ import annotations

import numpy as np
import pytest
from test_pipeline_oracle import calib_config, oracle_quant

import mnnlite
from mnnlite.format.tables import OpType, UnaryOpOperation
from mnnlite.ops.weights import conv_weights
from mnnlite.quant.rewrite import ConvQuant, TensorQuant, rewrite, unary_table
from mnnlite.quant.weight import fake_quant_weights, quantize_weights


def _rewrite_like(float_model, oracle, method="MAX_ABS"):
    tensors = {t: TensorQuant(q.scale, q.zero, q.min, q.max) for t, q in oracle.graph.quant_info.items()}
    convs = {}
    for pos, (op, ref) in enumerate(zip(float_model.graph.ops, oracle.graph.ops)):
        q = getattr(ref.main, "quanParameter", None)
        if q is None or op.type not in (OpType.Convolution, OpType.ConvolutionDepthwise, OpType.Deconvolution):
            continue
        w, _ = conv_weights(op)
        w = np.asarray(w, np.float32).reshape(int(op.main.common.outputCount), -1)
        if op.type != OpType.Deconvolution:
            w = fake_quant_weights(w, 127)
        codes, alpha = quantize_weights(w, method, 8, 127)
        convs[pos] = ConvQuant(codes, alpha, 8, q.scaleIn, q.scaleOut, int(ref.main.common.inputCount))
    return rewrite(float_model, tensors, convs)


@pytest.mark.parametrize("name", ["cnn", "ppocr_cls", pytest.param("ppocr_det", marks=pytest.mark.slow)])
def test_rewrite_reproduces_the_oracle_file(zoo, name):
    oracle = mnnlite.load_model(oracle_quant(name, calib_config(name)))
    source = mnnlite.load_model(zoo.model_path(name, "float"))
    ours = _rewrite_like(source, oracle)
    for a, b in zip(ours.net.oplists, oracle.net.oplists):
        assert a == b, a.name
    assert ours.net.extraTensorDescribe == oracle.net.extraTensorDescribe
    assert ours.net == oracle.net
    # loads back from our bytes, and the source model object is untouched
    assert mnnlite.loads(mnnlite.dumps(ours)).net == oracle.net
    assert source.net == mnnlite.load_model(zoo.model_path(name, "float")).net


def test_unary_tables_equal_the_oracle(zoo):
    """tableInt8 of every quantized UnaryOp (HARDSWISH, SIGMOID here) from the tensors' scales."""
    oracle = mnnlite.load_model(oracle_quant("ppocr_cls", calib_config("ppocr_cls")))
    qi = oracle.graph.quant_info
    checked = set()
    for op in oracle.graph.ops:
        if op.type == OpType.UnaryOp and op.main.tableInt8 is not None:
            i, o = int(op.inputIndexes[0]), int(op.outputIndexes[0])
            table = unary_table(op.main.opType, qi[i].scale, qi[i].zero, qi[o].scale, qi[o].zero)
            assert np.array_equal(table, op.main.tableInt8), op.name
            checked.add(UnaryOpOperation(op.main.opType).name)
    assert "HARDSWISH" in checked


def test_sigmoid_and_tanh_become_unary_ops():
    """OpType Sigmoid/TanH -> UnaryOp SIGMOID/TANH with a table (docs/mnn-quantization.md §6.7)."""
    from mnnlite.format.tables import TABLE_CLASSES

    Net, Op, Input = TABLE_CLASSES["Net"], TABLE_CLASSES["Op"], TABLE_CLASSES["Input"]
    net = Net(tensorName=["x", "y", "z"], oplists=[
        Op(name="x", type=OpType.Input, outputIndexes=[0], main=Input(dims=[1, 4], dtype=1, dformat=0)),
        Op(name="s", type=OpType.Sigmoid, inputIndexes=[0], outputIndexes=[1]),
        Op(name="t", type=OpType.TanH, inputIndexes=[1], outputIndexes=[2])], outputName=["z"])
    model = mnnlite.Model(net)
    q = rewrite(model, {0: TensorQuant(0.05), 1: TensorQuant(1 / 127), 2: TensorQuant(1 / 127)}, {})
    s, t = q.net.oplists[1], q.net.oplists[2]
    assert s.type == t.type == OpType.UnaryOp
    assert (s.main.opType, t.main.opType) == (UnaryOpOperation.SIGMOID, UnaryOpOperation.TANH)
    x = (np.arange(-127, 128) * 0.05).astype(np.float32)
    expect = np.clip(np.round(1 / (1 + np.exp(-x.astype(np.float64))) * 127), -127, 127)
    assert np.abs(s.main.tableInt8.astype(int) - expect).max() <= 1
    assert model.net.oplists[1].type == OpType.Sigmoid                     # the source is not modified
    assert [d.index for d in q.net.extraTensorDescribe] == [0, 1, 2]


def test_conv_quant_fields():
    """quantScale is always 1 (an absent field reads 0 and zeroes the weights, docs/mnn-format.md §5.2)."""
    from mnnlite.quant.rewrite import encode_conv

    codes = np.array([[1, -2, 127, 0], [0, 0, 0, 0]], np.int8)
    quan, sym = encode_conv(ConvQuant(codes, np.array([0.5, 0.0], np.float32), 8, 0.1, 0.2))
    assert quan.quantScale == 1.0 and quan.scaleIn == np.float32(0.1) and quan.aMaxOrBits == 8
    assert (sym.clampMin, sym.clampMax, sym.nbits) == (-127, 127, 8)
    from mnnlite.format import idst
    assert np.array_equal(idst.decode_codes(quan.buffer, quan.type, alpha=quan.alpha)[1], codes)
    quan4, sym4 = encode_conv(ConvQuant(np.clip(codes, -7, 7), np.array([0.5, 0.0], np.float32), 4, 0.1, 0.2))
    assert (sym4.clampMin, sym4.clampMax, quan4.type) == (-7, 7, idst.DENSE)
