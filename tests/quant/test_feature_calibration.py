"""Feature calibration (KL, ADMM, EMA): numpy re-derivations of the doc's formulas and MNN as the oracle.

Oracle tests quantize small conv models with ``quantized.out`` and compare the per-tensor scales it writes
with what our observers compute on the same float activations, captured from the MNN runtime on inputs
produced by our own CalibrationSet (so preprocessing is covered end to end).
"""
import math

import numpy as np
import pytest

from mnnlite.quant.config import load_config
from mnnlite.quant.dataset import CalibrationSet
from mnnlite.quant.feature import DEVIATIONS, FEATURE_METHODS, QuantParams, calibrate
from mnnlite.quant.feature import ema as ema_mod
from mnnlite.quant.feature import kl as kl_mod
from mnnlite.quant.weight import ema_weight_quant
from oracle import convert_onnx, quantize
from oracle.runtime import capture
from oracle.tools import dump_scales, scale_dump
from quant_helpers import conv3x3, conv_relu_conv, convs, load, make_images, nc4hw4_input_model, needs_oracle, packed_order

F = np.float32
KL_TOL, EMA_TOL, ADMM_TOL = 1e-5, 1e-5, 1e-3      # relative, as agreed for oracle comparisons


def _roundf(v):
    return F(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def _rel(a, b):
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------------------------- KL

def test_registry_and_interface():
    assert sorted(FEATURE_METHODS) == ["ADMM", "EMA", "KL"] and len(DEVIATIONS) >= 4
    assert [FEATURE_METHODS[m].passes for m in ("KL", "ADMM", "EMA")] == [2, 2, 1]
    assert FEATURE_METHODS["ADMM"](summary="exact").passes == 1
    obs = FEATURE_METHODS["EMA"]()
    with pytest.raises(ValueError, match="1 pass"):
        obs.start_pass(1)
    with pytest.raises(ValueError, match="clamp_value"):
        FEATURE_METHODS["KL"](clamp_value=0)
    for name in FEATURE_METHODS:                        # never seen / all zero: scale 0, never NaN
        assert FEATURE_METHODS[name]().compute() == QuantParams(0.0, 0)
        assert calibrate(FEATURE_METHODS[name](), lambda: iter([np.zeros((2, 3, 10, 10))])) == (0.0, 0)


def test_bin_values_follow_float32_increments():
    for k in range(6):
        v = F(1e-7)
        for _ in range(k):
            v = F(v + F(1))
        assert kl_mod.bin_values(np.array([k]))[0] == v
    assert F(F(1 << 24) + F(1)) == F(1 << 24)            # counts saturate at 2^24 in float32
    assert kl_mod.bin_values(np.array([(1 << 24) + 5]))[0] == F(1 << 24)


def ref_kl_threshold(hist, target=128):
    """Doc §6.5 pseudo-code, scalar float32, sequential sums."""
    n = len(hist)
    tail = F(0)
    for v in hist[target:]:
        tail = F(tail + v)
    best, thr = F(10000), target
    for i in range(target, n):
        p = [F(v) for v in hist[:i]]
        p[i - 1] = F(p[i - 1] + tail)
        tail = F(tail - hist[i])
        w = F(i) / F(target)
        q, e = [F(0)] * target, [F(0)] * i
        spans = []
        for j in range(target):
            a = F(j * w)
            b = F(a + w)
            lo, hi = math.ceil(a), math.floor(b)
            spans.append((a, b, lo, hi))
            if lo > a:
                q[j] = F(q[j] + F(F(lo - a) * hist[lo - 1]))
            if hi < b:
                q[j] = F(q[j] + F(F(b - hi) * hist[hi]))
            for k in range(lo, hi):
                q[j] = F(q[j] + hist[k])
        for j, (a, b, lo, hi) in enumerate(spans):
            cnt = F(0)
            if lo > a and hist[lo - 1] != 0:
                cnt = F(cnt + F(lo - a))
            if hi < b and hist[hi] != 0:
                cnt = F(cnt + F(b - hi))
            cnt = F(cnt + sum(1 for k in range(lo, hi) if hist[k] != 0))
            if cnt == 0:
                continue
            v = F(q[j] / cnt)
            if lo > a and hist[lo - 1] != 0:
                e[lo - 1] = F(e[lo - 1] + F(v * F(lo - a)))
            if hi < b and hist[hi] != 0:
                e[hi] = F(e[hi] + F(v * F(b - hi)))
            for k in range(lo, hi):
                if hist[k] != 0:
                    e[k] = F(e[k] + v)
        kl = F(0)
        for pk, ek in zip(p, e):
            if pk != 0:
                kl = F(kl + (F(1) if ek == 0 else F(pk * F(math.log(F(pk / ek))))))
        if kl < best:
            best, thr = kl, i
    return thr


@pytest.mark.parametrize("seed,bins", [(0, 256), (1, 300), (2, 384)])
def test_kl_threshold_matches_doc_pseudocode(seed, bins):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal(20000) * rng.choice([0.3, 1, 3], 20000))
    counts = np.bincount(np.minimum((x / x.max() * bins).astype(int), bins - 1), minlength=bins)
    hist = kl_mod.bin_values(counts)
    hist = (hist / np.cumsum(hist, dtype=F)[-1]).astype(F)
    assert kl_mod.kl_threshold(hist) == ref_kl_threshold(hist)


