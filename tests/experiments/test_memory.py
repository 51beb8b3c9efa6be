"""release_memory: the allocator's free blocks go back to the system (glibc), results unchanged."""

import sys

import numpy as np
import pytest

from balm.experiments.memory import _malloc_trim, release_memory


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None,
                    reason="malloc_trim is glibc's (Linux); elsewhere release_memory only collects garbage")
def test_freed_blocks_inside_the_heap_are_returned():
    # 64 KB blocks (below glibc's mmap threshold, so they come from the heap), each followed by a
    # 2 KB block that stays alive (from malloc too: above numpy's and Python's small-object
    # caches): freeing the large ones leaves holes that free() cannot give back
    big, keep = [], []
    for _ in range(1500):
        big.append(np.ones(8192))  # 64 KB, touched
        keep.append(np.ones(256))
    del big
    before = rss_mb()
    assert release_memory() is True
    after = rss_mb()
    assert before - after > 40, (before, after)  # about 94 MB were freed into holes
    assert all(k.sum() == 256 for k in keep)  # what is alive is untouched


def test_release_memory_without_glibc_only_collects(monkeypatch):
    import balm.experiments.memory as memory

    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    import weakref

    class Node:
        pass

    n = Node()
    n.self = n
    ref = weakref.ref(n)
    del n
    assert memory.release_memory() is False
    assert ref() is None  # the reference cycle was collected
