import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from balm.backbones.late_fusion import LateFusion
from balm.baselines.ada2i import Ada2I, AdaptiveFeatureWeighting, AFWLayer, contract, interaction_factors, summary_matrix
from balm.methods import build_method
from balm.data.batch import Batch
from tiny_rebalance import make_batch

DIMS = {"audio": 5, "text": 7, "visual": 3, "extra": 4}
EMB = 6


def naive_afw_layer(layer, xs, es):
    """AFW written out with explicit outer products, matrix products and loops (present steps only)."""
    R, M = layer.rank, len(xs)
    G, Ms = [], []
    for m, x, e in zip(layer.modalities, xs, es):
        q1, q2, k1, k2 = layer.proj[m](x).split(R, -1)
        g = (q1.unsqueeze(-1) * q2.unsqueeze(-2)) * (k1.unsqueeze(-1) * k2.unsqueeze(-2))  # (B, T, R, R)
        G.append(g)
        mats = []
        for b in range(x.shape[0]):
            idx = e[b].nonzero().flatten()
            mats.append(g[b, idx].mean(0) if len(idx) else torch.eye(R, dtype=x.dtype))
        Ms.append(torch.stack(mats))
    ys, losses = [], []
    for j, (m, x, e) in enumerate(zip(layer.modalities, xs, es)):
        a = G[j]
        for l in range(M):
            if l != j:
                a = a @ Ms[l].unsqueeze(1)
        att = layer.out[m](a.flatten(-2))
        y = (att + layer.beta) * x * e.unsqueeze(-1)
        err = (layer.mapping[m](x) - (att if layer.target == "weights" else y)).abs()
        losses.append(err[e].mean())
        ys.append(y)
    return ys, torch.stack(losses).mean()


def inputs(B=3, T=4, M=3, dtype=torch.float32, seed=0, drop_all=None):
    g = torch.Generator().manual_seed(seed)
    dims = dict(list(DIMS.items())[:M])
    valid = torch.ones(B, T, dtype=torch.bool)
    valid[0, 3:] = False
    masks = {m: (torch.rand(B, T, generator=g) > 0.3) & valid for m in dims}
    if drop_all is not None:
        masks[drop_all][1] = False  # sequence 1 never has this modality
    feats = {m: torch.randn(B, T, d, generator=g, dtype=dtype) * masks[m].unsqueeze(-1) for m, d in dims.items()}
    return dims, feats, masks, valid


# ---------------------------------------------------------------- feature weighting


@pytest.mark.parametrize("target", ["weights", "features"])
def test_afw_layer_equals_explicit_tensor_contraction(target):
    dims, feats, masks, valid = inputs(drop_all="text")
    torch.manual_seed(0)
    layer = AFWLayer(dims, rank=3, beta=0.3, dropout=0.0, target=target)
    xs = [feats[m] for m in dims]
    es = [masks[m] for m in dims]
    ys, loss = layer(xs, es)
    want, want_loss = naive_afw_layer(layer, xs, es)
    for y, w in zip(ys, want):
        assert torch.allclose(y, w, atol=1e-5)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)


def test_summary_and_contraction_pieces():
    u = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])  # (B=1, T=3, R=2)
    v = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    m = summary_matrix(u, v, mask)
    assert torch.allclose(m, torch.tensor([[[0.5, 1.5], [1.0, 2.0]]]))  # ([1,2]⊗[1,0] + [3,4]⊗[0,1]) / 2
    assert torch.equal(summary_matrix(u, v, torch.zeros_like(mask)), torch.eye(2).unsqueeze(0))
    a = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]])
    out = contract(u[:, :1], v[:, :1], [a, m])  # (u ⊗ v) · a · m, flattened
    want = (u[0, 0].unsqueeze(-1) * v[0, 0].unsqueeze(0)) @ a[0] @ m[0]
    assert torch.allclose(out[0, 0], want.flatten())
    f = torch.arange(8.0).reshape(1, 8)
    uu, vv = interaction_factors(f, 2)  # [q1, q2, k1, k2] = [0 1], [2 3], [4 5], [6 7]
    assert uu.tolist() == [[0.0, 5.0]] and vv.tolist() == [[12.0, 21.0]]


