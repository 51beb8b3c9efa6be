"""MoMKE (Xu, Jiang and Liang, ACM MM 2024): mixture of modality knowledge experts for incomplete
multimodal learning, in two stages: unimodal experts, then a soft router per modality that mixes
every expert's representation of that modality."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from .base import Backbone, BackboneOutput, Stage

EXPERTS, ROUTER = "experts", "router"


class MLP(nn.Module):
    """fc2(drop(GELU(fc1 x))), then dropout: MoMKE's ``Mlp``."""

    def __init__(self, dim: int, hidden: int, out: int, dropout: float):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class ExpertLayer(nn.Module):
    """One layer of an expert: masked multi-head self-attention over a dialogue, then an MLP.

    a = softmax_keys(q kᵀ / √d_head, keys where the input modality is observed) v;
    out = a + MLP(a). No output projection and no normalisation, as in MoMKE's ``Attention``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden ({dim}) must be a multiple of num_heads ({heads})")
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_dropout)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dim, dropout)

    def forward(self, x: torch.Tensor, key: torch.Tensor, any_key: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        split = lambda t: t.reshape(B, T, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T)
        # a dialogue without any observed key attends to nothing (MoMKE: NaN rows set to 0)
        allowed = key | ~any_key[:, None]
        attn = scores.masked_fill(~allowed[:, None, None, :], float("-inf")).softmax(-1)
        attn = self.attn_drop(attn * any_key[:, None, None, None].to(attn.dtype))
        a = (attn @ v).transpose(1, 2).reshape(B, T, D)
        return a + self.mlp(a)


class Expert(nn.Module):
    """x ← x + layer_l(x), l = 1..depth: one modality expert (MoMKE's ``Transformer_m`` of every block)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float, attn_dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(ExpertLayer(dim, heads, mlp_ratio, dropout, attn_dropout) for _ in range(depth))

    def forward(self, x: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        any_key = key.any(-1)
        for layer in self.layers:
            x = x + layer(x, key, any_key)
        return x


class MoMKE(Backbone):
    """MoMKE's two stages as one balm run; any M ≥ 2, classification and regression.

    With e^m the availability of modality m (features of missing utterances are never read: they
    are replaced by zeros before the first layer) and p^m = Dropout(W_m x^m + b_m) (``encoders[m]``):

    stage ``experts``:  r^m = E_m(p^m; keys where e^m = 1), ŷ^m = W^m r^m (unimodal head);
        loss Σ_m mean_{i: e_i^m = 1} ℓ(ŷ_i^m, y_i) (ℓ cross-entropy or squared error), returned as
        ``aux_loss``; the stage's prediction is the mean of the observed modalities' ŷ^m (detached
        in training, so the trainer's task loss on it adds no gradient); selection on dev uses it.
    stage ``router``:   w^m = softmax(R_m(p^m)) ∈ Δ^{M−1},  r^m = Σ_k w_k^m E_k(p^m; keys where e^m = 1).
    both:  r^m ← 0 where e^m = 0;  u = [r^1; …; r^M];  h = Dropout(ReLU(W_1 u)) + u;  ŷ = W_pred h.

    Each expert E_k is ``depth`` residual masked self-attention layers over the dialogue's
    utterances (keys only where the input modality is observed). In ``router`` the experts train
    on with the router (as in the public code) unless ``freeze_experts``. ``experts_epochs`` is the
    first stage's length; ``router_epochs`` the second's (None: the config's ``epochs``).
    A model built without ``set_stage`` is in the final stage (``router``).
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        hidden: int = 256,
        depth: int = 4,
        num_heads: int = 2,
        mlp_ratio: float = 1.0,
        dropout: float = 0.5,
        attn_dropout: float = 0.0,
        experts_epochs: int = 100,
        router_epochs: int | None = None,
        freeze_experts: bool = False,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MoMKE needs at least two modalities, got {list(dims)}")
        if out_dim < 1 or hidden < 1 or depth < 1 or num_heads < 1:
            raise ValueError("out_dim, hidden, depth and num_heads must be >= 1")
        if not 0.0 <= dropout < 1.0 or not 0.0 <= attn_dropout < 1.0:
            raise ValueError(f"dropout rates must be in [0, 1), got {dropout} and {attn_dropout}")
        if experts_epochs < 1 or (router_epochs is not None and router_epochs < 1):
            raise ValueError(f"experts_epochs and router_epochs must be >= 1, got {experts_epochs} and {router_epochs}")
        self.modalities = tuple(dims)
        self.out_dim, self.hidden = out_dim, hidden
        self.experts_epochs, self.router_epochs = int(experts_epochs), router_epochs
        self.freeze_experts = bool(freeze_experts)
        M = len(dims)
        self.encoders = nn.ModuleDict({m: nn.Linear(d, hidden) for m, d in dims.items()})
        self.input_dropout = nn.Dropout(dropout)
        self.experts = nn.ModuleDict(
            {m: Expert(hidden, depth, num_heads, mlp_ratio, dropout, attn_dropout) for m in self.modalities})
        self.unimodal_heads = nn.ModuleDict({m: nn.Linear(hidden, out_dim) for m in self.modalities})
        self.routers = nn.ModuleDict({m: MLP(hidden, int(hidden * mlp_ratio), M, dropout) for m in self.modalities})
        self.proj = nn.Linear(M * hidden, M * hidden)
        self.out_dropout = nn.Dropout(dropout)
        self.fusion_head = nn.Linear(M * hidden, out_dim)
        self.stage = ROUTER

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self.hidden for m in self.modalities}

    def stages(self) -> tuple[Stage, ...]:
        return (Stage(EXPERTS, epochs=self.experts_epochs), Stage(ROUTER, epochs=self.router_epochs))

    def set_stage(self, name: str) -> None:
        """``experts``: train encoders, experts and unimodal heads; ``router``: everything but the
        unimodal heads (and the experts with ``freeze_experts``)."""
        if name not in (EXPERTS, ROUTER):
            raise ValueError(f"MoMKE has the stages {EXPERTS!r} and {ROUTER!r}, got {name!r}")
        self.stage = name
        first = name == EXPERTS
        trains = {"encoders": True, "experts": first or not self.freeze_experts, "unimodal_heads": first,
                  "routers": not first, "proj": not first, "fusion_head": not first}
        for child, on in trains.items():
            getattr(self, child).requires_grad_(on)

    def _squeeze(self, y: torch.Tensor) -> torch.Tensor:
        return y.squeeze(-1) if self.out_dim == 1 else y

    def _unimodal_loss(self, pred: torch.Tensor, y: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        if self.out_dim == 1:
            per = (pred - y.to(pred.dtype)) ** 2
        else:
            per = F.cross_entropy(pred, y, reduction="none")
        return (per * seen).sum() / seen.sum().clamp_min(1.0)

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        keys = {m: batch.masks[m] & valid for m in self.modalities}
        p = {m: self.input_dropout(self.encoders[m](
            torch.where(keys[m][..., None], batch.features[m], torch.zeros((), dtype=batch.features[m].dtype,
                                                                           device=valid.device))))
             for m in self.modalities}
        first = self.stage == EXPERTS
        if first:
            r = {m: self.experts[m](p[m], keys[m]) for m in self.modalities}
        else:
            # every expert on every modality's input, the M inputs stacked along the batch
            B = valid.shape[0]
            stacked = torch.cat([p[m] for m in self.modalities], 0)
            stacked_keys = torch.cat([keys[m] for m in self.modalities], 0)
            mixed = torch.stack([self.experts[k](stacked, stacked_keys) for k in self.modalities], -1)
            r = {}
            for j, m in enumerate(self.modalities):
                w = self.routers[m](p[m]).softmax(-1)  # (B, T, M)
                r[m] = (mixed[j * B:(j + 1) * B] * w[..., None, :]).sum(-1)
        r = {m: r[m] * keys[m][..., None].to(r[m].dtype) for m in self.modalities}
        z = {m: r[m][valid] for m in self.modalities}
        u = torch.cat([z[m] for m in self.modalities], -1)
        h = self.out_dropout(F.relu(self.proj(u))) + u
        if not first:
            return BackboneOutput(prediction=self._squeeze(self.fusion_head(h)), embeddings=z, fused=h)
        seen = {m: k[valid].to(u.dtype) for m, k in keys.items()}
        logits = {m: self._squeeze(self.unimodal_heads[m](z[m])) for m in self.modalities}
        count = sum(seen.values()).clamp_min(1.0)
        shape = (-1,) + (1,) * (logits[self.modalities[0]].dim() - 1)
        pred = sum(logits[m] * seen[m].reshape(shape) for m in self.modalities) / count.reshape(shape)
        aux = None
        if self.training:
            y = batch.targets
            aux = sum(self._unimodal_loss(logits[m], y, seen[m]) for m in self.modalities)
            pred = pred.detach()
        return BackboneOutput(prediction=pred, embeddings=z, fused=h, aux_loss=aux)
