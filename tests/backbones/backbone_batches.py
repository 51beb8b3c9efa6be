"""Random padded batches for backbone tests (imported by the tests in this folder)."""

from __future__ import annotations

import numpy as np

from balm.data.batch import Batch, collate
from balm.data.dataset import Split


def random_split(
    dims: dict[str, int],
    lengths: list[int],
    seed: int = 0,
    missing: float = 0.4,
    task: str = "classification",
    num_classes: int = 4,
    num_speakers: int = 2,
) -> Split:
    """A split of ``len(lengths)`` dialogues with random features and a random mask (>= 1 present)."""
    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    mask = rng.random((n, len(dims))) >= missing
    mask[np.arange(n), rng.integers(0, len(dims), n)] = True
    labels = (
        rng.integers(0, num_classes, n).astype(np.int64)
        if task == "classification"
        else rng.normal(size=n).astype(np.float32)
    )
    return Split(
        name="train",
        features={m: rng.normal(size=(n, d)).astype(np.float32) for m, d in dims.items()},
        labels=labels,
        speakers=rng.integers(0, num_speakers, n).astype(np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        sequence_ids=[f"d{i}" for i in range(len(lengths))],
        mask=mask,
    )


def random_batch(dims: dict[str, int], lengths: list[int], seed: int = 0, **kw) -> Batch:
    split = random_split(dims, lengths, seed, **kw)
    return collate(split, range(len(lengths)))
