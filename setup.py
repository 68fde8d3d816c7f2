"""Build the Cython/C kernels.

Every ``mnnlite/**/*.pyx`` becomes one extension module.  A module names the C files it links
in its own header (``# distutils: sources = csrc/gemm.c``), so adding a kernel never edits this file.

Portable build: no ``-march=native``.  SIMD paths are compiled per function with
``__attribute__((target(...)))`` in csrc/ and chosen at run time by ``csrc/cpu_features.h``.
Set ``MNNLITE_DEBUG=1`` to build with bounds checks and assertions on (used by CI's debug job).

Without a working C compiler the build stops with one message saying what to install (or to use a
prebuilt wheel) instead of a compiler traceback.
"""
import glob
import os
import shutil
import sys

import numpy
import setuptools
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NO_COMPILER = (
    "mnnlite: building the compiled kernels needs a C compiler ({detail}). Install one "
    "(Debian/Ubuntu: apt-get install build-essential python3-dev; Fedora: dnf install gcc python3-devel; "
    "macOS: xcode-select --install), or install a prebuilt wheel: pip install --only-binary mnnlite mnnlite"
)

DEBUG = os.environ.get("MNNLITE_DEBUG") == "1"

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    # DEBUG: no optimisation, and assert() live again (Python's own CFLAGS carry -DNDEBUG)
    compile_args = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"]
    compile_args += ["-std=c11", "-fno-strict-aliasing"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "show_performance_hints": not DEBUG,     # the debug build's checks are the point, not hints to drop them
}


def extensions():
    exts = []
    for pyx in sorted(glob.glob("mnnlite/**/*.pyx", recursive=True)):
        module = os.path.splitext(pyx)[0].replace(os.sep, ".").replace("/", ".")
        exts.append(
            Extension(
                module,
                [pyx],
                include_dirs=["csrc", numpy.get_include()],
                extra_compile_args=compile_args,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return cythonize(exts, compiler_directives=directives, include_path=["mnnlite"])


class BuildExt(build_ext):
    """``build_ext`` that checks for a C compiler first and turns a failed compile into one message."""

    def build_extensions(self):
        missing = _missing_compiler(self.compiler)
        if missing:
            sys.exit(NO_COMPILER.format(detail=missing))
        try:
            super().build_extensions()
        except Exception as exc:        # CompileError / DistutilsExecError from whichever distutils
            if type(exc).__name__ not in ("CompileError", "DistutilsExecError", "LinkError"):
                raise
            sys.exit(NO_COMPILER.format(detail=f"the compiler failed: {exc}"))


def _missing_compiler(compiler) -> str:
    """Why ``compiler`` cannot run (its executable is not found), or "" when it looks usable."""
    command = getattr(compiler, "compiler_so", None) or getattr(compiler, "compiler", None)
    if not command:                     # MSVC: distutils finds it itself and reports its own error
        return ""
    if shutil.which(command[0]) is None:
        return f"{command[0]!r} was not found"
    return ""


def _legacy_license_table():
    """setuptools < 77 predates PEP 639 and rejects ``license = "Apache-2.0"`` in pyproject.toml; an in-place
    build with such a setuptools (``python setup.py build_ext --inplace``) reads it as the old
    ``{text = ...}`` table and ignores ``license-files``.  Isolated builds get setuptools >= 77."""
    major = int(setuptools.__version__.split(".")[0])
    if major >= 77:
        return
    from setuptools.config import pyprojecttoml

    load_file = pyprojecttoml.load_file

    def load_with_table(path):
        doc = load_file(path)
        project = doc.get("project", {})
        if isinstance(project.get("license"), str):
            project["license"] = {"text": project["license"]}
            project.pop("license-files", None)
        return doc
    pyprojecttoml.load_file = load_with_table


_legacy_license_table()
setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
