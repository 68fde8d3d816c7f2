"""mnnlite: read, write, run, calibrate and quantize MNN models."""
__version__ = "0.1.0"

from .errors import (  # noqa: F401
    ConfigError, DataError, FormatError, MnnliteError, ShapeError, UnsupportedOpError,
)
