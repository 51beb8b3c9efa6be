"""SDR-GNN: hypergraph and gated convolutions against per-dialogue loops, batch independence,
the reconstruction option (observed entries only), parameter counts."""

import pytest
import torch
import torch.nn.functional as F

from balm.backbones.gcnet import window_edges
from balm.backbones.reconstruction import observed_reconstruction_loss
from balm.backbones.registry import build_backbone
from balm.backbones.sdrgnn import SDRGNN, GatedHighConv, HypergraphConv, _default_heads
from balm.data.batch import collate
from backbone_batches import random_split

DIMS3 = {"audio": 7, "text": 5, "visual": 4}
SMALL = dict(proj_dim=6, hidden=5, graph_hidden=4, dropout=0.0, num_speakers=3)


def loop_pairs(lengths, wp, wf):
    """The public ``edge_perms`` per dialogue: (j, i) for i in j − wp … j + wf (−1 unbounded), offset."""
    pairs, base = [], 0
    for n in lengths:
        for j in range(n):
            lo = 0 if wp == -1 else max(0, j - wp)
            hi = n if wf == -1 else min(n, j + wf + 1)
            pairs += [(base + j, base + i) for i in range(lo, hi)]
        base += n
    return pairs


def padded_valid(lengths):
    T = max(lengths)
    return torch.arange(T)[None] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("wp,wf", [(3, 3), (1, 2), (-1, 1), (0, -1)])
def test_hypergraph_conv_equals_incidence_loop(wp, wf):
    lengths = [5, 2, 7]
    valid = padded_valid(lengths)
    N = sum(lengths)
    torch.manual_seed(0)
    x = torch.randn(N, 4)
    conv = HypergraphConv(4)
    with torch.no_grad():
        conv.bias.normal_()
    edges = window_edges(valid, torch.zeros_like(valid, dtype=torch.long), wp, wf, 1)
    got = conv(x, edges.src, edges.dst)
    # incidence H[node, hyperedge] from the public pairs (j, item): node j joins hyperedge `item`
    H = torch.zeros(N, N)
    for j, item in loop_pairs(lengths, wp, wf):
        H[j, item] = 1.0
    Dinv = torch.diag(1.0 / H.sum(1))
    Binv = torch.diag(1.0 / H.sum(0))
    want = F.leaky_relu(Dinv @ H @ Binv @ H.T @ x + conv.bias, 0.01)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("wp,wf", [(3, 3), (2, 0)])
def test_gated_high_conv_equals_edge_loop(wp, wf):
    lengths = [4, 6, 1]
    valid = padded_valid(lengths)
    N = sum(lengths)
    torch.manual_seed(1)
    x = torch.randn(N, 3)
    conv = GatedHighConv(3)
    edges = window_edges(valid, torch.zeros_like(valid, dtype=torch.long), wp, wf, 1)
    got = conv(x, edges.src, edges.dst)
    pairs = loop_pairs(lengths, wp, wf)
    deg = torch.zeros(N)
    for j, _ in pairs:
        deg[j] += 1
    want = torch.zeros(N, 3)
    for j, i in pairs:  # message from source j to target i
        gate = torch.tanh(conv.gate(torch.cat([x[i], x[j]])))
        want[i] += x[j] * gate / (deg[j].sqrt() * deg[i].sqrt())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("time_attn", [False, True])
def test_dialogue_alone_equals_dialogue_in_batch(time_attn):
    torch.manual_seed(0)
    split = random_split(DIMS3, [3, 6, 2, 5], seed=3, missing=0.4, num_speakers=3)
    model = SDRGNN(DIMS3, 4, **{**SMALL, "dropout": 0.3}, time_attn=time_attn).eval()
    with torch.no_grad():
        full = model(collate(split, [0, 1, 2, 3]))
        offsets = [0, 3, 9, 11, 16]
        for i in range(4):
            alone = model(collate(split, [i]))
            rows = slice(offsets[i], offsets[i + 1])
            torch.testing.assert_close(alone.prediction, full.prediction[rows], rtol=1e-5, atol=1e-6)
            for m in DIMS3:
                torch.testing.assert_close(alone.embeddings[m], full.embeddings[m][rows])


