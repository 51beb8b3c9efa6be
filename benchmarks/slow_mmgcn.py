"""MMGCN with its graph built the way the public implementation builds it, for comparison only.

The public code keeps one dense (M·N)x(M·N) adjacency over all N utterances of a batch
(node (m, i) at row m·N + i), fills it dialogue by dialogue with Python loops (intra-modal
blocks per dialogue and modality, inter-modal diagonals per dialogue and modality pair, written
element-wise through index arrays), normalises it as D·A·D with two dense matrix products, and
multiplies the whole matrix by the node features in every GCNII layer.

``make_slow(model)`` returns a module sharing ``model``'s parameters whose forward computes the
same function this way (node-wise layers and dropout are the fast model's own, so the
comparison isolates the graph); ``bench_backbones.py`` discovers this file by name.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from balm.backbones.base import BackboneOutput
from balm.backbones.graph import COS_SHRINK, dropout
from balm.backbones.mmgcn import MMGCN


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def loop_adjacency(features: list[torch.Tensor], lengths: list[int]) -> torch.Tensor:
    """Dense normalised (M·N)x(M·N) adjacency, built with loops over dialogues and modality pairs."""
    M, N = len(features), features[0].shape[0]
    adj = torch.zeros(M * N, M * N, device=features[0].device, dtype=features[0].dtype)
    start = 0
    for L in lengths:
        blocks = []
        for x in features:
            u = _unit_rows(x[start : start + L])
            blocks.append(1 - torch.acos(u @ u.T * COS_SHRINK) / math.pi)
        diag = np.array(np.diag_indices(L))
        for m in range(M):
            for n in range(M):
                if m == n:
                    adj[m * N + start : m * N + start + L, m * N + start : m * N + start + L] = blocks[m]
                else:
                    a = _unit_rows(features[m][start : start + L])
                    b = _unit_rows(features[n][start : start + L])
                    w = 1 - torch.acos((a * b).sum(1) * COS_SHRINK) / math.pi
                    adj[diag[0] + m * N + start, diag[1] + n * N + start] = w
        start += L
    d = adj.sum(1)
    D = torch.diag(d.pow(-0.5))
    return D.mm(adj).mm(D)


class SlowMMGCN(nn.Module):
    """Same parameters and function as an :class:`MMGCN`, public-code graph construction."""

    def __init__(self, model: MMGCN):
        super().__init__()
        if model.prune_missing:
            raise ValueError("the loop-built graph reproduces the public code, which keeps missing nodes")
        self.model = model
        self.encoders = model.encoders
        self.fusion_head = model.fusion_head

    @property
    def embed_dims(self):
        return self.model.embed_dims

    def forward(self, batch) -> BackboneOutput:
        mdl = self.model
        valid = batch.valid
        lengths = [int(v) for v in batch.lengths]
        z = {m: mdl.encoders[m](batch.features[m], valid) for m in mdl.modalities}
        feats = [z[m] for m in mdl.modalities]
        if mdl.speaker_embedding is not None:
            spk = mdl.speaker_embedding(batch.speakers[valid])
            feats = [f + spk for f in feats]
        adj = loop_adjacency(feats, lengths)
        N = feats[0].shape[0]
        x = dropout(torch.cat(feats, 0), mdl.dropout, mdl.training)
        h0 = F.relu(mdl.node_proj(x))
        h = dropout(h0, mdl.dropout, mdl.training)
        for conv in mdl.convs:
            hi = torch.mm(adj, h)
            r = (1 - conv.alpha) * hi + conv.alpha * h0
            support = torch.cat([hi, h0], 1) if conv.variant else r
            h = conv.theta * torch.mm(support, conv.weight) + (1 - conv.theta) * r
            h = dropout(F.relu(h), mdl.dropout, mdl.training)
        out = torch.cat([x, h], -1)
        fused = torch.cat([out[k * N : (k + 1) * N] for k in range(len(feats))], -1)
        fused = F.relu(dropout(fused, mdl.dropout, mdl.training))
        pred = mdl.fusion_head(fused)
        if mdl.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings=z, fused=fused)


def make_slow(model: MMGCN) -> SlowMMGCN:
    """A module computing ``model``'s function with the public code's loop-built dense graph."""
    return SlowMMGCN(model)
