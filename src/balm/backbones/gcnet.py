"""GCNet (Lian et al., TPAMI 2023): context LSTM + speaker and temporal relational graphs,
vectorised in plain torch (no torch_geometric); its reconstruction loss is an option, off by default."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from ._sequence import BiRNN
from .base import Backbone, BackboneOutput
from .graph import dropout, flat_positions
from .reconstruction import observed_reconstruction_loss


@dataclass
class WindowEdges:
    """Directed edges of a batch's dialogue graphs, over nodes numbered in ``valid`` order.

    Node ``src`` sends to node ``dst`` when both are utterances of one dialogue and
    ``src − dst`` ∈ [−window_future, window_past] (GCNet's ``edge_perms``: utterance j reaches
    j − window_past … j + window_future), self-loops included; a window of ``-1`` is unbounded.
    temporal: 0 when the source precedes the target, 1 for the self-loop, 2 when it follows.
    speaker:  ``speaker[dst] · P + speaker[src]`` (P = number of speakers).
    """

    src: torch.Tensor
    dst: torch.Tensor
    temporal: torch.Tensor
    speaker: torch.Tensor


def window_edges(
    valid: torch.Tensor, speakers: torch.Tensor, window_past: int, window_future: int, num_speakers: int
) -> WindowEdges:
    """GCNet's window graph of a padded batch, built with tensor ops (no loop over dialogues)."""
    B, T = valid.shape
    lo = -(T - 1) if window_future < 0 else -window_future  # src - dst offsets
    hi = (T - 1) if window_past < 0 else window_past
    offsets = torch.arange(lo, hi + 1, device=valid.device)
    t = torch.arange(T, device=valid.device)
    src_t = t[None, :, None] + offsets[None, None, :]  # (1, T, K), dst at t
    inside = (src_t >= 0) & (src_t < T)
    src_t = src_t.clamp(0, T - 1).expand(B, T, -1)
    ok = inside & valid[:, :, None] & valid.gather(1, src_t.reshape(B, -1)).reshape(src_t.shape)
    b, dst_t, k = ok.nonzero(as_tuple=True)
    s_t = src_t[b, dst_t, k]
    pos = flat_positions(valid)
    spk = speakers
    off = offsets[k]
    temporal = torch.where(off < 0, 0, torch.where(off == 0, 1, 2))
    return WindowEdges(
        src=pos[b, s_t],
        dst=pos[b, dst_t],
        temporal=temporal,
        speaker=spk[b, dst_t] * num_speakers + spk[b, s_t],
    )


class RelationalGraphConv(nn.Module):
    """RGCN layer (Schlichtkrull et al.): h_i = W_0 x_i + b + Σ_r Σ_{j∈N_r(i)} W_r x_j / |N_r(i)|."""

    def __init__(self, in_dim: int, out_dim: int, num_relations: int):
        super().__init__()
        self.num_relations, self.out_dim = num_relations, out_dim
        self.weight = nn.Parameter(torch.empty(num_relations, in_dim, out_dim))
        self.root = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        for w in (self.weight, self.root):
            bound = math.sqrt(6.0 / (w.shape[-2] + w.shape[-1]))
            nn.init.uniform_(w, -bound, bound)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
        N, R = x.shape[0], self.num_relations
        xw = (x @ self.weight.permute(1, 0, 2).reshape(x.shape[1], -1)).reshape(N, R, self.out_dim)
        slot = dst * R + rel
        ones = torch.ones_like(slot, dtype=x.dtype)
        count = torch.zeros(N * R, dtype=x.dtype, device=x.device).index_add_(0, slot, ones)
        msg = xw[src, rel] / count[slot, None]
        return (x @ self.root + self.bias).index_add(0, dst, msg)


