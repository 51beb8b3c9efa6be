"""Late fusion: per-modality MLP encoders, concatenation, an MLP fusion and a linear head."""

from __future__ import annotations

import torch
from torch import nn

from ..data.batch import Batch
from .base import Backbone, BackboneOutput


class LateFusion(Backbone):
    """z^m = MLP_m(x^m); h = MLP_f([z^1; …; z^M]); ŷ = W_pred h + b (Eq. 11–13).

    Utterances are treated independently (no dialogue context): the fastest model and the
    default for non-conversational data.
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        hidden: int = 256,
        embed_dim: int = 128,
        fused_dim: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        if len(dims) < 1:
            raise ValueError("LateFusion needs at least one modality")
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self._embed_dim = embed_dim
        self.encoders = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, embed_dim), nn.ReLU()
                )
                for m, d in dims.items()
            }
        )
        self.fusion = nn.Sequential(nn.Linear(embed_dim * len(dims), fused_dim), nn.ReLU(), nn.Dropout(dropout))
        self.fusion_head = nn.Linear(fused_dim, out_dim)

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        z = {m: self.encoders[m](batch.features[m][valid]) for m in self.modalities}
        h = self.fusion(torch.cat([z[m] for m in self.modalities], dim=-1))
        pred = self.fusion_head(h)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings=z, fused=h)
