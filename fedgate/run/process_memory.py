"""A client process keeps the memory it frees for what it allocates next.

glibc's malloc gives freed memory back to the kernel as soon as a few megabytes of it sit
at the top of the heap, and serves anything over a threshold that grows with use by a
mapping of its own, unmapped on free: either way the next allocation of that size starts
from pages the kernel must fault in again (zeroing each, ~1.7 us a 4 KiB page here). A
client downloads the same model every round, in 4 MiB gRPC messages plus grpc's read
buffers: measured with ResNet-50 in raw (94 MB), each download faulted in 28,000-38,000
pages beyond the 23,000 of the model's own buffer, every round. With the heap kept (up to
`KEEP_FREED_BYTES` free at its top) and anything under `MAPPED_FROM_BYTES` served from
it, a download faults in the model's own pages only; a model-sized buffer is still a
mapping of its own, returned when freed. A process's resident size then stays at its
peak heap, which a client's is within a round.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 256 << 20
MAPPED_FROM_BYTES = 32 << 20  # glibc's largest: above, the threshold is refused


def keep_freed_memory() -> bool:
    """Set this process's malloc to keep what it frees (see the module); False where the C
    library is not glibc, which keeps its own behaviour."""
    libc = ctypes.CDLL(None)  # the symbols the process has loaded, its C library's among them
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    kept = libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    mapped = libc.mallopt(M_MMAP_THRESHOLD, MAPPED_FROM_BYTES)
    if not (kept and mapped):
        log.warning("malloc refused its thresholds: freed memory goes back as before")
        return False
    return True
