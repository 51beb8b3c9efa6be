"""Stable, independent seeds derived from one seed and string keys (e.g. one per split)."""

from __future__ import annotations

import hashlib

import numpy as np


def _key_word(key: str) -> int:
    # A stable 64-bit hash (Python's hash() is salted per process).
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little")


def derive_seed(seed: int, *keys: str) -> int:
    """A seed in [0, 2**63) derived from ``seed`` and the ordered ``keys``.

    Uses ``numpy.random.SeedSequence(seed, spawn_key=...)`` with a BLAKE2b hash of each key,
    so the result is the same in every process and platform, and different keys
    (``derive_seed(s, "mask", "train")`` vs ``derive_seed(s, "mask", "test")``) give
    statistically independent streams.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise ValueError(f"derive_seed keys must be strings; key {i} is {k!r}")
    ss = np.random.SeedSequence(int(seed), spawn_key=tuple(_key_word(k) for k in keys))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
