"""The C ring on its own: warning-free, and clean under ASan, UBSan, TSan and valgrind.

Each test compiles csrc/ringbuf.c with csrc/stress.c (many producer and consumer
pthreads, every token accounted for, positions crossing 2^32 and 2^64) into a
temporary directory and runs it in a subprocess, so a sanitizer report fails the
test instead of crashing the interpreter.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

import tests.servers
from tests.servers import skip_unless_ci, unavailable

pytestmark = pytest.mark.sanitize

CSRC = Path(__file__).resolve().parents[3] / "csrc"
SOURCES = [str(CSRC / "ringbuf.c"), str(CSRC / "stress.c")]
STRICT = ["-std=c11", "-pthread", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}"]
SANITIZER_MARKS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "ERROR: LeakSanitizer",
)
CC = os.environ.get("CC", "cc")
# TSan keeps its shadow memory at fixed addresses. Under the high-entropy ASLR of
# newer kernels (vm.mmap_rnd_bits above 28) a program can be mapped over them, and
# older TSan runtimes (GCC 12's among them) then stop with the first message below
# instead of re-executing themselves with ASLR off, as newer ones do (the second).
TSAN_LAYOUT_ERRORS = ("unexpected memory mapping", "memory layout is incompatible")


def compile_stress(out: Path, *flags: str) -> Path:
    result = subprocess.run(
        [CC, *STRICT, *flags, *SOURCES, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", f"compiler printed warnings:\n{result.stderr}"
    return out


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not any(mark in output for mark in SANITIZER_MARKS), output
    assert "stress: ok" in result.stdout


def test_the_ring_compiles_without_warnings_at_every_optimisation_level(tmp_path: Path) -> None:
    for level in ("-O0", "-O2", "-O3"):
        compile_stress(tmp_path / f"stress{level}", level)


def test_the_stress_run_is_clean_under_address_and_undefined_behaviour_sanitizers(
    tmp_path: Path,
) -> None:
    binary = compile_stress(
        tmp_path / "stress-asan",
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=all",
    )
    assert_clean(
        run(
            [str(binary), "20000"],
            ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
            UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
        )
    )


def run_tsan(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a TSan binary; with ASLR off (``setarch -R``, no privilege needed) when
    TSan rejects the memory layout, which is the usual fix for old TSan runtimes.

    Should TSan still not run, the test is skipped locally and fails in CI: the
    machines CI runs on do run it (checked on kernel 6.18, vm.mmap_rnd_bits=28,
    GCC 12), so there the failure means the machine changed and needs a look.
    """
    result = run(argv, TSAN_OPTIONS="halt_on_error=1")
    if _layout_rejected(result) and shutil.which("setarch"):
        result = run(["setarch", platform.machine(), "-R", *argv], TSAN_OPTIONS="halt_on_error=1")
    if _layout_rejected(result):
        skip_unless_ci(
            "ThreadSanitizer cannot run on this kernel's memory layout, even with ASLR off "
            "(setarch -R); lower the ASLR entropy (sysctl vm.mmap_rnd_bits=28) or build with a "
            "compiler whose TSan re-executes itself (LLVM 18 or later); TSan said: "
            + result.stderr.strip()[:300]
        )
    return result


def _layout_rejected(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and any(e in result.stderr for e in TSAN_LAYOUT_ERRORS)


def test_the_stress_run_is_clean_under_thread_sanitizer(tmp_path: Path) -> None:
    binary = compile_stress(tmp_path / "stress-tsan", "-O1", "-g", "-fsanitize=thread")
    assert_clean(run_tsan([str(binary), "10000"]))


# A stand-in for a TSan binary on a kernel whose ASLR it cannot live with: it fails
# as GCC 12's TSan does unless ASLR is off (personality flag ADDR_NO_RANDOMIZE).
PICKY_TSAN = """#!/bin/sh
if [ $(( 0x$(cat /proc/self/personality) & 0x0040000 )) -eq 0 ]; then
    echo "FATAL: ThreadSanitizer: unexpected memory mapping 0x5581c2a4f000-0x5581c2a50000" >&2
    exit 66
fi
echo "stress: ok"
"""
BROKEN_TSAN = """#!/bin/sh
echo "FATAL: ThreadSanitizer: unexpected memory mapping 0x5581c2a4f000-0x5581c2a50000" >&2
exit 66
"""


def _script(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_a_rejected_memory_layout_is_retried_with_aslr_off(tmp_path: Path) -> None:
    if shutil.which("setarch") is None:
        unavailable("setarch", "apt-get install -y util-linux")
    assert_clean(run_tsan([_script(tmp_path / "picky", PICKY_TSAN)]))


@pytest.mark.parametrize("in_ci", [True, False])
def test_a_tsan_that_cannot_run_at_all_fails_in_ci_and_skips_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_ci: bool
) -> None:
    monkeypatch.setattr(tests.servers, "IN_CI", in_ci)
    expected = pytest.fail.Exception if in_ci else pytest.skip.Exception
    with pytest.raises(expected, match=r"ThreadSanitizer cannot run .* \(setarch -R\)"):
        run_tsan([_script(tmp_path / "broken", BROKEN_TSAN)])


def test_the_stress_run_is_clean_under_valgrind(tmp_path: Path) -> None:
    if shutil.which("valgrind") is None:
        unavailable("valgrind", "apt-get install -y valgrind")  # fails in CI, skips locally
    binary = compile_stress(tmp_path / "stress-plain", "-O1", "-g")
    assert_clean(
        run(
            [
                "valgrind",
                "-q",
                "--error-exitcode=1",
                "--leak-check=full",
                "--errors-for-leak-kinds=all",
                str(binary),
                "2000",
            ]
        )
    )
