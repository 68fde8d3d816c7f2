"""The quantizer's JSON config: MNN's keys and defaults (docs/mnn-quantization.md §3), strictly validated.

``load_config`` accepts a path or an already parsed dict and returns a frozen ``QuantConfig``.  Where MNN
ignores a bad value, crashes, or prints a message and crashes later, we raise ``ConfigError`` with one line
naming the file and key and listing what is allowed.  Python field names equal the JSON keys except
``used_image_num``/``used_sample_num`` -> ``used_sample_num`` and ``winogradOpt`` -> ``winograd_opt``.

Relative ``path``: ``quantized.out`` hands the string to ``opendir`` as is, so it is relative to the
current working directory, not to the config file's folder.  We do the same and store the absolute path
resolved against the working directory at load time (so a later ``chdir`` changes nothing).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

from ..errors import ConfigError, did_you_mean
from .feature import FEATURE_METHODS        # the registered feature methods: the config's choices

log = logging.getLogger(__name__)

FORMATS = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "GRAY": 1}   # destination format -> channels
WEIGHT_METHODS = ("MAX_ABS", "ADMM")
WEIGHT_RANGE_METHODS = ("max_abs", "mse")    # mnnlite's own key (weight.py: RANGE_METHODS)
INPUT_TYPES = ("image", "sequence")
# mnnlite's own accuracy keys (README "Accurate preset"); absent, the output is MNN's, byte for byte
PRESETS = ("accurate",)
RANGE_METHODS = ("auto", "max", "kl", "percentile", "mse")
RANGE_OBJECTIVES = ("tensor", "downstream")  # ranges.py: RANGE_OBJECTIVES
SCORE_ON = ("outputs", "logits")             # sensitivity.py: what target_cosine is measured on
INT8_OPS = ("auto", "convs")                 # "convs": conv inputs/outputs only, no plan repairs
# what "preset": "accurate" switches on; explicit keys in the config win.  Of the weight-side corrections,
# MSE weight ranges and cross-layer equalization help on every zoo model (held-out cosine of the all-int8
# file, ppocr_cls / det / rec: 0.9947 / 0.9890 / 0.9613 -> 0.99998 / 0.9906 / 0.9718); bias correction is
# left out: it lowers ppocr_cls to 0.948 and det/rec alone too.
# range_candidates: the held-out samples choose between "auto" and "percentile" per model (README "Accurate
# preset"; one more build and held-out run)
PRESET_KEYS = {"accurate": {"range_method": "auto", "int8_ops": "auto", "target_cosine": 0.99,
                            "weight_range_method": "mse", "cross_layer_equalization": True,
                            "range_candidates": ("auto", "percentile")}}
MIN_BITS, MAX_BITS = 2, 8
FEATURE_CLAMP_MAX = 127                      # activations are always int8 (docs/mnn-quantization.md §3)


@dataclass(frozen=True)
class InputConfig:
    """One entry of ``inputs``: a model input and, optionally, the shape to calibrate it with."""

    name: str
    shape: tuple[int, ...] | None = None
    value: float | None = None               # read by MNN, never used


@dataclass(frozen=True)
class QuantConfig:
    """Every key of MNN's quantizer config with MNN's defaults (docs/mnn-quantization.md §3)."""

    path: str
    format: str = "BGR"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    normal: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    width: int | None = None                 # MNN leaves these uninitialised; the dataset then uses the
    height: int | None = None                # model input's own H and W (see dataset.py)
    center_crop_h: float = 1.0
    center_crop_w: float = 1.0
    batch_size: int | None = None            # None = not set: 32, or the model's batch under EMA (docs/mnn-quantization.md §5)
    quant_bits: int = 8
    used_sample_num: int | None = None       # None = every file
    feature_quantize_method: str = "KL"
    weight_quantize_method: str = "MAX_ABS"
    feature_clamp_value: int = 127
    weight_clamp_value: int = 127
    winograd_opt: bool | None = None         # None = MNN's default: on under EMA, off otherwise
    skip_quant_op_names: tuple[str, ...] = ()
    debug: bool = False
    input_type: str = "image"
    inputs: tuple[InputConfig, ...] = ()
    model: str | None = None                 # in MNN's documented example, ignored by the tool
    # mnnlite's opt-in deviations from MNN 3.6.1 (README "Where mnnlite follows MNN's intent"); the
    # defaults give MNN's own file, which is never less accurate in MNN's runtime
    file_order: str = "directory"            # "sorted": sort the folder before taking used_*_num files
    input_threshold: str = "auto"            # "max": model inputs use the MAX threshold (MNN's intent)
    quantize_rangeless_tensors: bool | None = None   # scale-0 quant info: None = MNN's (KL) / none (ADMM)
    ema_sequence_batch: str = "last"         # "full": EMA sequence batches run every sample (MNN: the last)
    # mnnlite's weight-side corrections (not MNN keys; off by default, so the output stays MNN's)
    bias_correction: bool = False            # bias_correction.py
    cross_layer_equalization: bool = False   # equalize.py
    weight_range_method: str = "max_abs"     # weight.py: RANGE_METHODS
    preset: str | None = None                # mnnlite: "accurate" (the keys of PRESET_KEYS)
    range_method: str | None = None          # mnnlite: per-tensor range choice (ranges.py)
    range_objective: str | None = None       # mnnlite: "tensor" / "downstream" error a range is chosen by
    score_on: str | None = None              # mnnlite: "outputs" / "logits" target_cosine is measured on
    range_candidates: tuple[str, ...] | None = None   # mnnlite: range methods the held-out samples choose from
    int8_ops: str | None = None              # mnnlite: which ops run int8 (opselect.py)
    target_cosine: float | None = None       # mnnlite: leave ops float until held-out cosine >= this
    holdout: float = 0.25                    # mnnlite: share of the samples held out for target_cosine
    max_float_convs: float = 0.1             # mnnlite: share of convolutions target_cosine may leave float
    source: str = field(default="<dict>", compare=False)

    @property
    def accurate(self) -> bool:
        """Whether mnnlite's own range / op choice runs (else MNN's exact flow)."""
        return (self.range_method is not None or self.int8_ops is not None or self.target_cosine is not None
                or self.range_objective is not None or self.range_candidates is not None)

    @property
    def channels(self) -> int:
        """Channel count of the destination image format."""
        return FORMATS[self.format]

    @property
    def mean4(self) -> tuple[float, ...]:
        """``mean`` padded to MNN's four slots (missing entries are 0)."""
        return tuple(self.mean) + (0.0,) * (4 - len(self.mean))

    @property
    def normal4(self) -> tuple[float, ...]:
        """``normal`` padded to MNN's four slots (missing entries are 1)."""
        return tuple(self.normal) + (1.0,) * (4 - len(self.normal))

    @property
    def writes_rangeless_tensors(self) -> bool:
        """Whether scale-0 tensors get quant info.  Default: as MNN's KL file does (its runtime then runs a
        GREATER + Select PReLU in int8, which MTCNN's accuracy needs); under ADMM, whose MNN version crashes
        on every ONNX model, so there is no file of MNN's to match, they stay float (those int8 commands
        read memory no kernel wrote: cnn's held-out cosine 0.952 with them, 0.999 without)."""
        if self.quantize_rangeless_tensors is not None:
            return self.quantize_rangeless_tensors
        return self.feature_quantize_method != "ADMM"

    @property
    def use_winograd(self) -> bool:
        """MNN: on by default under EMA; ``false`` turns it off; it cannot be enabled for KL/ADMM."""
        return self.feature_quantize_method == "EMA" and self.winograd_opt is not False

    def input_shape(self, name: str) -> tuple[int, ...] | None:
        """The calibration shape the config gives for input ``name``, if any."""
        for entry in self.inputs:
            if entry.name == name:
                return entry.shape
        return None


