import math

import pytest
import torch
from backbone_batches import random_batch

from balm.backbones.graph import (
    flat_positions,
    multimodal_adjacency,
    similarity_weight,
)
from balm.backbones.mmgcn import MMGCN, GCNIIConv, SequenceEncoder, UtteranceEncoder

DIMS = {"audio": 7, "visual": 5, "text": 6}


def slow_adjacency(nodes, lengths, present=None):
    """The obvious construction: one big (M·N)x(M·N) matrix over the whole batch, filled entry by
    entry with Python loops, then D^{-1/2} A D^{-1/2} over the whole matrix.

    nodes: list over dialogues of (M, L_b, d) tensors. Node (m, utterance i of the batch) sits at
    row m·N + i, as in the public implementation. Returns a float64 matrix.
    """
    M = nodes[0].shape[0]
    N = sum(lengths)
    A = torch.zeros(M * N, M * N, dtype=torch.float64)

    def w(x, y):
        c = float(torch.dot(x, y) / (x.norm() * y.norm()))
        return 1 - math.acos(c * 0.99999) / math.pi

    start = 0
    for b, L in enumerate(lengths):
        x = nodes[b].double()
        for m in range(M):
            for i in range(L):
                for j in range(L):
                    if present is None or i == j or (present[b][m, i] and present[b][m, j]):
                        A[m * N + start + i, m * N + start + j] = w(x[m, i], x[m, j])
                for n in range(M):
                    if n != m and (present is None or (present[b][m, i] and present[b][n, i])):
                        A[m * N + start + i, n * N + start + i] = w(x[m, i], x[n, i])
        start += L
    d = A.sum(1)
    D = torch.diag(d.pow(-0.5))
    return D @ A @ D


def padded(nodes, lengths):
    B, M, T, d = len(lengths), nodes[0].shape[0], max(lengths), nodes[0].shape[-1]
    x = torch.randn(B, M, T, d)  # padding holds junk on purpose: it must not leak
    valid = torch.zeros(B, T, dtype=torch.bool)
    for b, L in enumerate(lengths):
        x[b, :, :L] = nodes[b]
        valid[b, :L] = True
    return x, valid


def batch_rows(lengths, M, T):
    """For each node (m, utterance i of the batch) in the slow layout, its row in the dense blocks."""
    rows = []
    for m in range(M):
        for b, L in enumerate(lengths):
            rows += [(b, m * T + t) for t in range(L)]
    return rows


@pytest.mark.parametrize("prune", [False, True])
@pytest.mark.parametrize("M,lengths,seed", [(3, [4, 1, 6], 0), (2, [3, 5], 1), (4, [2, 7, 3, 1], 2)])
def test_vectorised_adjacency_equals_loop_built(M, lengths, seed, prune):
    g = torch.Generator().manual_seed(seed)
    nodes = [torch.randn(M, L, 5, generator=g) for L in lengths]
    x, valid = padded(nodes, lengths)
    present = None
    if prune:
        present_list = [torch.rand(M, L, generator=g) > 0.4 for L in lengths]
        present = torch.zeros(len(lengths), M, max(lengths), dtype=torch.bool)
        for b, L in enumerate(lengths):
            present[b, :, :L] = present_list[b]
    adj = multimodal_adjacency(x, valid, present)
    dense = adj.to_dense().double()
    ref = slow_adjacency(nodes, lengths, present_list if prune else None)
    T = max(lengths)
    rows = batch_rows(lengths, M, T)
    for i, (bi, ri) in enumerate(rows):
        for j, (bj, rj) in enumerate(rows):
            expect = ref[i, j].item()
            got = dense[bi, ri, rj].item() if bi == bj else 0.0
            assert got == pytest.approx(expect, abs=1e-5), (i, j)
    # padding rows and columns are empty
    pad = ~valid[:, None, :].expand(-1, M, -1).reshape(len(lengths), M * T)
    assert (dense[pad] == 0).all() and (dense.transpose(1, 2)[pad] == 0).all()
    # propagate is the dense product with those blocks
    h = torch.randn(len(lengths), M, T, 3, generator=g)
    via_dense = torch.bmm(adj.to_dense(), h.reshape(len(lengths), M * T, 3)).reshape_as(h)
    keep = valid[:, None, :, None].expand_as(h)
    torch.testing.assert_close(adj.propagate(h)[keep], via_dense[keep], atol=1e-5, rtol=1e-5)


def test_similarity_weight_hand_values():
    cos = torch.tensor([1.0, 0.0, -1.0, 0.5])
    w = similarity_weight(cos)
    expect = [1 - math.acos(c * 0.99999) / math.pi for c in cos.tolist()]
    torch.testing.assert_close(w, torch.tensor(expect))
    assert w[1].item() == pytest.approx(0.5)


