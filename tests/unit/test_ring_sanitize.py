"""The C ring on its own: warning-free, and clean under ASan, UBSan, TSan and valgrind.

Each test compiles csrc/ringbuf.c with csrc/stress.c (many producer and consumer
pthreads, every token accounted for, positions crossing 2^32 and 2^64) into a
temporary directory and runs it in a subprocess, so a sanitizer report fails the
test instead of crashing the interpreter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.servers import unavailable

pytestmark = pytest.mark.sanitize

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SOURCES = [str(CSRC / "ringbuf.c"), str(CSRC / "stress.c")]
STRICT = ["-std=c11", "-pthread", "-Wall", "-Wextra", "-Werror", f"-I{CSRC}"]
SANITIZER_MARKS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "ERROR: LeakSanitizer",
)
CC = os.environ.get("CC", "cc")


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


def test_the_stress_run_is_clean_under_thread_sanitizer(tmp_path: Path) -> None:
    binary = compile_stress(tmp_path / "stress-tsan", "-O1", "-g", "-fsanitize=thread")
    result = run([str(binary), "10000"], TSAN_OPTIONS="halt_on_error=1")
    if "unexpected memory mapping" in result.stderr:  # old TSan runtimes on new kernels
        pytest.skip("ThreadSanitizer cannot run on this kernel's memory layout")
    assert_clean(result)


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