def test_kl_observer_formula_max_rule_and_grouping():
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((1, 4, 12, 12)).astype(F) * 3 for _ in range(5)]
    s = calibrate(FEATURE_METHODS["KL"](), lambda: iter(xs))
    assert calibrate(FEATURE_METHODS["KL"](), lambda: iter([np.concatenate(xs)])) == s   # grouping-free
    flat = np.concatenate([x.ravel() for x in xs])
    max_abs = F(max(abs(flat.max()), abs(flat.min())))
    interval = F(2048) / max_abs
    a = np.abs(flat)
    counts = np.bincount(np.minimum((a[a > F(1e-6)] * interval).astype(int), 2047), minlength=2048)
    hist = kl_mod.bin_values(counts)
    hist = hist / np.cumsum(hist, dtype=F)[-1]
    thr = kl_mod.kl_threshold(hist)
    assert 128 <= thr < 2047 and s.scale == float(F((thr + 0.5) / float(interval) / 127.0)) and s.zero == 0
    # H*W < 100, rank < 4, NHWC, and forced MAX all use threshold 2047
    expect_max = float(F(2047.5 / float(interval) / 127.0))
    assert calibrate(FEATURE_METHODS["KL"](threshold="MAX"), lambda: iter(xs)).scale == expect_max
    small = [x[:, :, :9, :9] for x in xs]
    assert kl_mod.uses_max_threshold((1, 4, 9, 9)) and not kl_mod.uses_max_threshold((1, 4, 10, 10))
    assert kl_mod.uses_max_threshold((8, 1000)) and kl_mod.uses_max_threshold((1, 3, 99))
    assert not kl_mod.uses_max_threshold((1, 40, 120))   # missing dims read as 1 (MNN pads them): KL
    assert not kl_mod.uses_max_threshold((1, 10, 10, 4), "NHWC") and kl_mod.uses_max_threshold((1, 10, 9, 200), "NHWC")
    obs = FEATURE_METHODS["KL"]()
    calibrate(obs, lambda: iter(small))
    assert obs.compute().scale == float(F(2047.5 / float(obs._interval()) / 127.0))
    assert calibrate(FEATURE_METHODS["KL"](), lambda: iter([np.full((1, 1, 10, 10), 1e-6, F)])) == (0.0, 0)


# --------------------------------------------------------------------------------------------- EMA

