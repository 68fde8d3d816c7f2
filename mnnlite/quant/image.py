"""MNN's image preprocessing for calibration, reproduced exactly (docs/mnn-quantization.md §4.3).

Decode to RGBA with Pillow, then MNN's own math: the float32 4-point matrix solve of its (Skia-derived)
``CV::Matrix``, per-row position stepping in tiles of 512 pixels, bilinear sampling truncated to uint8
(the x86 sampler; MNN's generic C sampler rounds instead), the format blit and ``(v - mean) * normal``.
Pillow only decodes; it never resamples.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from .config import QuantConfig

f32 = np.float32
CACHE_SIZE = 512                  # ImageProcessUtils: rows are stepped in tiles of 512 pixels

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
    there we use the corner-aligned scaling the solve stands for (docs/mnn-quantization.md §4.3), a side of 1 mapping to the
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
    # one uint32 per RGBA pixel: a flat take per corner (2-D fancy indexing of [H, W, 4] is ~10x slower)
    pixels = np.ascontiguousarray(rgba, np.uint8).view(np.uint32).reshape(-1)
    corners = [np.take(pixels, yy * w + xx).view(np.uint8).reshape(x.shape + (4,))
               for yy, xx in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))]
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
    the model's declared dims, docs/mnn-quantization.md §5).  Default: the output size.
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
    from PIL import Image       # here, not at import: sequence calibrations never load Pillow (2 MiB of RSS)

    with Image.open(path) as img:                         # reads the header only
        _check_image_size(path, img.size)
        img.seek(0)                                       # first frame of GIFs and the like
        return np.asarray(img.convert("RGBA"), np.uint8)


def _check_image_size(path: str, size) -> None:
    """Before decoding: Pillow's decompression-bomb limit (it only warns between 1x and 2x of
    MAX_IMAGE_PIXELS; a 13000x13000 PNG of a few KB would still decode to 676 MB) and the memory budget
    (the RGBA array, its float copy and the resized tensor)."""
    from PIL import Image

    from ..errors import ResourceError
    from ..limits import check_alloc

    w, h = size
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:
        raise ResourceError(f"{path}: image of {w}x{h} pixels is over Pillow's decompression-bomb limit "
                            f"({limit:,} pixels); refused before decoding")
    check_alloc(path, "decoded image", (h, w, 4), 1, extra=h * w * 4 * 4)


# -------------------------------------------------------------------------------------- file listing
