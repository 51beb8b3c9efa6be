"""The loop-built models of benchmarks/slow_*.py compute their backbone's function (outputs and
gradients, dropout included) through the swapped-in graph builder, and leave the backbone as it was."""

import pytest
import torch
from backbone_batches import load_bench, random_batch

from balm.backbones import gcnet, micga, mmdfn, mmgcn, sdrgnn

DIMS = {"audio": 7, "text": 5, "visual": 4}
CASES = {
    "mmgcn": (mmgcn, "multimodal_adjacency", lambda: mmgcn.MMGCN(DIMS, 3, node_dim=8, lstm_hidden=4, graph_hidden=6)),
    "mmdfn": (mmdfn, "multimodal_adjacency",
              lambda: mmdfn.MMDFN(DIMS, 3, hidden=12, context_dim=6, graph_hidden=8, num_layers=4, dropout=0.3)),
    "mmdfn-masked": (mmdfn, "multimodal_adjacency", lambda: mmdfn.MMDFN(
        DIMS, 3, hidden=12, context_dim=6, graph_hidden=8, num_layers=3, dropout=0.3, mask_missing_nodes=True)),
    "gcnet": (gcnet, "window_edges", lambda: gcnet.GCNet(DIMS, 3, proj_dim=6, hidden=5, graph_hidden=4, dropout=0.3)),
    "gcnet-attn": (gcnet, "window_edges",
                   lambda: gcnet.GCNet(DIMS, 3, proj_dim=6, hidden=5, graph_hidden=4, dropout=0.3, time_attn=True)),
    "sdrgnn": (sdrgnn, "window_edges",
               lambda: sdrgnn.SDRGNN(DIMS, 3, proj_dim=6, hidden=5, graph_hidden=4, dropout=0.3)),
    "micga": (micga, "causal_edges", lambda: micga.MiCGA(DIMS, 3, enc_dim=6, gat_hidden=5, gat_dropout=0.3)),
}
BUILT = {gcnet: "WindowEdges", sdrgnn: "WindowEdges", micga: "tuple"}


def step(model, batch, seed):
    model.zero_grad()
    torch.manual_seed(seed)
    out = model(batch)
    (torch.nn.functional.cross_entropy(out.prediction, batch.targets) + out.fused.pow(2).mean()).backward()
    return out, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_slow_model_equals_fast_model_through_the_loop_built_graph(case):
    module, name, build = CASES[case]
    torch.manual_seed(0)
    model = build().train()
    slow = load_bench(f"slow_{case.split('-')[0]}").make_slow(model)
    assert [id(p) for p in slow.parameters()] == [id(p) for p in model.parameters()]
    assert slow.encoders is model.encoders and slow.fusion_head is model.fusion_head
    original = getattr(module, name)
    built, loop = [], slow.patches[module][name]

    def spy(*args):
        graph = loop(*args)
        built.append(type(graph).__name__)
        return graph

    slow.patches[module][name] = spy
    batch = random_batch(DIMS, [6, 3, 5, 1], seed=2, num_classes=3)
    fast_out, fast_grads = step(model, batch, seed=5)
    slow_out, slow_grads = step(slow, batch, seed=5)
    # the swapped-in builder ran, once (MMGCN / MM-DFN: a dense matrix, not the fast MultimodalAdjacency)
    assert built == [BUILT.get(module, "DenseAdjacency")]
    assert getattr(module, name) is original  # put back after the forward
    torch.testing.assert_close(slow_out.prediction, fast_out.prediction, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(slow_out.fused, fast_out.fused, atol=1e-5, rtol=1e-4)
    for a, b in zip(slow_grads, fast_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)



def test_swapped_puts_the_originals_back_after_an_error():
    harness = load_bench("_harness")
    original = mmgcn.multimodal_adjacency
    with pytest.raises(RuntimeError, match="boom"):
        with harness.swapped({mmgcn: {"multimodal_adjacency": None}}):
            assert mmgcn.multimodal_adjacency is None
            raise RuntimeError("boom")
    assert mmgcn.multimodal_adjacency is original


def test_public_mmgcn_graph_keeps_missing_nodes():
    model = mmgcn.MMGCN(DIMS, 3, node_dim=8, lstm_hidden=4, graph_hidden=6, prune_missing=True)
    with pytest.raises(ValueError, match="keeps missing nodes"):
        load_bench("slow_mmgcn").make_slow(model)