def ref_ema(batches, clamp=127):
    """Doc §9 fake-quant / nudged range / moving average, scalar float32."""
    lo = hi = None
    c = F(clamp)
    for b in batches:
        mn, mx = min(F(0), F(b.min())), max(F(0), F(b.max()))
        s = F(F(mx - mn) / F(2 * c))
        z = _roundf(F(F(F(0) - mn) / s) - c)
        nmin, nmax = min(F(0), F(F(-c - z) * s)), max(F(0), F(F(c - z) * s))
        if lo is None:
            lo, hi = nmin, nmax
        else:
            lo = F(F(lo * F(0.99)) + F(nmin * F(F(1) - F(0.99))))
            hi = F(F(hi * F(0.99)) + F(nmax * F(F(1) - F(0.99))))
    mn, mx = min(F(0), lo), max(F(0), hi)
    s = F(F(mx - mn) / F(2 * c))
    return float(s), int(_roundf(F(F(F(0) - mn) / s) - c))


def test_ema_matches_doc():
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((2, 3, 8, 8)) * rng.uniform(0.5, 3) + rng.uniform(-1, 2)).astype(F)
               for _ in range(7)]
    assert tuple(calibrate(FEATURE_METHODS["EMA"](), lambda: iter(batches))) == ref_ema(batches)
    positive = [np.abs(b) for b in batches]
    assert calibrate(FEATURE_METHODS["EMA"](), lambda: iter(positive)).zero == -127
    x_hat, lo, hi = ema_mod.fake_quantize(batches[0])
    s, z = ema_mod.scale_zero(batches[0].min(), batches[0].max())
    assert np.array_equal(x_hat, s * (np.clip(ema_mod.roundf(batches[0] / s + z), -127, 127) - z))
    # the nudged range is the batch range moved to the grid: by at most half a step
    assert abs(lo - batches[0].min()) <= s / 2 + 1e-6 and abs(hi - batches[0].max()) <= s / 2 + 1e-6
    assert np.abs(x_hat - batches[0]).max() <= s / 2 + 1e-6


def test_ema_degenerate_batches_like_mnn():
    """An all-zero batch has scale 0 and zero point NaN: MNN's fake-quantized values are NaN (downstream
    layers then see what MNN's do; ppocr_det's SE block after a ReLU that zeroes every channel); a batch
    whose nudged range overflows (a conv's clamp turned NaN into -FLT_MAX) is left out of the average
    (MNN's becomes infinite for good)."""
    x_hat, lo, hi = ema_mod.fake_quantize(np.zeros((1, 6, 1, 1), F))
    assert np.isnan(x_hat).all() and lo == 0 and hi == 0
    obs = FEATURE_METHODS["EMA"]()
    obs.update(np.full(6, -np.finfo(F).max, F))
    assert obs.range is None
    obs.update(np.array([-1, 2], F))
    assert obs.range == (float(ema_mod.fake_quantize(np.array([-1, 2], F))[1]),
                         float(ema_mod.fake_quantize(np.array([-1, 2], F))[2]))


# -------------------------------------------------------------------------------------------- ADMM

def ref_admm(x, clamp=127, iters=300):
    """Doc §7 / computeScaleADMM, scalar float32 sequential sums."""
    x = [F(v) for v in x]
    alpha = F(float(max(abs(v) for v in x)) / (clamp * 2.5))
    c = F(clamp)
    for _ in range(iters):
        inv = F(F(1) / alpha)
        s1 = s2 = F(0)
        for v in x:
            q = min(c, max(-c, _roundf(F(v * inv))))
            s1, s2 = F(s1 + F(q * v)), F(s2 + F(q * q))
        alpha = F(s1 / s2)
    return float(alpha)


def test_admm_matches_doc_and_spills_to_disk():
    rng = np.random.default_rng(6)
    xs = [rng.laplace(size=(1, 2, 5, 5)).astype(F) for _ in range(4)]
    ref = ref_admm(np.concatenate([x.ravel() for x in xs]), iters=40)
    assert calibrate(FEATURE_METHODS["ADMM"](iters=40, summary="exact"), lambda: iter(xs)).scale == ref
    on_disk = FEATURE_METHODS["ADMM"](iters=40, summary="exact", ram_limit=64)
    assert calibrate(on_disk, lambda: iter(xs)).scale == ref and on_disk.compute().scale == ref


