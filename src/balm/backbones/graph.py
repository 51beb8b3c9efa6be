"""Batched dialogue-graph utilities shared by the graph backbones.

Everything works on padded batches ``(B, T, ...)`` with a boolean ``valid`` mask ``(B, T)``
and is built with tensor operations only (no Python loop over dialogues or utterances). A
batch's graph is block-diagonal (no edge crosses dialogues), so every function keeps one
block per dialogue; memory is linear in the number of dialogues.

Helpers:

- :func:`flat_positions` — position of each padded step in the flattened ``valid``
  (row-major) order, ``-1`` at padding.
- :func:`pair_mask` — ``(B, T, T)`` True where both steps are real utterances.
- :func:`similarity_weight` — the angular edge weight ``1 − arccos(cos)/π``.
- :func:`dropout` — inverted dropout with a uniform-threshold mask on CPU (about twice as fast
  as ``torch.nn.functional.dropout``'s Bernoulli sampler there), ``F.dropout`` elsewhere.
- :func:`multimodal_adjacency` / :class:`MultimodalAdjacency` — MMGCN's normalised
  multimodal graph, stored factored as intra-modal ``(B, M, T, T)`` blocks and inter-modal
  ``(B, M, M, T)`` diagonals, with ``propagate`` (Â H) and ``to_dense`` ``(B, M·T, M·T)``.
- :class:`GCNIIConv` — one GCNII layer over that graph (MMGCN's layers, MM-DFN's layer update).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# cosines are shrunk by this factor before arccos so its gradient stays finite at ±1
COS_SHRINK = 0.99999


def flat_positions(valid: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` int64: index of step (b, t) among ``valid``'s True entries (row-major), -1 at padding."""
    pos = torch.cumsum(valid.reshape(-1).long(), 0).reshape(valid.shape) - 1
    return torch.where(valid, pos, torch.full_like(pos, -1))


