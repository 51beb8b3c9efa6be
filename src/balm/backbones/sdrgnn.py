"""SDR-GNN (Fu et al., KBS 2024) on balm's backbone contract: context GRU, then speaker and temporal
window graphs, each RGCN → hypergraph convolution → gated high-order convolution → bi-GRU; its
reconstruction head (multi-head attention over the dialogue) is an option, off by default."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from ._sequence import BiRNN
from .base import Backbone, BackboneOutput
from .gcnet import RelationalGraphConv, WindowEdges, window_edges
from .graph import dropout
from .reconstruction import observed_reconstruction_loss


def _count(index: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(n, dtype=dtype, device=index.device).index_add_(0, index, torch.ones_like(index, dtype=dtype))


class HypergraphConv(nn.Module):
    """Hypergraph convolution over the window graph, as SDR-GNN runs it (no feature transform):

    h_i = LeakyReLU(b + D_i^{-1} Σ_{e ∋ i} B_e^{-1} Σ_{j ∈ e} x_j),

    one hyperedge per target utterance e holding the sources of its incoming edges; D_i is the
    number of hyperedges holding i (its out-degree), B_e the size of e (its in-degree).
    """

    def __init__(self, dim: int, negative_slope: float = 0.01):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(dim))
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        size = _count(dst, n, x.dtype).clamp_min(1.0)
        member = _count(src, n, x.dtype).clamp_min(1.0)
        edge_mean = torch.zeros_like(x).index_add_(0, dst, x[src]) / size[:, None]
        node = torch.zeros_like(x).index_add_(0, src, edge_mean[dst]) / member[:, None]
        return F.leaky_relu(node + self.bias, self.negative_slope)


class GatedHighConv(nn.Module):
    """SDR-GNN's gated convolution: h_i = Σ_{j→i} tanh(w·[x_i; x_j] + c) x_j / √(d_j d_i),
    d the out-degree (edge count by source, as the public code counts it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gate = nn.Linear(2 * dim, 1)

    def forward(self, x: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        r = _count(src, x.shape[0], x.dtype).clamp_min(1.0).rsqrt()
        gate = torch.tanh(self.gate(torch.cat([x[dst], x[src]], -1)))
        msg = x[src] * (gate * (r[src] * r[dst])[:, None])
        return torch.zeros_like(x).index_add_(0, dst, msg)


class SDRBranch(nn.Module):
    """One SDR-GNN graph branch: RGCN → HypergraphConv → GatedHighConv → [c; g] → bi-GRU →
    (optional matching attention) → ReLU(Linear)."""

    def __init__(self, in_dim: int, graph_hidden: int, num_relations: int, dropout: float, time_attn: bool):
        super().__init__()
        d_h = in_dim + graph_hidden
        self.rgcn = RelationalGraphConv(in_dim, graph_hidden, num_relations)
        self.hyper = HypergraphConv(graph_hidden)
        self.high = GatedHighConv(graph_hidden)
        self.rnn = BiRNN("gru", d_h, d_h, num_layers=2, dropout=dropout)
        self.attn = nn.Linear(2 * d_h, 2 * d_h) if time_attn else None
        self.out = nn.Linear(2 * d_h, d_h)

    def forward(self, x: torch.Tensor, edges: WindowEdges, rel: torch.Tensor, valid: torch.Tensor,
                lengths: torch.Tensor) -> torch.Tensor:
        g = self.rgcn(x, edges.src, edges.dst, rel)
        g = self.high(self.hyper(g, edges.src, edges.dst), edges.src, edges.dst)
        nodes = torch.cat([x, g], -1)
        B, T = valid.shape
        padded = nodes.new_zeros(B, T, nodes.shape[-1]).index_put(valid.nonzero(as_tuple=True), nodes)
        seq = self.rnn(padded, lengths)
        if self.attn is not None:
            scores = torch.tanh(self.attn(seq) @ seq.transpose(1, 2))
            seq = torch.softmax(scores.masked_fill(~valid[:, None, :], float("-inf")), -1) @ seq
        return F.relu(self.out(seq[valid]))


def _default_heads(width: int, min_head_dim: int = 10) -> int:
    """The most heads dividing ``width`` with at least ``min_head_dim`` channels each (2560 -> 256)."""
    best = 1
    for h in range(1, width // min_head_dim + 1):
        if width % h == 0:
            best = h
    return best


class SDRGNN(Backbone):
    """SDR-GNN without reconstruction by default (the BALM paper's protocol).

    φ^m (Eq. 11): z^m = ReLU(W_m x^m + b_m) (``proj_dim``). Fusion (Eq. 12): c = bi-GRU(dropout
    ([z^1; …; z^M])) (2 layers, ``hidden`` per direction); window graph (``window_past`` /
    ``window_future``) with temporal (3) and speaker (P²) relations; per relation set an
    :class:`SDRBranch`; h = h_temporal + h_speaker (2·hidden + graph_hidden wide); ŷ = W_pred h.

    ``reconstruction`` λ > 0 adds SDR-GNN's reconstruction head — r = MHA(W_rec h) over each
    dialogue's utterances, split per modality — and returns ``aux_loss`` = λ L_rec with L_rec on
    the observed modalities only (:func:`observed_reconstruction_loss`), in training mode.
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        proj_dim: int = 128,
        hidden: int = 200,
        graph_hidden: int | None = None,
        window_past: int = 3,
        window_future: int = 3,
        num_speakers: int = 2,
        dropout: float = 0.5,
        time_attn: bool = False,
        reconstruction: float = 0.0,
        reconstruction_heads: int | None = None,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"SDR-GNN needs at least two modalities, got {list(dims)}")
        if num_speakers < 1 or out_dim < 1:
            raise ValueError("num_speakers and out_dim must be >= 1")
        if reconstruction < 0:
            raise ValueError(f"reconstruction weight must be >= 0, got {reconstruction}")
        self.modalities = tuple(dims)
        self.dims = dict(dims)
        self.out_dim = out_dim
        self.window_past, self.window_future = window_past, window_future
        self.num_speakers = num_speakers
        self.dropout = dropout
        self.reconstruction = float(reconstruction)
        self._embed_dim = proj_dim
        graph_hidden = hidden // 2 if graph_hidden is None else graph_hidden
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, proj_dim), nn.ReLU()) for m, d in dims.items()})
        self.context = BiRNN("gru", proj_dim * len(dims), hidden, num_layers=2, dropout=dropout)
        self.temporal = SDRBranch(2 * hidden, graph_hidden, 3, dropout, time_attn)
        self.speaker = SDRBranch(2 * hidden, graph_hidden, num_speakers**2, dropout, time_attn)
        self.fused_dim = 2 * hidden + graph_hidden
        self.fusion_head = nn.Linear(self.fused_dim, out_dim)
        if self.reconstruction > 0:
            width = sum(dims.values())
            heads = _default_heads(width) if reconstruction_heads is None else reconstruction_heads
            self.rec_linear = nn.Linear(self.fused_dim, width)
            self.rec_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid, lengths = batch.valid, batch.lengths
        spk = batch.speakers[valid]
        if bool((spk >= self.num_speakers).any()) or bool((spk < 0).any()):
            raise ValueError(
                f"SDR-GNN was built for num_speakers={self.num_speakers}; "
                f"batch has speaker ids outside [0, {self.num_speakers})"
            )
        z = {m: self.encoders[m](batch.features[m]) for m in self.modalities}
        u = dropout(torch.cat([z[m] for m in self.modalities], -1), self.dropout, self.training)
        c = self.context(u, lengths)[valid]
        edges = window_edges(valid, batch.speakers, self.window_past, self.window_future, self.num_speakers)
        h = self.temporal(c, edges, edges.temporal, valid, lengths) + self.speaker(c, edges, edges.speaker, valid, lengths)
        pred = self.fusion_head(h)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        aux = self._reconstruction_loss(h, batch) if self.reconstruction > 0 and self.training else None
        return BackboneOutput(prediction=pred, embeddings={m: z[m][valid] for m in self.modalities}, fused=h,
                              aux_loss=aux)

    def _reconstruction_loss(self, h: torch.Tensor, batch: Batch) -> torch.Tensor:
        valid = batch.valid
        B, T = valid.shape
        r = self.rec_linear(h)
        padded = r.new_zeros(B, T, r.shape[-1]).index_put(valid.nonzero(as_tuple=True), r)
        att, _ = self.rec_attn(padded, padded, padded, key_padding_mask=~valid, need_weights=False)
        recon = dict(zip(self.modalities, att[valid].split([self.dims[m] for m in self.modalities], -1)))
        target = {m: batch.features[m][valid] for m in self.modalities}
        observed = {m: batch.masks[m][valid] for m in self.modalities}
        return self.reconstruction * observed_reconstruction_loss(recon, target, observed)
