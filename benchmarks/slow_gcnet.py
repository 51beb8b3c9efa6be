"""GCNet with its graph built the slow way (Python loops over dialogues and node pairs).

``make_slow(model)`` returns ``model`` with ``balm.backbones.gcnet.window_edges`` swapped for
:func:`slow_window_edges` while it runs: the window edges and relation types are listed like the
public GCNet code (``edge_perms`` / ``batch_graphify``: for each dialogue, for each utterance, for
each neighbour in the window). Same outputs as the vectorised model (up to float rounding). Run
this file to compare the two on IEMOCAP-shaped data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Patched, timing_main  # noqa: E402

from balm.backbones import gcnet  # noqa: E402


def slow_window_edges(valid, speakers, window_past, window_future, num_speakers) -> gcnet.WindowEdges:
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
    return gcnet.WindowEdges(as_t(src), as_t(dst), as_t(temporal), as_t(speaker))


def make_slow(model: gcnet.GCNet) -> Patched:
    """``model`` whose graph is listed with Python loops, as in the public code."""
    return Patched(model, {gcnet: {"window_edges": slow_window_edges}})


if __name__ == "__main__":
    timing_main(__doc__, gcnet.GCNet, make_slow)