def test_observed_reconstruction_loss_hand_values():
    recon = {"a": torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, 1.0]]), "b": torch.tensor([[1.0], [2.0], [5.0]])}
    target = {"a": torch.tensor([[0.0, 0.0], [9.0, 9.0], [1.0, 1.0]]), "b": torch.tensor([[0.0], [0.0], [0.0]])}
    observed = {"a": torch.tensor([True, False, True]), "b": torch.tensor([False, True, False])}
    # a: rows 0 and 2: (1 + 4) + (4 + 0) = 9, / d_a = 2 -> 4.5; b: row 1: 4 / 1 -> 4; total / N = 3
    got = observed_reconstruction_loss(recon, target, observed)
    assert got.item() == pytest.approx((4.5 + 4.0) / 3)


def test_reconstruction_is_off_by_default_and_only_in_training():
    split = random_split(DIMS3, [3, 4], seed=0, missing=0.4, num_speakers=3)
    batch = collate(split, [0, 1])
    plain = SDRGNN(DIMS3, 3, **SMALL)
    assert plain(batch).aux_loss is None and not hasattr(plain, "rec_linear")
    model = SDRGNN(DIMS3, 3, **SMALL, reconstruction=0.7, reconstruction_heads=2)
    out = model.train()(batch)
    assert out.aux_loss is not None and out.aux_loss.ndim == 0 and out.aux_loss > 0
    out.aux_loss.backward()
    assert model.rec_linear.weight.grad.abs().sum() > 0
    assert model.eval()(batch).aux_loss is None
    # the loss sees only observed entries: hiding every modality makes it zero
    hidden = collate(split, [0, 1])
    hidden.masks = {m: torch.zeros_like(v) for m, v in hidden.masks.items()}
    assert model.train()(hidden).aux_loss.item() == 0.0
    with pytest.raises(ValueError, match="reconstruction"):
        SDRGNN(DIMS3, 3, reconstruction=-1.0)


def test_default_heads():
    assert _default_heads(2560) == 256  # the public model: MultiheadAttention(2560, 256)
    assert _default_heads(2948) == 268  # IEMOCAP 1582 + 1024 + 342 = 2948 = 268 * 11
    assert _default_heads(24) == 2


def _lin(i, o, bias=True):
    return i * o + (o if bias else 0)


def _gru(i, h):  # one direction, one layer
    return 3 * (i * h + h * h + 2 * h)


def test_parameter_count_with_iemocap_dims():
    dims = {"audio": 1582, "text": 1024, "visual": 342}
    model = build_backbone("sdrgnn", dims, 6)
    p, h, g = 128, 200, 100
    enc = sum(_lin(d, p) for d in dims.values())
    ctx = 2 * (_gru(3 * p, h) + _gru(2 * h, h))
    d_h = 2 * h + g

    def branch(R):
        rgcn = R * 2 * h * g + 2 * h * g + g
        return rgcn + g + _lin(2 * g, 1) + 2 * (_gru(d_h, d_h) + _gru(2 * d_h, d_h)) + _lin(2 * d_h, d_h)

    want = enc + ctx + branch(3) + branch(4) + _lin(d_h, 6)
    assert sum(q.numel() for q in model.parameters()) == want
    assert sum(q.numel() for q in model.encoders.parameters()) == enc


def test_speaker_ids_are_checked():
    split = random_split(DIMS3, [3, 4], seed=0, num_speakers=3)
    with pytest.raises(ValueError, match="num_speakers=2"):
        SDRGNN(DIMS3, 3, **{**SMALL, "num_speakers": 2})(collate(split, [0, 1]))
