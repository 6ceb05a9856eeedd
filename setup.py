"""Build fastcheck's compiled twins: every src/fastcheck/_ext/*_c.pyx, with Cython and -O2.

Loud by design: there is no silent pure-Python build. A missing Cython or C compiler
stops the build here with a message saying what to install. (At run time the twin
selector may still fall back to the *_py twins; see fastcheck._ext._select.)
Everything else about the package lives in pyproject.toml.
"""

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

try:
    from Cython.Build import cythonize
except ImportError as exc:
    sys.exit(f"fastcheck: Cython>=3 is required to build the compiled twins ({exc}).")

EXT_DIR = Path("src/fastcheck/_ext")
SOURCES = sorted((Path(__file__).parent / EXT_DIR).glob("*_c.pyx"))
if not SOURCES:
    sys.exit(f"fastcheck: no {EXT_DIR}/*_c.pyx found; refusing to build without compiled twins.")


class LoudBuildExt(build_ext):
    """build_ext that turns any compile/link failure into one clear, fatal message."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise SystemExit(
                f"\nfastcheck: cannot compile {ext.name}: {exc}\n"
                "A working C compiler and the Python headers are required "
                "(Debian/Ubuntu: apt install build-essential python3-dev).\n"
            ) from exc


extensions = [
    Extension(f"fastcheck._ext.{pyx.stem}", [str(EXT_DIR / pyx.name)], extra_compile_args=["-O2"])
    for pyx in SOURCES
]
setup(
    # Generated C goes to build/, not beside the .pyx, so it never ships as package data.
    ext_modules=cythonize(
        extensions, build_dir="build/cython", compiler_directives={"language_level": 3}
    ),
    cmdclass={"build_ext": LoudBuildExt},
)
