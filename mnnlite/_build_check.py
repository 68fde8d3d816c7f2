"""Import the compiled kernels, or explain how to build them."""
from .errors import BuildError


def require_extensions():
    try:
        from .kernels import cpu  # noqa: F401
    except ImportError as exc:
        raise BuildError(
            "mnnlite's compiled kernels are missing (" + str(exc) + "). Build them with "
            "`pip install -e .` (or `python setup.py build_ext --inplace`) from the source tree."
        ) from None
