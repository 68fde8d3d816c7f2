"""mnnlite: read, write, run, calibrate and quantize MNN models.

    model = mnnlite.load_model("model.mnn")                       # the .mnn file as a graph
    outputs = mnnlite.Interpreter("model.mnn").run({"x": x})     # float or int8, as MNN runs it
    report = mnnlite.quantize("float.mnn", "quant.mnn", "config.json")
    report = mnnlite.quantize("float.mnn", "quant.mnn", config, samples=[{"x": array}, ...])
    report = mnnlite.validate("float.mnn", "quant.mnn", "config.json", min_cosine=0.99)
"""
__version__ = "0.1.0"

from .errors import (  # noqa: F401
    ConfigError, DataError, FormatError, Interrupted, MnnliteError, OutputError, ResourceError, ShapeError,
    UnsupportedOpError,
)
from .format.model_io import dumps, load_model, loads, save_model  # noqa: F401
from .graph import Graph, Model  # noqa: F401

# the runtime, quantizer and validation load their kernels on first use, not at `import mnnlite`
_LAZY = {
    "Interpreter": ("runtime", "Interpreter"),
    "quantize": ("quant.quantize", "quantize"),
    "preprocess": ("quant.quantize", "preprocess"),
    "QuantReport": ("quant.report", "QuantReport"),
    "validate": ("validation", "validate"),
    "ValidationReport": ("validation", "ValidationReport"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'mnnlite' has no attribute {name!r}")
    import importlib
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
