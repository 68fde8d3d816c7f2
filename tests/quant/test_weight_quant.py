"""Weight quantization: numpy re-derivations of docs/mnn-quantization.md §6.2/§8/§9 and MNN's quantizer as the oracle."""
import math

import numpy as np
import pytest

from oracle import convert_onnx, quantize
from quant_helpers import conv_relu_conv, convs, load, make_images, needs_oracle
from mnnlite.format import idst
from mnnlite.quant import weight as wq

F = np.float32


def _roundf(v):
    """C roundf for a float32 value (|v| + 0.5 is exact in double precision)."""
    return F(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def ref_fake_quant(w, clamp):
    """Doc §6.2 written out element by element in float32."""
    out = np.empty_like(w)
    for o in range(w.shape[0]):
        m = F(max(abs(v) for v in w[o]))
        s = m if m < F(1e-6) else m / F(clamp)
        for k, v in enumerate(w[o]):
            out[o, k] = v if s == 0 else F(min(max(_roundf(v / s), -F(clamp)), F(clamp)) * s)
    return out


def ref_admm(w, clamp, iters=1000):
    """quantizeWeight.cpp: InitAlpha, then `iters` x (UpdateQuantizedWeights, UpdateAlpha), scalar float32."""
    def init(row):
        if clamp > 1:
            return F(float(max(abs(v) for v in row)) / (clamp * 1.25))
        total = F(0)
        for v in row:
            total = F(total + abs(v))
        return F(total / F(len(row)))
    alpha = [init(row) for row in w]
    c = F(clamp)
    for _ in range(iters):
        new = []
        for o, row in enumerate(w):
            q = [min(c, max(-c, _roundf(v / (alpha[o] + F(1e-9))))) for v in row]
            s1 = s2 = F(0)
            for v, qq in zip(row, q):
                s1 = F(s1 + v * qq)
                s2 = F(s2 + qq * qq)
            new.append(F(s1 / (s2 + F(1e-9))))
        alpha = new
    return np.array(alpha, F)


@pytest.fixture(scope="module")
def w():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 27)) * rng.uniform(0.01, 2, (6, 1))).astype(F)
    w[1] = 0                        # all-zero channel
    w[4, :] *= F(1e-7)              # max below 1e-6: s = max
    return w


def test_fake_quant_matches_doc(w):
    for clamp in (127, 7):
        assert np.array_equal(wq.fake_quant_weights(w, clamp), ref_fake_quant(w, clamp))
    assert np.isfinite(wq.fake_quant_weights(w, 127)).all()            # MNN: NaN on the zero channel


@pytest.mark.parametrize("bits", range(2, 9))
def test_max_abs(w, bits):
    limit = (1 << (bits - 1)) - 1
    codes, alpha = wq.quantize_weights(w, "MAX_ABS", bits)
    assert np.array_equal(alpha, (np.abs(w).max(axis=1) / F(limit)).astype(F))
    ok = alpha > 1e-6
    expect = np.clip(np.vectorize(_roundf)(w[ok] / alpha[ok, None]), -limit - 1, limit)
    assert np.array_equal(codes[ok], expect) and not codes[~ok].any()
    assert codes.dtype == np.int8 and np.abs(codes).max() <= limit and np.isfinite(alpha).all()


@pytest.mark.parametrize("clamp", [127, 31, 7, 3, 1])
def test_admm_matches_1000_scalar_iterations(clamp):
    rng = np.random.default_rng(clamp)
    w = rng.standard_normal((3, 12)).astype(F)
    w[2] = 0
    iters = 1000 if clamp == 127 else 200
    assert np.array_equal(wq.admm_alpha(w, clamp, iters), ref_admm(w, clamp, iters))


def test_admm_codes_may_reach_minus_2_pow_bits(w):
    codes, alpha = wq.quantize_weights(w, "ADMM", 4)
    assert codes.min() >= -8 and codes.max() <= 7 and np.isfinite(alpha).all() and alpha[1] == 0


def test_ema_weight_quant(w):
    codes, scale = wq.ema_weight_quant(w, 8)
    s = np.maximum(np.abs(w).max(axis=1), F(1e-6)) * (F(1) / F(127))
    assert np.array_equal(scale, s)
    assert np.array_equal(codes, np.clip(np.vectorize(_roundf)(w * (F(1) / s)[:, None]), -127, 127))


def test_bad_arguments(w):
    with pytest.raises(ValueError, match="MAX_ABS, ADMM"):
        wq.quantize_weights(w, "KL")
    with pytest.raises(ValueError, match="2..8"):
        wq.quantize_weights(w, bits=9)
    with pytest.raises(ValueError, match=r"\[outputCount, kernelSize\]"):
        wq.max_abs_alpha(np.zeros(5), 127)


# ---------------------------------------------------------------------------------------- the oracle

@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wq")
    init = conv_relu_conv(d / "m.onnx", seed=3, zero_channel=True)
    convert_onnx(d / "m.onnx", d / "m.mnn")
    make_images(d / "imgs", count=4)
    return d, {"c1": init["W1"], "y": init["W2"]}


