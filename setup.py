"""Build numcnn's optional compiled kernels (src/numcnn/backend/_kernels.c), once per
instruction-set variant.

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found,
or the compiler refuses every set of flags, pip installs numcnn without it and numcnn runs on
its NumPy code alone (``numcnn.backend.available()`` says which).

Portable builds. The same C file is compiled three times, each as its own extension module:

    numcnn.backend._kernels_baseline   the x86-64 baseline (SSE2), or the target's default
    numcnn.backend._kernels_avx2       AVX2 + FMA              (x86-64 only)
    numcnn.backend._kernels_avx512     AVX-512 F/BW/DQ/VL + FMA (x86-64 only)

and at run time numcnn loads the highest variant the CPU (and its operating system) supports
(``numcnn/backend/_lib.py``), so one built wheel runs on any x86-64 machine and each machine
gets its fastest path. Never ``-march=native``: a wheel built with it stops with an illegal
instruction on an older CPU. Each variant tries its flags with OpenMP, then without;
``NUMCNN_BUILD_FLAGS`` (space-separated) replaces the common flags.
"""

import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# the variant's own instruction-set flags (on x86-64), added to the common ones
VARIANT_FLAGS = {
    "baseline": ["-mtune=generic"] if X86_64 else [],
    "avx2": ["-mavx2", "-mfma", "-mtune=generic"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
               "-mtune=generic"],
}
VARIANTS = list(VARIANT_FLAGS) if X86_64 else ["baseline"]
COMMON_SETS = [  # (compile, link): with OpenMP threads, then without
    (["-O3", "-fopenmp"], ["-fopenmp"]),
    (["-O3"], []),
]


class OptionalKernels(build_ext):
    """Try each set of flags until one compiles and links; if none does, skip that variant."""

    def build_extension(self, ext):
        variant = ext.name.rsplit("_", 1)[-1]
        common_sets = COMMON_SETS
        if os.environ.get("NUMCNN_BUILD_FLAGS"):
            flags = os.environ["NUMCNN_BUILD_FLAGS"].split()
            common_sets = [(flags, flags)]  # compile and link alike (-fopenmp needs both)
        for compile_args, link_args in common_sets:
            ext.extra_compile_args = compile_args + VARIANT_FLAGS[variant]
            ext.extra_link_args = link_args
            try:
                super().build_extension(ext)
                return
            except Exception as error:  # CompileError, LinkError, or no compiler at all
                print(f"numcnn: building {ext.name} with {' '.join(ext.extra_compile_args)} "
                      f"failed: {error}")
        print(f"numcnn: {ext.name} not built; numcnn will use another variant or NumPy alone")


setup(
    ext_modules=[Extension(f"numcnn.backend._kernels_{variant}",
                           sources=[f"src/numcnn/backend/_kernels_{variant}.c"],
                           depends=["src/numcnn/backend/_kernels.c",
                                    "src/numcnn/backend/_plan.c"], optional=True)
                 for variant in VARIANTS],
    cmdclass={"build_ext": OptionalKernels},
)
