"""GCNet: window graph and relation types against a per-dialogue loop, RGCN/GraphConv against
dense loops, batch independence, shapes, BALM variants."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from balm.backbones._sequence import BiRNN
from balm.backbones.gcnet import GCNet, GraphConv, RelationalGraphConv, window_edges
from balm.backbones.registry import build_backbone
from balm.data.batch import Batch
from backbone_batches import load_bench, train_steps

ROOT = Path(__file__).resolve().parents[2]
DIMS3 = {"audio": 7, "text": 5, "visual": 4}
SMALL = dict(proj_dim=6, hidden=5, graph_hidden=4, dropout=0.0, num_speakers=3)


def random_batch(dims, lengths, seed=0, rates=None, task="classification", classes=3, speakers=3):
    g = torch.Generator().manual_seed(seed)
    L = torch.tensor(lengths)
    B, T = len(lengths), max(lengths)
    valid = torch.arange(T)[None] < L[:, None]
    rates = rates or [0.4] * len(dims)
    masks = {m: valid & (torch.rand(B, T, generator=g) >= r) for m, r in zip(dims, rates)}
    feats = {m: torch.randn(B, T, d, generator=g) * masks[m][..., None] for m, d in dims.items()}
    spk = torch.randint(0, speakers, (B, T), generator=g) * valid
    if task == "classification":
        labels = torch.randint(0, classes, (B, T), generator=g) * valid
    else:
        labels = torch.randn(B, T, generator=g) * valid
    return Batch(feats, masks, valid, spk, labels, L)


def sub_batch(batch, idx):
    idx = torch.as_tensor(idx)
    T = int(batch.lengths[idx].max())
    cut = lambda t: t[idx][:, :T]  # noqa: E731
    return Batch(
        {m: cut(x) for m, x in batch.features.items()}, {m: cut(x) for m, x in batch.masks.items()},
        cut(batch.valid), cut(batch.speakers), cut(batch.labels), batch.lengths[idx],
    )


def loop_edges(lengths, speakers, wp, wf, P):
    """GCNet's edge list, the obvious way: utterance j of a dialogue sends to j-wp .. j+wf."""
    edges, start = set(), 0
    for b, L in enumerate(lengths):
        for j in range(L):
            for i in range(L):
                if (wp >= 0 and i < j - wp) or (wf >= 0 and i > j + wf):
                    continue
                temporal = "before" if j < i else ("self" if j == i else "after")
                edges.add((start + j, start + i, temporal, (int(speakers[b][i]), int(speakers[b][j]))))
        start += L
    return edges