def pair_mask(valid: torch.Tensor) -> torch.Tensor:
    """``(B, T, T)`` bool: True where steps t and s of dialogue b are both real utterances."""
    return valid[:, :, None] & valid[:, None, :]


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: zero each entry with probability ``p``, scale the rest by 1/(1 − p)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    keep = (torch.rand_like(x) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * keep


def similarity_weight(cos: torch.Tensor) -> torch.Tensor:
    """Angular similarity ``1 − arccos(cos)/π`` ∈ [0, 1] (MMGCN's edge weight)."""
    return 1.0 - torch.acos(cos * COS_SHRINK) / math.pi


@dataclass
class MultimodalAdjacency:
    """Normalised multimodal graph Â = D^{-1/2} A D^{-1/2} of a padded batch, stored factored.

    Node (b, m, t) is utterance t of dialogue b in modality m.
    intra: (B, M, T, T) — Â between (m, t) and (m, s) (same modality, same dialogue;
           the diagonal t = s is the self-loop).
    inter: (B, M, M, T) — Â between (m, t) and (n, t), m ≠ n (same utterance); zero for m = n.
    Rows and columns of padding steps are zero.
    """

    intra: torch.Tensor
    inter: torch.Tensor

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """Â H for node features ``h`` (B, M, T, d) -> (B, M, T, d)."""
        return torch.matmul(self.intra, h) + torch.einsum("bmnt,bntd->bmtd", self.inter, h)

    def propagate_packed(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Â H for node features of the real utterances only: ``h`` (N, M, d) in ``valid``
        (row-major) order -> (N, M, d)."""
        B, T = valid.shape
        padded = h.new_zeros(B, T, *h.shape[1:])
        padded[valid] = h
        return self.propagate(padded.transpose(1, 2)).transpose(1, 2)[valid]

    def to_dense(self) -> torch.Tensor:
        """Â as per-dialogue dense blocks ``(B, M·T, M·T)``, node (m, t) at row ``m·T + t``."""
        B, M, T, _ = self.intra.shape
        eye = torch.eye(T, dtype=self.intra.dtype, device=self.intra.device)
        blocks = self.inter[..., None] * eye  # (B, M, M, T, T): diagonal inter-modal blocks
        diag = torch.arange(M, device=self.intra.device)
        blocks[:, diag, diag] = self.intra
        return blocks.permute(0, 1, 3, 2, 4).reshape(B, M * T, M * T)


def multimodal_adjacency(
    nodes: torch.Tensor,
    valid: torch.Tensor,
    present: torch.Tensor | None = None,
    eps: float = 1e-12,
) -> MultimodalAdjacency:
    """MMGCN's multimodal graph for node features ``nodes`` (B, M, T, d).

    Edges (weights ``w = 1 − arccos(cos(x, y))/π``): every pair of utterances of one dialogue
    within a modality, self-loops included (intra-modal); the M nodes of one utterance with each
    other (inter-modal). Then Â = D^{-1/2} A D^{-1/2} with D the row sums, per dialogue (the
    graph is block-diagonal, so this equals the normalisation of the whole batch's graph).

    ``present`` (B, M, T) bool, optional: when given, edges touching a node whose modality is
    missing are removed (its self-loop stays). By default (None) missing-modality nodes stay in
    the graph with whatever features the encoder gives their zero input, as in the public code.
    """
    B, M, T, _ = nodes.shape
    xn = F.normalize(nodes, dim=-1, eps=eps)
    intra = similarity_weight(torch.matmul(xn, xn.transpose(-1, -2)))  # (B, M, T, T)
    inter = similarity_weight(torch.einsum("bmtd,bntd->bmnt", xn, xn))  # (B, M, M, T)
    keep = valid[:, None, :].expand(B, M, T)
    if present is not None:
        node = keep & present
        eye = torch.eye(T, dtype=torch.bool, device=nodes.device)
        intra_keep = (node[..., :, None] & node[..., None, :]) | (eye & keep[..., :, None])
        inter_keep = node[:, :, None, :] & node[:, None, :, :]
    else:
        intra_keep = keep[..., :, None] & keep[..., None, :]
        inter_keep = keep[:, :, None, :] & keep[:, None, :, :]
    not_self = ~torch.eye(M, dtype=torch.bool, device=nodes.device)
    inter_keep = inter_keep & not_self[None, :, :, None]
    intra = intra * intra_keep
    inter = inter * inter_keep
    deg = intra.sum(-1) + inter.sum(2)  # (B, M, T)
    r = torch.where(deg > 0, deg.clamp_min(eps).rsqrt(), torch.zeros_like(deg))
    intra = intra * r[..., :, None] * r[..., None, :]
    inter = inter * r[:, :, None, :] * r[:, None, :, :]
    return MultimodalAdjacency(intra=intra, inter=inter)


class GCNIIConv(nn.Module):
    """One GCNII layer (Chen et al., 2020) over a :class:`MultimodalAdjacency` (MMGCN's layers; MM-DFN's
    layer update, ``variant`` form).

    h_{l+1} = θ_l [Â h_l ; h_0] W_l + (1 − θ_l) ((1 − α) Â h_l + α h_0),  θ_l = log(λ/l + 1).
    Without ``variant``: θ_l ((1 − α) Â h_l + α h_0) W_l + (1 − θ_l)(…), with W_l square.
    """

    def __init__(self, dim: int, layer: int, lamda: float, alpha: float, variant: bool = True):
        super().__init__()
        self.variant = variant
        self.alpha = alpha
        self.theta = math.log(lamda / layer + 1.0)
        self.weight = nn.Parameter(torch.empty(2 * dim if variant else dim, dim))
        bound = 1.0 / math.sqrt(dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(
        self, h: torch.Tensor, adj: MultimodalAdjacency, h0: torch.Tensor, valid: torch.Tensor | None = None
    ) -> torch.Tensor:
        """h, h0: padded (B, M, T, d), or packed (N, M, d) real nodes when ``valid`` is given."""
        hi = adj.propagate(h) if valid is None else adj.propagate_packed(h, valid)
        r = (1 - self.alpha) * hi + self.alpha * h0
        support = torch.cat([hi, h0], dim=-1) if self.variant else r
        return self.theta * torch.matmul(support, self.weight) + (1 - self.theta) * r
