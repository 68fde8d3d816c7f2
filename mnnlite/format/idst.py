"""IDSTQuan: MNN's compressed convolution weights (docs/mnn-format.md §6.2).

Decoding follows MNN 3.6.1's ``IDSTDecoder.hpp`` / ``ConvolutionCommon::load``; encoding follows
``IDSTEncoder.hpp`` byte for byte (full linear value set, MSB-first packing, sparse filler entries).
Everything is vectorised numpy.  The buffer is untrusted: every length read from it is checked against
the bytes that are really there before anything is allocated, and the error names what is wrong.

Codes are the small signed integers ``q`` of the doc; ``dequantize`` turns them into float32 weights.
"""
from __future__ import annotations

import numpy as np

from ..errors import FormatError

DENSE, SPARSE, FP16, RAW_INT8 = 1, 2, 3, 4
MAX_DIMS = 4          # MNN's ReadBlobDim rejects more than 4 dims
ALPHA_EPS = 1e-6      # MNN: channels whose (scale) alpha <= 1e-6 get the zero code / code 0

__all__ = [
    "DENSE", "SPARSE", "FP16", "RAW_INT8", "decode_codes", "decode_fp16", "dequantize", "weight_mode",
    "decode_weights", "encode", "encode_dense", "encode_sparse", "needs_shape_int32", "pack_bits",
    "unpack_bits", "index_bits", "roundf",
]


# ------------------------------------------------------------------------------------------ bit packing

def index_bits(count: int) -> int:
    """Bits per code for a value set of ``count`` entries: ceil(log2(count)), at least 1 (MNN)."""
    return max(1, (int(count) - 1).bit_length())