@pytest.mark.parametrize("sequential", [True, False])
def test_missing_and_padding_positions_stay_zero(sequential):
    dims, feats, masks, valid = inputs(drop_all="audio")
    # garbage at padding and at missing positions must not leak into the output
    noisy = {m: torch.where(masks[m].unsqueeze(-1), x, torch.full_like(x, 7.0)) for m, x in feats.items()}
    afw = AdaptiveFeatureWeighting(dims, rank=3, beta=0.1, n_layers=2, dropout=0.5).train()
    if sequential:
        out = afw(noisy, masks, valid)
        for m in dims:
            assert out[m].shape == feats[m].shape
            assert torch.equal(out[m][~masks[m]], torch.zeros_like(out[m][~masks[m]]))
            assert out[m][masks[m]].abs().sum() > 0
    else:
        flat = {m: x[valid] for m, x in noisy.items()}
        fm = {m: k[valid] for m, k in masks.items()}
        out = afw(flat, fm)
        for m in dims:
            assert torch.equal(out[m][~fm[m]], torch.zeros_like(out[m][~fm[m]]))
    assert afw.feature_loss is not None and afw.feature_loss.item() > 0
    afw.eval()
    afw(noisy, masks, valid)
    assert afw.feature_loss is None


def test_outputs_ignore_what_is_at_missing_positions():
    dims, feats, masks, valid = inputs()
    afw = AdaptiveFeatureWeighting(dims, rank=2, n_layers=1, dropout=0.0)
    a = afw(feats, masks, valid)
    other = {m: torch.where(masks[m].unsqueeze(-1), x, torch.randn_like(x)) for m, x in feats.items()}
    b = afw(other, masks, valid)
    assert all(torch.equal(a[m], b[m]) for m in dims)


def test_gradcheck_float64():
    dims, feats, masks, valid = inputs(B=2, T=3, M=3, dtype=torch.float64, drop_all="visual")
    torch.manual_seed(0)
    layer = AFWLayer(dims, rank=2, beta=0.2, dropout=0.0, target="weights").double()
    es = [masks[m] for m in dims]

    def f(*xs):
        ys, loss = layer(list(xs), es)
        return (*ys, loss)

    xs = [feats[m].clone().requires_grad_(True) for m in dims]
    assert torch.autograd.gradcheck(f, xs, eps=1e-6, atol=1e-5)
    u = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, 2, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert torch.autograd.gradcheck(lambda a, b: contract(a, b, [summary_matrix(a, b, mask)]), (u, v))


# ---------------------------------------------------------------- modality weighting


class TinyModel(nn.Module):
    def __init__(self, dims, out):
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, EMB), nn.Tanh(), nn.Linear(EMB, EMB)) for m, d in dims.items()})
        self.fusion = nn.Linear(EMB * len(dims), 8)
        self.fusion_head = nn.Linear(8, out)

    def forward(self, x):
        z = {m: enc(x[m]) for m, enc in self.encoders.items()}
        return self.fusion_head(torch.relu(self.fusion(torch.cat(list(z.values()), -1)))), z


@pytest.mark.parametrize("M", [2, 4])
def test_encoder_grads_scaled_by_disparity_coefficients(M):
    torch.manual_seed(0)
    dims = dict(list(DIMS.items())[:M])
    model = TinyModel(dims, 3)
    rb = Ada2I(model.encoders, {m: EMB for m in dims}, model.fusion_head, alpha=0.9, noise=False)
    x = {m: torch.randn(10, d) for m, d in dims.items()}
    y = torch.randint(0, 3, (10,))
    heads = {m: (rb.heads[m].weight.detach().clone(), rb.heads[m].bias.detach().clone()) for m in dims}
    pred, z = model(x)
    F.cross_entropy(pred, y).backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    rb.rebalance_(z, pred.detach(), y)
    assert min(rb.stats["coeff"].values()) < 1
    s = {m: F.linear(z[m].detach(), *heads[m]).softmax(-1)[torch.arange(10), y].mean().item() for m in dims}
    lo = min(s.values())
    for n, p in model.named_parameters():
        if n.startswith("encoders."):
            m = n.split(".")[1]
            r = s[m] / lo
            k = 1 - math.tanh(0.9 * r) if r > 1 else 1.0
            assert rb.stats["coeff"][m] == pytest.approx(k, rel=1e-5)
            assert torch.equal(p.grad, before[n] * torch.tensor(rb.stats["coeff"][m], dtype=torch.float32))
        else:
            assert torch.equal(p.grad, before[n])


