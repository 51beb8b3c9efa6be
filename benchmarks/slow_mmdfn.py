"""MM-DFN with its graph built the slow way (Python loops over dialogues and elements).

``make_slow(model)`` returns ``model`` with ``balm.backbones.mmdfn.multimodal_adjacency`` swapped
for :func:`loop_adjacency` while it runs: the multimodal graph is assembled like the public
MM-DFN code, one dense (M·N)×(M·N) matrix for the whole batch, each dialogue's intra-modal block
written in a loop, each inter-modal edge written one element at a time, then D^{-1/2} A D^{-1/2}
as two dense matrix products. Same outputs as the vectorised model (up to float rounding). Run
this file to compare the two on IEMOCAP-shaped data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import DenseAdjacency, Patched, angular, normalise, per_modality, timing_main, unit_rows  # noqa: E402

from balm.backbones import mmdfn  # noqa: E402


def loop_adjacency(nodes: torch.Tensor, valid: torch.Tensor, present: torch.Tensor | None = None) -> DenseAdjacency:
    """MM-DFN's normalised graph of padded nodes (B, M, T, d) with the public code's loops; nodes
    are numbered modality-major (m·N + i). ``present`` (B, M, T) cuts the edges of missing nodes."""
    feats, lengths = per_modality(nodes, valid)
    M, N = len(feats), feats[0].shape[0]
    pres = None if present is None else per_modality(present[..., None], valid)[0]
    adj = torch.zeros(M * N, M * N, dtype=nodes.dtype, device=nodes.device)
    start = 0
    for L in lengths:
        for m in range(M):
            xn = unit_rows(feats[m][start : start + L])
            sim = angular(xn @ xn.t())
            if pres is not None:
                p = pres[m][start : start + L, 0]
                sim = sim * ((p[:, None] & p[None, :]) | torch.eye(L, dtype=torch.bool, device=p.device))
            r0 = m * N + start
            adj[r0 : r0 + L, r0 : r0 + L] = sim
        for m in range(M):
            for n in range(M):
                if m == n:
                    continue
                cos = (unit_rows(feats[m][start : start + L]) * unit_rows(feats[n][start : start + L])).sum(1)
                sim = angular(cos)
                for k in range(L):  # one element at a time, as the public code writes them
                    i = start + k
                    if pres is not None and not (bool(pres[m][i, 0]) and bool(pres[n][i, 0])):
                        continue
                    adj[m * N + i, n * N + i] = sim[k]
        start += L
    return normalise(adj)


def make_slow(model: mmdfn.MMDFN) -> Patched:
    """``model`` whose graph is built with Python loops, as in the public code."""
    return Patched(model, {mmdfn: {"multimodal_adjacency": loop_adjacency}})


if __name__ == "__main__":
    timing_main(__doc__, mmdfn.MMDFN, make_slow, batches=1)