def unpack_bits(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    """``count`` unsigned ``bits``-wide fields packed MSB-first (first field in the top bits of byte 0)."""
    if bits == 8:
        return packed[:count].astype(np.uint8)
    # 8 fields of b bits are exactly b bytes: read each group of b bytes as one big-endian integer.
    groups = -(-count // 8)
    raw = np.zeros(groups * bits, np.uint8)
    raw[:min(packed.size, raw.size)] = packed[:raw.size]
    words = np.zeros(groups, np.uint64)
    for k in range(bits):
        words = (words << np.uint64(8)) | raw[k::bits].astype(np.uint64)
    shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(bits)
    fields = (words[:, None] >> shifts) & np.uint64((1 << bits) - 1)
    return fields.reshape(-1)[:count].astype(np.uint8)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Inverse of ``unpack_bits``: ceil(bits * n / 8) bytes, last byte zero-padded (MNN FillBuffer)."""
    values = np.asarray(values).reshape(-1).astype(np.uint64)
    n = values.size
    if bits == 8:
        return values.astype(np.uint8).tobytes()
    padded = np.zeros(-(-n // 8) * 8, np.uint64)
    padded[:n] = values & np.uint64((1 << bits) - 1)
    shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(bits)
    words = np.bitwise_or.reduce(padded.reshape(-1, 8) << shifts, axis=1)
    out = np.empty((words.size, bits), np.uint8)
    for k in range(bits):
        out[:, k] = (words >> np.uint64(8 * (bits - 1 - k))) & np.uint64(0xFF)
    return out.reshape(-1)[:(bits * n + 7) // 8].tobytes()


# ------------------------------------------------------------------------------------------- decoding

class _Cursor:
    """Reads an IDSTQuan buffer front to back; every read is checked against what is left."""

    def __init__(self, buffer, kind: str):
        self.data = _as_uint8(buffer)
        self.pos = 0
        self.kind = kind

    def fail(self, what: str):
        raise FormatError(f"IDSTQuan buffer ({self.kind}, {self.data.size} bytes): {what}")

    def take(self, n: int, what: str) -> np.ndarray:
        left = self.data.size - self.pos
        if n > left:
            self.fail(f"{what} need {n} bytes at offset {self.pos}, buffer has {left}")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return int(self.take(1, what)[0])

    def u32(self, what: str) -> int:
        return int(self.take(4, what).view("<u4")[0])


def _as_uint8(buffer) -> np.ndarray:
    if isinstance(buffer, (bytes, bytearray, memoryview)):
        return np.frombuffer(buffer, np.uint8)
    arr = np.asarray(buffer)
    if arr.dtype.itemsize != 1:
        raise TypeError(f"IDSTQuan buffer must be bytes or an int8/uint8 array, got {arr.dtype}")
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _read_dims(cur: _Cursor, shape_int32: bool) -> tuple[int, ...]:
    ndims = cur.u8("the dims count")
    if not 1 <= ndims <= MAX_DIMS:
        cur.fail(f"dims count must be 1..{MAX_DIMS}, got {ndims}")
    width = 4 if shape_int32 else 2
    raw = cur.take(ndims * width, f"{ndims} {'uint32' if shape_int32 else 'uint16'} dims")
    dims = tuple(int(d) for d in raw.view("<u4" if shape_int32 else "<u2"))
    if 0 in dims:
        cur.fail(f"dims {dims} hold no weights")
    return dims


def _read_value_set(cur: _Cursor) -> np.ndarray:
    count = cur.u8("the value-set size") or 256          # 0 stands for 256 (docs/mnn-format.md §6.2)
    return cur.take(count, f"a value set of {count} entries").view(np.int8)


def _count(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def _decode_dense(cur: _Cursor, shape_int32: bool):
    dims = _read_dims(cur, shape_int32)
    n = _count(dims)
    values = np.sort(_read_value_set(cur))                  # MNN sorts the set (SimpleRank) before lookup
    bits = index_bits(values.size)
    packed = cur.take((bits * n + 7) // 8, f"{n} codes of {bits} bits (dims {dims})")
    idx = unpack_bits(packed, n, bits)
    if int(idx.max()) >= values.size:
        cur.fail(f"code {int(idx.max())} is outside the value set of {values.size} entries")
    return dims, values[idx]


def _zero_codes(dims, alpha, data_bits: int) -> np.ndarray | int:
    """Fill value of a sparse buffer: 0, or per channel the code of 0.0 when alpha holds (min, scale) pairs.

    MNN decides "asymmetric" by ``len(alpha) == 2 * dims[0]`` alone, computes the code in float32 with
    roundf and stores it with memset (low byte kept).
    """
    if alpha is None:
        return 0
    alpha = np.asarray(alpha, np.float32).reshape(-1)
    if alpha.size != 2 * dims[0]:
        return 0
    low = -(1 << (data_bits - 1))
    mins, scales = alpha[0::2], alpha[1::2]
    with np.errstate(divide="ignore", invalid="ignore"):
        code = roundf((np.float32(0) - mins) / scales)
    code = np.where(scales > np.float32(ALPHA_EPS), np.nan_to_num(code) + low, low)
    return np.clip(code, -2**31, 2**31 - 1).astype(np.int64).astype(np.int8)[:, None]


def _decode_sparse(cur: _Cursor, shape_int32: bool, alpha):
    dims = _read_dims(cur, shape_int32)
    n = _count(dims)
    nnz = cur.u32("the entry count")
    step_bits = cur.u8("the step width")
    if not 1 <= step_bits <= 8:
        cur.fail(f"step width must be 1..8 bits, got {step_bits}")
    if nnz == 0 or nnz > n:
        cur.fail(f"{nnz} stored entries for dims {dims} ({n} weights); allowed 1..{n}")
    # The encoder inserts a filler entry whenever a gap reaches 2^bits - 1, so entries this few cannot
    # cover more weights than this: larger dims are a corrupt header, not a big tensor.
    max_step = (1 << step_bits) - 1
    if n > (nnz + 1) * max_step:
        cur.fail(f"dims {dims} ({n} weights) but {nnz} entries with {step_bits}-bit steps reach at "
                 f"most {(nnz + 1) * max_step}")
    steps = unpack_bits(cur.take((step_bits * nnz + 7) // 8, f"{nnz} steps of {step_bits} bits"),
                        nnz, step_bits)
    raw_values = _read_value_set(cur)
    values = np.unique(raw_values)                         # MNN dedupes and sorts the sparse set
    data_bits = index_bits(raw_values.size)
    idx = unpack_bits(cur.take((data_bits * nnz + 7) // 8, f"{nnz} codes of {data_bits} bits"),
                      nnz, data_bits)
    if int(idx.max()) >= values.size:
        cur.fail(f"code {int(idx.max())} is outside the value set of {values.size} distinct entries")
    positions = np.cumsum(steps, dtype=np.int64)
    if int(positions[-1]) >= n:
        cur.fail(f"entry position {int(positions[-1])} is past the {n} weights of dims {dims}")
    codes = np.empty((dims[0], n // dims[0]), np.int8)
    codes[...] = _zero_codes(dims, alpha, data_bits)
    codes.reshape(-1)[positions] = values[idx]
    return dims, codes


def decode_codes(buffer, type: int, *, shape_int32: bool = False, alpha=None,
                 kernel_num: int | None = None):
    """``(dims, codes)`` of an IDSTQuan buffer; codes are int8 shaped ``[dims[0], prod(dims[1:])]``.

    ``type`` 1 = dense, 2 = sparse (``alpha`` is needed to rebuild the zero code of asymmetric weights),
    4 = raw int8 (no header: ``kernel_num`` output channels, default 1).  Trailing bytes are ignored, as
    MNN does.  Raises FormatError naming the first inconsistency.
    """
    if type == DENSE:
        dims, codes = _decode_dense(_Cursor(buffer, "dense"), shape_int32)
    elif type == SPARSE:
        dims, codes = _decode_sparse(_Cursor(buffer, "sparse"), shape_int32, alpha)
    elif type == RAW_INT8:
        codes = _as_uint8(buffer).view(np.int8)
        rows = kernel_num or 1
        if codes.size == 0 or codes.size % rows:
            raise FormatError(f"IDSTQuan buffer (raw int8, {codes.size} bytes): not a whole number of "
                              f"weights for {rows} output channels")
        dims = (rows, codes.size // rows)
    else:
        raise FormatError(f"IDSTQuan type {type} holds no integer codes; allowed 1 (dense), 2 (sparse), "
                          f"4 (raw int8)")
    return dims, codes.reshape(dims[0], -1)


def decode_fp16(buffer) -> np.ndarray:
    """Type 3: raw little-endian IEEE half weights -> float32."""
    raw = _as_uint8(buffer)
    if raw.size % 2:
        raise FormatError(f"IDSTQuan buffer (fp16, {raw.size} bytes): odd length, not whole half floats")
    return raw.view("<f2").astype(np.float32)


# --------------------------------------------------------------------------------------- dequantizing

def roundf(x: np.ndarray) -> np.ndarray:
    """C ``roundf``: half away from zero, exact for every float (no ``x + 0.5`` rounding error)."""
    x = np.asarray(x)
    mag = np.abs(x)
    whole = np.floor(mag)
    return np.copysign(whole + (mag - whole >= 0.5), x).astype(x.dtype, copy=False)


def weight_mode(type: int, read_type: int, a_min: int, quant_scale: float) -> tuple[bool, float]:
    """``(asymmetric, effective quantScale)`` exactly as ConvolutionCommon::load decides them.

    Legacy type-4 buffers with ``aMin == 0`` and ``quantScale ~ 0`` are asymmetric and use factor 1.
    """
    old_type4 = type == RAW_INT8 and a_min == 0 and abs(quant_scale) < 1e-6
    return bool(read_type != 0 or old_type4), (1.0 if old_type4 else float(quant_scale))


def dequantize(codes, alpha, *, asymmetric: bool = False, a_min: int = 0, quant_scale: float = 1.0,
               has_scale_int: bool = False) -> np.ndarray:
    """Float32 weights from codes (docs/mnn-format.md §6.2, ``ConvolutionCommon::load``), same shape as ``codes``.

    symmetric:  ``w = q * alpha[g]``; asymmetric: alpha = (min, scale) pairs, ``w = (q - A) * scale + min``
    with ``A = aMin`` (-128 when 0).  ``g`` counts contiguous chunks of ``codes.size / groups`` weights,
    so block-wise alpha (``outputCount x blocks`` entries) needs nothing special.  Unless
    ``has_scale_int``, every alpha entry is multiplied by ``quant_scale`` first — pass the stored field
    as read: an absent field is 0 and zeroes the weights in MNN too.
    """
    codes = np.asarray(codes)
    alpha = np.asarray(alpha, np.float32).reshape(-1)
    groups = alpha.size // 2 if asymmetric else alpha.size
    if groups == 0 or (asymmetric and alpha.size % 2) or codes.size % groups:
        kind = "(min, scale) pairs" if asymmetric else "scales"
        raise FormatError(f"IDSTQuan alpha: {alpha.size} values as {kind} do not split {codes.size} "
                          f"weights into equal channel chunks")
    q = codes.reshape(groups, -1).astype(np.float32)
    factor = np.float32(1.0 if has_scale_int else quant_scale)
    if asymmetric:
        clamp_min = np.float32(-128 if a_min == 0 else a_min)
        scale = alpha[1::2]
        low = alpha[0::2]
        if clamp_min < 0:                                     # MNN folds -A*scale into min (only for A < 0)
            low = low - clamp_min * scale
        low = low * factor
        w = q * (scale * factor)[:, None] + low[:, None]
    else:
        w = q * (alpha * factor)[:, None]
    return w.reshape(codes.shape)


def decode_weights(quan, kernel_num: int | None = None) -> np.ndarray:
    """Float32 weights (flat, storage order) of an IDSTQuan table object (reader's ``IDSTQuan``).

    Handles every stored form: sparse-with-index, fp16, dense/sparse/raw codes with symmetric,
    asymmetric or block-wise alpha, fp16 alpha (``scaleStorage`` 1).
    """
    if getattr(quan, "index", None) is not None:
        return _expand_index(quan)
    if quan.type == FP16:
        return decode_fp16(quan.buffer)
    alpha = quan.alpha
    if getattr(quan, "scaleStorage", 0) == 1:
        alpha = None if quan.alphaFp16 is None else np.asarray(quan.alphaFp16, "<u2").view("<f2")
    if alpha is None or len(alpha) == 0:
        raise FormatError("IDSTQuan: integer codes without alpha values")
    alpha = np.asarray(alpha, np.float32)
    _, codes = decode_codes(quan.buffer, quan.type, shape_int32=bool(quan.shapeInt32), alpha=alpha,
                            kernel_num=kernel_num)
    asym, factor = weight_mode(quan.type, quan.readType, quan.aMin, quan.quantScale)
    return dequantize(codes, alpha, asymmetric=asym, a_min=quan.aMin, quant_scale=factor,
                      has_scale_int=bool(quan.has_scaleInt)).reshape(-1)


def _expand_index(quan) -> np.ndarray:
    index = np.asarray(quan.index, np.int64)
    alpha = np.asarray(quan.alpha if quan.alpha is not None else [], np.float32)
    total = int(quan.weightSize)
    if alpha.size != index.size:
        raise FormatError(f"IDSTQuan sparse-with-index: {index.size} positions but {alpha.size} values")
    # the file holds 8 bytes per stored weight; a total far beyond that is a corrupt header
    limit = max(1 << 20, 1024 * index.size)
    if total > limit or (index.size and (int(index.min()) < 0 or int(index.max()) >= total)):
        raise FormatError(f"IDSTQuan sparse-with-index: weightSize {total} does not fit {index.size} stored "
                          f"positions (allowed: above every position, at most {limit})")
    out = np.zeros(total, np.float32)
    out[index] = alpha
    return out


# ------------------------------------------------------------------------------------------- encoding

def needs_shape_int32(dims) -> bool:
    """MNN's writer switches the dims header to uint32 when any dim exceeds 65535 (``shapeInt32``)."""
    return any(int(d) > 0xFFFF for d in dims)


def _dims_header(dims) -> bytes:
    wide = needs_shape_int32(dims)
    return bytes([len(dims)]) + np.asarray(dims, "<u4" if wide else "<u2").tobytes()


def _linear_set(bits: int) -> bytes:
    """Count byte (256 -> 0) and the full ascending range -2^(b-1) .. 2^(b-1)-1 (LINEAR_WEIGHT_SET)."""
    count = 1 << bits
    return bytes([count & 0xFF]) + np.arange(-(count >> 1), count >> 1, dtype=np.int8).tobytes()


def _checked_codes(codes, bits: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.size == 0:
        raise ValueError(f"codes must be a non-empty [kernelNum, kernelSize] array, got shape {codes.shape}")
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1..8, got {bits}")
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if codes.min() < low or codes.max() > high:
        raise ValueError(f"{bits}-bit codes must lie in {low}..{high}, got {codes.min()}..{codes.max()}")
    return codes.astype(np.int64)


def encode_dense(codes, bits: int) -> bytes:
    """Type-1 buffer exactly as MNN's ``WriteCQBlobs`` writes it; codes int ``[kernelNum, kernelSize]``."""
    q = _checked_codes(codes, bits)
    return _dims_header(q.shape) + _linear_set(bits) + pack_bits(q + (1 << (bits - 1)), bits)


def _sparse_entries(flat: np.ndarray, zero: np.ndarray, max_step: int) -> np.ndarray:
    """Positions the encoder stores: every non-zero code plus a filler whenever a gap reaches max_step.

    Walk of ``WriteSparseQuanBlobs``: start at 0; a filler goes at prev + k*max_step while that is
    before the next stored position (or, after the last one, still inside the buffer).
    """
    n = flat.size
    hits = np.flatnonzero(flat != zero)
    prev = np.concatenate(([0], hits))
    nxt = np.concatenate((hits, [n]))                       # the tail behaves like a hit just past the end
    fill = np.maximum((nxt - prev - 1) // max_step, 0)
    start = np.repeat(prev, fill)
    rank = np.arange(fill.sum()) - np.repeat(np.cumsum(fill) - fill, fill) + 1
    return np.sort(np.concatenate((hits, start + rank * max_step)))


def encode_sparse(codes, bits: int, zero_codes=None) -> bytes | None:
    """Type-2 buffer as MNN's ``WriteSparseQuanBlobs`` writes it, or None when every code is the zero code.

    ``zero_codes`` (per output channel) is the fill value of asymmetric weights; default 0.  The step
    width is the one of 2..8 bits giving the smallest buffer (first wins on ties, like MNN).
    """
    q = _checked_codes(codes, bits)
    zero = np.zeros(q.shape[0], np.int64) if zero_codes is None else np.asarray(zero_codes, np.int64)
    zero_flat = np.repeat(zero, q.shape[1])
    flat = q.reshape(-1)
    if not np.any(flat != zero_flat):
        return None
    best = None
    for step_bits in range(2, 9):
        pos = _sparse_entries(flat, zero_flat, (1 << step_bits) - 1)
        size = (pos.size * step_bits + 7) // 8 + (pos.size * bits + 7) // 8
        if best is None or size < best[0]:
            best = (size, step_bits, pos)
    _, step_bits, pos = best
    steps = np.diff(pos, prepend=0)
    return (_dims_header(q.shape) + np.uint32(pos.size).tobytes() + bytes([step_bits])
            + pack_bits(steps, step_bits) + _linear_set(bits)
            + pack_bits(flat[pos] + (1 << (bits - 1)), bits))


def _sparse_may_be_smaller(codes, bits: int, zero_codes, dense_size: int) -> bool:
    """False when even the smallest sparse buffer (one entry per non-zero code, 2-bit steps) would not
    be strictly smaller than the dense one: typical weights, where trying all seven step widths costs
    more than the rest of the rewrite."""
    q = np.asarray(codes)
    if q.ndim != 2:
        return True                      # let encode_sparse report the bad shape
    zero = 0 if zero_codes is None else np.asarray(zero_codes).reshape(-1, 1)
    hits = int(np.count_nonzero(q != zero))
    smallest = len(_dims_header(q.shape)) + 5 + (hits * 2 + 7) // 8 + len(_linear_set(bits)) + (hits * bits + 7) // 8
    return smallest < dense_size


def encode(codes, bits: int, *, detect_sparse: bool = True, zero_codes=None) -> tuple[int, bytes]:
    """``(type, buffer)`` as ``IDSTEncoder::encode`` picks it: sparse only when strictly smaller.

    The offline quantizer enables sparse detection iff ``bits > 7`` (docs/mnn-quantization.md §8.2).
    """
    dense = encode_dense(codes, bits)
    if detect_sparse and _sparse_may_be_smaller(codes, bits, zero_codes, len(dense)):
        sparse = encode_sparse(codes, bits, zero_codes)
        if sparse is not None and len(sparse) < len(dense):
            return SPARSE, sparse
    return DENSE, dense
