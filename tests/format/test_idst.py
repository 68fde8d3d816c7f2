"""IDSTQuan codec: bit packing, round trips, MNN's own files (converter and quantizer), hostile buffers.

The oracle files come from the official ``mnn`` wheel (``_tools.mnnconvert`` / ``_tools.mnnquant``, each
in a subprocess); their raw IDSTQuan fields are read from the converter's ``--JsonFile`` dump, so these
tests do not depend on our model reader.
"""
import json
import re

import numpy as np
import pytest

from mnnlite.errors import FormatError
from mnnlite.format import idst
from builders.onnx_graph import save_onnx
from oracle import convert, convert_onnx, quantize

oracle = pytest.mark.oracle  # the mnn wheel is a test dependency: fail, never skip, without it


# ------------------------------------------------------------------------------------ independent refs

def ref_pack(values, bits):
    """Bit-string reference for MSB-first packing."""
    text = "".join(format(int(v), f"0{bits}b") for v in values)
    text += "0" * (-len(text) % 8)
    return bytes(int(text[i:i + 8], 2) for i in range(0, len(text), 8))


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [1, 7, 8, 9, 13, 64, 100])
def test_pack_bits_matches_bit_string_reference(bits, count):
    values = np.random.default_rng(bits * 100 + count).integers(0, 1 << bits, count)
    packed = idst.pack_bits(values, bits)
    assert packed == ref_pack(values, bits)
    assert np.array_equal(idst.unpack_bits(np.frombuffer(packed, np.uint8), count, bits), values)


def test_index_bits_is_ceil_log2():
    assert [idst.index_bits(n) for n in (1, 2, 3, 4, 5, 16, 17, 255, 256)] == [1, 1, 2, 2, 3, 4, 5, 8, 8]


# ------------------------------------------------------------------------------------------ round trips

@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 13), (16, 27)])
def test_dense_round_trip(bits, shape):
    rng = np.random.default_rng(bits)
    q = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)
    buf = idst.encode_dense(q, bits)
    n = q.size
    assert len(buf) == 1 + 4 + 1 + (1 << bits) + (bits * n + 7) // 8
    dims, codes = idst.decode_codes(buf, idst.DENSE)
    assert dims == shape and codes.dtype == np.int8 and np.array_equal(codes, q)


def test_dense_wide_dims_use_uint32_header():
    q = np.zeros((1, 70000), np.int64)
    q[0, ::7] = 3
    buf = idst.encode_dense(q, 4)
    assert idst.needs_shape_int32(q.shape) and buf[0] == 2 and len(buf) == 1 + 8 + 1 + 16 + 35000
    with pytest.raises(FormatError):
        idst.decode_codes(buf, idst.DENSE)                # read with a uint16 header: inconsistent
    dims, codes = idst.decode_codes(buf, idst.DENSE, shape_int32=True)
    assert dims == (1, 70000) and np.array_equal(codes, q)


@pytest.mark.parametrize("bits", range(2, 9))
def test_sparse_round_trip_with_fillers(bits):
    rng = np.random.default_rng(bits)
    for shape, density in [((4, 1000), 0.002), ((8, 27), 0.1), ((3, 600), 0.0)]:
        q = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape) * (rng.random(shape) < density)
        q[0, 0] = 1                                       # first entry at position 0: step 0
        buf = idst.encode_sparse(q, bits)
        dims, codes = idst.decode_codes(buf, idst.SPARSE)
        assert dims == shape and np.array_equal(codes, q)


def test_sparse_fillers_follow_mnn_walk():
    # one value at 600 in 1000 zeros: with 8-bit steps (max 255) fillers sit at 255 and 510
    q = np.zeros((1, 1000), np.int64)
    q[0, 600] = 5
    pos = idst._sparse_entries(q.reshape(-1), np.zeros(1000, np.int64), 255)
    assert pos.tolist() == [255, 510, 600, 855]            # ... and one more in the zero tail


def test_sparse_all_zero_is_not_encodable():
    assert idst.encode_sparse(np.zeros((2, 5), np.int64), 8) is None
    assert idst.encode(np.zeros((2, 5), np.int64), 8)[0] == idst.DENSE


def test_encode_picks_sparse_only_when_strictly_smaller():
    dense_q = np.random.default_rng(0).integers(-127, 128, (8, 72))
    assert idst.encode(dense_q, 8)[0] == idst.DENSE
    sparse_q = dense_q * (np.random.default_rng(1).random((8, 72)) < 0.05)
    kind, buf = idst.encode(sparse_q, 8)
    assert kind == idst.SPARSE and len(buf) < len(idst.encode_dense(sparse_q, 8))
    assert idst.encode(sparse_q, 8, detect_sparse=False)[0] == idst.DENSE


