"""Import the compiled kernels, or explain how to build them.

The runtime, the quantizer and validation need every compiled module; without them they stop with one
``BuildError`` (the command line prints it as one line, exit code 2) instead of running numpy fallbacks
100x slower or failing later on a missing name.  Reading and writing ``.mnn`` files needs no kernels.
"""
import importlib

from .errors import BuildError

# one module per mnnlite/kernels/*.pyx (tests/packaging/test_packaging.py checks the two lists agree)
KERNEL_MODULES = ("calib", "conv", "cpu", "eltwise", "int8", "matmul", "mnn_exact")


def require_extensions() -> None:
    """Raise ``BuildError`` naming the first compiled module that cannot be imported."""
    for name in KERNEL_MODULES:
        try:
            importlib.import_module(f"mnnlite.kernels.{name}")
        except ImportError as exc:
            raise BuildError(
                f"mnnlite's compiled kernels are missing (mnnlite.kernels.{name}: {exc}); this copy of "
                "mnnlite was installed without building them. Install a prebuilt wheel "
                "(pip install --only-binary mnnlite mnnlite), or build them with a C compiler: "
                "pip install . (python setup.py build_ext --inplace in a source tree)"
            ) from None
