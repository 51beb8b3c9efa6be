"""What the loop-built benchmark models (``slow_<backbone>.py``) share.

A slow model is the fast one with a module-level function of its backbone module (the graph
builder) swapped for a loop-built version while it runs forward (:class:`Patched`), so it has the
same parameters and node-wise layers and the comparison isolates the graph. MMGCN and MM-DFN's
loop-built graphs are one dense (M·N)×(M·N) matrix over the batch, as in the public code
(:class:`DenseAdjacency`). ``timing_main`` is the command line every ``slow_*.py`` runs: a few
training steps of both models on IEMOCAP-shaped random batches, and the speed-up in CPU time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from balm.backbones.graph import COS_SHRINK

DIMS = {"audio": 1582, "text": 1024, "visual": 342}  # IEMOCAP feature widths
RATES = (0.5, 0.7, 0.3)


@contextlib.contextmanager
def swapped(patches: dict[ModuleType, dict[str, Callable]]):
    """Replace ``module.name`` by each given function inside the block, then put the originals back."""
    saved = []
    try:
        for module, names in patches.items():
            for name, fn in names.items():
                saved.append((module, name, getattr(module, name)))
                setattr(module, name, fn)
        yield
    finally:
        for module, name, fn in reversed(saved):
            setattr(module, name, fn)


class Patched(nn.Module):
    """``model`` (its own parameters, not a copy) whose forward runs with ``patches`` swapped in."""

    def __init__(self, model: nn.Module, patches: dict[ModuleType, dict[str, Callable]]):
        super().__init__()
        self.model = model
        self.patches = patches

    @property
    def encoders(self):
        return self.model.encoders

    @property
    def fusion_head(self):
        return self.model.fusion_head

    @property
    def embed_dims(self):
        return self.model.embed_dims

    def forward(self, batch):
        with swapped(self.patches):
            return self.model(batch)


# ---------------------------------------------------------------------------- dense graphs


@dataclass
class DenseAdjacency:
    """Â as one dense (M·N)×(M·N) matrix over a batch's N real utterances, node (m, i) at row m·N + i."""

    adj: torch.Tensor

    def propagate_packed(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Â H for ``h`` (N, M, d) in ``valid`` order, as one dense matrix product."""
        N, M, d = h.shape
        return self.adj.mm(h.transpose(0, 1).reshape(M * N, d)).reshape(M, N, d).transpose(0, 1)


def per_modality(nodes: torch.Tensor, valid: torch.Tensor) -> tuple[list[torch.Tensor], list[int]]:
    """Padded node features (B, M, T, d) -> one (N, d) tensor per modality (dialogues one after
    another, with a loop over them as the public code does) and the dialogue lengths."""
    lengths = [int(n) for n in valid.sum(1)]
    feats = [torch.cat([nodes[b, m, :L] for b, L in enumerate(lengths)]) for m in range(nodes.shape[1])]
    return feats, lengths


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def angular(cos: torch.Tensor) -> torch.Tensor:
    """1 − arccos(cos)/π, cosines shrunk as in the fast graph."""
    return 1 - torch.acos(cos * COS_SHRINK) / math.pi


def normalise(adj: torch.Tensor) -> DenseAdjacency:
    """D^{-1/2} A D^{-1/2} as two dense matrix products (D = row sums)."""
    d = adj.sum(1)
    D = torch.diag(torch.where(d > 0, d.clamp_min(1e-12).rsqrt(), torch.zeros_like(d)))
    return DenseAdjacency(D.mm(adj).mm(D))


# ---------------------------------------------------------------------------- timing


def iemocap_batches(count: int, dialogues: int, seed: int):
    """``count`` random batches shaped like IEMOCAP's (20-89 utterances per dialogue, 2 speakers)."""
    import numpy as np

    from balm.data.batch import Batch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        L = torch.from_numpy(rng.integers(20, 90, dialogues))
        T = int(L.max())
        valid = torch.arange(T)[None] < L[:, None]
        masks = {m: valid & (torch.rand(len(L), T) >= r) for m, r in zip(DIMS, RATES)}
        feats = {m: torch.randn(len(L), T, d) * masks[m][..., None] for m, d in DIMS.items()}
        spk = torch.randint(0, 2, (len(L), T)) * valid
        batches.append(Batch(feats, masks, valid, spk, torch.randint(0, 6, (len(L), T)) * valid, L))
    return batches


def timing_main(doc: str, build: Callable[[dict, int], nn.Module], make_slow: Callable, batches: int = 4) -> None:
    """Time training steps (forward + backward) of ``build(DIMS, 6)`` and ``make_slow`` of it."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--batches", type=int, default=batches, help="training steps to time per model")
    ap.add_argument("--dialogues", type=int, default=16, help="dialogues per batch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = iemocap_batches(args.batches, args.dialogues, args.seed)
    fast = build(DIMS, 6)
    slow = make_slow(fast)
    cpu = {}
    for name, model in (("vectorised", fast), ("slow", slow)):
        model.train()
        if name == "vectorised":  # one untimed step: the first call pays for allocations
            F.cross_entropy(model(data[0]).prediction, data[0].targets).backward()
        t, c = time.perf_counter(), time.process_time()
        for b in data:
            F.cross_entropy(model(b).prediction, b.targets).backward()
        wall = (time.perf_counter() - t) / len(data)
        cpu[name] = (time.process_time() - c) / len(data)
        print(f"{name:>10}: {cpu[name]:.2f} CPU-s ({wall:.2f} s wall) per training step (forward + backward)")
    # one torch thread: CPU time is what an idle machine's wall clock would be, on a shared one too
    print(f"speed-up: {cpu['slow'] / cpu['vectorised']:.1f}x (CPU time)")
