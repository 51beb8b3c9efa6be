"""Mi-CGA with its graph built the slow way (Python loops over dialogues and node pairs).

``make_slow(model)`` returns ``model`` with ``balm.backbones.micga.causal_edges`` swapped for
:func:`slow_causal_edges` while it runs: the edge list is written pair by pair as the public data
loader does for every dialogue (``for node in range(n): for adj in range(node, n)``), before the
graph's (DGL) layers run. Same outputs as the vectorised model. Run this file to compare the two
on IEMOCAP-shaped data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Patched, timing_main  # noqa: E402

from balm.backbones import micga  # noqa: E402


def slow_causal_edges(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    src, dst, offset = [], [], 0
    for n in (int(v) for v in valid.sum(1)):
        for node in range(n):
            for adj in range(node, n):
                src.append(offset + node)
                dst.append(offset + adj)
        offset += n
    as_t = lambda v: torch.tensor(v, dtype=torch.long, device=valid.device)  # noqa: E731
    return as_t(src), as_t(dst)


def make_slow(model: micga.MiCGA) -> Patched:
    """``model`` whose graph is listed with Python loops, as in the public code."""
    return Patched(model, {micga: {"causal_edges": slow_causal_edges}})


if __name__ == "__main__":
    timing_main(__doc__, micga.MiCGA, make_slow)
