"""The one data model: splits of sequences (dialogues) of utterances with named modalities.

A split is stored column-wise: every modality is one ``(N, d_m)`` float32 array over the
split's ``N`` utterances, sequences are consecutive runs of ``lengths[s]`` rows, and the
availability mask is one ``(N, M)`` boolean array (True = present) with columns in
``modalities`` order. Non-conversational data is the case of sequences of length 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence as Seq

import numpy as np


TASKS = ("classification", "regression")
SPLIT_NAMES = ("train", "dev", "test")


@dataclass
class Split:
    """One split (train, dev or test) of a dataset, stored column-wise."""

    name: str
    features: dict[str, np.ndarray]
    labels: np.ndarray
    speakers: np.ndarray
    lengths: np.ndarray
    sequence_ids: list[str]
    mask: np.ndarray | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.features)

    @property
    def num_utterances(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_sequences(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def offsets(self) -> np.ndarray:
        """``(S + 1,)`` start offsets of the sequences; sequence s is rows offsets[s]:offsets[s+1]."""
        out = np.zeros(self.num_sequences + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    def dims(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.features.items()}

    def sequence(self, s: int) -> dict:
        """Sequence ``s`` as a dict of row slices (views, no copy)."""
        off = self.offsets
        a, b = int(off[s]), int(off[s + 1])
        return {
            "id": self.sequence_ids[s],
            "features": {m: x[a:b] for m, x in self.features.items()},
            "labels": self.labels[a:b],
            "speakers": self.speakers[a:b],
            "mask": None if self.mask is None else self.mask[a:b],
        }

    def select(self, seq_indices: Seq[int], name: str | None = None) -> "Split":
        """A new split holding the given sequences, in the given order (masks kept)."""
        off = self.offsets
        idx = np.asarray(seq_indices, dtype=np.int64)
        rows = (
            np.concatenate([np.arange(off[s], off[s + 1]) for s in idx])
            if len(idx)
            else np.zeros(0, dtype=np.int64)
        )
        return Split(
            name=name or self.name,
            features={m: x[rows] for m, x in self.features.items()},
            labels=self.labels[rows],
            speakers=self.speakers[rows],
            lengths=self.lengths[idx].copy(),
            sequence_ids=[self.sequence_ids[s] for s in idx],
            mask=None if self.mask is None else self.mask[rows],
        )

    def subset_modalities(self, names: Seq[str]) -> "Split":
        cols = [self.modalities.index(m) for m in names]
        return replace(
            self,
            features={m: self.features[m] for m in names},
            mask=None if self.mask is None else self.mask[:, cols],
        )


@dataclass
class Dataset:
    """A multimodal dataset: named splits sharing modalities, task and label space.

    ``task`` is ``"classification"`` (labels are int64 class indices in
    ``[0, num_classes)``) or ``"regression"`` (labels are float32 scores).
    ``mask_info`` records how the stored masks were drawn (rates, seed, strategy).
    """

    name: str
    task: str
    splits: dict[str, Split]
    num_classes: int | None = None
    label_names: list[str] | None = None
    speaker_names: list[str] | None = None
    mask_info: dict | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        return next(iter(self.splits.values())).modalities

    def dims(self) -> dict[str, int]:
        return next(iter(self.splits.values())).dims()

    def __getitem__(self, name: str) -> Split:
        try:
            return self.splits[name]
        except KeyError:
            raise KeyError(f"dataset {self.name!r} has no split {name!r}; it has {sorted(self.splits)}") from None

    def __iter__(self) -> Iterator[Split]:
        return iter(self.splits.values())
