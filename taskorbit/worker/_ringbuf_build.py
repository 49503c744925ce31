"""The cffi builder of the C ring: ``pip install .`` (through setup.py's
``cffi_modules``), or ``python taskorbit/worker/_ringbuf_build.py``.

Out-of-line API mode, so the C compiler checks every call against ringbuf.h and
the compiled module ``taskorbit.worker._ringbuf`` needs no compiler at import
time. Paths are relative to the project root, where setup.py runs it.
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI  # type: ignore[import-untyped,unused-ignore]

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"

# Warnings are errors so that a careless edit of the C ring fails the build, not a user.
COMPILE_ARGS = ["-O2", "-std=c11", "-pthread", "-Wall", "-Wextra", "-Werror"]

ffibuilder = FFI()
ffibuilder.cdef((CSRC / "ringbuf.cdef").read_text())
ffibuilder.set_source(
    "taskorbit.worker._ringbuf",
    '#include "ringbuf.h"',
    sources=[str(Path("csrc") / "ringbuf.c")],
    include_dirs=[str(Path("csrc"))],
    extra_compile_args=COMPILE_ARGS,
    extra_link_args=["-pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
