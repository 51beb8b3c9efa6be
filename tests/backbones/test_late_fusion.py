import pytest
import torch
from backbone_batches import random_batch

from balm.backbones.late_fusion import LateFusion


def test_forward_matches_hand_computation():
    torch.manual_seed(0)
    dims = {"a": 3, "b": 2}
    model = LateFusion(dims, 2, hidden=4, embed_dim=3, fused_dim=5).eval()
    batch = random_batch(dims, [2, 3], seed=1, num_classes=2)
    out = model(batch)
    xa = batch.features["a"][batch.valid]
    xb = batch.features["b"][batch.valid]

    def mlp(seq, x):
        l1, l2 = seq[0], seq[3]
        return torch.relu(torch.relu(x @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias)

    za, zb = mlp(model.encoders["a"], xa), mlp(model.encoders["b"], xb)
    f = model.fusion[0]
    h = torch.relu(torch.cat([za, zb], 1) @ f.weight.T + f.bias)
    pred = h @ model.fusion_head.weight.T + model.fusion_head.bias
    torch.testing.assert_close(out.embeddings["a"], za)
    torch.testing.assert_close(out.embeddings["b"], zb)
    torch.testing.assert_close(out.fused, h)
    torch.testing.assert_close(out.prediction, pred)


@pytest.mark.parametrize("M", [2, 4])
def test_each_utterance_is_independent_and_in_valid_order(M):
    torch.manual_seed(M)
    dims = {f"m{i}": 3 + i for i in range(M)}
    lengths = [3, 1, 4]
    batch = random_batch(dims, lengths, seed=M)
    model = LateFusion(dims, 5, hidden=8, embed_dim=4, fused_dim=6).eval()
    out = model(batch)
    assert out.prediction.shape == (8, 5) and out.fused.shape == (8, 6)
    k = 0
    for b, L in enumerate(lengths):
        for t in range(L):
            one = {m: batch.features[m][b, t][None] for m in dims}
            z = {m: model.encoders[m](one[m]) for m in dims}
            h = model.fusion(torch.cat([z[m] for m in dims], -1))
            torch.testing.assert_close(out.prediction[k], model.fusion_head(h)[0])
            k += 1


def test_regression_returns_a_vector():
    dims = {"a": 3, "b": 4}
    batch = random_batch(dims, [2, 2], seed=0, task="regression")
    model = LateFusion(dims, 1, hidden=4, embed_dim=2, fused_dim=3).eval()
    out = model(batch)
    assert out.prediction.shape == (4,)
    torch.testing.assert_close(out.prediction, model.fusion_head(out.fused)[:, 0])
    assert model.embed_dims == {"a": 2, "b": 2}