# ------------------------------------------------------------------------------------------ validation

class _Keys:
    """Typed access to one JSON object; every error names the source and the key."""

    def __init__(self, obj: dict, source: str, where: str = ""):
        self.obj, self.source, self.where = obj, source, where

    def fail(self, key: str, expected: str, got=None, show_value: bool = True):
        found = f", got {json.dumps(got)}" if show_value else ""
        raise ConfigError(f'{self.source}: "{self.where}{key}" must be {expected}{found}')

    def get(self, key: str, check, expected: str, default=None):
        if key not in self.obj:
            return default
        value = self.obj[key]
        if not check(value):
            self.fail(key, expected, value)
        return value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_str(v) -> bool:
    return isinstance(v, str)


def _is_bool(v) -> bool:
    return isinstance(v, bool)


def _number_list(v, most: int) -> bool:
    return isinstance(v, list) and 1 <= len(v) <= most and all(_is_number(x) for x in v)


def _positive_int(v) -> bool:
    return _is_int(v) and v > 0


def _choice(keys: _Keys, key: str, allowed, default):
    value = keys.get(key, _is_str, "a string: one of " + ", ".join(allowed), default)
    if value not in allowed:
        keys.fail(key, "one of " + ", ".join(allowed) + did_you_mean(value, allowed), value)
    return value


