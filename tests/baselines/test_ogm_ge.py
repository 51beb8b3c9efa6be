import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from balm.backbones.late_fusion import LateFusion
from balm.methods import build_method
from balm.baselines.ogm_ge import OGMGE, disparity_ratios, ogm_coefficients, split_logits, true_class_confidence
from tiny_rebalance import make_batch, EMB, backward, make_setup

def setup(M=3, task="classification", C=4, N=12, seed=0, **kw):
    return make_setup(OGMGE, M, task, C, N, seed, **kw)


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------- formulas by hand


def test_coefficients_by_hand():
    # two classes; logits (0, log a) give p(class 1) = a / (1 + a)
    la = lambda a: [0.0, math.log(a)]  # noqa: E731
    outputs = torch.tensor([[la(3.0), la(3.0)], [la(1.0), la(1.0)], [la(1.5), la(1.5)]])  # (M=3, N=2, C=2)
    y = torch.tensor([1, 1])
    conf = true_class_confidence(outputs, y, "classification")
    assert torch.allclose(conf, torch.tensor([[0.75, 0.75], [0.5, 0.5], [0.6, 0.6]]))
    ratio = disparity_ratios(conf.mean(1))
    assert torch.allclose(ratio, torch.tensor([1.5, 1.0, 1.2]))
    k = ogm_coefficients(ratio, alpha=0.3)
    want = [1 - math.tanh(0.3 * 1.5), 1.0, 1 - math.tanh(0.3 * 1.2)]
    assert torch.allclose(k, torch.tensor(want))
    k_cont = ogm_coefficients(ratio, alpha=0.3, form="continuous")
    assert torch.allclose(k_cont, torch.tensor([1 - math.tanh(0.3 * 0.5), 1.0, 1 - math.tanh(0.3 * 0.2)]))
    # the published form jumps at ratio 1, the continuous one does not
    near = torch.tensor([1.0, 1.0 + 1e-6])
    assert ogm_coefficients(near, 0.5)[1] < 0.6 and ogm_coefficients(near, 0.5, "continuous")[1] > 0.999


def test_two_modalities_reduce_to_the_paper():
    # OGM-GE with M=2: ratio_v = s_v / s_a; the dominant one gets 1 - tanh(alpha * ratio), the other 1
    s = torch.tensor([0.4, 0.9])
    k = ogm_coefficients(disparity_ratios(s), alpha=0.8)
    assert torch.allclose(k, torch.tensor([1.0, 1 - math.tanh(0.8 * 0.9 / 0.4)]))


def test_regression_two_class_view():
    s = torch.tensor([[0.0, math.log(3.0), math.log(3.0)]])  # (M=1, N=3)
    y = torch.tensor([0.5, 2.0, -1.0])
    conf = true_class_confidence(s, y, "regression")
    assert torch.allclose(conf, torch.tensor([[0.5, 0.75, 0.25]]))


def test_ratio_ignores_modalities_without_samples():
    s = torch.tensor([0.8, 0.0, 0.4])
    r = disparity_ratios(s, torch.tensor([True, False, True]))
    assert torch.allclose(r, torch.tensor([2.0, 1.0, 1.0]))
    assert torch.equal(disparity_ratios(s, torch.zeros(3, dtype=torch.bool)), torch.ones(3))


def test_stats_match_independent_computation_with_missing_samples():
    model, rb, x, y, masks = setup(M=3, noise=False, alpha=0.7)
    heads = copy.deepcopy(rb.heads)  # the scores use the heads before their update
    pred, z = backward(model, rb, x, y)
    rb.rebalance_(z, pred.detach(), y, masks)
    scores = []
    for m in rb.modalities:
        p = heads[m](z[m].detach()).softmax(-1)[torch.arange(len(y)), y]
        scores.append(p[masks[m]].mean().item())  # mean over the samples where m is present
    lo = min(scores)
    for m, s in zip(rb.modalities, scores):
        r = s / lo
        k = 1 - math.tanh(0.7 * r) if r > 1 else 1.0
        assert rb.stats["confidence"][m] == pytest.approx(s, rel=1e-5)
        assert rb.stats["coeff"][m] == pytest.approx(k, rel=1e-5)
    assert min(rb.stats["coeff"].values()) < 1 and max(rb.stats["coeff"].values()) == 1.0


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("M", [2, 4])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_encoder_grads_scaled_and_others_bit_identical(M, task):
    model, rb, x, y, masks = setup(M=M, task=task, noise=False, alpha=1.0)
    pred, z = backward(model, rb, x, y, task)
    before_enc = {m: grads(model.encoders[m]) for m in rb.modalities}
    before_rest = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("encoders.")}
    rb.rebalance_(z, pred.detach(), y, masks)
    coeff = rb.stats["coeff"]
    assert any(v < 1 for v in coeff.values())
    for m in rb.modalities:
        k = torch.tensor(coeff[m], dtype=torch.float32)
        for n, p in model.encoders[m].named_parameters():
            assert torch.equal(p.grad, before_enc[m][n] * k), (m, n)
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in before_enc[m].values()])).item()
        assert rb.stats["grad_norm_before"][m] == pytest.approx(norm, rel=1e-5)
        assert rb.stats["grad_norm_after"][m] == pytest.approx(norm * coeff[m], rel=1e-5)
    for n, p in model.named_parameters():
        if not n.startswith("encoders."):
            assert torch.equal(p.grad, before_rest[n]), n
    assert rb.touched() == {m: [n for n, _ in model.encoders[m].named_parameters()] for m in rb.modalities}


