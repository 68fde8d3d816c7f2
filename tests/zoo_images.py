"""Deterministic pictures for the zoo's calibration and held-out folders (Pillow): OCR-like text pages,
lines and upside-down lines, or shapes on gradients, with a little noise; and the preprocessing facts
of an image model (``ImageSpec``)."""
from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """Preprocessing of a model with one 3-channel image input (MNN quantizer config keys)."""

    width: int                 # model input width used for calibration
    height: int
    mean: Tuple[float, ...]    # dst = (pixel - mean) * normal, channels in RGB order
    normal: Tuple[float, ...]
    image_size: Tuple[int, int]  # (w, h) of the generated PNGs; != input size exercises the resize
    kind: str = "shapes"       # "shapes", "ocr_det", "ocr_line", "ocr_cls"
    format: str = "RGB"


_WORDS = ("MNN", "lite", "invoice", "total", "2024", "08:15", "hello", "world", "model", "quant",
          "#42", "price", "12.50", "ACME", "road", "No.7", "receipt", "kernel", "int8", "float",
          "OCR", "text", "line", "Zoo", "alpha", "beta", "x=3", "(ok)", "TEL", "99%")


def _font(size: int):
    from PIL import ImageFont

    try:  # Pillow >= 10.1 bundles a scalable default font (needs FreeType)
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_image(spec: ImageSpec, rng: np.random.Generator):
    from PIL import Image, ImageDraw

    w, h = spec.image_size
    if spec.kind == "shapes":
        return _draw_shapes(w, h, rng)
    bg = tuple(int(v) for v in rng.integers(200, 256, 3))
    img = Image.new("RGB", (w, h), bg)
    draw = ImageDraw.Draw(img)
    if spec.kind == "ocr_det":
        y = int(rng.integers(4, 20))
        while y < h - 24:
            size = int(rng.integers(14, 30))
            text = " ".join(rng.choice(_WORDS, int(rng.integers(2, 6))))
            ink = tuple(int(v) for v in rng.integers(0, 90, 3))
            draw.text((int(rng.integers(2, w // 3)), y), text, fill=ink, font=_font(size))
            y += size + int(rng.integers(6, 30))
    else:  # a single text line filling most of the height
        size = int(h * rng.uniform(0.55, 0.8))
        text = " ".join(rng.choice(_WORDS, int(rng.integers(1, 4 if spec.kind == "ocr_cls" else 6))))
        ink = tuple(int(v) for v in rng.integers(0, 90, 3))
        draw.text((int(rng.integers(1, 12)), int((h - size) / 2 - size * 0.1)), text, fill=ink, font=_font(size))
        if spec.kind == "ocr_cls" and rng.random() < 0.5:
            img = img.rotate(180)   # the classifier's job: upright vs upside down
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 6.0, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _draw_shapes(w: int, h: int, rng: np.random.Generator):
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1) + 1) / 2
    grad = c0 * (1 - t[..., None]) + c1 * t[..., None]
    img = Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        x0, x1 = sorted(rng.integers(0, w, 2).tolist())
        y0, y1 = sorted(rng.integers(0, h, 2).tolist())
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        if shape == 0:
            draw.ellipse([x0, y0, x1 + 2, y1 + 2], fill=fill)
        elif shape == 1:
            draw.rectangle([x0, y0, x1 + 2, y1 + 2], fill=fill)
        else:
            draw.line([x0, y0, x1, y1], fill=fill, width=int(rng.integers(1, 4)))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 4.0, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