def test_adjacency_gradient_finite_for_identical_features():
    x = torch.ones(1, 2, 3, 4, requires_grad=True)
    adj = multimodal_adjacency(x, torch.ones(1, 3, dtype=torch.bool))
    (adj.intra.sum() + adj.inter.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_flat_positions():
    valid = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])
    assert flat_positions(valid).tolist() == [[0, 1, -1], [2, -1, -1], [3, 4, 5]]


def test_gcnii_layer_matches_formula():
    torch.manual_seed(0)
    conv = GCNIIConv(3, layer=2, lamda=0.5, alpha=0.1, variant=True)
    x = torch.randn(1, 2, 4, 5)
    adj = multimodal_adjacency(x, torch.ones(1, 4, dtype=torch.bool))
    h, h0 = torch.randn(1, 2, 4, 3), torch.randn(1, 2, 4, 3)
    A = adj.to_dense()[0]
    hi = (A @ h.reshape(8, 3)).reshape(1, 2, 4, 3)
    theta = math.log(0.5 / 2 + 1)
    r = 0.9 * hi + 0.1 * h0
    expect = theta * torch.cat([hi, h0], -1) @ conv.weight + (1 - theta) * r
    torch.testing.assert_close(conv(h, adj, h0), expect, atol=1e-6, rtol=1e-5)


def test_parameter_count_with_iemocap_dims():
    dims = {"audio": 1582, "visual": 342, "text": 1024}
    model = MMGCN(dims, 6)
    lin = lambda i, o: i * o + o  # noqa: E731
    lstm_layer = lambda i, h: 2 * (4 * h * i + 4 * h * h + 8 * h)  # noqa: E731  (two directions)
    expect = (
        lin(1582, 200) + lin(342, 200) + lin(1024, 200)
        + lstm_layer(200, 100) + lstm_layer(200, 100)
        + 2 * 200  # speaker embedding
        + lin(200, 100) + 4 * 200 * 100  # GCNII input projection and 4 variant layers
        + lin(900, 6)
    )
    assert sum(p.numel() for p in model.parameters()) == expect
    assert model.fusion_head.in_features == 900


def test_forward_order_shapes_and_embeddings():
    torch.manual_seed(0)
    lengths = [3, 5, 2]
    batch = random_batch(DIMS, lengths, seed=3)
    model = MMGCN(DIMS, 4, node_dim=8, lstm_hidden=4, graph_hidden=6).eval()
    out = model(batch)
    N = sum(lengths)
    assert out.prediction.shape == (N, 4)
    assert out.fused.shape == (N, 3 * (8 + 6))
    assert {m: z.shape for m, z in out.embeddings.items()} == {m: (N, 8) for m in DIMS}
    assert isinstance(model.encoders["text"], SequenceEncoder)
    assert isinstance(model.encoders["audio"], UtteranceEncoder)
    # utterance encoders: row k is the linear map of the k-th valid utterance
    lin = model.encoders["audio"].linear
    torch.testing.assert_close(out.embeddings["audio"], lin(batch.features["audio"][batch.valid]))
    # the text encoder of dialogue 1 alone equals the batch's rows 3..7
    x1 = batch.features["text"][1:2, :5]
    alone = model.encoders["text"](x1, torch.ones(1, 5, dtype=torch.bool))
    torch.testing.assert_close(out.embeddings["text"][3:8], alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.prediction, model.fusion_head(out.fused))


def _sub_batch(batch, b):
    L = int(batch.lengths[b])
    from balm.data.batch import Batch

    return Batch(
        features={m: x[b : b + 1, :L] for m, x in batch.features.items()},
        masks={m: k[b : b + 1, :L] for m, k in batch.masks.items()},
        valid=batch.valid[b : b + 1, :L],
        speakers=batch.speakers[b : b + 1, :L],
        labels=batch.labels[b : b + 1, :L],
        lengths=batch.lengths[b : b + 1],
    )