class GraphConv(nn.Module):
    """Graph convolution (Morris et al.): h_i = W_1 x_i + W_2 Σ_{j∈N(i)} x_j + b."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.rel = nn.Linear(in_dim, out_dim)
        self.root = nn.Linear(in_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        agg = torch.zeros_like(x).index_add_(0, dst, x[src])
        return self.rel(agg) + self.root(x)


class GCNetGraphBranch(nn.Module):
    """One GCNet graph branch: RGCN → GraphConv → [x; g] → bi-LSTM → (attention) → ReLU(Linear)."""

    def __init__(self, in_dim: int, graph_hidden: int, num_relations: int, dropout: float, time_attn: bool):
        super().__init__()
        d_h = in_dim + graph_hidden
        self.rgcn = RelationalGraphConv(in_dim, graph_hidden, num_relations)
        self.conv = GraphConv(graph_hidden, graph_hidden)
        self.lstm = BiRNN("lstm", d_h, d_h, num_layers=2, dropout=dropout)
        self.attn = nn.Linear(2 * d_h, 2 * d_h) if time_attn else None
        self.out = nn.Linear(2 * d_h, d_h)

    def forward(
        self, x: torch.Tensor, edges: WindowEdges, rel: torch.Tensor, valid: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        g = self.conv(self.rgcn(x, edges.src, edges.dst, rel), edges.src, edges.dst)
        nodes = torch.cat([x, g], -1)  # (N, d_h)
        B, T = valid.shape
        padded = nodes.new_zeros(B, T, nodes.shape[-1]).index_put(valid.nonzero(as_tuple=True), nodes)
        seq = self.lstm(padded, lengths)  # (B, T, 2 d_h), zero at padding
        if self.attn is not None:
            # GCNet's "general2" matching attention: softmax over the dialogue's real steps of
            # tanh(W q_t · m_s), then a weighted sum of the memories m_s.
            scores = torch.tanh(self.attn(seq) @ seq.transpose(1, 2))
            scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
            seq = torch.softmax(scores, -1) @ seq
        return F.relu(self.out(seq[valid]))


class GCNet(Backbone):
    """GCNet without reconstruction (the BALM paper's setting: it never sees complete data).

    Modality-specific encoders φ^m (Eq. 11): z^m = ReLU(W_m x^m + b_m), a projection to
    ``proj_dim`` (GCNet itself concatenates raw features; the projection is the modality-specific
    part of its first layer, and the only place where modalities are still separate). Then
    (Eq. 12): c = bi-LSTM([z^1; …; z^M]) over the dialogue (2 layers, ``hidden`` per direction),
    two graph branches over a window graph (``window_past``/``window_future``, GCNet's
    ``edge_perms``) — temporal relations (before / self / after) and speaker relations
    (P² speaker pairs) — each RGCN → GraphConv → [c; g] → bi-LSTM → (optional attention) →
    ReLU(Linear); h = h_temporal + h_speaker and ŷ = W_pred h (Eq. 13).

    ``reconstruction`` λ > 0 adds GCNet's reconstruction layer r = W_rec h (split per modality) and
    returns ``aux_loss`` = λ L_rec on the observed modalities only (GCNet: λ = 1 on the missing
    ones, against complete data), in training mode.
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        proj_dim: int = 128,
        hidden: int = 100,
        graph_hidden: int | None = None,
        window_past: int = 2,
        window_future: int = 2,
        num_speakers: int = 2,
        dropout: float = 0.5,
        time_attn: bool = False,
        reconstruction: float = 0.0,
    ):
        super().__init__()
        if reconstruction < 0:
            raise ValueError(f"reconstruction weight must be >= 0, got {reconstruction}")
        if len(dims) < 2:
            raise ValueError(f"GCNet needs at least two modalities, got {list(dims)}")
        if num_speakers < 1 or out_dim < 1:
            raise ValueError("num_speakers and out_dim must be >= 1")
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self.window_past, self.window_future = window_past, window_future
        self.num_speakers = num_speakers
        self.dropout = dropout
        self._embed_dim = proj_dim
        graph_hidden = hidden // 2 if graph_hidden is None else graph_hidden
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, proj_dim), nn.ReLU()) for m, d in dims.items()})
        self.context = BiRNN("lstm", proj_dim * len(dims), hidden, num_layers=2, dropout=dropout)
        self.temporal = GCNetGraphBranch(2 * hidden, graph_hidden, 3, dropout, time_attn)
        self.speaker = GCNetGraphBranch(2 * hidden, graph_hidden, num_speakers**2, dropout, time_attn)
        self.fused_dim = 2 * hidden + graph_hidden
        self.fusion_head = nn.Linear(self.fused_dim, out_dim)
        self.dims = dict(dims)
        self.reconstruction = float(reconstruction)
        if self.reconstruction > 0:
            self.rec_linear = nn.Linear(self.fused_dim, sum(dims.values()))

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid, lengths = batch.valid, batch.lengths
        if bool((batch.speakers[valid] >= self.num_speakers).any()) or bool((batch.speakers[valid] < 0).any()):
            raise ValueError(
                f"GCNet was built for num_speakers={self.num_speakers}; "
                f"batch has speaker ids outside [0, {self.num_speakers})"
            )
        z = {m: self.encoders[m](batch.features[m]) for m in self.modalities}
        u = dropout(torch.cat([z[m] for m in self.modalities], -1), self.dropout, self.training)
        c = self.context(u, lengths)[valid]  # (N, 2 hidden)
        edges = window_edges(valid, batch.speakers, self.window_past, self.window_future, self.num_speakers)
        h_temporal = self.temporal(c, edges, edges.temporal, valid, lengths)
        h = h_temporal + self.speaker(c, edges, edges.speaker, valid, lengths)
        pred = self.fusion_head(h)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        aux = None
        if self.reconstruction > 0 and self.training:
            sizes = [self.dims[m] for m in self.modalities]
            recon = dict(zip(self.modalities, self.rec_linear(h).split(sizes, -1)))
            aux = self.reconstruction * observed_reconstruction_loss(
                recon, {m: batch.features[m][valid] for m in self.modalities},
                {m: batch.masks[m][valid] for m in self.modalities})
        return BackboneOutput(prediction=pred, embeddings={m: z[m][valid] for m in self.modalities}, fused=h,
                              aux_loss=aux)