def test_noise_has_the_scaled_gradient_std():
    torch.manual_seed(1)
    enc = nn.ModuleDict({"a": nn.Linear(200, 20), "b": nn.Linear(200, 20)})
    rb = Ada2I(enc, {"a": 20, "b": 20}, nn.Linear(40, 3), alpha=3.0, noise=True)
    g = {"a": torch.randn(20, 200), "b": torch.randn(20, 200)}
    for m in enc:
        enc[m].weight.grad = g[m].clone()
    rb.rebalance_({"a": torch.randn(8, 20) * 3, "b": torch.randn(8, 20)}, torch.randn(8, 3), torch.randint(0, 3, (8,)))
    ks = rb.stats["coeff"]
    assert min(ks.values()) < 0.5
    for m in enc:
        noise = enc[m].weight.grad - ks[m] * g[m]
        assert noise.std().item() == pytest.approx(ks[m] * g[m].std().item(), rel=0.08)


def test_alignment_loss_is_the_feature_loss_of_this_step():
    dims, feats, masks, valid = inputs()
    v = build_method("ada2i", dims=dims, encoders=nn.ModuleDict({m: nn.Linear(d, 4) for m, d in dims.items()}),
                       embed_dims={m: 4 for m in dims}, fusion_head=nn.Linear(12, 3), feature_weight=0.5,
                       rank=2, n_layers=1, dropout=0.0)
    assert isinstance(v.input_module, AdaptiveFeatureWeighting)
    v.input_module(feats, masks, valid)
    _, want = naive_afw_layer(v.input_module.layers[0], [feats[m] for m in dims], [masks[m] for m in dims])
    loss = v.rebalancer.alignment_loss()
    assert loss.item() == pytest.approx(0.5 * want.item(), rel=1e-5)
    loss.backward()  # it trains the AFW, nothing else
    assert all(p.grad is not None for p in v.input_module.layers[0].mapping.parameters())
    assert v.rebalancer.alignment_loss().item() == 0.0  # consumed: never added twice
    no_afw = build_method("ada2i", dims=dims, encoders=nn.ModuleDict({m: nn.Linear(d, 4) for m, d in dims.items()}),
                            embed_dims={m: 4 for m in dims}, fusion_head=nn.Linear(12, 3), afw=False)
    assert no_afw.input_module is None and no_afw.rebalancer.alignment_loss().item() == 0.0


def test_factory_rejects_unknown_options():
    dims = {"a": 3, "b": 4}
    kw = dict(dims=dims, encoders=nn.ModuleDict({m: nn.Linear(d, 4) for m, d in dims.items()}),
              embed_dims={m: 4 for m in dims}, fusion_head=nn.Linear(8, 3))
    with pytest.raises(TypeError, match="bogus"):
        build_method("ada2i", bogus=1, **kw)
    with pytest.raises(ValueError, match=r"unknown method 'ogm'.*'ogm-ge'"):
        build_method("ogm", **kw)
    # another method's option is an error for this method ...
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['d_global', 'lam', 'tau'\] for method 'ogm-ge'"):
        build_method("ogm-ge", tau=0.4, d_global=5, lam=0.1, **kw)
    # ... while shared settings reach only the methods that take them
    v = build_method("ogm-ge", shared={"tau": 0.4, "d_global": 5, "lam": 0.1, "lr": 0.01}, **kw)
    assert v.rebalancer.alpha == 0.1 and v.input_module is None and v.rebalancer.lr == 0.01


# ---------------------------------------------------------------- training




@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_with_late_fusion_decreases_the_loss(task):
    dims = {"audio": 6, "text": 5, "visual": 4}
    torch.manual_seed(0)
    batch = make_batch(dims, task=task)
    out = 3 if task == "classification" else 1
    backbone = LateFusion(dims, out, hidden=16, embed_dim=8, fused_dim=8, dropout=0.0)
    v = build_method("ada2i", dims=dims, encoders=backbone.encoders, embed_dims=backbone.embed_dims,
                       fusion_head=backbone.fusion_head, task=task, alpha=0.5, beta=0.5, rank=4, dropout=0.0)
    params = [*backbone.parameters(), *v.input_module.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    y = batch.targets
    losses, feature_losses = [], []
    for _ in range(25):
        feats = v.input_module(batch.features, batch.masks, batch.valid)
        o = backbone(Batch(feats, batch.masks, batch.valid, batch.speakers, batch.labels, batch.lengths))
        task_loss = F.cross_entropy(o.prediction, y) if task == "classification" else F.mse_loss(o.prediction, y)
        extra = v.rebalancer.alignment_loss()
        opt.zero_grad(set_to_none=True)
        (task_loss + extra).backward()
        v.rebalancer.rebalance_(o.embeddings, o.prediction.detach(), y, batch.flat_masks())
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        losses.append(task_loss.item())
        feature_losses.append(extra.item())
    assert losses[-1] < 0.6 * losses[0]
    assert feature_losses[-1] < feature_losses[0]
