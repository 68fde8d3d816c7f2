"""Calibration data (quantization doc §4-5): image folders and per-sample sequence folders.

``CalibrationSet(config, input_specs)`` lists the samples once and streams them: iterating yields
``{input name: float32 array}`` batches, one image or sample decoded at a time.  Files that cannot be
used are reported (``logging`` warning, or the ``on_warning`` callback) and skipped; ``DataError`` is
raised only when no sample is usable.

Image preprocessing reproduces MNN's ``ImageProcess`` as the quantizer drives it (doc §4.3): decode to
RGBA, the float32 4-point matrix solve of MNN's (Skia-derived) ``CV::Matrix``, per-row position stepping,
bilinear sampling truncated to uint8 (x86 sampler; MNN's generic C sampler rounds instead), the format
blit and ``(v - mean) * normal``.  Pillow only decodes; it never resamples.

Deviations (doc §14): files are sorted before the first N are taken (MNN takes the first N in readdir
order, then sorts); only regular files are image candidates and only folders / .npy / .npz files are
sequence candidates (MNN feeds everything); an undecodable file is skipped with a warning (MNN reuses the
previous sample's data); EMA + sequence batches really hold ``batch`` samples (MNN feeds only the last of
each batch); a missing ``width``/``height`` falls back to the model input's own size (MNN leaves it
uninitialised); a 1-pixel output side uses plain corner-aligned scaling (MNN's solve yields NaN).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from .config import QuantConfig

log = logging.getLogger(__name__)
f32 = np.float32
CACHE_SIZE = 512                  # ImageProcessUtils: rows are stepped in tiles of 512 pixels
DEFAULT_BATCH = 32                # doc §3: batch_size default


@dataclass(frozen=True)
class InputSpec:
    """A model input as the dataset needs it: name, declared dims (<= 0 = unknown), layout, dtype."""

    name: str
    shape: tuple[int, ...]
    layout: str = "NCHW"          # "NHWC" for TensorFlow-style inputs
    dtype: str = "float32"


def _specs(input_specs) -> list[InputSpec]:
    if isinstance(input_specs, Mapping):
        return [InputSpec(name, tuple(int(d) for d in shape)) for name, shape in input_specs.items()]
    return [s if isinstance(s, InputSpec) else InputSpec(s[0], tuple(int(d) for d in s[1]), *s[2:])
            for s in input_specs]


# -------------------------------------------------------------------- MNN CV::Matrix (float32, Skia)
# 3x3 row-major [scaleX, skewX, transX, skewY, scaleY, transY, persp0, persp1, persp2]; type mask bits:
TRANSLATE, SCALE, AFFINE, PERSPECTIVE, RECT_STAYS = 1, 2, 4, 8, 0x10
IDENTITY = (f32(1), f32(0), f32(0), f32(0), f32(1), f32(0), f32(0), f32(0), f32(1))


def type_mask(m) -> int:
    """``Matrix::computeTypeMask``."""
    if m[6] != 0 or m[7] != 0 or m[8] != 1:
        return TRANSLATE | SCALE | AFFINE | PERSPECTIVE | RECT_STAYS
    mask = TRANSLATE if (m[2] != 0 or m[5] != 0) else 0
    if m[1] != 0 or m[3] != 0:
        mask |= AFFINE | SCALE
        if m[0] == 0 and m[4] == 0:
            mask |= RECT_STAYS
    else:
        if m[0] != 1 or m[4] != 1:
            mask |= SCALE
        if m[0] != 0 and m[4] != 0:
            mask |= RECT_STAYS
    return mask


def _wider(a, b) -> bool:
    """Poly4Proc's "abs(a) > abs(b)" test, written as MNN writes it."""
    if a > 0:
        return a > b if b > 0 else a > -b
    return -a > b if b > 0 else a < b


