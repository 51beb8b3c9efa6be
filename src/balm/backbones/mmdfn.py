"""MM-DFN (Hu et al., ICASSP 2022): context encoders + graph-based dynamic fusion (GDF)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from ._sequence import SpeakerGroups, run_by_speaker, run_packed
from .base import Backbone, BackboneOutput
from .graph import GCNIIConv, dropout, multimodal_adjacency


class MMDFNEncoder(nn.Module):
    """φ^m of MM-DFN: z^m = GRU_ctx(L x^m) + w_s · GRU_spk(L x^m)   (Eq. 11).

    ``L`` is a linear projection to ``hidden``; ``GRU_ctx`` a 2-layer bidirectional GRU over the
    dialogue (left out with ``context_rnn=False``, then its term is ``L x^m`` itself);
    ``GRU_spk`` the same kind of GRU run over each speaker's own utterances (speaker-aware
    context; left out when ``speaker_weight == 0``). Output width ``2 · context_dim``.
    """

    def __init__(
        self, in_dim: int, hidden: int, context_dim: int, context_rnn: bool, speaker_weight: float, dropout: float
    ):
        super().__init__()
        if not context_rnn and hidden != 2 * context_dim:
            raise ValueError(f"without a context GRU, hidden ({hidden}) must equal 2*context_dim ({2 * context_dim})")
        self.speaker_weight = float(speaker_weight)
        self.proj = nn.Linear(in_dim, hidden)

        def gru():
            return nn.GRU(hidden, context_dim, num_layers=2, bidirectional=True, dropout=dropout, batch_first=True)

        self.context = gru() if context_rnn else None
        self.speaker = gru() if self.speaker_weight != 0 else None

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, groups: SpeakerGroups) -> torch.Tensor:
        u = self.proj(x)
        z = run_packed(self.context, u, lengths) if self.context is not None else u
        if self.speaker is not None:
            z = z + self.speaker_weight * run_by_speaker(self.speaker, u, groups)
        return z


class MMDFN(Backbone):
    """MM-DFN as the BALM authors use it, vectorised.

    Per modality, z^m = φ^m(x^m) (:class:`MMDFNEncoder`, Eq. 11). The M·N nodes (utterance,
    modality) form MMGCN's graph: within a modality every pair of utterances of a dialogue, across
    modalities the nodes of one utterance, weights ``1 − arccos(cos)/π``, Â = D^{-1/2} A D^{-1/2}.
    GDF (Eq. 12): h^(0) = ReLU(W_0 dropout(z)); for layers l = 1..L (default 16), with gates
    (an LSTM cell whose state runs across layers, MM-DFN's dynamic fusion)::

        q = h^(l-1);  h̃, c^(l) = LSTMCell(q, (h̃^(l-1), c^(l-1)))
        p = Â h̃;  θ_l = log(λ/l + 1)
        h^(l) = ReLU(θ_l [p; h^(0)] W_l + (1 − θ_l)((1 − α) p + α h^(0))) + q

    (inside the ReLU: :class:`.graph.GCNIIConv`, MMGCN's layer; ``gated=False``: no cell and no
    ``+ q``). Fused h_i = ReLU(dropout([dropout(z_i^m); h_i^{m,(L)}]_m)) and ŷ_i = W_pred h_i (Eq. 13).

    ``mask_missing_nodes=True`` removes the edges of nodes whose modality is missing (default:
    they stay, with the encoder's output for their zero input, as in the public code).
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        hidden: int = 200,
        context_dim: int = 100,
        graph_hidden: int = 100,
        num_layers: int = 16,
        alpha: float = 0.2,
        lamda: float = 0.5,
        dropout: float = 0.4,
        gated: bool = True,
        context_rnn: bool | dict[str, bool] = True,
        speaker_weight: float | dict[str, float] = 1.0,
        residual: bool = True,
        mask_missing_nodes: bool = False,
        num_speakers: int | None = None,
    ):
        super().__init__()
        if len(dims) < 2:
            raise ValueError(f"MMDFN needs at least two modalities, got {list(dims)}")
        if out_dim < 1 or num_layers < 1:
            raise ValueError("out_dim and num_layers must be >= 1")
        self.modalities = tuple(dims)
        self.out_dim = out_dim
        self.num_layers = num_layers
        self.alpha, self.lamda, self.dropout = alpha, lamda, dropout
        self.gated, self.residual = gated, residual
        self.mask_missing_nodes = mask_missing_nodes
        self._embed_dim = 2 * context_dim
        per = lambda v, m: v[m] if isinstance(v, dict) else v  # noqa: E731
        self.encoders = nn.ModuleDict(
            {
                m: MMDFNEncoder(d, hidden, context_dim, per(context_rnn, m), per(speaker_weight, m), dropout)
                for m, d in dims.items()
            }
        )
        self.input_fc = nn.Linear(self._embed_dim, graph_hidden)
        self.cell = nn.LSTMCell(graph_hidden, graph_hidden) if gated else None
        self.convs = nn.ModuleList(GCNIIConv(graph_hidden, l, lamda, alpha) for l in range(1, num_layers + 1))
        node_out = graph_hidden + (self._embed_dim if residual else 0)
        self.fused_dim = node_out * len(dims)
        self.fusion_head = nn.Linear(self.fused_dim, out_dim)

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self._embed_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid, lengths = batch.valid, batch.lengths
        groups = SpeakerGroups(batch.speakers, valid)
        z = {m: self.encoders[m](batch.features[m], lengths, groups) for m in self.modalities}
        nodes = torch.stack([z[m] for m in self.modalities], dim=1)  # (B, M, T, d_z)
        present = torch.stack([batch.masks[m] for m in self.modalities], 1) if self.mask_missing_nodes else None
        adj = multimodal_adjacency(nodes, valid, present)

        flat = nodes.transpose(1, 2)[valid]  # (N, M, d_z)
        x = dropout(flat, self.dropout, self.training)
        h0 = F.relu(self.input_fc(x))
        h = dropout(h0, self.dropout, self.training)
        state = None
        for conv in self.convs:
            q = h
            if self.cell is not None:
                shape = h.shape
                state = self.cell(h.reshape(-1, shape[-1]), state)
                h = state[0].reshape(shape)
            h = dropout(F.relu(conv(h, adj, h0, valid)), self.dropout, self.training)
            if self.cell is not None:
                h = h + q
        if self.residual:
            h = torch.cat([x, h], dim=-1)  # (N, M, node_out)
        fused = F.relu(dropout(h.reshape(h.shape[0], -1), self.dropout, self.training))
        pred = self.fusion_head(fused)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings={m: z[m][valid] for m in self.modalities}, fused=fused)