def test_admm_streams_many_samples():
    rng = np.random.default_rng(7)
    obs = FEATURE_METHODS["ADMM"](iters=5, summary="exact", ram_limit=1 << 12)
    for _ in range(600):                                    # 600 NCHW samples, never stacked
        obs.update(rng.standard_normal((1, 4, 6, 6)).astype(F))
    assert obs.values.file is not None and obs.compute().scale > 0 and obs.values.size == 0


# ------------------------------------------------------------------------------------------ oracle

CFG = {"format": "RGB", "mean": [127.5, 127.5, 127.5], "normal": [0.02, 0.02, 0.02]}


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("feature")
    make_images(d / "imgs", count=8)
    return d


def _model(d, size):
    name = f"m{size}"
    if not (d / f"{name}.mnn").exists():
        init = conv_relu_conv(d / f"{name}.onnx", seed=size, size=size)
        np.savez(d / f"{name}.npz", **init)
        convert_onnx(d / f"{name}.onnx", d / f"{name}.mnn")
    return name, dict(np.load(d / f"{name}.npz"))


def _inputs(d, raw_cfg, specs, batch_size=None):
    cfg = load_config({**raw_cfg, "path": str(d / "imgs")})
    return [b["x"] for b in CalibrationSet(cfg, specs, batch_size=batch_size)]


@needs_oracle
@pytest.mark.parametrize("size", [16, 8])                # 16: KL thresholds; 8: H*W = 64 < 100 -> MAX
def test_kl_scales_equal_mnn(oracle_dir, size):
    d = oracle_dir
    name, _ = _model(d, size)
    raw = {**CFG, "width": size, "height": size, "feature_quantize_method": "KL"}
    quantize(f"{name}.mnn", f"{name}_kl.mnn", {**raw, "path": "imgs"}, cwd=d)
    dump = scale_dump(d / f"{name}_kl.mnn")
    scales = dump_scales(dump)
    xs = _inputs(d, raw, {"x": (1, 3, size, size)})
    acts = capture(d / f"{name}.mnn", xs)
    ops = {op["name"]: op["outputs"][0]["tensorIndex"] for op in dump if op.get("outputs")}
    checks = {"x": xs, "c1": [a[("c1", 0)] for a in acts], "y": [a[("y", 0)] for a in acts]}
    for op, data in checks.items():
        ours = calibrate(FEATURE_METHODS["KL"](), lambda: iter(data))
        assert _rel(ours.scale, scales[ops[op]]) <= KL_TOL, (op, ours.scale, scales[ops[op]])
        assert ours.zero == 0


@needs_oracle
def test_admm_scales_equal_mnn(oracle_dir):
    """MNN's ADMM only runs on NC4HW4-input models and reads packed memory (docs/mnn-quantization.md §14.7): feed our observer
    that raw order to check the arithmetic, and the logical order to check the deviation stays small."""
    d = oracle_dir
    name, _ = _model(d, 16)
    nc4hw4_input_model(d / f"{name}.mnn", d / f"{name}_c4.mnn")
    raw = {**CFG, "width": 16, "height": 16, "feature_quantize_method": "ADMM"}
    quantize(f"{name}_c4.mnn", f"{name}_admm.mnn", {**raw, "path": "imgs"}, cwd=d)
    model = load(d / f"{name}_admm.mnn")
    quant = {d.index: d.quantInfo.scale for d in model.net.extraTensorDescribe if d.quantInfo is not None}
    conv_ops = {op.name: op for _, op in model.all_ops() if op.name in ("c1", "y")}
    xs = _inputs(d, raw, {"x": (1, 3, 16, 16)})
    acts = capture(d / f"{name}.mnn", xs)
    for op in ("c1", "y"):
        batch = np.concatenate([a[(op, 0)] for a in acts])
        mnn = quant[int(conv_ops[op].outputIndexes[0])]
        raw_orders = {p: calibrate(FEATURE_METHODS["ADMM"](summary="exact"), lambda: iter([packed_order(batch, p)])).scale
                      for p in (4, 8, 16)}
        pack = min(raw_orders, key=lambda p: _rel(raw_orders[p], mnn))
        assert _rel(raw_orders[pack], mnn) <= KL_TOL, (op, raw_orders, mnn)
        if batch.shape[1] % pack == 0:                    # no padding: only the element order differs
            logical = calibrate(FEATURE_METHODS["ADMM"](summary="exact"), lambda: iter(list(batch[:, None]))).scale
            assert _rel(logical, mnn) <= ADMM_TOL, (op, logical, mnn)


