"""Reconstruction losses of the incomplete-data backbones (GCNet, SDR-GNN, Mi-CGA), observed entries only."""

from __future__ import annotations

import torch


def observed_reconstruction_loss(
    recon: dict[str, torch.Tensor], target: dict[str, torch.Tensor], observed: dict[str, torch.Tensor]
) -> torch.Tensor:
    """L_rec = (1/N) Σ_m Σ_{i: e_i^m = 1} ||r_i^m − x_i^m||² / d_m.

    recon, target: modality -> (N, d_m); observed: modality -> (N,) bool (e^m). The public GCNet
    and SDR-GNN losses have the same form but sum over the *missing* entries, against the complete
    features; under the BALM protocol no model sees a missing modality's features, so only the
    observed entries are targets here.
    """
    first = next(iter(recon.values()))
    n = max(first.shape[0], 1)
    total = first.new_zeros(())
    for m, r in recon.items():
        e = observed[m].to(r.dtype)[:, None]
        total = total + (((r - target[m]) ** 2) * e).sum() / r.shape[1]
    return total / n
