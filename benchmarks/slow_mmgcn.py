"""MMGCN with its graph built the way the public implementation builds it, for comparison only.

The public code keeps one dense (M·N)x(M·N) adjacency over all N utterances of a batch
(node (m, i) at row m·N + i), fills it dialogue by dialogue with Python loops (intra-modal
blocks per dialogue and modality, inter-modal diagonals per dialogue and modality pair, written
element-wise through index arrays), normalises it as D·A·D with two dense matrix products, and
multiplies the whole matrix by the node features in every GCNII layer.

``make_slow(model)`` returns ``model`` with ``balm.backbones.mmgcn.multimodal_adjacency`` swapped
for :func:`loop_adjacency` while it runs (same parameters, node-wise layers and dropout, so the
comparison isolates the graph); ``bench_backbones.py`` discovers this file by name. Run this file
to compare the two on IEMOCAP-shaped data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import DenseAdjacency, Patched, angular, normalise, per_modality, timing_main, unit_rows  # noqa: E402

from balm.backbones import mmgcn  # noqa: E402


def loop_adjacency(nodes: torch.Tensor, valid: torch.Tensor, present: torch.Tensor | None = None) -> DenseAdjacency:
    """MMGCN's normalised graph of padded nodes (B, M, T, d), built with loops over dialogues and
    modality pairs into one dense matrix."""
    if present is not None:
        raise ValueError("the loop-built graph reproduces the public code, which keeps missing nodes")
    features, lengths = per_modality(nodes, valid)
    M, N = len(features), features[0].shape[0]
    adj = torch.zeros(M * N, M * N, device=nodes.device, dtype=nodes.dtype)
    start = 0
    for L in lengths:
        blocks = []
        for x in features:
            u = unit_rows(x[start : start + L])
            blocks.append(angular(u @ u.T))
        diag = np.array(np.diag_indices(L))
        for m in range(M):
            for n in range(M):
                if m == n:
                    adj[m * N + start : m * N + start + L, m * N + start : m * N + start + L] = blocks[m]
                else:
                    a = unit_rows(features[m][start : start + L])
                    b = unit_rows(features[n][start : start + L])
                    adj[diag[0] + m * N + start, diag[1] + n * N + start] = angular((a * b).sum(1))
        start += L
    return normalise(adj)


def make_slow(model: mmgcn.MMGCN) -> Patched:
    """``model`` computing its function with the public code's loop-built dense graph."""
    if model.prune_missing:
        raise ValueError("the loop-built graph reproduces the public code, which keeps missing nodes")
    return Patched(model, {mmgcn: {"multimodal_adjacency": loop_adjacency}})


if __name__ == "__main__":
    timing_main(__doc__, mmgcn.MMGCN, make_slow)