def _clamp(keys: _Keys, key: str, default: int, high: int, bits: int) -> int:
    """A clamp value: a number truncated to int like MNN does, which must fit 1..high."""
    value = keys.get(key, _is_number, f"a number in 1..{high}", None)
    if value is None:
        return default
    clamp = int(value)
    if not 1 <= clamp <= high:
        what = f"an integer in 1..{high}" + (f" (quant_bits {bits} allows at most {high})" if bits else "")
        keys.fail(key, what, value)
    return clamp


def _inputs(keys: _Keys) -> tuple[InputConfig, ...]:
    raw = keys.get("inputs", lambda v: isinstance(v, list), "a list of {name, shape, value} objects", [])
    entries = []
    for i, item in enumerate(raw):
        where = f"inputs[{i}]."
        if not isinstance(item, dict):
            keys.fail(f"inputs[{i}]", "an object with name, shape, value", item)
        unknown = sorted(set(item) - {"name", "shape", "value"})
        if unknown:
            raise ConfigError(f'{keys.source}: unknown key "{where}{unknown[0]}"'
                              f'{did_you_mean(unknown[0], ("name", "shape", "value"))}; allowed: name, shape, value')
        sub = _Keys(item, keys.source, where)
        name = sub.get("name", lambda v: _is_str(v) and v != "", "a non-empty string", None)
        if name is None:
            sub.fail("name", "given (a non-empty string)", show_value=False)
        shape = sub.get("shape", lambda v: isinstance(v, list) and len(v) > 0 and all(_positive_int(d) for d in v),
                        "a non-empty list of positive integers", None)
        value = sub.get("value", _is_number, "a number", None)
        entries.append(InputConfig(name, None if shape is None else tuple(shape), value))
    return tuple(entries)


_KNOWN_KEYS = (
    "format", "mean", "normal", "width", "height", "center_crop_h", "center_crop_w", "batch_size",
    "quant_bits", "path", "used_image_num", "used_sample_num", "feature_quantize_method",
    "weight_quantize_method", "feature_clamp_value", "weight_clamp_value", "winogradOpt",
    "skip_quant_op_names", "debug", "input_type", "inputs", "model",
    "file_order", "input_threshold", "quantize_rangeless_tensors", "ema_sequence_batch",
    "bias_correction", "cross_layer_equalization", "weight_range_method",
    "preset", "range_method", "int8_ops", "target_cosine", "holdout", "max_float_convs", "range_objective",
    "score_on", "range_candidates",
)
FILE_ORDERS = ("directory", "sorted")
EMA_SEQUENCE_BATCHES = ("last", "full")
INPUT_THRESHOLDS = ("auto", "max")


def _read(path_or_dict) -> tuple[dict, str]:
    if isinstance(path_or_dict, dict):
        _check_depth(path_or_dict, "<dict>")
        return path_or_dict, "<dict>"
    path = os.fspath(path_or_dict)
    if os.path.exists(path) and not os.path.isfile(path):      # a folder, FIFO or device: never opened
        raise ConfigError(f"{path}: the config is not a regular file")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the config: {reason}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: the JSON nests deeper than Python can parse") from None
    _check_depth(obj, path)
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: the config must be a JSON object {{...}}, got {type(obj).__name__}")
    return obj, path


