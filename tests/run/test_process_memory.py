"""A client process keeps the memory it frees: a second model's worth of 4 MiB pieces is
made in pages the process already has, where glibc's defaults fault every one in again."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import resource, sys
from fedgate.run.process_memory import keep_freed_memory

kept = keep_freed_memory() if sys.argv[1] == "kept" else None

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def download():  # a model's worth of 4 MiB messages, held until the last came, then freed
    pieces = [b"m" * (4 << 20) for _ in range(24)]  # written: each page faulted in, or not
    del pieces

download()
before = faults()
for _ in range(3):
    download()
print(kept, (faults() - before) // 3)
"""

PAGES_PER_DOWNLOAD = 24 * (4 << 20) // 4096


def faults_per_download(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


def test_a_process_that_keeps_freed_memory_faults_its_pages_in_once() -> None:
    kept, faults = faults_per_download("kept")
    assert kept == "True"
    assert faults < PAGES_PER_DOWNLOAD // 20
    # glibc's defaults give the pieces back and fault them in again: what the setting saves
    _, default_faults = faults_per_download("default")
    assert default_faults > PAGES_PER_DOWNLOAD // 2
