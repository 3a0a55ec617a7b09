"""--low_memory: allocator settings that trade speed for resident memory, applied before
TensorFlow is imported. TensorFlow's oneDNN build serves large CPU tensors from a pool that
never returns memory to the system (so a process keeps its worst moment's fragmentation);
with the pool off, tensors come from glibc's malloc, told here to map blocks from 1 MiB up on
their own and to give freed heap back. The arithmetic is unchanged. Full-model 256 px training
peaks at about 11.1 GiB instead of 13.7 GiB, about 28 % slower (docs/speed.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

MMAP_THRESHOLD = 1 << 20  # bytes: blocks this large get their own mapping, unmapped when freed
TRIM_THRESHOLD = 8 << 20  # bytes: free heap above this at the top goes back to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)


def use_low_memory_allocators() -> list[str]:
    """TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1 and glibc's mallopt(M_MMAP_THRESHOLD, 1 MiB),
    mallopt(M_TRIM_THRESHOLD, 8 MiB) (what MALLOC_MMAP_THRESHOLD_=1048576
    MALLOC_TRIM_THRESHOLD_=8388608 do at start-up). Must run before TensorFlow is imported.
    Returns the settings made (the glibc ones only where the C library is glibc)."""
    if "tensorflow" in sys.modules:
        raise RuntimeError("use_low_memory_allocators must run before TensorFlow is imported")
    os.environ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "1"
    made = ["TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1"]
    libc = _glibc()
    if libc is not None:
        for name, parameter, value in (("M_MMAP_THRESHOLD", _M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                       ("M_TRIM_THRESHOLD", _M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
            if libc.mallopt(parameter, value) == 1:
                made.append(f"mallopt({name}, {value})")
    return made


def _glibc():
    """The process's C library if it is glibc (it has mallopt and gnu_get_libc_version)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    except (OSError, AttributeError, TypeError):
        return None
    return libc