@needs_oracle
def test_ema_scales_equal_mnn(oracle_dir):
    """Conv1 (+ReLU) and conv2 under EMA (winogradOpt off), batches of 2: the fake-quant chain of docs/mnn-quantization.md §9
    simulated in numpy, compared with the conv's scaleIn/scaleOut and zero points in MNN's file."""
    d = oracle_dir
    name, init = _model(d, 16)
    raw = {**CFG, "width": 16, "height": 16, "feature_quantize_method": "EMA", "batch_size": 2,
           "winogradOpt": False}
    quantize(f"{name}.mnn", f"{name}_ema.mnn", {**raw, "path": "imgs"}, cwd=d)
    mnn_convs = list(convs(load(d / f"{name}_ema.mnn")).values())
    batches = _inputs(d, raw, {"x": (1, 3, 16, 16)})
    assert [b.shape[0] for b in batches] == [2, 2, 2, 2]
    obs = {k: FEATURE_METHODS["EMA"]() for k in ("in1", "out1", "in2", "out2")}
    for x in batches:
        obs["in1"].update(x)
        w1 = _fake_weights(init["W1"])
        h = np.maximum(conv3x3(ema_mod.fake_quantize(x)[0], w1, init["B1"]), 0)
        obs["out1"].update(h)
        h = ema_mod.fake_quantize(h)[0]                   # the fake-quantized output feeds conv2
        obs["in2"].update(h)
        obs["out2"].update(conv3x3(ema_mod.fake_quantize(h)[0], _fake_weights(init["W2"]), init["B2"]))
    for conv, (i, o), w in zip(mnn_convs, (("in1", "out1"), ("in2", "out2")), (init["W1"], init["W2"])):
        s_in, z_in = obs[i].compute()
        s_out, z_out = obs[o].compute()
        quan, sym = conv.quanParameter, conv.symmetricQuan
        assert _rel(s_in, quan.scaleIn) <= EMA_TOL and _rel(s_out, quan.scaleOut) <= EMA_TOL
        assert (z_in, z_out) == (sym.zeroPoint, sym.outputZeroPoint)
        assert np.array_equal(np.asarray(quan.alpha, F), ema_weight_quant(w.reshape(w.shape[0], -1))[1])


def _fake_weights(w):
    codes, scale = ema_weight_quant(w.reshape(w.shape[0], -1))
    return (codes * scale[:, None]).reshape(w.shape).astype(F)


def test_ema_fake_quantize_in_place_is_the_same(monkeypatch):
    """``out=x`` (calibration's memory plan: no second copy of a batch activation) gives the bits of the
    copying form, chunk boundaries included, and the NaN of an all-zero batch."""
    monkeypatch.setattr(ema_mod, "IN_PLACE_CHUNK", 1000)
    x = (np.random.default_rng(3).standard_normal((2, 5, 17, 19)) * 3).astype(F)
    want, lo, hi = ema_mod.fake_quantize(x)
    y = x.copy()
    got, lo2, hi2 = ema_mod.fake_quantize(y, out=y)
    assert got is y and np.array_equal(y.view(np.int32), want.view(np.int32)) and (lo, hi) == (lo2, hi2)
    z = np.zeros((3, 4), F)
    assert np.isnan(ema_mod.fake_quantize(z, out=z)[0]).all() and np.isnan(z).all()