def _poly4(p):
    """``Matrix::Poly4Proc``: the unit-square map of four points, or None when degenerate."""
    (px0, py0), (px1, py1), (px2, py2), (px3, py3) = p
    x0, y0, x1, y1, x2, y2 = px2 - px0, py2 - py0, px2 - px1, py2 - py1, px2 - px3, py2 - py3
    if _wider(x2, y2):
        denom = x1 * y2 / x2 - y1
        if denom * denom == 0:
            return None
        a1 = (((x0 - x1) * y2 / x2) - y0 + y1) / denom
    else:
        denom = x1 - y1 * x2 / y2
        if denom * denom == 0:
            return None
        a1 = (x0 - x1 - (y0 - y1) * x2 / y2) / denom
    if _wider(x1, y1):
        denom = y2 - x2 * y1 / x1
        if denom * denom == 0:
            return None
        a2 = (y0 - y2 - (x0 - x2) * y1 / x1) / denom
    else:
        denom = y2 * x1 / y1 - x2
        if denom * denom == 0:
            return None
        a2 = ((y0 - y2) * x1 / y1 - x0 + x2) / denom
    return (a2 * px3 + px3 - px0, a1 * px1 + px1 - px0, px0,
            a2 * py3 + py3 - py0, a1 * py1 + py1 - py0, py0, a2, a1, f32(1))


def _invert(m, mask: int):
    """``Matrix::invert``; None when singular.  The inverse keeps the source's type mask, as in MNN."""
    if mask == 0:
        return IDENTITY
    if mask & ~(SCALE | TRANSLATE) == 0:
        if not mask & SCALE:
            return (f32(1), f32(0), -m[2], f32(0), f32(1), -m[5], f32(0), f32(0), f32(1))
        if m[0] == 0 or m[4] == 0:
            return None
        ix, iy = f32(1) / m[0], f32(1) / m[4]
        return (ix, f32(0), -m[2] * ix, f32(0), iy, -m[5] * iy, f32(0), f32(0), f32(1))
    d = [float(v) for v in m]
    persp = bool(mask & PERSPECTIVE)
    if persp:
        det = (d[0] * (d[4] * d[8] - d[5] * d[7]) + d[1] * (d[5] * d[6] - d[3] * d[8])
               + d[2] * (d[3] * d[7] - d[4] * d[6]))
    else:
        det = d[0] * d[4] - d[1] * d[3]
    if det == 0 or 1.0 / det == 0:
        return None
    inv = 1.0 / det

    def cross(a, b, c, e):                       # scross in float32, scaled in double, stored as float
        return f32(float(m[a] * m[b] - m[c] * m[e]) * inv)
    if persp:
        return (cross(4, 8, 5, 7), cross(2, 7, 1, 8), cross(1, 5, 2, 4),
                cross(5, 6, 3, 8), cross(0, 8, 2, 6), cross(2, 3, 0, 5),
                cross(3, 7, 4, 6), cross(1, 6, 0, 7), cross(0, 4, 1, 3))
    return (f32(d[4] * inv), f32(-d[1] * inv), f32((d[1] * d[5] - d[4] * d[2]) * inv),
            f32(-d[3] * inv), f32(d[0] * inv), f32((d[3] * d[2] - d[0] * d[5]) * inv),
            f32(0), f32(0), f32(1))


def _concat(a, a_mask: int, b, b_mask: int):
    """``Matrix::setConcat(a, b)`` = a·b with MNN's branch per type and its float/double mix."""
    if a_mask & 0xF == 0:
        return b
    if b_mask & 0xF == 0:
        return a
    both = a_mask | b_mask
    if both & (AFFINE | PERSPECTIVE) == 0:
        return (a[0] * b[0], f32(0), a[0] * b[2] + a[2], f32(0), a[4] * b[4], a[4] * b[5] + a[5],
                f32(0), f32(0), f32(1))
    if both & PERSPECTIVE:
        return tuple(a[r] * b[c] + a[r + 1] * b[c + 3] + a[r + 2] * b[c + 6]
                     for r in (0, 3, 6) for c in (0, 1, 2))

    def mam(p, q, r, s):
        return f32(float(p) * float(q) + float(r) * float(s))
    return (mam(a[0], b[0], a[1], b[3]), mam(a[0], b[1], a[1], b[4]), mam(a[0], b[2], a[1], b[5]) + a[2],
            mam(a[3], b[0], a[4], b[3]), mam(a[3], b[1], a[4], b[4]), mam(a[3], b[2], a[4], b[5]) + a[5],
            f32(0), f32(0), f32(1))


