"""MM-DFN: graph against a per-dialogue loop, speaker context, batch independence, shapes, BALM."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from balm.backbones._sequence import SpeakerGroups, run_by_speaker, run_packed
from balm.backbones.graph import multimodal_adjacency
from balm.backbones.mmdfn import MMDFN
from balm.backbones.registry import build_backbone
from balm.data.batch import Batch
from backbone_batches import train_steps

ROOT = Path(__file__).resolve().parents[2]
DIMS3 = {"audio": 7, "text": 5, "visual": 4}
SMALL = dict(hidden=12, context_dim=6, graph_hidden=8, num_layers=4, dropout=0.0)


def random_batch(dims, lengths, seed=0, rates=None, task="classification", classes=3):
    g = torch.Generator().manual_seed(seed)
    L = torch.tensor(lengths)
    B, T = len(lengths), max(lengths)
    valid = torch.arange(T)[None] < L[:, None]
    rates = rates or [0.4] * len(dims)
    masks = {m: valid & (torch.rand(B, T, generator=g) >= r) for m, r in zip(dims, rates)}
    feats = {m: torch.randn(B, T, d, generator=g) * masks[m][..., None] for m, d in dims.items()}
    spk = torch.randint(0, 3, (B, T), generator=g) * valid
    if task == "classification":
        labels = torch.randint(0, classes, (B, T), generator=g) * valid
    else:
        labels = torch.randn(B, T, generator=g) * valid
    return Batch(feats, masks, valid, spk, labels, L)


def sub_batch(batch, idx):
    """Dialogues ``idx`` of ``batch`` alone, padded only to their own longest length."""
    idx = torch.as_tensor(idx)
    T = int(batch.lengths[idx].max())
    cut = lambda t: t[idx][:, :T]  # noqa: E731
    return Batch(
        {m: cut(x) for m, x in batch.features.items()},
        {m: cut(x) for m, x in batch.masks.items()},
        cut(batch.valid),
        cut(batch.speakers),
        cut(batch.labels),
        batch.lengths[idx],
    )


def loop_adjacency(x_list):
    """The MM-DFN/MMGCN graph of one dialogue, entry by entry. x_list[m]: (L, d). Node m·L + t."""
    M, L = len(x_list), x_list[0].shape[0]
    A = torch.zeros(M * L, M * L, dtype=torch.float64)

    def w(a, b):
        cos = float(a @ b) / (float(a.norm()) * float(b.norm()))
        return 1 - math.acos(cos * 0.99999) / math.pi

    for m in range(M):
        for i in range(L):
            for j in range(L):
                A[m * L + i, m * L + j] = w(x_list[m][i].double(), x_list[m][j].double())
            for n in range(M):
                if n != m:
                    A[m * L + i, n * L + i] = w(x_list[m][i].double(), x_list[n][i].double())
    d = A.sum(1)
    for r in range(M * L):
        for c in range(M * L):
            A[r, c] = A[r, c] / math.sqrt(d[r] * d[c])
    return A


def test_graph_equals_per_dialogue_loop():
    torch.manual_seed(0)
    model = MMDFN(DIMS3, 3, **SMALL).eval()
    batch = random_batch(DIMS3, [5, 2, 4], seed=1, rates=[0.5, 0.3, 0.6])
    groups = SpeakerGroups(batch.speakers, batch.valid)
    with torch.no_grad():
        z = [model.encoders[m](batch.features[m], batch.lengths, groups) for m in model.modalities]
        nodes = torch.stack(z, 1)
        adj = multimodal_adjacency(nodes, batch.valid, None)
        dense = adj.to_dense()
    T = batch.valid.shape[1]
    M = len(DIMS3)
    for b, L in enumerate(batch.lengths.tolist()):
        expected = loop_adjacency([zm[b, :L] for zm in z])
        rows = torch.cat([torch.arange(L) + m * T for m in range(M)])
        got = dense[b][rows][:, rows].double()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        # nothing links real nodes to padding
        pad = torch.cat([torch.arange(L, T) + m * T for m in range(M)])
        assert float(dense[b][rows][:, pad].abs().sum()) == 0.0


def test_speaker_context_equals_loop_over_speakers():
    torch.manual_seed(2)
    rnn = torch.nn.GRU(4, 3, num_layers=2, bidirectional=True, batch_first=True)
    batch = random_batch({"a": 4, "b": 2}, [7, 3, 6], seed=3)
    x = torch.randn(3, 7, 4)
    with torch.no_grad():
        check_speaker_context(rnn, batch, x)


def check_speaker_context(rnn, batch, x):
    got = run_by_speaker(rnn, x, SpeakerGroups(batch.speakers, batch.valid))
    for b, L in enumerate(batch.lengths.tolist()):
        for p in range(3):
            idx = [t for t in range(L) if int(batch.speakers[b, t]) == p]
            if idx:
                ref, _ = rnn(x[b, idx][None])
                torch.testing.assert_close(got[b, idx], ref[0], atol=1e-6, rtol=1e-5)
        assert float(got[b, L:].abs().sum()) == 0.0
    # the context GRU too: each dialogue as if alone, unaffected by padding
    out = run_packed(rnn, x, batch.lengths)
    for b, L in enumerate(batch.lengths.tolist()):
        torch.testing.assert_close(out[b, :L], rnn(x[b, :L][None])[0][0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("gated", [True, False])
def test_dialogue_outputs_do_not_depend_on_batch(gated):
    torch.manual_seed(3)
    model = MMDFN(DIMS3, 3, gated=gated, **SMALL).eval()
    batch = random_batch(DIMS3, [4, 7, 2], seed=4)
    with torch.no_grad():
        full = model(batch)
        starts = [0] + torch.cumsum(batch.lengths, 0).tolist()
        for b in range(3):
            alone = model(sub_batch(batch, [b]))
            sl = slice(starts[b], starts[b + 1])
            torch.testing.assert_close(full.prediction[sl], alone.prediction, atol=1e-5, rtol=1e-4)
            for m in DIMS3:
                torch.testing.assert_close(full.embeddings[m][sl], alone.embeddings[m], atol=1e-5, rtol=1e-4)


def test_shapes_and_flatten_order():
    torch.manual_seed(4)
    model = MMDFN(DIMS3, 5, **SMALL).eval()
    batch = random_batch(DIMS3, [3, 6], seed=5)
    out = model(batch)
    n = int(batch.valid.sum())
    assert out.prediction.shape == (n, 5)
    assert out.fused.shape == (n, model.fused_dim) == (n, 3 * (8 + 12))
    assert model.fusion_head.in_features == model.fused_dim
    assert model.embed_dims == {m: 12 for m in DIMS3}
    # embeddings are the encoder outputs at batch.valid, row-major
    groups = SpeakerGroups(batch.speakers, batch.valid)
    for m in DIMS3:
        z = model.encoders[m](batch.features[m], batch.lengths, groups)
        torch.testing.assert_close(out.embeddings[m], z[batch.valid])
        # second dialogue's utterances come after the first's 3
        torch.testing.assert_close(out.embeddings[m][3:], z[1, :6])


def test_regression_and_registry():
    torch.manual_seed(5)
    model = build_backbone("mmdfn", DIMS3, 1, **SMALL)
    assert isinstance(model, MMDFN)
    batch = random_batch(DIMS3, [4, 2], seed=6, task="regression")
    out = model(batch)
    assert out.prediction.shape == (6,)
    F.mse_loss(out.prediction, batch.targets).backward()
    for m in DIMS3:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[m].parameters())


@pytest.mark.parametrize("dims", [{"x": 3, "y": 6}, {"a": 3, "b": 4, "c": 2, "d": 5}])
def test_two_and_four_modalities(dims):
    torch.manual_seed(6)
    model = MMDFN(dims, 2, **SMALL)
    batch = random_batch(dims, [5, 3], seed=7, classes=2)
    out = model(batch)
    assert out.prediction.shape == (8, 2) and set(out.embeddings) == set(dims)
    assert out.fused.shape == (8, len(dims) * 20)
    F.cross_entropy(out.prediction, batch.targets).backward()
    assert torch.isfinite(out.prediction).all()


def test_options_change_the_encoder():
    model = MMDFN(
        DIMS3, 3, context_rnn={"audio": False, "text": True, "visual": False},
        speaker_weight={"audio": 3.0, "text": 1.0, "visual": 0.0}, **SMALL,
    )
    assert model.encoders["audio"].context is None and model.encoders["audio"].speaker is not None
    assert model.encoders["visual"].speaker is None and model.encoders["text"].context is not None
    with pytest.raises(ValueError, match="2\\*context_dim"):
        MMDFN(DIMS3, 3, hidden=10, context_dim=6, context_rnn=False)
    with pytest.raises(ValueError, match="two modalities"):
        MMDFN({"a": 3}, 3)


def test_encoder_parameters_are_disjoint():
    model = MMDFN(DIMS3, 3, **SMALL)
    sets = {m: {id(p) for p in model.encoders[m].parameters()} for m in DIMS3}
    head = {id(p) for p in model.fusion_head.parameters()}
    mods = list(DIMS3)
    for i, m in enumerate(mods):
        assert sets[m] and not (sets[m] & head)
        for n in mods[i + 1 :]:
            assert not (sets[m] & sets[n])


def test_mask_missing_nodes_cuts_their_edges():
    torch.manual_seed(7)
    model = MMDFN(DIMS3, 3, mask_missing_nodes=True, **SMALL).eval()
    batch = random_batch(DIMS3, [6], seed=8, rates=[0.5, 0.5, 0.5])
    groups = SpeakerGroups(batch.speakers, batch.valid)
    with torch.no_grad():
        nodes = torch.stack([model.encoders[m](batch.features[m], batch.lengths, groups) for m in DIMS3], 1)
        present = torch.stack([batch.masks[m] for m in DIMS3], 1)
        adj = multimodal_adjacency(nodes, batch.valid, present)
        dense = adj.to_dense()[0]
    alive = present[0].reshape(-1)
    off_diag = dense - torch.diag(torch.diag(dense))
    assert float(off_diag[~alive].abs().sum()) == 0.0 and float(off_diag[:, ~alive].abs().sum()) == 0.0
    assert float(off_diag[alive][:, alive].abs().min()) >= 0.0 and float(off_diag[alive][:, alive].sum()) > 0


def _core_available():
    return (ROOT / "src" / "balm" / "core" / "variants.py").exists()


@pytest.mark.skipif(not _core_available(), reason="balm.core not present")
@pytest.mark.parametrize("variant", ["none", "fcm-only", "grm-only", "balm", "balm-d", "balm-s", "balm-m"])
def test_trains_with_every_variant(variant):
    from balm.core import VARIANTS

    assert variant in VARIANTS
    torch.manual_seed(8)
    dims = {"audio": 6, "text": 5, "visual": 4}
    model = MMDFN(dims, 3, hidden=8, context_dim=4, graph_hidden=6, num_layers=3, dropout=0.0)
    batches = [random_batch(dims, [5, 4, 3], seed=20 + i, classes=3) for i in range(2)]
    losses = train_steps(model, variant, "classification", batches, steps=24, lr=1e-2)
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses


@pytest.mark.skipif(not _core_available(), reason="balm.core not present")
def test_trains_regression_with_balm():
    torch.manual_seed(9)
    dims = {"audio": 6, "text": 5}
    model = MMDFN(dims, 1, hidden=8, context_dim=4, graph_hidden=6, num_layers=3, dropout=0.0)
    batches = [random_batch(dims, [5, 4, 3], seed=30 + i, task="regression") for i in range(2)]
    losses = train_steps(model, "balm", "regression", batches, steps=24, lr=1e-2)
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
