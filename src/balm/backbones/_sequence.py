"""Recurrent context encoders on padded dialogue batches (private helpers of the graph backbones).

All functions take padded ``(B, T, d)`` tensors with a prefix ``valid`` mask and run the RNN on
packed sequences, so a dialogue's outputs never depend on how long the other dialogues of its
batch are (the public MM-DFN and GCNet code feed zero padding to bidirectional RNNs, whose
backward direction then starts in the padding).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .graph import dropout


def run_packed(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run a ``batch_first`` RNN on ``x`` (B, T, d) with per-row ``lengths``; zeros past each length."""
    T = x.shape[1]
    packed = pack_padded_sequence(x, lengths.detach().cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    return out


class SpeakerGroups:
    """Per-(dialogue, speaker) sub-sequences of a padded batch, found with tensor ops.

    Group ``g`` holds the utterances of one speaker of one dialogue in time order;
    ``group[b, t]`` and ``rank[b, t]`` locate step (b, t) (valid steps only), ``lengths[g]`` is the
    group's size. Empty (dialogue, speaker) pairs are dropped.
    """

    def __init__(self, speakers: torch.Tensor, valid: torch.Tensor):
        B, T = valid.shape
        spk = torch.where(valid, speakers, torch.zeros_like(speakers))
        if bool((spk < 0).any()):
            raise ValueError("speaker ids must be non-negative")
        P = int(spk.max()) + 1 if spk.numel() else 1
        onehot = torch.nn.functional.one_hot(spk, P) & valid[..., None]  # (B, T, P)
        rank = torch.cumsum(onehot, dim=1).gather(2, spk[..., None]).squeeze(-1) - 1  # (B, T)
        key = torch.arange(B, device=valid.device)[:, None] * P + spk  # (B, T)
        counts = onehot.sum(1).reshape(-1)  # (B·P,)
        nonempty = counts > 0
        compact = torch.cumsum(nonempty.long(), 0) - 1
        self.valid = valid
        self.group = compact[key]
        self.rank = rank
        self.lengths = counts[nonempty]
        self.num_groups = int(nonempty.sum())
        self.max_len = int(self.lengths.max()) if self.num_groups else 0

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (G, L, d): each group's steps in order, zero-padded."""
        out = x.new_zeros(self.num_groups, self.max_len, x.shape[-1])
        v = self.valid
        return out.index_put((self.group[v], self.rank[v]), x[v])

    def scatter(self, y: torch.Tensor, T: int) -> torch.Tensor:
        """(G, L, d) -> (B, T, d): back to the dialogue positions, zeros at padding."""
        v = self.valid
        out = y.new_zeros(v.shape[0], T, y.shape[-1])
        return out.index_put((v.nonzero(as_tuple=True)), y[self.group[v], self.rank[v]])


def run_by_speaker(rnn: nn.RNNBase, x: torch.Tensor, groups: SpeakerGroups) -> torch.Tensor:
    """Run ``rnn`` over each speaker's own utterances of each dialogue and put results back in place."""
    y = run_packed(rnn, groups.gather(x), groups.lengths)
    return groups.scatter(y, x.shape[1])



class BiRNN(nn.Module):
    """A ``num_layers`` bidirectional LSTM/GRU run as two single-direction RNNs per layer.

    The backward RNN reads each dialogue reversed within its own length, so padding only ever
    follows the real steps and a dialogue's outputs do not depend on the rest of its batch. Same
    parameter shapes as ``nn.LSTM/GRU(bidirectional=True)``; on CPU an LSTM runs about twice as
    fast this way as on a packed sequence (packing computes the input projection step by step).
    Dropout ``dropout`` between layers, as in ``nn.LSTM``.
    """

    def __init__(self, cell: str, in_dim: int, hidden: int, num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        dims = [in_dim] + [2 * hidden] * (num_layers - 1)
        self.forward_rnns = nn.ModuleList(rnn(d, hidden, batch_first=True) for d in dims)
        self.backward_rnns = nn.ModuleList(rnn(d, hidden, batch_first=True) for d in dims)
        self.dropout = dropout
        self.hidden = hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) -> (B, T, 2·hidden), zeros past each row's length."""
        B, T, _ = x.shape
        steps = torch.arange(T, device=x.device)[None, :]
        L = lengths.to(x.device)[:, None]
        rev = torch.where(steps < L, L - 1 - steps, steps)[..., None]
        out = x
        for i, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns)):
            if i > 0:
                out = dropout(out, self.dropout, self.training)
            f, _ = fwd(out)
            r, _ = bwd(out.gather(1, rev.expand(-1, -1, out.shape[-1])))
            out = torch.cat([f, r.gather(1, rev.expand(-1, -1, r.shape[-1]))], dim=-1)
        return out * (steps < L)[..., None].to(out.dtype)