@pytest.mark.parametrize("prune", [False, True])
def test_dialogue_output_independent_of_batch(prune):
    torch.manual_seed(1)
    lengths = [4, 9, 2]
    batch = random_batch(DIMS, lengths, seed=5)
    model = MMGCN(DIMS, 4, node_dim=8, lstm_hidden=4, graph_hidden=6, prune_missing=prune).eval()
    with torch.no_grad():
        full = model(batch)
        start = 0
        for b, L in enumerate(lengths):
            alone = model(_sub_batch(batch, b))
            torch.testing.assert_close(full.prediction[start : start + L], alone.prediction, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(full.fused[start : start + L], alone.fused, atol=1e-5, rtol=1e-4)
            start += L


def test_missing_nodes_stay_in_graph_unless_pruned():
    torch.manual_seed(2)
    batch = random_batch(DIMS, [6], seed=7, missing=0.5)
    miss = ~batch.masks["visual"][0]
    assert miss.any() and batch.features["visual"][0][miss].abs().sum() == 0
    model = MMGCN(DIMS, 3, node_dim=8, lstm_hidden=4, graph_hidden=6).eval()
    with torch.no_grad():
        z = model.encoders["visual"](batch.features["visual"], batch.valid)
        # a missing modality's node carries the encoder bias (zero input)
        torch.testing.assert_close(z[miss], model.encoders["visual"].linear.bias.expand(int(miss.sum()), -1))
        nodes = torch.randn(1, 3, 6, 8)
        kept = multimodal_adjacency(nodes, batch.valid)
        present = torch.stack([batch.masks[m] for m in DIMS], 1)
        pruned = multimodal_adjacency(nodes, batch.valid, present)
    v = list(DIMS).index("visual")
    t = int(miss.nonzero()[0])
    off_diag = torch.ones(6, dtype=torch.bool)
    off_diag[t] = False
    assert (kept.intra[0, v, t, off_diag] > 0).all()
    assert (pruned.intra[0, v, t, off_diag] == 0).all() and pruned.intra[0, v, t, t] > 0
    assert (pruned.inter[0, v, :, t] == 0).all() and (pruned.inter[0, :, v, t] == 0).all()


def test_any_number_of_modalities_and_sequential_option():
    dims = {"a": 4, "b": 3, "c": 5, "d": 2}
    model = MMGCN(dims, 1, node_dim=6, lstm_hidden=3, graph_hidden=4, sequential_encoders=("c",)).eval()
    assert [m for m, e in model.encoders.items() if isinstance(e, SequenceEncoder)] == ["c"]
    batch = random_batch(dims, [3, 4], seed=1, task="regression")
    out = model(batch)
    assert out.prediction.shape == (7,) and out.fused.shape == (7, 4 * 10)
    # the sequential encoder sees context: changing utterance 0 changes utterance 2's z^c
    x = batch.features["c"].clone()
    x[0, 0] += 1.0
    with torch.no_grad():
        z0 = model.encoders["c"](batch.features["c"], batch.valid)
        z1 = model.encoders["c"](x, batch.valid)
        za0 = model.encoders["a"](batch.features["a"], batch.valid)
    assert not torch.allclose(z0[2], z1[2])
    assert torch.allclose(z0[3:], z1[3:])  # the other dialogue is untouched
    assert za0.shape == (7, 6)
    # no "text" modality: default builds no LSTM
    plain = MMGCN({"a": 4, "b": 3}, 2)
    assert all(isinstance(e, UtteranceEncoder) for e in plain.encoders.values())
    with pytest.raises(ValueError, match="sequential_encoders"):
        MMGCN({"a": 4, "b": 3}, 2, sequential_encoders=("text",))


def test_speaker_index_out_of_range_is_reported():
    batch = random_batch(DIMS, [3], seed=0, num_speakers=3)
    batch.speakers[0, 0] = 2
    with pytest.raises(ValueError, match="num_speakers"):
        MMGCN(DIMS, 2, node_dim=8, lstm_hidden=4, graph_hidden=6, num_speakers=2)(batch)


def test_sequence_encoder_equals_torch_bidirectional_lstm_per_dialogue():
    torch.manual_seed(3)
    enc = SequenceEncoder(6, 8, 4, num_layers=2, dropout=0.0).eval()
    ref = torch.nn.LSTM(8, 4, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for layer in range(2):
            for suffix, lstm in (("", enc.rnn.forward_rnns[layer]), ("_reverse", enc.rnn.backward_rnns[layer])):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(ref, f"{name}_l{layer}{suffix}").copy_(getattr(lstm, f"{name}_l0"))
    assert sum(p.numel() for p in ref.parameters()) == sum(
        p.numel() for n, p in enc.named_parameters() if not n.startswith("linear")
    )
    lengths = [5, 2, 7]
    batch = random_batch({"text": 6, "audio": 2}, lengths, seed=4)
    with torch.no_grad():
        got = enc(batch.features["text"], batch.valid)
        start = 0
        for b, L in enumerate(lengths):
            expect, _ = ref(enc.linear(batch.features["text"][b : b + 1, :L]))
            torch.testing.assert_close(got[start : start + L], expect[0], atol=1e-5, rtol=1e-4)
            start += L


def test_dropout_helper_statistics_and_eval_identity():
    from balm.backbones.graph import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000)
    assert dropout(x, 0.4, training=False) is x
    y = dropout(x, 0.4, training=True)
    zero = (y == 0).float().mean().item()
    assert abs(zero - 0.4) < 0.01
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / 0.6))
    assert abs(y.mean().item() - 1.0) < 0.02


def test_propagate_packed_equals_padded():
    torch.manual_seed(5)
    lengths = [3, 6, 1]
    valid = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    adj = multimodal_adjacency(torch.randn(3, 2, 6, 4), valid)
    h = torch.randn(3, 2, 6, 5)
    h[~valid[:, None, :].expand(-1, 2, -1)] = 0
    packed = h.transpose(1, 2)[valid]  # (N, M, d)
    expect = adj.propagate(h).transpose(1, 2)[valid]
    torch.testing.assert_close(adj.propagate_packed(packed, valid), expect)