def poly_to_poly(src, dst):
    """``Matrix::setPolyToPoly(src, dst, 4)``: the map taking the 4 ``src`` points to ``dst``.

    Returns the 9 float32 values, or the identity when MNN's solve fails (the quantizer then keeps the
    default-constructed identity matrix).
    """
    src = [(f32(x), f32(y)) for x, y in src]
    dst = [(f32(x), f32(y)) for x, y in dst]
    first = _poly4(src)
    if first is None:
        return IDENTITY
    first_mask = type_mask(first)
    inverse = _invert(first, first_mask)
    second = _poly4(dst)
    if inverse is None or second is None:
        return IDENTITY
    return _concat(second, type_mask(second), inverse, first_mask)


def map_points(m, x: np.ndarray, y: np.ndarray):
    """``Matrix::mapPoints`` on float32 arrays (every point-mapping routine reduces to these formulas)."""
    mx = (x * m[0] + y * m[1]) + m[2]
    my = (x * m[3] + y * m[4]) + m[5]
    if not type_mask(m) & PERSPECTIVE:
        return mx, my
    z = x * m[6] + (y * m[7] + m[8])
    z = np.where(z != 0, f32(1) / np.where(z != 0, z, f32(1)), z)
    return mx * z, my * z


# ---------------------------------------------------------------------------- ImageProcess, RGBA -> float

def crop_corners(height: int, width: int, crop_h: float, crop_w: float):
    """Source corners of the centred crop (Helper::preprocessInput): TL, BL, TR, BR."""
    hc, wc = int(f32(height) * f32(crop_h)), int(f32(width) * f32(crop_w))
    if hc <= 0 or wc <= 0:
        raise DataError(f"center crop {crop_h} x {crop_w} of a {width}x{height} image leaves no pixels")
    y0, x0 = (height - hc) // 2, (width - wc) // 2
    return [(x0, y0), (x0, y0 + hc - 1), (x0 + wc - 1, y0), (x0 + wc - 1, y0 + hc - 1)]


def calibration_matrix(height, width, out_h, out_w, crop_h=1.0, crop_w=1.0):
    """The quantizer's matrix: output corners (0,0),(0,oh-1),(ow-1,0),(ow-1,oh-1) -> crop corners.

    A 1-pixel wide or high side makes the 4-point solve degenerate (NaN in MNN, then undefined reads);
    there we use the corner-aligned scaling the solve stands for (doc §4.3), a side of 1 mapping to the
    crop's first row/column.
    """
    corners = crop_corners(height, width, crop_h, crop_w)
    dst = [(0, 0), (0, out_h - 1), (out_w - 1, 0), (out_w - 1, out_h - 1)]
    with np.errstate(all="ignore"):
        m = poly_to_poly(dst, corners)
    if all(np.isfinite(v) for v in m) and (out_h > 1 and out_w > 1):
        return m
    (x0, y0), (x1, y1) = corners[0], corners[3]
    sx = f32(x1 - x0) / f32(out_w - 1) if out_w > 1 else f32(0)
    sy = f32(y1 - y0) / f32(out_h - 1) if out_h > 1 else f32(0)
    return (sx, f32(0), f32(x0), f32(0), sy, f32(y0), f32(0), f32(0), f32(1))


def sample_positions(m, out_h: int, out_w: int):
    """Source (x, y) of every output pixel, float32, stepped like ``ImageProcessUtils::transformImage``.

    Per row and tile of 512: map the tile start and ``x = start + count``, divide the difference by
    ``count`` and add that step pixel after pixel (float32 accumulation, reproduced by cumsum).
    """
    xs = np.empty((out_h, out_w), f32)
    ys = np.empty((out_h, out_w), f32)
    rows = np.arange(out_h, dtype=f32)
    for start in range(0, out_w, CACHE_SIZE):
        count = min(CACHE_SIZE, out_w - start)
        x0, y0 = map_points(m, np.full(out_h, start, f32), rows)
        x1, y1 = map_points(m, np.full(out_h, start + count, f32), rows)
        for out, a, b in ((xs, x0, x1), (ys, y0, y1)):
            step = (b - a) / f32(count)
            seq = np.concatenate([a[:, None], np.repeat(step[:, None], count - 1, axis=1)], axis=1)
            out[:, start:start + count] = np.cumsum(seq, axis=1, dtype=f32)
    return xs, ys


