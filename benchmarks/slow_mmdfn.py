"""MM-DFN with its graph built the slow way (Python loops over dialogues and elements).

``make_slow(model)`` returns a copy of an :class:`balm.backbones.mmdfn.MMDFN` whose multimodal
graph is assembled like the public MM-DFN code: one dense (M·N)×(M·N) matrix for the whole
batch, each dialogue's intra-modal block written in a loop, each inter-modal edge written one
element at a time, then D^{-1/2} A D^{-1/2} as two dense matrix products. Same outputs as the
vectorised model (up to float rounding). Run this file to compare the two on IEMOCAP-shaped data.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F

COS_SHRINK = 0.99999


class SlowGraph:
    """Graph ops with the public code's loops; nodes are numbered modality-major (m·N + i)."""

    def build(self, nodes: torch.Tensor, valid: torch.Tensor, present: torch.Tensor | None):
        B, M, T, _ = nodes.shape
        lengths = [int(n) for n in valid.sum(1)]
        N = sum(lengths)
        feats = [torch.cat([nodes[b, m, : lengths[b]] for b in range(B)]) for m in range(M)]
        pres = None
        if present is not None:
            pres = [torch.cat([present[b, m, : lengths[b]] for b in range(B)]) for m in range(M)]
        adj = torch.zeros(M * N, M * N, dtype=nodes.dtype, device=nodes.device)
        start = 0
        for b in range(B):
            L = lengths[b]
            for m in range(M):
                x = feats[m][start : start + L]
                xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
                sim = 1 - torch.acos((xn @ xn.t()) * COS_SHRINK) / math.pi
                if pres is not None:
                    p = pres[m][start : start + L]
                    keep = (p[:, None] & p[None, :]) | torch.eye(L, dtype=torch.bool, device=p.device)
                    sim = sim * keep
                r0 = m * N + start
                adj[r0 : r0 + L, r0 : r0 + L] = sim
            for m in range(M):
                for n in range(M):
                    if m == n:
                        continue
                    a = feats[m][start : start + L]
                    c = feats[n][start : start + L]
                    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    c = c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    cos = (a * c).sum(1)
                    sim = 1 - torch.acos(cos * COS_SHRINK) / math.pi
                    for k in range(L):  # one element at a time, as the public code writes them
                        i = start + k
                        if pres is not None and not (bool(pres[m][i]) and bool(pres[n][i])):
                            continue
                        adj[m * N + i, n * N + i] = sim[k]
            start += L
        d = adj.sum(1)
        D = torch.diag(torch.where(d > 0, d.clamp_min(1e-12).rsqrt(), torch.zeros_like(d)))
        return D.mm(adj).mm(D)

    def propagate(self, adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        N, M, d = h.shape
        out = adj.mm(h.transpose(0, 1).reshape(M * N, d))
        return out.reshape(M, N, d).transpose(0, 1)


def make_slow(model):
    """A copy of ``model`` (an MMDFN) whose graph is built with Python loops, as in the public code."""
    slow = copy.deepcopy(model)
    slow.graph_ops = SlowGraph()
    return slow


def main() -> None:
    import numpy as np

    from balm.backbones.mmdfn import MMDFN
    from balm.data.batch import Batch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=1, help="training steps to time per model")
    ap.add_argument("--dialogues", type=int, default=16, help="dialogues per batch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    dims = {"audio": 1582, "text": 1024, "visual": 342}
    batches = []
    for _ in range(args.batches):
        L = torch.from_numpy(rng.integers(20, 90, args.dialogues))
        T = int(L.max())
        valid = torch.arange(T)[None] < L[:, None]
        masks = {m: valid & (torch.rand(len(L), T) >= r) for m, r in zip(dims, (0.5, 0.7, 0.3))}
        feats = {m: torch.randn(len(L), T, d) * masks[m][..., None] for m, d in dims.items()}
        spk = torch.randint(0, 2, (len(L), T)) * valid
        batches.append(Batch(feats, masks, valid, spk, torch.randint(0, 6, (len(L), T)) * valid, L))
    fast = MMDFN(dims, 6)
    slow = make_slow(fast)
    times = {}
    for name, model in (("vectorised", fast), ("slow", slow)):
        model.train()
        t = time.perf_counter()
        for b in batches:
            out = model(b)
            F.cross_entropy(out.prediction, b.targets).backward()
        times[name] = (time.perf_counter() - t) / len(batches)
        print(f"{name:>10}: {times[name]:.2f} s per training step (forward + backward)")
    print(f"speed-up: {times['slow'] / times['vectorised']:.1f}x")


if __name__ == "__main__":
    main()