def test_sparse_asymmetric_zero_code_from_alpha():
    # (min, scale) pairs: the fill code is round(-min/scale) - 2^(dataBits-1); scale <= 1e-6 -> lowest code
    q = np.array([[-100, -100, 5, -100], [-128, -128, -128, 7]])
    zero = np.array([-100, -128])
    buf = idst.encode_sparse(q, 8, zero_codes=zero)
    alpha = np.array([-28 * 0.5, 0.5, 3.0, 0.0], np.float32)   # round(14/0.5) - 128 = -100; scale 0
    _, codes = idst.decode_codes(buf, idst.SPARSE, alpha=alpha)
    assert np.array_equal(codes, q)


# --------------------------------------------------------------------------------------- dequantization

def test_dequantize_symmetric_and_quant_scale_trap():
    q = np.array([[1, -2], [3, 4]], np.int8)
    alpha = np.array([0.5, 0.25], np.float32)
    assert np.array_equal(idst.dequantize(q, alpha), [[0.5, -1.0], [0.75, 1.0]])
    assert not idst.dequantize(q, alpha, quant_scale=0.0).any()         # absent field = 0 -> zeros
    assert np.array_equal(idst.dequantize(q, alpha, quant_scale=2.0), [[1.0, -2.0], [1.5, 2.0]])
    assert np.array_equal(idst.dequantize(q, alpha, quant_scale=0.0, has_scale_int=True),
                          idst.dequantize(q, alpha))


def test_dequantize_asymmetric_a_min():
    q = np.array([[-128, 127], [-8, 7]], np.int8)
    alpha = np.array([-1.0, 0.01, 2.0, 0.5], np.float32)          # (min, scale) per channel
    w = idst.dequantize(q, alpha, asymmetric=True, a_min=0)         # aMin 0 means -128
    assert np.allclose(w[0], [-1.0, -1.0 + 255 * 0.01]) and np.allclose(w[1], [2.0 + 120 * 0.5, 2.0 + 135 * 0.5])
    w4 = idst.dequantize(q[1:], alpha[2:], asymmetric=True, a_min=-8)
    assert np.allclose(w4, [[2.0, 9.5]])


def test_dequantize_block_wise():
    q = np.arange(12, dtype=np.int8).reshape(2, 6)
    alpha = np.array([1, 2, 3, 4], np.float32)                      # 2 channels x 2 blocks of 3
    assert np.array_equal(idst.dequantize(q, alpha), [[0, 1, 2, 6, 8, 10], [18, 21, 24, 36, 40, 44]])
    with pytest.raises(FormatError, match="alpha"):
        idst.dequantize(q, np.ones(5, np.float32))


def test_weight_mode_legacy_type4():
    assert idst.weight_mode(idst.RAW_INT8, 0, 0, 0.0) == (True, 1.0)
    assert idst.weight_mode(idst.DENSE, 0, 0, 0.0) == (False, 0.0)
    assert idst.weight_mode(idst.DENSE, 8, -128, 1.0) == (True, 1.0)


def test_roundf_is_half_away_from_zero():
    x = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997], np.float32)
    assert idst.roundf(x).tolist() == [1, 2, 3, -1, -3, 0, 0]


# ------------------------------------------------------------------------------------- hostile buffers

def _valid_dense():
    return idst.encode_dense(np.arange(-6, 6).reshape(3, 4), 4)


def test_every_truncation_is_a_format_error():
    for buf, kind in ((_valid_dense(), idst.DENSE),
                      (idst.encode_sparse(np.eye(40, dtype=np.int64) * 3, 8), idst.SPARSE)):
        for cut in range(len(buf)):
            with pytest.raises(FormatError, match="IDSTQuan buffer"):
                idst.decode_codes(buf[:cut], kind)


def test_length_errors_name_the_numbers():
    buf = idst.encode_dense(np.zeros((3, 4), np.int64) + 1, 4)
    with pytest.raises(FormatError, match=r"12 codes of 4 bits.* need 6 bytes .*buffer has 2"):
        idst.decode_codes(buf[:-4], idst.DENSE)


@pytest.mark.parametrize("header,why", [
    (b"\x00", "dims count must be 1..4"),
    (b"\x05" + b"\x01\x00" * 5, "dims count must be 1..4"),
    (b"\x02\x00\x00\x04\x00", "hold no weights"),
    (b"\x02\xff\xff\xff\xff\x00" + bytes(256) + bytes(100), "need 4294836225 bytes"),
])
def test_bad_dense_headers(header, why):
    with pytest.raises(FormatError, match=why):
        idst.decode_codes(header, idst.DENSE)


