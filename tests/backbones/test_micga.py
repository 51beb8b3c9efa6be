"""Mi-CGA: causal graph, GATv2, graph convolution and cross-modal attention against plain loops,
batch independence, the feature-estimation loss option, parameter counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from balm.backbones.micga import CrossModalAttention, GATv2Conv, MiCGA, SymGraphConv, causal_edges
from balm.backbones.registry import build_backbone
from balm.data.batch import collate
from backbone_batches import random_split

DIMS3 = {"audio": 7, "text": 5, "visual": 4}
SMALL = dict(enc_dim=6, encoder_dropout=0.0, gat_hidden=5, gat_dropout=0.0)


def loop_edges(lengths):
    """The public graph per dialogue: node -> every later node (and itself), offset by the dialogue start."""
    pairs, base = [], 0
    for n in lengths:
        for node in range(n):
            for adj in range(node, n):
                pairs.append((base + node, base + adj))
        base += n
    return pairs


def valid_of(lengths):
    return torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("lengths", [[5, 2, 7], [1], [3, 3]])
def test_causal_edges_equal_loop(lengths):
    src, dst = causal_edges(valid_of(lengths))
    assert sorted(zip(src.tolist(), dst.tolist())) == sorted(loop_edges(lengths))


def test_gatv2_equals_per_node_loop():
    lengths = [4, 1, 5]
    N = sum(lengths)
    torch.manual_seed(0)
    x = torch.randn(N, 6)
    for in_dim, heads, out in [(6, 2, 3), (6, 3, 2)]:  # residual: linear, then identity (6 = 3 * 2)
        layer = GATv2Conv(in_dim, out, heads)
        src, dst = causal_edges(valid_of(lengths))
        got = layer(x, src, dst)
        fs = layer.fc_src(x).view(N, heads, out)
        fd = layer.fc_dst(x).view(N, heads, out)
        res = layer.res(x).view(N, heads, out)
        pairs = loop_edges(lengths)
        want = torch.zeros(N, heads, out)
        for i in range(N):
            srcs = [j for j, t in pairs if t == i]
            for h in range(heads):
                e = torch.stack([(F.leaky_relu(fs[j, h] + fd[i, h], 0.2) * layer.attn[h]).sum() for j in srcs])
                a = torch.softmax(e, 0)
                want[i, h] = sum(a[k] * fs[j, h] for k, j in enumerate(srcs))
        torch.testing.assert_close(got, F.relu(want + res).reshape(N, -1), rtol=1e-5, atol=1e-6)


def test_sym_graph_conv_equals_dense():
    lengths = [3, 4]
    N = sum(lengths)
    torch.manual_seed(2)
    x = torch.randn(N, 5)
    conv = SymGraphConv(5, 5)
    src, dst = causal_edges(valid_of(lengths))
    A = torch.zeros(N, N)  # A[i, j] = 1 for an edge j -> i
    for j, i in loop_edges(lengths):
        A[i, j] = 1.0
    d_in, d_out = A.sum(1), A.sum(0)
    want = conv.linear((A / torch.sqrt(d_in[:, None] * d_out[None, :])) @ x)
    torch.testing.assert_close(conv(x, src, dst), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("M", [2, 3, 4])
def test_cross_modal_attention_equals_loop(M):
    mods = tuple("abcd"[:M])
    torch.manual_seed(M)
    N, d, k, H = 3, 5, 4, 2
    att = CrossModalAttention(mods, d, k, H)
    h = torch.randn(N, M, d)
    got = att(h)
    want = torch.zeros(N, H, k)
    for n in range(N):
        for head in range(H):
            cols = slice(head * k, (head + 1) * k)
            outs = []
            for m in range(M):
                for r in range(M):
                    if r == m:
                        continue
                    q = h[n, m] @ att.q[m][:, cols]
                    key = h[n, r] @ att.k[r][:, cols]
                    v = h[n, r] @ att.v[r][:, cols]
                    s = torch.zeros(k, k)
                    for a in range(k):
                        for b in range(k):
                            s[a, b] = q[a] * key[b] / math.sqrt(k)
                    s = torch.softmax(s, dim=0)  # normalised over the query index, as the public code
                    outs.append(torch.stack([sum(s[a, b] * v[b] for b in range(k)) for a in range(k)]))
            want[n, head] = torch.cat(outs) @ att.mix[head] + att.mix_bias[head]
    torch.testing.assert_close(got, want.reshape(N, -1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"cross_modal": False, "feature_estimation": False}])
def test_dialogue_alone_equals_dialogue_in_batch(options):
    torch.manual_seed(0)
    split = random_split(DIMS3, [3, 6, 2, 5], seed=4, missing=0.4)
    model = MiCGA(DIMS3, 4, **{**SMALL, "encoder_dropout": 0.5, "gat_dropout": 0.5}, **options).eval()
    with torch.no_grad():
        full = model(collate(split, [0, 1, 2, 3]))
        offsets = [0, 3, 9, 11, 16]
        for i in range(4):
            alone = model(collate(split, [i]))
            rows = slice(offsets[i], offsets[i + 1])
            torch.testing.assert_close(alone.prediction, full.prediction[rows], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(alone.fused, full.fused[rows], rtol=1e-5, atol=1e-6)


def test_feature_estimation_loss_option():
    split = random_split(DIMS3, [3, 4], seed=0, missing=0.4)
    batch = collate(split, [0, 1])
    assert MiCGA(DIMS3, 3, **SMALL)(batch).aux_loss is None
    model = MiCGA(DIMS3, 3, **SMALL, reconstruction=0.5).train()
    out = model(batch)
    assert out.aux_loss is not None and out.aux_loss > 0
    out.aux_loss.backward()
    assert model.decode.weight.grad.abs().sum() > 0
    assert model.eval()(batch).aux_loss is None
    hidden = collate(split, [0, 1])
    hidden.masks = {m: torch.zeros_like(v) for m, v in hidden.masks.items()}
    assert model.train()(hidden).aux_loss.item() == 0.0
    with pytest.raises(ValueError, match="feature_estimation"):
        MiCGA(DIMS3, 3, feature_estimation=False, reconstruction=0.1)


def test_scales_follow_the_public_filter_and_default_to_one():
    model = MiCGA({"text": 3, "audio": 2, "depth": 2}, 2, enc_dim=2)
    assert model.scale.tolist() == [3.0, 3.0, 2.0, 2.0, 1.0, 1.0]


def test_parameter_count_public_shapes():
    # the public model's shapes: audio 512, visual 1024, text 1024 -> 64 each; 6 classes
    dims = {"text": 1024, "audio": 512, "visual": 1024}
    model = build_backbone("micga", dims, 6)
    enc = 1024 * 64 + 64 + 512 * 64 + 64 + 1024 * 64 + 64
    lstm = 2 * 4 * (192 * 8 + 8 * 8 + 2 * 8)
    fe = 2 * (192 * 192 + 192)
    cross = 3 * 3 * 64 * 16 + 4 * (24 * 4 + 4)
    gat1 = 3 * (192 * 128 + 128) + 128
    gat2 = 3 * (128 * 16 + 16) + 16
    head = 48 * 6 + 6
    assert sum(p.numel() for p in model.parameters()) == enc + lstm + fe + cross + gat1 + gat2 + head
