"""Giving memory back between the phases of a run.

glibc's allocator keeps the blocks of freed tensors for reuse instead of returning them to the
system, so after training a process holds what the largest training step needed (for MM-DFN with
BALM on IEMOCAP-sized data about 400 MB above what is live). :func:`release_memory` collects
garbage and asks the allocator to return its free blocks (``malloc_trim``); the trainer calls it
when a run starts (a sweep worker's previous run) and when training ends (before the test
evaluation, the Shapley values and the files). It changes no result, only the resident memory.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import lru_cache
from typing import Callable


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim  # glibc only (not macOS, musl or Windows)
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_memory() -> bool:
    """``gc.collect()``, then glibc's ``malloc_trim(0)`` where there is one; True if it trimmed."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