def test_code_outside_value_set():
    buf = bytearray(idst.encode_dense(np.zeros((1, 4), np.int64), 2))   # 4-entry set, 2-bit codes
    buf[5] = 3                                                           # shrink the set to 3 entries
    buf[5 + 1 + 3:] = b"\xff"                                            # code 3
    with pytest.raises(FormatError, match="outside the value set"):
        idst.decode_codes(bytes(buf[:5 + 1 + 3 + 1]), idst.DENSE)


def _sparse_header(dims, nnz, step_bits):
    return bytes([2]) + np.asarray(dims, "<u2").tobytes() + np.uint32(nnz).tobytes() + bytes([step_bits])


@pytest.mark.parametrize("buf,why", [
    (_sparse_header((2, 2), 0, 8), "stored entries"),
    (_sparse_header((2, 2), 5, 8), "stored entries"),
    (_sparse_header((2, 2), 1, 0), "step width"),
    (_sparse_header((2, 2), 1, 9), "step width"),
    (_sparse_header((60000, 60000), 1, 8), "reach at most 510"),
    (_sparse_header((2, 2), 1, 8) + b"\x09\x01\x05\x00", "past the 4 weights"),
    (_sparse_header((2, 2), 1, 8) + b"\x01\x01\x05\x80", "outside the value set"),
])
def test_bad_sparse_buffers(buf, why):
    with pytest.raises(FormatError, match=why):
        idst.decode_codes(buf, idst.SPARSE)


def test_random_mutations_raise_only_format_errors():
    rng = np.random.default_rng(7)
    sources = [(_valid_dense(), idst.DENSE),
               (idst.encode_sparse(np.eye(30, dtype=np.int64) * -2, 6), idst.SPARSE)]
    for buf, kind in sources:
        for _ in range(400):
            raw = bytearray(buf)
            for _ in range(rng.integers(1, 4)):
                raw[rng.integers(len(raw))] = rng.integers(256)
            try:
                dims, codes = idst.decode_codes(bytes(raw), kind)
            except FormatError:
                continue
            assert codes.size == int(np.prod(dims)) <= 64 * len(raw) * 255


def test_other_types():
    assert np.array_equal(idst.decode_fp16(np.array([1.5, -2], "<f2").tobytes()), [1.5, -2])
    with pytest.raises(FormatError, match="odd length"):
        idst.decode_fp16(b"\x00")
    dims, codes = idst.decode_codes(np.array([1, -2, 3, -4], np.int8), idst.RAW_INT8, kernel_num=2)
    assert dims == (2, 2) and codes.tolist() == [[1, -2], [3, -4]]
    with pytest.raises(FormatError, match="type 3"):
        idst.decode_codes(b"\x00\x00", idst.FP16)


# ------------------------------------------------------------------------------------ the MNN oracle

def _json_quan(cwd, mnn_name):
    """IDSTQuan of the first Convolution op, from the converter's JSON dump (buffer as int8 list)."""
    convert(["-f", "MNN", "--modelFile", str(cwd / mnn_name), "--JsonFile", str(cwd / (mnn_name + ".json"))],
            [cwd / (mnn_name + ".json")])
    # MNN prints NaN as nan (an all-zero channel gets a NaN alpha from the quantizer, docs/mnn-quantization.md §14.5)
    net = json.loads(re.sub(r"-?\bnan\b", "NaN", (cwd / (mnn_name + ".json")).read_text()))
    conv = next(op for op in net["oplists"] if op["type"] in ("Convolution", "ConvolutionDepthwise"))
    quan = conv["main"]["quanParameter"]
    quan["buffer"] = np.array(quan["buffer"], np.int8)
    quan["alpha"] = np.array(quan.get("alpha", []), np.float32)
    return quan


def _conv_model(path, weight):
    from onnx import helper
    o, c = weight.shape[:2]
    save_onnx(path, [helper.make_node("Conv", ["x", "W", "B"], ["y"], pads=[1, 1, 1, 1])], [("x", [1, c, 16, 16])],
              [("y", "FLOAT", [1, o, 16, 16])], {"W": weight, "B": np.linspace(-1, 1, o).astype(np.float32)})


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w[2] = 0                                               # an all-zero output channel
    w[5] *= 1e-3
    return w


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory, weights):
    d = tmp_path_factory.mktemp("idst")
    _conv_model(d / "c.onnx", weights)
    return d


def _decoded(quan):
    dims, codes = idst.decode_codes(quan["buffer"], quan["type"], shape_int32=quan["shapeInt32"], alpha=quan["alpha"])
    asym, factor = idst.weight_mode(quan["type"], quan["readType"], quan["aMin"], quan["quantScale"])
    return dims, codes, idst.dequantize(codes, quan["alpha"], asymmetric=asym, a_min=quan["aMin"], quant_scale=factor)


