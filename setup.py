"""Build the Cython/C kernels.

Every ``mnnlite/**/*.pyx`` becomes one extension module.  A module names the C files it links
in its own header (``# distutils: sources = csrc/gemm.c``), so adding a kernel never edits this file.

Portable build: no ``-march=native``.  SIMD paths are compiled per function with
``__attribute__((target(...)))`` in csrc/ and chosen at run time by ``csrc/cpu_features.h``.
Set ``MNNLITE_DEBUG=1`` to build with bounds checks and assertions on (used by CI's debug job).
"""
import glob
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("MNNLITE_DEBUG") == "1"

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
    compile_args += ["-std=c11", "-fno-strict-aliasing"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
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


setup(ext_modules=extensions())
