"""MMGCN (Hu et al., 2021): a multimodal graph over a dialogue's utterances, deep GCNII layers."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batch import Batch
from ._sequence import BiRNN
from .base import Backbone, BackboneOutput
from .graph import GCNIIConv, dropout, multimodal_adjacency


class UtteranceEncoder(nn.Module):
    """z_i^m = W x_i^m + b, each utterance on its own (MMGCN's audio/visual encoder)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), valid (B, T) -> (N, out_dim) in ``valid`` order."""
        return self.linear(x[valid])


class SequenceEncoder(nn.Module):
    """z^m = BiLSTM(W x^m + b) over each dialogue (MMGCN's text encoder).

    A ``num_layers`` bidirectional LSTM with dropout between layers (:class:`._sequence.BiRNN`:
    each dialogue's encoding does not depend on the other dialogues of its batch).
    """

    def __init__(self, in_dim: int, proj_dim: int, hidden: int, num_layers: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_dim, proj_dim)
        self.rnn = BiRNN("lstm", proj_dim, hidden, num_layers, dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x (B, T, d), valid (B, T) -> (N, 2·hidden) in ``valid`` order."""
        h = self.linear(x[valid])
        padded = h.new_zeros(*valid.shape, h.shape[-1])
        padded[valid] = h
        return self.rnn(padded, valid.sum(1))[valid]


class MMGCN(Backbone):
    """MMGCN as the BALM authors plug it in (Eq. 11–13).

    Encoders φ^m (Eq. 11): a linear map of x^m to ``node_dim``; modalities named in
    ``sequential_encoders`` follow it with a 2-layer BiLSTM (``lstm_hidden`` per direction,
    ``2·lstm_hidden`` must equal ``node_dim``). z^m is that encoder output.
    Fusion (Eq. 12, shared by all modalities): a speaker embedding is added to every node; the
    graph has one node per (utterance, modality), angular-similarity edges between all
    utterances of a dialogue within a modality and between the modality nodes of one utterance,
    normalised D^{-1/2} A D^{-1/2} (:func:`balm.backbones.graph.multimodal_adjacency`); a linear
    layer to ``graph_hidden`` and ``num_layers`` GCNII layers; each node's input features are
    concatenated with its last GCNII output and an utterance's M nodes are concatenated:
    h = ReLU(dropout([x^1; g^1; …; x^M; g^M])), width M·(node_dim + graph_hidden) (900 for 3
    modalities). Prediction (Eq. 13): ``fusion_head`` = W_pred h + b.

    Missing modalities arrive as zero features; their nodes stay in the graph (their encoder
    turns the zeros into a bias plus the speaker embedding), as in the public implementations.
    ``prune_missing=True`` instead removes every edge touching a missing node.
    """

    def __init__(
        self,
        dims: dict[str, int],
        out_dim: int,
        num_speakers: int = 2,
        node_dim: int = 200,
        lstm_hidden: int = 100,
        lstm_layers: int = 2,
        graph_hidden: int = 100,
        num_layers: int = 4,
        lamda: float = 0.5,
        alpha: float = 0.1,
        variant: bool = True,
        dropout: float = 0.4,
        use_speaker: bool = True,
        prune_missing: bool = False,
        sequential_encoders: Sequence[str] | None = None,
    ):
        super().__init__()
        if len(dims) < 1:
            raise ValueError("MMGCN needs at least one modality")
        if sequential_encoders is None:
            sequential = tuple(m for m in ("text",) if m in dims)
        else:
            sequential = tuple(sequential_encoders)
            unknown = [m for m in sequential if m not in dims]
            if unknown:
                raise ValueError(f"sequential_encoders names {unknown}, not among the modalities {list(dims)}")
        if sequential and 2 * lstm_hidden != node_dim:
            raise ValueError(f"2 * lstm_hidden ({2 * lstm_hidden}) must equal node_dim ({node_dim})")
        self.modalities = tuple(dims)
        self.sequential = sequential
        self.out_dim = out_dim
        self.num_speakers = num_speakers
        self.node_dim = node_dim
        self.use_speaker = use_speaker
        self.prune_missing = prune_missing
        self.dropout = dropout
        self.encoders = nn.ModuleDict(
            {
                m: SequenceEncoder(d, node_dim, lstm_hidden, lstm_layers, dropout)
                if m in sequential
                else UtteranceEncoder(d, node_dim)
                for m, d in dims.items()
            }
        )
        self.speaker_embedding = nn.Embedding(num_speakers, node_dim) if use_speaker else None
        self.node_proj = nn.Linear(node_dim, graph_hidden)
        self.convs = nn.ModuleList(
            GCNIIConv(graph_hidden, layer, lamda, alpha, variant) for layer in range(1, num_layers + 1)
        )
        self.fused_dim = len(dims) * (node_dim + graph_hidden)
        self.fusion_head = nn.Linear(self.fused_dim, out_dim)

    @property
    def embed_dims(self) -> dict[str, int]:
        return {m: self.node_dim for m in self.modalities}

    def forward(self, batch: Batch) -> BackboneOutput:
        valid = batch.valid
        B, T = valid.shape
        M, p, train = len(self.modalities), self.dropout, self.training
        z = {m: self.encoders[m](batch.features[m], valid) for m in self.modalities}
        nodes = torch.stack([z[m] for m in self.modalities], dim=1)  # (N, M, node_dim)
        if self.speaker_embedding is not None:
            spk = batch.speakers[valid]
            if spk.numel() and int(spk.max()) >= self.num_speakers:
                raise ValueError(
                    f"speaker index {int(spk.max())} in the batch, but the model has num_speakers="
                    f"{self.num_speakers}; build it with num_speakers >= {int(spk.max()) + 1}"
                )
            nodes = nodes + self.speaker_embedding(spk)[:, None, :]
        padded = nodes.new_zeros(B, T, M, self.node_dim)
        padded[valid] = nodes
        present = None
        if self.prune_missing:
            present = torch.stack([batch.masks[m] for m in self.modalities], dim=1)
        adj = multimodal_adjacency(padded.transpose(1, 2), valid, present)

        # node-wise layers run on the N·M real nodes only; Â H scatters into the padded blocks
        x = dropout(nodes, p, train)
        h0 = F.relu(self.node_proj(x))
        h = dropout(h0, p, train)
        for conv in self.convs:
            h = dropout(F.relu(conv(h, adj, h0, valid)), p, train)
        fused = F.relu(dropout(torch.cat([x, h], dim=-1).reshape(-1, self.fused_dim), p, train))
        pred = self.fusion_head(fused)
        if self.out_dim == 1:
            pred = pred.squeeze(-1)
        return BackboneOutput(prediction=pred, embeddings=z, fused=fused)