@oracle
@pytest.mark.parametrize("flags,bits,asym", [
    (["--weightQuantBits", "8"], 8, True),                 # 3.6.1 default: asymmetric (min, scale)
    (["--weightQuantBits", "4"], 4, True),
    (["--weightQuantBits", "8", "--weightQuantAsymmetric"], 8, False),   # observed: symmetric
    (["--weightQuantBits", "6"], 6, True),
])
def test_converter_weight_quant_files(oracle_dir, weights, flags, bits, asym):
    name = f"w{bits}{'a' if asym else 's'}.mnn"
    convert_onnx(oracle_dir / "c.onnx", oracle_dir / name, *flags)
    quan = _json_quan(oracle_dir, name)
    assert quan["type"] == idst.DENSE and (quan["readType"] != 0) == asym and quan["aMaxOrBits"] == bits
    dims, codes, w = _decoded(quan)
    assert dims == (8, 27)
    ref = weights.reshape(8, -1)
    # the JSON dump prints alpha with 6 decimals: allow that rounding on top of half a step
    step = (quan["alpha"][1::2] if asym else quan["alpha"])[:, None]
    offset = codes.astype(np.int64) - (-(1 << (bits - 1)) if asym else 0)
    assert np.all(np.abs(w - ref) <= step / 2 + 5e-7 * (1 + np.abs(offset)) + 1e-6)
    assert idst.encode_dense(codes, bits) == quan["buffer"].tobytes()       # bit-exact re-encoding


@oracle
def test_converter_fp16_file(oracle_dir, weights):
    convert_onnx(oracle_dir / "c.onnx", oracle_dir / "h.mnn", "--fp16")
    quan = _json_quan(oracle_dir, "h.mnn")
    assert quan["type"] == idst.FP16
    w, dec = weights.reshape(-1), idst.decode_fp16(quan["buffer"])
    assert np.array_equal(dec, np.frombuffer(quan["buffer"].tobytes(), "<f2"))
    # the 3.6.1 converter rounds toward zero (not to nearest): within one half-float step, never larger
    ulp = np.spacing(np.abs(w).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(dec) <= np.abs(w)) and np.all(np.abs(w - dec) < ulp)


def _images(folder, count=4):
    from PIL import Image
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(count):
        Image.fromarray((rng.random((20, 24, 3)) * 255).astype(np.uint8)).save(folder / f"im{i}.png")


@oracle
def test_quantizer_sparse_file(tmp_path):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((32, 3, 3, 3)) * (rng.random((32, 3, 3, 3)) < 0.1)).astype(np.float32)
    _conv_model(tmp_path / "s.onnx", w)
    convert_onnx(tmp_path / "s.onnx", tmp_path / "s.mnn")
    _images(tmp_path / "imgs")
    cfg = {"format": "RGB", "width": 16, "height": 16, "path": "imgs", "quant_bits": 8}
    cfg["mean"], cfg["normal"] = [0.0] * 3, [1.0] * 3
    quantize("s.mnn", "sq.mnn", cfg, cwd=tmp_path)
    quan = _json_quan(tmp_path, "sq.mnn")
    assert quan["type"] == idst.SPARSE
    dims, codes, wq = _decoded(quan)
    ref = w.reshape(32, -1)
    assert dims == (32, 27) and np.all(codes[ref == 0] == 0)
    ok = np.isfinite(quan["alpha"])                        # all-zero channels: NaN alpha in MNN 3.6.1
    assert np.all(ref[~ok] == 0) and np.all(np.abs(wq - ref)[ok] <= quan["alpha"][ok, None] / 2 + 1e-6)
    assert idst.encode_sparse(codes, 8) == quan["buffer"].tobytes()
    assert idst.encode(codes, 8) == (idst.SPARSE, quan["buffer"].tobytes())


@oracle
def test_decode_weights_through_the_model_reader(oracle_dir, weights):
    from mnnlite.format import model_io
    convert_onnx(oracle_dir / "c.onnx", oracle_dir / "r4.mnn", "--weightQuantBits", "4")
    model = model_io.load_model(oracle_dir / "r4.mnn")
    conv = next(op for _, op in model.all_ops() if getattr(op.main, "quanParameter", None) is not None)
    w = idst.decode_weights(conv.main.quanParameter)
    scale = np.asarray(conv.main.quanParameter.alpha)[1::2]
    assert np.all(np.abs(w.reshape(8, -1) - weights.reshape(8, -1)) <= scale[:, None] / 2 + 1e-6)
