"""The backbone contract every model meets to work with the plug-in and the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """What a backbone's forward returns, per utterance (flattened in ``Batch.valid`` order).

    prediction: (N, C) logits for classification, (N,) scores for regression (Eq. 13, before δ).
    embeddings: modality -> (N, d_z^m) encoder output z^m (Eq. 11).
    fused:      (N, d_h) fused representation h, the input of ``fusion_head`` (Eq. 12).
    aux_loss:   scalar the trainer adds to the task loss (a backbone's own training loss, e.g. an
                optional reconstruction term), or None (every backbone by default). Backbones
                compute it in training mode only.
    """

    prediction: torch.Tensor
    embeddings: dict[str, torch.Tensor]
    fused: torch.Tensor
    aux_loss: torch.Tensor | None = None


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone's training schedule.

    name: "pretrain", "experts", "train", ...; epochs: None = the config's ``epochs``;
    lr: None = the config's ``lr``.
    """

    name: str
    epochs: int | None = None
    lr: float | None = None


class Backbone(nn.Module):
    """Base class of balm's backbones.

    Subclasses set ``self.encoders`` (an ``nn.ModuleDict`` keyed by modality name holding the
    modality-specific layers before any fusion, the φ^m whose gradients GRM scales), and
    ``self.fusion_head`` (the final ``nn.Linear`` F_pred), and implement
    ``forward(batch) -> BackboneOutput``. ``embed_dims`` gives each z^m's width.
    """

    encoders: nn.ModuleDict
    fusion_head: nn.Linear

    @property
    def embed_dims(self) -> dict[str, int]:
        raise NotImplementedError

    def stages(self) -> tuple[Stage, ...]:
        """The training schedule: one stage "train" unless a backbone has several."""
        return (Stage("train"),)

    def set_stage(self, name: str) -> None:
        """Enter stage ``name`` (freeze what the stage must not train); a no-op by default."""
