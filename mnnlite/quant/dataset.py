"""Calibration data (docs/mnn-quantization.md §4-5): image folders and per-sample sequence folders.

``CalibrationSet(config, input_specs)`` lists the samples once and streams them: iterating yields
``{input name: float32 array}`` batches, one image or sample decoded at a time.  Files that cannot be
used are reported (``logging`` warning, or the ``on_warning`` callback) and skipped; ``DataError`` is
raised only when no sample is usable.

Image preprocessing (MNN's ``ImageProcess`` math, exactly) lives in ``image.py``.

Deviations (docs/mnn-quantization.md §14): with ``"file_order": "sorted"`` files are sorted before the first N are taken (the
default takes the first N in readdir order, then sorts, as MNN); only regular files are image candidates and
only folders / .npy / .npz files are sequence candidates (MNN feeds everything); an undecodable file is
skipped with a warning (MNN reuses the previous sample's data); EMA + sequence batches hold only the last
sample of each batch, as MNN's (``"ema_sequence_batch": "full"``: every sample); a missing
``width``/``height`` falls back to the model input's own size (MNN leaves it uninitialised); a 1-pixel output
side uses plain corner-aligned scaling (MNN's solve yields NaN).
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, DataError, did_you_mean
from ..limits import check_alloc
from .config import QuantConfig
from .image import decode_rgba, preprocess_rgba

log = logging.getLogger(__name__)
f32 = np.float32
DEFAULT_BATCH = 32                # docs/mnn-quantization.md §3: batch_size default


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


def list_candidates(config: QuantConfig) -> list[str]:
    """The entries of ``config.path`` (hidden names skipped) that can hold a sample: the first N, sorted.

    Image mode: regular files.  Sequence mode: folders, ``.npy`` and ``.npz`` files.  ``file_order``
    "directory" (default) takes the first N in the order the file system lists them, as MNN does (docs/mnn-quantization.md §4:
    readdir order, then sorted), so a folder with more files than N gives MNN's own selection;
    "sorted" sorts first, which selects the same files on every file system.
    """
    try:
        names = [n for n in os.listdir(config.path) if not n.startswith(".")]   # listdir is readdir order
    except OSError as exc:
        raise DataError(f'{config.source}: "path" {config.path} cannot be listed: '
                        f"{exc.strerror or exc}") from None
    if config.file_order == "sorted":
        names.sort()
    paths = [os.path.join(config.path, n) for n in names]
    if config.input_type == "image":
        paths = [p for p in paths if os.path.isfile(p)]
    else:
        paths = [p for p in paths if os.path.isdir(p) or p.endswith((".npy", ".npz"))]
    if config.used_sample_num is not None:
        paths = paths[:config.used_sample_num]
    paths.sort()
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
    """``(batch, drop_last)`` per docs/mnn-quantization.md §5: EMA batches (config, else the model's batch, else 32; at most
    the sample count, 1 for sequence data with fewer samples than a batch; remainder dropped); KL and
    ADMM take one sample at a time."""
    if config.feature_quantize_method != "EMA":
        return 1, False
    batch = config.batch_size
    if batch is None:
        model_batch = specs[0].shape[0] if specs and specs[0].shape else 0
        batch = model_batch if model_batch > 0 else DEFAULT_BATCH
    if samples < batch and config.input_type == "sequence":
        return 1, True                  # fewer samples than a batch: MNN's sequence path drops to 1
    return max(1, min(batch, samples)), True


class SampleSource:
    """Where calibration (and validation) samples come from: a folder (``CalibrationSet``) or arrays in
    memory (``ArraySamples``).  A source yields ``(label, {input name: array})`` one sample at a time from
    ``samples()`` (the label names the sample in messages and reports) and, iterated, batches of
    ``batch_size`` samples stacked along dim 0 (the last partial batch dropped when ``drop_last``)."""

    batch_size: int = 1
    drop_last: bool = False
    _last_of_batch: bool = False        # MNN's EMA sequence batches: only the last sample runs (CalibrationSet)

    @property
    def sample_count(self) -> int:
        raise NotImplementedError

    def samples(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        raise NotImplementedError

    def __len__(self) -> int:
        n = self.sample_count
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        batch: list[dict[str, np.ndarray]] = []
        produced = 0
        for _, inputs in self.samples():
            produced += 1
            batch.append(inputs)
            if len(batch) == self.batch_size:
                if self._last_of_batch:
                    batch = batch[-1:]
                stacked, batch = _stack(batch), []      # the samples are not kept while the batch runs
                yield stacked
                del stacked
        if batch and not self.drop_last:
            yield _stack(batch)
        if produced == 0:
            raise DataError(self.empty_message())

    def empty_message(self) -> str:
        return "no usable calibration sample"


class CalibrationSet(SampleSource):
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
        # MNN's EMA with sequence input reads each sample of a batch into the same input and runs the
        # batch once: only its last sample is calibrated on (docs/mnn-quantization.md §14.18); "ema_sequence_batch": "full"
        # runs every sample
        self._last_of_batch = (config.input_type == "sequence" and config.feature_quantize_method == "EMA"
                               and config.ema_sequence_batch == "last" and self.drop_last)
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
            out_h, out_w = model_h, model_w                 # EMA: tensor from the model's dims (docs/mnn-quantization.md §5)
        else:
            out_h, out_w = target_h, target_w
        if min(out_h, out_w, target_h, target_w) <= 0:
            raise ConfigError(f'{cfg.source}: "width" and "height" are needed: model input {spec.name!r} '
                              f"has no fixed size ({list(spec.shape)})")
        # both sizes come from the model or the config: bounded before any image is resized to them
        check_alloc(f"{cfg.source}: input {spec.name!r}", "preprocessed image", (4, out_h, out_w), 4)
        check_alloc(f"{cfg.source}: input {spec.name!r}", "resize target", (4, target_h, target_w), 4)
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

    def empty_message(self) -> str:
        return (f'{self.config.source}: no usable calibration sample in "path" {self.config.path} '
                f"({len(self.files)} file(s) tried)")


class ArraySamples(SampleSource):
    """Samples given as arrays: ``{input name: array}`` per sample, or a bare array for a one-input model.

    Arrays are in the model input's own layout (NCHW, or NHWC for TensorFlow-style inputs) and already
    preprocessed: they are fed as they are, cast to the input's dtype.  A leading batch dim of 1 may be
    left out.  The iterable is read once, checked and kept (each calibration pass reads the samples again);
    a bad sample is a ``TypeError`` or ``ValueError`` naming its index and input.  Every model input must be
    given in every sample.
    """

    def __init__(self, samples, input_specs, config: QuantConfig | None = None, batch_size: int | None = None,
                 drop_last: bool | None = None):
        self.specs = _specs(input_specs)
        if isinstance(samples, (str, bytes, Mapping, np.ndarray)) or not hasattr(samples, "__iter__"):
            kind = "one array" if isinstance(samples, np.ndarray) else type(samples).__name__
            raise TypeError(f"samples must be an iterable of samples ({{input name: array}} or arrays), got "
                            f"{kind}; pass a list, e.g. [array] for a single sample")
        self._samples = [self._check(i, s) for i, s in enumerate(samples)]
        if not self._samples:
            raise ValueError("samples: the iterable holds no sample")
        if config is not None and batch_size is None:
            batch_size, auto_drop = resolve_batch_size(config, self.specs, len(self._samples))
            drop_last = auto_drop if drop_last is None else drop_last
        self.batch_size = int(batch_size or 1)
        self.drop_last = bool(drop_last)

    @property
    def sample_count(self) -> int:
        return len(self._samples)

    def keep_first(self, count: int) -> None:
        """Use only the first ``count`` samples."""
        self._samples = self._samples[:count]

    def samples(self) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i, inputs in enumerate(self._samples):
            yield f"samples[{i}]", inputs

    def _check(self, index: int, sample) -> dict[str, np.ndarray]:
        names = [s.name for s in self.specs]
        if not isinstance(sample, Mapping):
            if len(self.specs) != 1:
                raise TypeError(f"samples[{index}]: got {type(sample).__name__}; this model has inputs {names}, "
                                f"so each sample must be a dict {{input name: array}}")
            sample = {names[0]: sample}
        unknown = [k for k in sample if k not in names]
        if unknown:
            raise ValueError(f"samples[{index}]: the model has no input {unknown[0]!r}"
                             f"{did_you_mean(unknown[0], names)}; its inputs are {names}")
        missing = [n for n in names if n not in sample]
        if missing:
            raise ValueError(f"samples[{index}]: input {missing[0]!r} is missing; every sample needs every "
                             f"model input {names}")
        return {spec.name: self._array(index, spec, sample[spec.name]) for spec in self.specs}

    @staticmethod
    def _array(index: int, spec: InputSpec, value) -> np.ndarray:
        where = f"samples[{index}][{spec.name!r}]"
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where}: expected a numpy array, got {type(value).__name__}")
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{where}: expected a numeric array, got dtype {value.dtype}")
        dims, given = spec.shape, list(value.shape)
        if dims and value.ndim == len(dims) - 1 and dims[0] in (1, 0, -1):
            value = value[None]                                   # the batch dim of 1 left out
        if dims and value.ndim != len(dims):
            raise ValueError(f"{where}: shape {given} does not fit input {spec.name!r} of shape "
                             f"{list(dims)} ({spec.layout}; -1 or 0 = any size)")
        bad = [(axis, d, n) for axis, (d, n) in enumerate(zip(dims, value.shape)) if d > 0 and d != n]
        if bad:
            axis, want, got = bad[0]
            raise ValueError(f"{where}: shape {given} does not fit input {spec.name!r} of shape "
                             f"{list(dims)} ({spec.layout}): axis {axis} is {got}, the model needs {want}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ValueError(f"{where}: holds NaN or infinite values")
        return np.ascontiguousarray(value, dtype=spec.dtype)


def sample_source(config: QuantConfig, input_specs, samples=None, **kwargs) -> SampleSource:
    """The config's folder (``CalibrationSet``), or ``samples`` (``ArraySamples``) when they are given."""
    if samples is not None:
        return ArraySamples(samples, input_specs, config)
    return CalibrationSet(config, input_specs, **kwargs)


def _stack(samples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(samples) == 1:
        return samples[0]
    return {name: np.concatenate([s[name] for s in samples], axis=0) for name in samples[0]}


class RuntimeFeeds:
    """Calibration feeds completed for the runtime: image mode fills only the first input (MNN), the
    others get zeros of their declared shape."""

    def __init__(self, samples, specs: list[InputSpec], source: str):
        self.samples, self.specs, self.source = samples, specs, source

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        for feeds in self.samples:
            missing = [s for s in self.specs if s.name not in feeds]
            if missing:
                feeds = dict(feeds)
                for spec in missing:
                    if not spec.shape or any(d <= 0 for d in spec.shape):
                        raise DataError(f"{self.source}: image mode fills only the model's first input; "
                                        f"input {spec.name!r} has no fixed shape {list(spec.shape)} "
                                        f'(use "input_type": "sequence")')
                    feeds[spec.name] = np.zeros(spec.shape, spec.dtype)
            yield feeds