def test_heads_never_send_gradient_into_the_backbone():
    model, rb, x, y, masks = setup(M=3, noise=False, start_epoch=5)  # outside the window: nothing is scaled
    pred, z = backward(model, rb, x, y)
    grads_before = {n: p.grad.clone() for n, p in model.named_parameters()}
    head_before = [p.detach().clone() for p in rb.heads.parameters()]
    rb.rebalance_(z, pred.detach(), y, masks)
    assert all(torch.equal(p.grad, grads_before[n]) for n, p in model.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(head_before, rb.heads.parameters()))  # heads did train


def test_noise_has_the_unscaled_gradient_std():
    torch.manual_seed(1)
    enc = nn.ModuleDict({"a": nn.Linear(200, 20), "b": nn.Linear(200, 20)})
    head = nn.Linear(40, 3)
    rb = OGMGE(enc, {"a": 20, "b": 20}, head, alpha=2.0, noise=True)
    g = {m: torch.randn(20, 200) * (1.0 if m == "a" else 0.1) for m in enc}
    for m in enc:
        enc[m].weight.grad = g[m].clone()
    z = {"a": torch.randn(8, 20), "b": torch.randn(8, 20)}
    rb.rebalance_(z, torch.randn(8, 3), torch.randint(0, 3, (8,)))
    for m in enc:
        k = rb.stats["coeff"][m]
        noise = enc[m].weight.grad - k * g[m]
        assert noise.std().item() == pytest.approx(g[m].std().item(), rel=0.08)


def test_split_scores_use_the_fusion_head_blocks():
    torch.manual_seed(0)
    enc = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(3, 4)})
    head = nn.Linear(6, 3)
    z = [torch.randn(5, 2), torch.randn(5, 4)]
    out = split_logits(z, head)
    assert torch.allclose(out[0], z[0] @ head.weight[:, :2].T + head.bias / 2)
    assert torch.allclose(out[1], z[1] @ head.weight[:, 2:].T + head.bias / 2)
    # concatenation fusion: the blocks sum to the fused logits
    assert torch.allclose(out.sum(0), head(torch.cat(z, -1)), atol=1e-6)
    rb = OGMGE(enc, {"a": 2, "b": 4}, head, scores="split", noise=False)
    assert rb.head_optimizer is None
    with pytest.raises(ValueError, match="scores='heads'"):
        OGMGE(enc, {"a": 2, "b": 4}, nn.Linear(7, 3), scores="split")


def test_window_leaves_gradients_alone():
    model, rb, x, y, masks = setup(M=3, noise=True, start_epoch=2, end_epoch=4)
    for epoch, inside in [(0, False), (2, True), (4, False)]:
        rb.set_epoch(epoch)
        assert rb.active is inside
        pred, z = backward(model, rb, x, y)
        before = grads(model)
        rb.rebalance_(z, pred.detach(), y, masks)
        same = all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
        assert same is (not inside)
        if not inside:
            assert set(rb.stats["coeff"].values()) == {1.0}


def test_bad_input_is_named():
    model, rb, x, y, masks = setup(M=2)
    pred, z = backward(model, rb, x, y)
    with pytest.raises(ValueError, match="masks\\['text'\\]"):
        rb.rebalance_(z, pred.detach(), y, {**masks, "text": masks["text"][:3]})
    with pytest.raises(ValueError, match="alpha"):
        OGMGE(model.encoders, {m: EMB for m in model.encoders}, model.fusion_head, alpha=-1.0)


# ---------------------------------------------------------------- training




def train_steps(name, task="classification", steps=25, **options):
    dims = {"audio": 6, "text": 5, "visual": 4}
    torch.manual_seed(0)
    batch = make_batch(dims, task=task)
    out = 3 if task == "classification" else 1
    backbone = LateFusion(dims, out, hidden=16, embed_dim=8, fused_dim=8, dropout=0.0)
    v = build_method(name, dims=dims, encoders=backbone.encoders, embed_dims=backbone.embed_dims,
                       fusion_head=backbone.fusion_head, task=task, num_classes=out if out > 1 else None, **options)
    params = list(backbone.parameters()) + (list(v.input_module.parameters()) if v.input_module is not None else [])
    opt = torch.optim.Adam(params, lr=1e-2)
    y = batch.targets
    losses = []
    for epoch in range(steps):
        v.rebalancer.set_epoch(epoch)
        feats = v.input_module(batch.features, batch.masks, batch.valid) if v.input_module is not None else batch.features
        o = backbone(batch.__class__(feats, batch.masks, batch.valid, batch.speakers, batch.labels, batch.lengths))
        task_loss = F.cross_entropy(o.prediction, y) if task == "classification" else F.mse_loss(o.prediction, y)
        opt.zero_grad(set_to_none=True)
        (task_loss + v.rebalancer.alignment_loss()).backward()
        v.rebalancer.rebalance_(o.embeddings, o.prediction.detach(), y, batch.flat_masks())
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        losses.append(task_loss.item())
    return losses, v


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_with_late_fusion_decreases_the_loss(task):
    losses, v = train_steps("ogm-ge", task=task, alpha=0.5)
    assert losses[-1] < 0.6 * losses[0]
    assert set(v.rebalancer.stats) >= {"confidence", "ratio", "coeff", "grad_norm_before", "grad_norm_after"}