def bilinear_rgba(rgba: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """MNN's x86 RGBA bilinear sampler (clamp to edge): float32 weights, truncation to uint8."""
    h, w = rgba.shape[:2]
    x = np.minimum(np.maximum(xs, f32(0)), f32(w - 1))
    y = np.minimum(np.maximum(ys, f32(0)), f32(h - 1))
    x0, y0 = x.astype(np.int64), y.astype(np.int64)
    x1, y1 = np.ceil(x).astype(np.int64), np.ceil(y).astype(np.int64)
    xf, yf = x - x0.astype(f32), y - y0.astype(f32)
    one = f32(1)
    weights = ((one - xf) * (one - yf), xf * (one - yf), yf * (one - xf), xf * yf)
    corners = (rgba[y0, x0], rgba[y0, x1], rgba[y1, x0], rgba[y1, x1])
    v = weights[0][..., None] * corners[0].astype(f32)
    for wt, c in zip(weights[1:], corners[1:]):
        v = v + wt[..., None] * c.astype(f32)
    return np.clip(v, f32(0), f32(255)).astype(np.uint8)        # _mm_round_ps(.., 3): truncation


def convert_format(rgba: np.ndarray, fmt: str) -> np.ndarray:
    """RGBA8 -> destination format, MNN's blitters (GRAY = (19R + 38G + 7B) >> 6)."""
    if fmt == "GRAY":
        c = rgba.astype(np.int32)
        return ((19 * c[..., 0] + 38 * c[..., 1] + 7 * c[..., 2]) >> 6).astype(np.uint8)[..., None]
    order = {"RGBA": [0, 1, 2, 3], "BGRA": [2, 1, 0, 3], "RGB": [0, 1, 2], "BGR": [2, 1, 0]}[fmt]
    return rgba[..., order]


def preprocess_rgba(rgba: np.ndarray, config: QuantConfig, out_h: int, out_w: int,
                    target_h: int | None = None, target_w: int | None = None) -> np.ndarray:
    """One decoded RGBA8 image -> float32 ``[C, out_h, out_w]`` exactly as the quantizer feeds it.

    ``target_h/w`` size the resize matrix (config width/height); the output may differ (EMA writes into
    the model's declared dims, doc §5).  Default: the output size.
    """
    h, w = rgba.shape[:2]
    m = calibration_matrix(h, w, target_h or out_h, target_w or out_w,
                           config.center_crop_h, config.center_crop_w)
    xs, ys = sample_positions(m, out_h, out_w)
    pixels = convert_format(bilinear_rgba(rgba, xs, ys), config.format)
    mean = np.asarray(config.mean4[:pixels.shape[-1]], f32)
    normal = np.asarray(config.normal4[:pixels.shape[-1]], f32)
    return ((pixels.astype(f32) - mean) * normal).transpose(2, 0, 1)


def decode_rgba(path: str) -> np.ndarray:
    """Any image Pillow reads, as uint8 ``[H, W, 4]`` (stb_image is asked for 4 channels the same way)."""
    with Image.open(path) as img:
        img.seek(0)                                       # first frame of GIFs and the like
        return np.asarray(img.convert("RGBA"), np.uint8)


# -------------------------------------------------------------------------------------- file listing

def list_candidates(config: QuantConfig) -> list[str]:
    """Sorted entries of ``config.path`` (hidden names skipped) that can hold a sample, first N of them.

    Image mode: regular files.  Sequence mode: folders, ``.npy`` and ``.npz`` files.
    """
    try:
        names = sorted(n for n in os.listdir(config.path) if not n.startswith("."))
    except OSError as exc:
        raise DataError(f'{config.source}: "path" {config.path} cannot be listed: '
                        f"{exc.strerror or exc}") from None
    paths = [os.path.join(config.path, n) for n in names]
    if config.input_type == "image":
        paths = [p for p in paths if os.path.isfile(p)]
    else:
        paths = [p for p in paths if os.path.isdir(p) or p.endswith((".npy", ".npz"))]
    if config.used_sample_num is not None:
        paths = paths[:config.used_sample_num]
    if not paths:
        kind = "image files" if config.input_type == "image" else "sample folders or .npy/.npz files"
        raise DataError(f'{config.source}: "path" {config.path} holds no {kind}')
    return paths


# ------------------------------------------------------------------------------------ sequence samples

def _read_txt(path: str, count: int) -> np.ndarray:
    """The first ``count`` whitespace-separated numbers of a text file (MNN reads them as double)."""
    with open(path, encoding="utf-8") as f:
        tokens = f.read().split(None, count)[:count]
    if len(tokens) < count:
        raise ValueError(f"{path}: {len(tokens)} numbers, the input needs {count}")
    try:
        return np.array(tokens, np.float64)
    except ValueError:
        raise ValueError(f"{path}: not a list of numbers") from None


def _json_shapes(folder: str, warn) -> dict[str, tuple[int, ...]]:
    path = os.path.join(folder, "input.json")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)["inputs"]
        return {e["name"]: tuple(int(d) for d in e["shape"]) for e in entries if "shape" in e}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warn(f"{path}: unusable ({exc.__class__.__name__}: {exc}); using the default input shapes")
        return {}