BASE = {"format": "RGB", "mean": [127.5] * 3, "normal": [0.01] * 3, "width": 16, "height": 16, "path": "imgs"}


def _stored(conv):
    quan = conv.quanParameter
    _, codes = idst.decode_codes(quan.buffer, quan.type, shape_int32=bool(quan.shapeInt32), alpha=quan.alpha)
    return codes, np.asarray(quan.alpha, F), quan


@needs_oracle
@pytest.mark.parametrize("method,bits,clamp_key", [
    ("MAX_ABS", 8, False), ("ADMM", 8, False), ("MAX_ABS", 4, True), ("ADMM", 6, True), ("MAX_ABS", 2, True)])
def test_weights_equal_mnn(oracle_dir, method, bits, clamp_key):
    d, weights = oracle_dir
    cfg = {**BASE, "weight_quantize_method": method, "quant_bits": bits}
    if clamp_key:
        cfg["weight_clamp_value"] = 127                    # MNN replaces it by 2^(bits-1)-1 when bits < 8
    name = f"w_{method}_{bits}.mnn"
    quantize("m.mnn", name, cfg, cwd=d)
    limit = (1 << (bits - 1)) - 1
    for op, conv in convs(load(d / name)).items():
        codes, alpha, quan = _stored(conv)
        w = weights[op].reshape(len(alpha), -1)
        ours_codes, ours_alpha = wq.quantize_weights(wq.fake_quant_weights(w, limit), method, bits, limit)
        ok = np.isfinite(alpha)
        assert np.array_equal(alpha[ok], ours_alpha[ok]), op          # bit-exact alpha
        assert np.array_equal(codes[ok], ours_codes[ok]), op          # bit-exact codes
        assert (quan.aMaxOrBits, conv.symmetricQuan.clampMax, conv.symmetricQuan.nbits) == (bits, limit, bits)
        # the all-zero output channel of c1: NaN alpha in MNN (docs/mnn-quantization.md §14.5), 0 and zero codes for us
        assert np.array_equal(~ok, np.abs(w).max(axis=1) == 0)
        assert np.all(ours_alpha[~ok] == 0) and not ours_codes[~ok].any()
        kind, buf = idst.encode(ours_codes, bits, detect_sparse=bits > 7)
        assert (kind, buf) == (quan.type, quan.buffer.tobytes())   # same bytes as MNN's encoder


@needs_oracle
def test_low_bits_without_clamp_key_is_mnns_bug(oracle_dir):
    """Doc §14.4: quant_bits 4 without weight_clamp_value: alpha for ±127, codes clamped to 4 bits."""
    d, weights = oracle_dir
    quantize("m.mnn", "w_bug.mnn", {**BASE, "quant_bits": 4}, cwd=d)
    conv = convs(load(d / "w_bug.mnn"))["y"]
    codes, alpha, _ = _stored(conv)
    w = weights["y"].reshape(len(alpha), -1)
    assert np.array_equal(alpha, wq.max_abs_alpha(wq.fake_quant_weights(w, 127), 127))
    assert codes.min() == -8 and codes.max() == 7                   # most weights saturate
    ours_codes, ours_alpha = wq.quantize_weights(wq.fake_quant_weights(w, 7), "MAX_ABS", 4)
    assert np.abs(ours_codes * ours_alpha[:, None] - w).max() <= ours_alpha.max() / 2 + 1e-6


def test_ema_admm_weights_never_fit_worse_than_max_abs():
    """EMA's ADMM codes keep MNN's ADMM alpha per channel only where its squared error is smaller, else
    MAX_ABS (MNN's iteration can settle clipping a dominant weight hard; ppocr_det collapsed on it)."""
    from mnnlite.quant.simulate import ema_weight_codes
    from mnnlite.quant.weight import admm_alpha, encoder_codes

    rng = np.random.default_rng(11)
    w = (rng.laplace(size=(64, 9)) * rng.choice([0.01, 1.0], (64, 1))).astype(np.float32)
    w[5] = 0                                             # all-zero channel
    q_max, s_max = ema_weight_codes(w, 127, "MAX_ABS")
    q, s = ema_weight_codes(w, 127, "ADMM")
    err = np.square(q * s[:, None].astype(np.float64) - w).sum(axis=1)
    err_max = np.square(q_max * s_max[:, None].astype(np.float64) - w).sum(axis=1)
    assert (err <= err_max).all() and q.dtype == np.int8 and np.isfinite(s).all()
    alpha = admm_alpha(w, 127)
    codes = np.clip(encoder_codes(w, alpha, 8), -127, 127)
    worse = np.square(codes * alpha[:, None].astype(np.float64) - w).sum(axis=1) >= err_max
    assert worse.any() and (~worse).any()                # both cases occur in this draw
    assert np.array_equal(s[worse], s_max[worse]) and np.array_equal(q[worse], q_max[worse])
    assert np.array_equal(s[~worse], alpha[~worse]) and np.array_equal(q[~worse], codes[~worse])
