"""A demo that ships with the package: PP-OCR's text-direction classifier and 20 labelled text lines.

    python -m mnnlite.demo [OUT_DIR]     # quantize the demo model, then validate the int8 file (exit 1 on FAIL)

It writes ``ppocr_cls.int8.mnn``, its scale dump and the ``config.json`` it used into OUT_DIR (default: a
new temporary folder) and prints where.

``model_path()``, ``calibration_dir()``, ``heldout_dir()``, ``labels_path()`` and ``config()`` give the
pieces for your own runs, e.g. ``mnnlite.quantize(model_path(), "out.mnn", config())``.  Built by
tools/build_demo.py; data licences in LICENSE-DATA.txt.
"""
from __future__ import annotations

import os

_HERE = os.path.dirname(os.path.abspath(__file__))
MIN_COSINE = 0.95              # what the demo's validation asks of every output


def model_path() -> str:
    """The float demo model: a 1 x 3 x 48 x 192 image in, 2 classes out (0 / 180 degrees)."""
    return os.path.join(_HERE, "ppocr_cls.mnn")


def calibration_dir() -> str:
    return os.path.join(_HERE, "calib")


def heldout_dir() -> str:
    return os.path.join(_HERE, "heldout")


def labels_path() -> str:
    """``file label`` lines for every demo image (0 = upright, 1 = upside down)."""
    return os.path.join(_HERE, "labels.txt")


def config(**overrides) -> dict:
    """The quantizer config for the demo model (PaddleOCR's preprocessing: RGB, (x - 127.5) / 127.5)."""
    cfg = {"format": "RGB", "mean": [127.5, 127.5, 127.5], "normal": [1 / 127.5] * 3,
           "width": 192, "height": 48, "path": calibration_dir(),
           "feature_quantize_method": "KL", "weight_quantize_method": "MAX_ABS", "quant_bits": 8}
    cfg.update(overrides)
    return cfg


def run(out_dir: str, log=None, *, mnn_log: bool = False, progress=None, **overrides):
    """Quantize the demo model into ``out_dir`` and validate it on the held-out images.

    Writes ``ppocr_cls.int8.mnn`` (+ ``.json`` scale dump) and ``config.json`` (the config used, so the
    run can be repeated with ``mnnquant-lite``).  ``progress(stage, done, total)`` follows quantization
    and validation.  Returns ``(QuantReport, ValidationReport)``.
    """
    import json

    from ..format.model_io import write_atomic
    from ..quant.quantize import quantize
    from ..validation import validate

    os.makedirs(out_dir, exist_ok=True)
    dst = os.path.join(out_dir, "ppocr_cls.int8.mnn")
    cfg = config(**overrides)
    write_atomic(os.path.join(out_dir, "config.json"), (json.dumps(cfg, indent=2) + "\n").encode())
    report = quantize(model_path(), dst, cfg, log=log, mnn_log=mnn_log, progress=progress)
    check = validate(model_path(), dst, cfg, data=heldout_dir(), labels=labels_path(), min_cosine=MIN_COSINE,
                     progress=progress)
    return report, check