def _as_input(data: np.ndarray, shape, spec: InputSpec, where: str) -> np.ndarray:
    if shape is None:
        shape = data.shape if data.ndim else (1,)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{where}: {data.size} values, input {spec.name!r} of shape {list(shape)} "
                         f"needs {int(np.prod(shape))}")
    return data.reshape(shape).astype(spec.dtype)     # non-float inputs: read as float, then cast (MNN)


class _SequenceReader:
    """One sample of a multi-input model: a folder of ``<input>.txt``/``.npy`` (+ input.json), a .npz
    holding every input, or a .npy for a single-input model."""

    def __init__(self, specs: list[InputSpec], config: QuantConfig, warn):
        self.specs, self.config, self.warn = specs, config, warn

    def default_shape(self, spec: InputSpec, json_shapes) -> tuple[int, ...] | None:
        shape = json_shapes.get(spec.name) or self.config.input_shape(spec.name)
        if shape is None and spec.shape and all(d > 0 for d in spec.shape):
            shape = spec.shape
        return shape

    def read(self, path: str) -> dict[str, np.ndarray]:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as z:
                missing = [s.name for s in self.specs if s.name not in z.files]
                if missing:
                    raise ValueError(f"{path}: no array named {missing[0]!r} (has {', '.join(z.files)})")
                return {s.name: _as_input(z[s.name], self.default_shape(s, {}), s, path) for s in self.specs}
        if path.endswith(".npy"):
            if len(self.specs) != 1:
                raise ValueError(f"{path}: a .npy sample only fits a single-input model; use .npz or a folder")
            spec = self.specs[0]
            return {spec.name: _as_input(np.load(path, allow_pickle=False), self.default_shape(spec, {}),
                                         spec, path)}
        shapes = _json_shapes(path, self.warn)
        return {s.name: self._read_one(path, s, shapes) for s in self.specs}

    def _read_one(self, folder: str, spec: InputSpec, shapes) -> np.ndarray:
        shape = self.default_shape(spec, shapes)
        npy = os.path.join(folder, spec.name + ".npy")
        if os.path.isfile(npy):
            return _as_input(np.load(npy, allow_pickle=False), shape, spec, npy)
        txt = os.path.join(folder, spec.name + ".txt")
        if not os.path.isfile(txt):
            raise ValueError(f"{folder}: no {spec.name}.txt or {spec.name}.npy for input {spec.name!r}")
        if shape is None:
            raise ValueError(f"{txt}: the shape of input {spec.name!r} is unknown; give it in input.json "
                             f'or in the config\'s "inputs"')
        return _as_input(_read_txt(txt, int(np.prod(shape))), shape, spec, txt)


# ------------------------------------------------------------------------------------ calibration set

def resolve_batch_size(config: QuantConfig, specs: Sequence[InputSpec], samples: int) -> tuple[int, bool]:
    """``(batch, drop_last)`` per doc §5: EMA batches (config, else the model's batch, else 32; at most
    the sample count; remainder dropped); KL and ADMM take one sample at a time."""
    if config.feature_quantize_method != "EMA":
        return 1, False
    batch = config.batch_size
    if batch is None:
        model_batch = specs[0].shape[0] if specs and specs[0].shape else 0
        batch = model_batch if model_batch > 0 else DEFAULT_BATCH
    return max(1, min(batch, samples)), True


