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
    """One stage of a backbone's training schedule (docs/baselines.md, "Multi-stage models").

    name:   recorded in ``result.json`` (``stages``) and on every epoch line of the logs.
    epochs: epochs of this stage; None: the config's ``epochs``.
    lr:     learning rate of this stage's optimizer; None: the config's ``lr``.
    """

    name: str
    epochs: int | None = None
    lr: float | None = None


def backbone_stages(backbone: nn.Module) -> tuple[Stage, ...]:
    """``backbone.stages()`` checked (one stage named ``train`` for a backbone without the method)."""
    fn = getattr(backbone, "stages", None)
    stages = (Stage("train"),) if fn is None else tuple(fn())
    name = type(backbone).__name__
    if not stages:
        raise ValueError(f"{name}.stages() returned no stage")
    for st in stages:
        if not isinstance(st, Stage):
            raise TypeError(f"{name}.stages() must return balm.backbones.Stage objects, got {st!r}")
        if st.epochs is not None and (isinstance(st.epochs, bool) or not isinstance(st.epochs, int) or st.epochs < 1):
            raise ValueError(f"{name} stage {st.name!r}: epochs must be a positive integer or None, got {st.epochs!r}")
        if st.lr is not None and not (isinstance(st.lr, (int, float)) and st.lr > 0):
            raise ValueError(f"{name} stage {st.name!r}: lr must be positive or None, got {st.lr!r}")
    names = [st.name for st in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}.stages() has repeated stage names {names}")
    return stages


class Backbone(nn.Module):
    """Base class of balm's backbones.

    Subclasses set ``self.encoders`` (an ``nn.ModuleDict`` keyed by modality name holding the
    modality-specific layers before any fusion, the φ^m whose gradients GRM scales), and
    ``self.fusion_head`` (the final ``nn.Linear`` F_pred), and implement
    ``forward(batch) -> BackboneOutput``. ``embed_dims`` gives each z^m's width.

    A model trained in several stages (pretraining, then the full model) overrides
    :meth:`stages` and :meth:`set_stage`; the trainer runs the stages in order, each with a fresh
    optimizer over the parameters that require gradients once the stage is set, and selects the
    best-on-dev state of every stage before the next one starts.
    """

    encoders: nn.ModuleDict
    fusion_head: nn.Linear

    @property
    def embed_dims(self) -> dict[str, int]:
        raise NotImplementedError

    def stages(self) -> tuple[Stage, ...]:
        """The training schedule; one stage by default."""
        return (Stage("train"),)

    def set_stage(self, name: str) -> None:
        """Switch to stage ``name``: what ``forward`` predicts and adds to ``aux_loss``, and which
        parameters require gradients. A no-op for a one-stage backbone."""
