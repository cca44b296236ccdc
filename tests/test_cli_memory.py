"""`serve` keeps the memory of big answers for the next ones (app/cli.py `keep_freed_memory`).

Each check runs in a fresh interpreter, as `serve` does it at start: glibc's allocator settings
are per process and stay set.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")

# Two 7 MB buffers at once, as an embeddings answer read and the one written: the page faults of
# five more rounds once the first has run (1792 pages per buffer were they mapped anew each time).
ROUNDS = """
import resource
from app.cli import keep_freed_memory
print(keep_freed_memory())
def round():
    a = b"x" * (7 << 20); b = b"y" * ((7 << 20) + 1); del a, b  # written, as answers are
round()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    round()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(env: dict[str, str]) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", ROUNDS], env={**clean, **env}, capture_output=True, text=True,
                         check=True, cwd=os.getcwd()).stdout.split()
    return out[0], int(out[1])


def test_freed_big_buffers_are_used_again_without_new_page_faults() -> None:
    kept, faults = run({})
    assert kept == "True"
    assert faults < 200


def test_an_operators_own_malloc_settings_are_left_alone() -> None:
    assert run({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"})[0] == "False"
    assert run({"MALLOC_ARENA_MAX": "2"})[0] == "False"