def _check_depth(obj, source: str) -> None:
    """No config key needs more than a few levels; a deeper one is refused here, iteratively, before
    any recursive code sees it (limits.MAX_CONFIG_DEPTH)."""
    from ..limits import MAX_CONFIG_DEPTH

    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"{source}: the config nests more than {MAX_CONFIG_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _path(keys: _Keys, required: bool = True) -> str:
    path = keys.get("path", _is_str, "a string: the folder of calibration files", None)
    if not required and not path:
        return ""
    if path is None or path == "":
        keys.fail("path", "given: the folder of calibration files (a non-empty string)", path, path is not None)
    return os.path.abspath(path)


def _image_keys(keys: _Keys) -> dict:
    out = {"format": _choice(keys, "format", tuple(FORMATS), "BGR")}
    for key, default in (("mean", (0.0,) * 4), ("normal", (1.0,) * 4)):
        out[key] = tuple(float(x) for x in keys.get(key, lambda v: _number_list(v, 4),
                                                     "a list of 1 to 4 numbers", default))
    for key in ("width", "height"):
        out[key] = keys.get(key, _positive_int, "a positive integer", None)
    for key in ("center_crop_h", "center_crop_w"):
        out[key] = float(keys.get(key, lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]", 1.0))
    return out


def load_config(path_or_dict, require_path: bool = True, overrides: dict | None = None) -> QuantConfig:
    """Parse and validate a quantizer config (a JSON file path, or the parsed dict).

    ``require_path=False``: the samples come from elsewhere (arrays), so ``path`` may be left out.
    ``overrides``: keys that fill in what the config does not give (e.g. a ``--preset`` flag)."""
    obj, source = _read(path_or_dict)
    if overrides:
        obj = {**{k: v for k, v in overrides.items() if v is not None}, **obj}
    unknown = sorted(set(obj) - set(_KNOWN_KEYS))
    if unknown:
        raise ConfigError(f'{source}: unknown key "{unknown[0]}"{did_you_mean(unknown[0], _KNOWN_KEYS)}; '
                          f'allowed keys: {", ".join(sorted(_KNOWN_KEYS))}')
    keys = _Keys(obj, source)
    bits = keys.get("quant_bits", lambda v: _is_int(v) and MIN_BITS <= v <= MAX_BITS,
                    f"an integer in {MIN_BITS}..{MAX_BITS}", 8)
    # MNN: used_sample_num wins when both are given; 0 (MNN's "all") is rejected: omit the key instead.
    count_key = "used_sample_num" if "used_sample_num" in obj else "used_image_num"
    used = keys.get(count_key, _positive_int, "a positive integer (omit the key to use every file)", None)
    return QuantConfig(
        path=_path(keys, require_path),
        **_image_keys(keys),
        batch_size=keys.get("batch_size", _positive_int, "a positive integer", None),
        quant_bits=bits,
        used_sample_num=used,
        feature_quantize_method=_choice(keys, "feature_quantize_method", tuple(FEATURE_METHODS), "KL"),
        weight_quantize_method=_choice(keys, "weight_quantize_method", WEIGHT_METHODS, "MAX_ABS"),
        feature_clamp_value=_clamp(keys, "feature_clamp_value", FEATURE_CLAMP_MAX, FEATURE_CLAMP_MAX, 0),
        weight_clamp_value=_weight_clamp(keys, bits),
        winograd_opt=keys.get("winogradOpt", _is_bool, "true or false", None),
        skip_quant_op_names=tuple(keys.get("skip_quant_op_names",
                                           lambda v: isinstance(v, list) and all(_is_str(x) for x in v),
                                           "a list of op names (strings)", [])),
        debug=keys.get("debug", _is_bool, "true or false", False),
        input_type=_choice(keys, "input_type", INPUT_TYPES, "image"),
        inputs=_inputs(keys),
        model=keys.get("model", _is_str, "a string (unused)", None),
        file_order=_choice(keys, "file_order", FILE_ORDERS, "directory"),
        input_threshold=_choice(keys, "input_threshold", INPUT_THRESHOLDS, "auto"),
        quantize_rangeless_tensors=keys.get("quantize_rangeless_tensors", _is_bool, "true or false", None),
        ema_sequence_batch=_choice(keys, "ema_sequence_batch", EMA_SEQUENCE_BATCHES, "last"),
        **_weight_side_keys(keys),
        source=source,
        **_accuracy_keys(keys),
    )


def _weight_side_keys(keys: _Keys) -> dict:
    """mnnlite's weight-side correction keys (README "Weight-side corrections"); a preset's PRESET_KEYS
    give the defaults of those the config does not set."""
    preset = keys.obj.get("preset")
    base = PRESET_KEYS.get(preset, {}) if isinstance(preset, str) else {}
    return {
        "bias_correction": keys.get("bias_correction", _is_bool, "true or false", base.get("bias_correction", False)),
        "cross_layer_equalization": keys.get("cross_layer_equalization", _is_bool, "true or false",
                                             base.get("cross_layer_equalization", False)),
        "weight_range_method": _choice(keys, "weight_range_method", WEIGHT_RANGE_METHODS,
                                       base.get("weight_range_method", "max_abs")),
    }


def _accuracy_keys(keys: _Keys) -> dict:
    """mnnlite's accuracy keys; a preset fills the ones the config does not give."""
    preset = keys.get("preset", _is_str, "a string: " + ", ".join(PRESETS), None)
    if preset is not None and preset not in PRESETS:
        keys.fail("preset", "one of " + ", ".join(PRESETS), preset)
    base = dict(PRESET_KEYS.get(preset, {}))
    out = {"preset": preset}
    for key, allowed in (("range_method", RANGE_METHODS), ("int8_ops", INT8_OPS),
                         ("range_objective", RANGE_OBJECTIVES), ("score_on", SCORE_ON)):
        out[key] = _choice(keys, key, allowed, None) if key in keys.obj else base.get(key)
    fraction = (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)")
    out["target_cosine"] = keys.get("target_cosine", fraction[0], "a number in (0, 1)", base.get("target_cosine"))
    out["holdout"] = float(keys.get("holdout", *fraction, 0.25))
    out["max_float_convs"] = float(keys.get("max_float_convs", lambda v: _is_number(v) and 0 <= v <= 1,
                                            "a number in [0, 1]", 0.1))
    if out["target_cosine"] is not None:
        out["target_cosine"] = float(out["target_cosine"])
    # an explicit range_method is the user's choice: the preset's candidates then stay out
    out["range_candidates"] = _range_candidates(keys, None if "range_method" in keys.obj
                                                else base.get("range_candidates"))
    return out


def _range_candidates(keys: _Keys, default):
    """``range_candidates``: two or more distinct range methods, judged on the held-out samples, which
    only ``target_cosine`` sets aside (the API's ``metric=`` does too)."""
    value = keys.get("range_candidates", lambda v: isinstance(v, list) and len(v) >= 2
                     and all(isinstance(m, str) and m in RANGE_METHODS for m in v) and len(set(v)) == len(v),
                     "a list of two or more different range methods: " + ", ".join(RANGE_METHODS), default)
    return None if value is None else tuple(value)


def _weight_clamp(keys: _Keys, bits: int) -> int:
    """Weight clamp for ``bits``: at most 2^(bits-1)-1.

    MNN replaces a given value by 2^(bits-1)-1 when bits < 8 (we do too, with a warning when that changes
    it).  Without the key MNN keeps 127 for low bits and destroys the weights (docs/mnn-quantization.md §14.4); we use the
    bits' own limit, which is what MNN does whenever the key is present.
    """
    high = (1 << (bits - 1)) - 1
    clamp = _clamp(keys, "weight_clamp_value", high, high, bits)
    if bits < 8 and clamp != high:
        log.warning('%s: "weight_clamp_value" %d replaced by %d for quant_bits %d, as MNN does',
                    keys.source, clamp, high, bits)
        clamp = high
    return clamp
