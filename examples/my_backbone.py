"""An example backbone defined outside the balm package, trained by ``balm train`` / ``balm sweep``.

Use it from a config by its import path::

    backbone: my_backbone:GatedSum
    backbone_options: {embed_dim: 32, context: true}

The module must be importable by every process that trains: run from this folder's parent with
``PYTHONPATH=examples balm train --config examples/my_backbone.yaml --out runs/mine`` (sweep
workers inherit ``PYTHONPATH``), or install your package (``pip install -e .``).

The contract (docs/backbones.md, "Your own backbone"): the constructor takes ``(dims, out_dim,
**backbone_options)``; ``encoders`` is an ``nn.ModuleDict`` keyed by modality (the layers before
fusion, whose gradients BALM's GRM scales); ``fusion_head`` is the final ``nn.Linear`` with
``out_dim`` outputs; ``embed_dims`` maps each modality to the width of its embedding z^m; and
``forward(batch)`` returns a ``BackboneOutput`` with one row per valid utterance, in the order
of ``batch.valid``.
"""

from __future__ import annotations

import torch
from torch import nn

from balm.backbones import Backbone, BackboneOutput
from balm.data.batch import Batch


class GatedSum(Backbone):
    """z^m = ReLU(W_m x^m) (optionally plus the sequence's mean of it); h = Σ_m a_m z^m with
    softmax weights a over modalities; ŷ = W_pred h + b.

    All embeddings share one width (``embed_dim``) so they can be summed.
    """

    def __init__(self, dims: dict[str, int], out_dim: int, embed_dim: int = 64, context: bool = False,
                 dropout: float = 0.1):
        super().__init__()
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self.context = context
        self._embed_dim = embed_dim
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, embed_dim), nn.ReLU()) for m, d in dims.items()})
        self.weights = nn.Parameter(torch.zeros(len(dims)))
        self.dropout = nn.Dropout(dropout)
        self.fusion_head = nn.Linear(embed_dim, out_dim)

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        z = {}
        for m in self.modalities:
            seq = self.encoders[m](batch.features[m])  # (B, T, d)
            if self.context:  # add the mean over the sequence's present steps
                e = batch.masks[m].unsqueeze(-1).to(seq.dtype)
                seq = seq + (seq * e).sum(1, keepdim=True) / e.sum(1, keepdim=True).clamp_min(1.0)
            z[m] = seq[valid]
        a = torch.softmax(self.weights, dim=0)
        h = self.dropout(sum(a[i] * z[m] for i, m in enumerate(self.modalities)))
        pred = self.fusion_head(h)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings=z, fused=h)
