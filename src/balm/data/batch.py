"""Padded mini-batches of sequences, as torch tensors, for backbones and the trainer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as Seq

import numpy as np
import torch

from .dataset import Split


@dataclass
class Batch:
    """B sequences padded to the longest one (T steps).

    features[m]: (B, T, d_m) float32, zero at padding and where m is missing.
    masks[m]:    (B, T) bool, True where m is present (False at padding).
    valid:       (B, T) bool, True at real utterances.
    speakers:    (B, T) int64 (0 at padding).
    labels:      (B, T) int64 or float32 (0 at padding).
    lengths:     (B,) int64.
    Flattened per-utterance outputs follow ``valid`` in row-major (b, t) order, so the
    targets of a batch are ``labels[valid]``.
    """

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    valid: torch.Tensor
    speakers: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor

    @property
    def targets(self) -> torch.Tensor:
        return self.labels[self.valid]

    def flat_masks(self) -> dict[str, torch.Tensor]:
        """Per-utterance availability ``(N,)`` in the order of ``targets``."""
        return {m: k[self.valid] for m, k in self.masks.items()}

    def to(self, device: torch.device | str) -> "Batch":
        mv = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return Batch(
            features={m: mv(x) for m, x in self.features.items()},
            masks={m: mv(x) for m, x in self.masks.items()},
            valid=mv(self.valid),
            speakers=mv(self.speakers),
            labels=mv(self.labels),
            lengths=mv(self.lengths),
        )


def collate(split: Split, seq_indices: Seq[int]) -> Batch:
    """Pad the given sequences of ``split`` into a :class:`Batch` (missing entries zeroed)."""
    off = split.offsets
    idx = np.asarray(seq_indices, dtype=np.int64)
    lengths = split.lengths[idx]
    B, T = len(idx), int(lengths.max()) if len(idx) else 0
    # rows[b, t] = source row of step t of sequence b; valid marks real steps
    steps = np.arange(T)[None, :]
    valid = steps < lengths[:, None]
    rows = np.where(valid, off[idx][:, None] + steps, 0)
    flat_rows = rows[valid]
    mask = split.mask
    feats, masks = {}, {}
    for j, (m, x) in enumerate(split.features.items()):
        present = valid.copy()
        if mask is not None:
            present[valid] = mask[flat_rows, j]
        out = np.zeros((B, T, x.shape[1]), dtype=np.float32)
        out[present] = x[rows[present]]
        feats[m] = torch.from_numpy(out)
        masks[m] = torch.from_numpy(present)
    labels = np.zeros((B, T), dtype=split.labels.dtype)
    labels[valid] = split.labels[flat_rows]
    speakers = np.zeros((B, T), dtype=np.int64)
    speakers[valid] = split.speakers[flat_rows]
    return Batch(
        features=feats,
        masks=masks,
        valid=torch.from_numpy(valid),
        speakers=torch.from_numpy(speakers),
        labels=torch.from_numpy(labels),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
    )
