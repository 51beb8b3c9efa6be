"""SDR-GNN with its graph built the slow way (Python loops over dialogues and node pairs).

``make_slow(model)`` returns ``model`` with ``balm.backbones.sdrgnn.window_edges`` swapped for the
loop-built edge list of ``slow_gcnet.py`` while it runs: the public SDR-GNN is a GCNet fork and lists
its window edges with the same ``edge_perms`` / ``batch_graphify`` loops; its convolutions are
torch_geometric's (vectorised), so only the edge listing loops. Same outputs as the vectorised
model. Run this file to compare the two on IEMOCAP-shaped data.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Patched, timing_main  # noqa: E402
from slow_gcnet import slow_window_edges  # noqa: E402

from balm.backbones import sdrgnn  # noqa: E402


def make_slow(model: sdrgnn.SDRGNN) -> Patched:
    """``model`` whose graph is listed with Python loops, as in the public code."""
    return Patched(model, {sdrgnn: {"window_edges": slow_window_edges}})


if __name__ == "__main__":
    timing_main(__doc__, sdrgnn.SDRGNN, make_slow)
