"""A two-stage backbone for the trainer's multi-stage tests: stage ``pretrain`` trains the encoders
with one unimodal head each (prediction = mean of their logits over observed modalities), stage
``train`` freezes the encoders and trains the fusion head on the concatenated embeddings."""

from __future__ import annotations

import torch
from torch import nn

from balm.backbones.base import Backbone, BackboneOutput, Stage


class TwoStage(Backbone):
    def __init__(self, dims: dict[str, int], out_dim: int, hidden: int = 8, pretrain_epochs: int = 2,
                 pretrain_lr: float | None = None):
        super().__init__()
        self.modalities, self.out_dim, self.hidden = tuple(dims), out_dim, hidden
        self.pretrain_epochs, self.pretrain_lr = pretrain_epochs, pretrain_lr
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, hidden), nn.ReLU()) for m, d in dims.items()})
        self.unimodal = nn.ModuleDict({m: nn.Linear(hidden, out_dim) for m in dims})
        self.fusion_head = nn.Linear(hidden * len(dims), out_dim)
        self.stage = "pretrain"
        self.entered: dict[str, dict[str, torch.Tensor]] = {}  # state at the start of each stage

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self.hidden for m in self.modalities}

    def stages(self):
        return (Stage("pretrain", epochs=self.pretrain_epochs, lr=self.pretrain_lr), Stage("train"))

    def set_stage(self, name: str) -> None:
        self.stage = name
        self.entered[name] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        for p in self.encoders.parameters():
            p.requires_grad_(name == "pretrain")
        for p in self.unimodal.parameters():
            p.requires_grad_(name == "pretrain")
        for p in self.fusion_head.parameters():
            p.requires_grad_(name == "train")

    def forward(self, batch) -> BackboneOutput:
        masks = batch.flat_masks()
        z = {m: self.encoders[m](batch.features[m][batch.valid]) * masks[m][:, None] for m in self.modalities}
        h = torch.cat([z[m] for m in self.modalities], dim=-1)
        if self.stage == "pretrain":
            w = torch.stack([masks[m] for m in self.modalities], 1).float()
            logits = torch.stack([self.unimodal[m](z[m]) for m in self.modalities], 1)
            pred = (logits * w[..., None]).sum(1) / w.sum(1).clamp_min(1)[:, None]
        else:
            pred = self.fusion_head(h)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings=z, fused=h)