class CalibrationSet:
    """Streams calibration samples as ``{input name: float32 array}`` batches (bounded memory).

    ``input_specs``: ``InputSpec`` list (or ``{name: shape}``) in model input order.  Image mode fills
    only the first input, ``[1, C, H, W]`` (``[1, H, W, C]`` for NHWC inputs) per sample, stacked along
    dim 0 into batches.  ``batch_size``/``drop_last`` default to ``resolve_batch_size``.
    """

    def __init__(self, config: QuantConfig, input_specs, batch_size: int | None = None,
                 drop_last: bool | None = None, on_warning: Callable[[str], None] | None = None):
        self.config = config
        self.specs = _specs(input_specs)
        if not self.specs:
            raise DataError(f"{config.source}: the model has no inputs to calibrate")
        self.on_warning = on_warning
        self.files = list_candidates(config)
        auto_batch, auto_drop = resolve_batch_size(config, self.specs, len(self.files))
        self.batch_size = int(batch_size or auto_batch)
        self.drop_last = auto_drop if drop_last is None else bool(drop_last)
        self.skipped: dict[str, str] = {}
        self._warned: set[str] = set()
        self._reader = _SequenceReader(self.specs, config, self._warn)
        if config.input_type == "image":
            self._image_geometry()                          # fail early on a bad format / shape combo

    def _warn(self, message: str) -> None:
        if message in self._warned:                      # every pass re-reads the data: say it once
            return
        self._warned.add(message)
        if self.on_warning is not None:
            self.on_warning(message)
        else:
            log.warning("%s", message)

    @property
    def sample_count(self) -> int:
        """Samples planned (files that failed to load so far are not counted)."""
        return len(self.files) - len(self.skipped)

    def __len__(self) -> int:
        n = self.sample_count
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _image_geometry(self):
        """``(out_h, out_w, target_h, target_w)``: output tensor size and the resize target."""
        spec, cfg = self.specs[0], self.config
        nhwc = spec.layout == "NHWC"
        dims = spec.shape if len(spec.shape) == 4 else (0, 0, 0, 0)
        model_c, model_h, model_w = (dims[3], dims[1], dims[2]) if nhwc else (dims[1], dims[2], dims[3])
        if model_c > 0 and model_c != cfg.channels:
            raise ConfigError(f'{cfg.source}: "format" {cfg.format} gives {cfg.channels} channel(s) but '
                              f"model input {spec.name!r} has {model_c}; use a format with {model_c}")
        target_h, target_w = cfg.height or model_h, cfg.width or model_w
        shape = cfg.input_shape(spec.name)
        if shape is not None and len(shape) == 4:
            out_h, out_w = (shape[1], shape[2]) if nhwc else (shape[2], shape[3])
        elif cfg.feature_quantize_method == "EMA" and model_h > 0 and model_w > 0:
            out_h, out_w = model_h, model_w                 # EMA: tensor from the model's dims (doc §5)
        else:
            out_h, out_w = target_h, target_w
        if min(out_h, out_w, target_h, target_w) <= 0:
            raise ConfigError(f'{cfg.source}: "width" and "height" are needed: model input {spec.name!r} '
                              f"has no fixed size ({list(spec.shape)})")
        return out_h, out_w, target_h, target_w

    def _load(self, path: str) -> dict[str, np.ndarray]:
        if self.config.input_type != "image":
            return self._reader.read(path)
        spec = self.specs[0]
        out_h, out_w, target_h, target_w = self._image_geometry()
        chw = preprocess_rgba(decode_rgba(path), self.config, out_h, out_w, target_h, target_w)
        sample = chw.transpose(1, 2, 0) if spec.layout == "NHWC" else chw
        return {spec.name: sample[None].astype(spec.dtype, copy=False)}

    def samples(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        """``(path, inputs)`` one sample at a time; unusable files are warned about once and skipped."""
        for path in self.files:
            if path in self.skipped:
                continue
            try:
                inputs = self._load(path)
            except (ConfigError, DataError):
                raise
            except Exception as exc:                      # Pillow/numpy raise many kinds on bad files
                reason = f"{exc.__class__.__name__}: {exc}"
                self.skipped[path] = reason
                self._warn(f"calibration file {path} skipped: {reason}")
                continue
            yield path, inputs

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        batch: list[dict[str, np.ndarray]] = []
        produced = 0
        for _, inputs in self.samples():
            produced += 1
            batch.append(inputs)
            if len(batch) == self.batch_size:
                yield _stack(batch)
                batch = []
        if batch and not self.drop_last:
            yield _stack(batch)
        if produced == 0:
            raise DataError(f'{self.config.source}: no usable calibration sample in "path" '
                            f"{self.config.path} ({len(self.files)} file(s) tried)")


def _stack(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(samples) == 1:
        return samples[0]
    return {name: np.concatenate([s[name] for s in samples], axis=0) for name in samples[0]}
