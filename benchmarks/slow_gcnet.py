"""GCNet with its graph built the slow way (Python loops over dialogues and node pairs).

``make_slow(model)`` returns a copy of a :class:`balm.backbones.gcnet.GCNet` whose window edges
and relation types are listed like the public GCNet code (``edge_perms`` / ``batch_graphify``:
for each dialogue, for each utterance, for each neighbour in the window). Same outputs as the
vectorised model (up to float rounding). Run this file to compare the two on IEMOCAP-shaped data.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from balm.backbones.gcnet import WindowEdges


def slow_window_edges(valid, speakers, window_past, window_future, num_speakers) -> WindowEdges:
    lengths = [int(n) for n in valid.sum(1)]
    spk = speakers.tolist()
    src, dst, temporal, speaker = [], [], [], []
    offset = 0
    for b, L in enumerate(lengths):
        for j in range(L):  # source utterance
            lo = 0 if window_past < 0 else max(0, j - window_past)
            hi = L if window_future < 0 else min(L, j + window_future + 1)
            for i in range(lo, hi):  # target utterance
                src.append(offset + j)
                dst.append(offset + i)
                temporal.append(0 if i > j else (1 if i == j else 2))
                speaker.append(spk[b][i] * num_speakers + spk[b][j])
        offset += L
    as_t = lambda v: torch.tensor(v, dtype=torch.long, device=valid.device)  # noqa: E731
    return WindowEdges(as_t(src), as_t(dst), as_t(temporal), as_t(speaker))


def make_slow(model):
    """A copy of ``model`` (a GCNet) whose graph is listed with Python loops, as in the public code."""
    slow = copy.deepcopy(model)
    slow.edge_builder = slow_window_edges
    return slow


def main() -> None:
    import numpy as np

    from balm.backbones.gcnet import GCNet
    from balm.data.batch import Batch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=4, help="training steps to time per model")
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
    fast = GCNet(dims, 6)
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
