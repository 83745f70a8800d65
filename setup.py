"""Only what pyproject.toml cannot say: the Cython extension built from kernels/.

The extension is optional unless FASTNET_REQUIRE_CYTHON=1: without a working compiler the
install still succeeds and fastnet falls back to the Numba or NumPy backend, with a notice.
"""
import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

strict = os.environ.get("FASTNET_REQUIRE_CYTHON", "") == "1"

extensions = cythonize(
    [
        Extension(
            "fastnet.ext._ckernels",
            ["kernels/_ckernels.pyx"],
            include_dirs=[numpy.get_include(), "kernels"],  # kernels/*.h
            depends=["kernels/fused_step.pxi", "kernels/bf16_gemm.h", "kernels/amx_gemm.h", "kernels/bf16_round.h", "kernels/normalise_row.h", "kernels/normalised_pairs.h",
                     "kernels/cpu_clones.h"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3", "-fopenmp"],  # OpenMP: the fused step's two-core form
            extra_link_args=["-fopenmp"],
        )
    ],
    compiler_directives={
        "language_level": 3,
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
    },
)
# cythonize() rebuilds each Extension, so `optional` must be set on what it returns.
for ext in extensions:
    ext.optional = not strict

setup(ext_modules=extensions)
