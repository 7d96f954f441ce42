"""Build numcnn's optional compiled kernels (numcnn._kernels, from src/numcnn/_kernels.c).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found,
or the compiler refuses every set of flags below, pip installs numcnn without it and numcnn runs
on its NumPy code alone (``numcnn.functional.kernels.available()`` says which). Flags are tried
from fastest to most portable: the machine's own instruction set and OpenMP threads, then each
of those dropped. ``NUMCNN_BUILD_FLAGS`` (space-separated) replaces the list with one set.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAG_SETS = [
    (["-O3", "-march=native", "-fopenmp"], ["-fopenmp"]),
    (["-O3", "-fopenmp"], ["-fopenmp"]),
    (["-O3", "-march=native"], []),
    (["-O3"], []),
]


class OptionalKernels(build_ext):
    """Try each set of flags until one compiles and links; if none does, skip the extension."""

    def build_extension(self, ext):
        flag_sets = FLAG_SETS
        if os.environ.get("NUMCNN_BUILD_FLAGS"):
            flags = os.environ["NUMCNN_BUILD_FLAGS"].split()
            flag_sets = [(flags, flags)]  # compile and link alike (-fopenmp needs both)
        for compile_args, link_args in flag_sets:
            ext.extra_compile_args, ext.extra_link_args = compile_args, link_args
            try:
                super().build_extension(ext)
                return
            except Exception as error:  # CompileError, LinkError, or no compiler at all
                print(f"numcnn: building {ext.name} with {' '.join(compile_args)} failed: "
                      f"{error}")
        print(f"numcnn: {ext.name} not built; numcnn will run on NumPy alone")


setup(
    ext_modules=[Extension("numcnn._kernels", sources=["src/numcnn/_kernels.c"], optional=True)],
    cmdclass={"build_ext": OptionalKernels},
)