@pytest.mark.parametrize("wp,wf", [(2, 2), (1, 3), (0, 1), (-1, -1), (3, -1)])
def test_window_edges_equal_per_dialogue_loop(wp, wf):
    batch = random_batch(DIMS3, [6, 1, 4, 9], seed=wp * 7 + wf)
    e = window_edges(batch.valid, batch.speakers, wp, wf, 3)
    names = {0: "before", 1: "self", 2: "after"}
    got = [
        (int(s), int(d), names[int(t)], (int(r) // 3, int(r) % 3))
        for s, d, t, r in zip(e.src, e.dst, e.temporal, e.speaker)
    ]
    assert len(got) == len(set(got))  # no duplicate edge
    assert set(got) == loop_edges(batch.lengths.tolist(), batch.speakers.tolist(), wp, wf, 3)
    slow = load_bench("slow_gcnet").slow_window_edges(batch.valid, batch.speakers, wp, wf, 3)
    slow_set = {
        (int(s), int(d), names[int(t)], (int(r) // 3, int(r) % 3))
        for s, d, t, r in zip(slow.src, slow.dst, slow.temporal, slow.speaker)
    }
    assert slow_set == set(got)


def test_rgcn_equals_dense_loop():
    torch.manual_seed(0)
    conv = RelationalGraphConv(4, 3, num_relations=3)
    x = torch.randn(6, 4)
    src = torch.tensor([0, 1, 2, 3, 0, 5, 4, 4, 2])
    dst = torch.tensor([1, 1, 1, 1, 2, 2, 0, 5, 5])
    rel = torch.tensor([0, 0, 2, 1, 1, 1, 2, 0, 0])
    got = conv(x, src, dst, rel)
    for i in range(6):
        ref = x[i] @ conv.root + conv.bias
        for r in range(3):
            nbrs = [int(s) for s, d, t in zip(src, dst, rel) if int(d) == i and int(t) == r]
            if nbrs:
                ref = ref + sum(x[j] @ conv.weight[r] for j in nbrs) / len(nbrs)
        torch.testing.assert_close(got[i], ref, atol=1e-6, rtol=1e-5)


def test_birnn_equals_bidirectional_lstm_per_dialogue():
    torch.manual_seed(3)
    rnn = BiRNN("lstm", 4, 3, num_layers=2).eval()
    ref = torch.nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    assert sum(p.numel() for p in rnn.parameters()) == sum(p.numel() for p in ref.parameters())
    with torch.no_grad():  # same weights, nn.LSTM naming
        for layer in range(2):
            for sfx, mods in (("", rnn.forward_rnns), ("_reverse", rnn.backward_rnns)):
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{kind}_l{layer}{sfx}").copy_(getattr(mods[layer], f"{kind}_l0"))
        lengths = torch.tensor([6, 2, 4])
        x = torch.randn(3, 6, 4)
        out = rnn(x, lengths)
        for b, L in enumerate(lengths.tolist()):
            torch.testing.assert_close(out[b, :L], ref(x[b : b + 1, :L])[0][0], atol=1e-6, rtol=1e-5)
            assert float(out[b, L:].abs().sum()) == 0.0


def test_graphconv_equals_dense_loop():
    torch.manual_seed(1)
    conv = GraphConv(4, 3)
    x = torch.randn(5, 4)
    src = torch.tensor([0, 1, 2, 2, 4])
    dst = torch.tensor([1, 1, 0, 3, 3])
    got = conv(x, src, dst)
    A = torch.zeros(5, 5)
    for s, d in zip(src.tolist(), dst.tolist()):
        A[d, s] += 1
    ref = (A @ x) @ conv.rel.weight.T + conv.rel.bias + x @ conv.root.weight.T
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("time_attn", [False, True])
def test_dialogue_outputs_do_not_depend_on_batch(time_attn):
    torch.manual_seed(3)
    model = GCNet(DIMS3, 3, time_attn=time_attn, **SMALL).eval()
    batch = random_batch(DIMS3, [4, 7, 2], seed=4)
    with torch.no_grad():
        full = model(batch)
        starts = [0] + torch.cumsum(batch.lengths, 0).tolist()
        for b in range(3):
            alone = model(sub_batch(batch, [b]))
            sl = slice(starts[b], starts[b + 1])
            torch.testing.assert_close(full.prediction[sl], alone.prediction, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(full.fused[sl], alone.fused, atol=1e-5, rtol=1e-4)


def test_shapes_and_flatten_order():
    torch.manual_seed(4)
    model = GCNet(DIMS3, 5, **SMALL).eval()
    batch = random_batch(DIMS3, [3, 6], seed=5)
    out = model(batch)
    assert out.prediction.shape == (9, 5)
    assert out.fused.shape == (9, model.fused_dim) == (9, 2 * 5 + 4)
    assert model.embed_dims == {m: 6 for m in DIMS3}
    for m in DIMS3:
        z = model.encoders[m](batch.features[m])
        torch.testing.assert_close(out.embeddings[m], z[batch.valid])
        torch.testing.assert_close(out.embeddings[m][3:], z[1, :6])


def test_regression_and_registry():
    torch.manual_seed(5)
    model = build_backbone("gcnet", DIMS3, 1, **SMALL)
    assert isinstance(model, GCNet)
    batch = random_batch(DIMS3, [4, 2], seed=6, task="regression")
    out = model(batch)
    assert out.prediction.shape == (6,)
    F.mse_loss(out.prediction, batch.targets).backward()
    for m in DIMS3:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[m].parameters())


@pytest.mark.parametrize("dims", [{"x": 3, "y": 6}, {"a": 3, "b": 4, "c": 2, "d": 5}])
def test_two_and_four_modalities(dims):
    torch.manual_seed(6)
    model = GCNet(dims, 2, **SMALL)
    batch = random_batch(dims, [5, 3], seed=7, classes=2)
    out = model(batch)
    assert out.prediction.shape == (8, 2) and set(out.embeddings) == set(dims)
    assert model.context.forward_rnns[0].input_size == 6 * len(dims)
    F.cross_entropy(out.prediction, batch.targets).backward()


def test_speaker_ids_are_checked():
    model = GCNet(DIMS3, 3, **{**SMALL, "num_speakers": 2})
    batch = random_batch(DIMS3, [5, 3], seed=8, speakers=3)
    assert int(batch.speakers.max()) == 2
    with pytest.raises(ValueError, match="num_speakers=2"):
        model(batch)
    with pytest.raises(ValueError, match="two modalities"):
        GCNet({"a": 3}, 3)


def test_encoder_parameters_are_disjoint():
    model = GCNet(DIMS3, 3, **SMALL)
    sets = {m: {id(p) for p in model.encoders[m].parameters()} for m in DIMS3}
    head = {id(p) for p in model.fusion_head.parameters()}
    mods = list(DIMS3)
    for i, m in enumerate(mods):
        assert sets[m] and not (sets[m] & head)
        for n in mods[i + 1 :]:
            assert not (sets[m] & sets[n])


def _core_available():
    return (ROOT / "src" / "balm" / "core" / "variants.py").exists()


@pytest.mark.skipif(not _core_available(), reason="balm.core not present")
@pytest.mark.parametrize("variant", ["none", "fcm-only", "grm-only", "balm", "balm-d", "balm-s", "balm-m"])
def test_trains_with_every_variant(variant):
    from balm.core import VARIANTS

    assert variant in VARIANTS
    torch.manual_seed(8)
    dims = {"audio": 6, "text": 5, "visual": 4}
    model = GCNet(dims, 3, proj_dim=6, hidden=6, dropout=0.0, num_speakers=3)
    batches = [random_batch(dims, [5, 4, 3], seed=20 + i, classes=3) for i in range(2)]
    losses = train_steps(model, variant, "classification", batches, steps=40, lr=2e-2)
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses


@pytest.mark.skipif(not _core_available(), reason="balm.core not present")
def test_trains_regression_with_balm():
    torch.manual_seed(9)
    dims = {"audio": 6, "text": 5}
    model = GCNet(dims, 1, proj_dim=6, hidden=6, dropout=0.0, num_speakers=3)
    batches = [random_batch(dims, [5, 4, 3], seed=30 + i, task="regression") for i in range(2)]
    losses = train_steps(model, "balm", "regression", batches, steps=40, lr=2e-2)
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
