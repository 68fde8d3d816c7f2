"""mnnlite: read, write, run, calibrate and quantize MNN models."""
__version__ = "0.1.0"

from .errors import (  # noqa: F401
    ConfigError, DataError, FormatError, MnnliteError, ShapeError, UnsupportedOpError,
)

from .format.model_io import dumps, load_model, loads, save_model  # noqa: F401,E402
from .graph import Graph, Model  # noqa: F401,E402
from .validation import ValidationReport, validate  # noqa: F401,E402
