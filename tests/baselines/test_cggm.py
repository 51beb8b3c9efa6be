import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score

from balm.backbones.late_fusion import LateFusion
from balm.methods import build_method
from balm.baselines.cggm import CGGM, balancing_terms, direction_loss, head_metric
from tiny_rebalance import make_batch, backward, make_setup

def setup(M=3, task="classification", C=4, N=16, seed=0, **kw):
    return make_setup(CGGM, M, task, C, N, seed, **kw)


# ---------------------------------------------------------------- formulas by hand


def test_metric_by_hand():
    out = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 2.0]],
                        [[0.0, 2.0], [0.0, 1.0], [1.0, 3.0], [2.0, 0.0]]])  # (M=2, N=4, C=2)
    y = torch.tensor([0, 1, 1, 1])
    acc, n = head_metric(out, y, "classification", "accuracy")
    assert acc.tolist() == [0.75, 0.5]
    present = torch.tensor([[True, True, False, False], [False, True, True, True]])
    acc, n = head_metric(out, y, "classification", "accuracy", present)
    assert acc.tolist() == [1.0, pytest.approx(2 / 3)] and n.tolist() == [2, 3]
    neg_loss, _ = head_metric(out, y, "classification", "loss")
    assert torch.allclose(neg_loss, -torch.stack([F.cross_entropy(out[i], y) for i in range(2)]))
    s = torch.tensor([[0.5, -1.0, 2.0], [-0.1, -0.2, 0.3]])  # regression: sign accuracy
    acc, _ = head_metric(s, torch.tensor([1.0, -2.0, -0.5]), "regression", "accuracy")
    assert torch.allclose(acc, torch.tensor([2 / 3, 1 / 3]))


def test_balancing_terms_by_hand():
    b, clamped, fallback = balancing_terms(torch.tensor([0.2, 0.1, 0.1]))
    assert torch.allclose(b, torch.tensor([0.5, 0.75, 0.75])) and not clamped and not fallback
    # the official formula explodes when the changes cancel; the guard clamps Δ at 0
    raw, _, _ = balancing_terms(torch.tensor([0.1, -0.1, 0.0]), mode="raw")
    assert torch.allclose(raw, torch.tensor([-1e7, 1e7, 0.0]), rtol=1e-4)
    b, clamped, fallback = balancing_terms(torch.tensor([0.1, -0.1, 0.0]))
    assert clamped and not fallback and torch.allclose(b, torch.tensor([0.0, 1.0, 1.0]))
    # and falls back to (M-1)/M when no modality improved
    b, _, fallback = balancing_terms(torch.tensor([0.0, 0.0, 0.0]))
    assert fallback and torch.allclose(b, torch.full((3,), 2 / 3))


def test_direction_loss_by_hand():
    b = torch.tensor([0.5, -0.25])
    cos = torch.tensor([0.2, 0.4])
    assert direction_loss(b, cos).item() == pytest.approx(((0.5 - 0.1) + (0.25 + 0.1)) / 2)


def test_history_and_coefficients_against_independent_computation():
    model, rb, x, y, masks = setup(M=3, magnitude=1.4)
    prev = np.zeros(3)
    for step in range(3):
        heads = copy.deepcopy(rb.heads)
        pred, z = backward(model, rb, x, y)
        before = {m: [p.grad.clone() for p in model.encoders[m].parameters()] for m in rb.modalities}
        rb.rebalance_(z, pred.detach(), y, masks)
        acc = np.array([
            accuracy_score(y[masks[m]].numpy(), heads[m](z[m].detach()).argmax(-1)[masks[m]].numpy())
            for m in rb.modalities
        ])
        delta = acc - prev
        prev = acc
        pos = np.maximum(delta, 0)
        bal = (pos.sum() - pos) / pos.sum() if pos.sum() > 1e-5 * np.abs(delta).sum() and pos.sum() > 0 else np.full(3, 2 / 3)
        st = rb.stats
        assert [st["metric"][m] for m in rb.modalities] == pytest.approx(acc.tolist(), abs=1e-6)
        assert [st["delta"][m] for m in rb.modalities] == pytest.approx(delta.tolist(), abs=1e-6)
        assert [st["coeff"][m] for m in rb.modalities] == pytest.approx((1.4 * bal).tolist(), abs=1e-5)
        for m in rb.modalities:
            k = torch.tensor(st["coeff"][m], dtype=torch.float32)
            for g0, p in zip(before[m], model.encoders[m].parameters()):
                assert torch.equal(p.grad, g0 * k)
        # the next step's direction loss uses this step's B and the current weights
        cos = torch.stack([F.cosine_similarity(rb.heads[m][-1].weight.flatten(), model.fusion_head.weight.flatten(), 0)
                           for m in rb.modalities])
        want = 0.2 * (torch.tensor(bal, dtype=torch.float32).abs() - torch.tensor(bal, dtype=torch.float32) * cos).mean()
        assert rb.alignment_loss().item() == pytest.approx(want.item(), rel=1e-5)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("M", [2, 4])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_encoder_grads_scaled_and_others_bit_identical(M, task):
    model, rb, x, y, masks = setup(M=M, task=task, magnitude=1.3)
    pred, z = backward(model, rb, x, y, task)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    rb.rebalance_(z, pred.detach(), y, masks)
    coeff = rb.stats["coeff"]
    for n, p in model.named_parameters():
        if n.startswith("encoders."):
            m = n.split(".")[1]
            assert torch.equal(p.grad, before[n] * torch.tensor(coeff[m], dtype=torch.float32)), n
        else:
            assert torch.equal(p.grad, before[n]), n
    assert set(rb.touched()) == set(rb.modalities)


def test_direction_loss_reaches_only_the_fusion_weight():
    model, rb, x, y, masks = setup(M=3, lam=0.5)
    pred, z = backward(model, rb, x, y)
    rb.rebalance_(z, pred.detach(), y, masks)
    model.zero_grad(set_to_none=True)
    rb.heads.zero_grad(set_to_none=True)
    loss = rb.alignment_loss()
    assert loss.item() > 0
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got == {"fusion_head.weight"}
    assert all(p.grad is None for p in rb.heads.parameters())
    # and it is the gradient of λ (1/M) Σ |B| - B cos(W^m, W)
    w = model.fusion_head.weight.detach().clone().requires_grad_(True)
    b = rb.balance
    cos = torch.stack([F.cosine_similarity(rb.heads[m][-1].weight.detach().flatten(), w.flatten(), 0) for m in rb.modalities])
    (0.5 * (b.abs() - b * cos).mean()).backward()
    assert torch.allclose(model.fusion_head.weight.grad, w.grad, atol=1e-7)


def test_heads_never_send_gradient_into_the_backbone():
    model, rb, x, y, masks = setup(M=3, start_epoch=5)  # outside the window: heads train, nothing is scaled
    pred, z = backward(model, rb, x, y)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    rb.rebalance_(z, pred.detach(), y, masks)
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
    assert all(p.grad is not None for p in rb.heads.parameters())


def test_rebalance_before_backward_raises():
    model, rb, x, y, masks = setup(M=3)
    pred, z = model(x)
    with pytest.raises(RuntimeError, match="after loss.backward"):
        rb.rebalance_(z, pred.detach(), y, masks)


def test_window_and_first_step():
    model, rb, x, y, masks = setup(M=3, start_epoch=1)
    assert rb.alignment_loss().item() == 0.0
    pred, z = backward(model, rb, x, y)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    rb.rebalance_(z, pred.detach(), y, masks)  # epoch 0: outside the window
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters())
    assert rb.alignment_loss().item() == 0.0 and set(rb.stats["coeff"].values()) == {1.0}
    # the history still advances, so the first step inside the window uses a real Δε
    first = dict(rb.stats["metric"])
    rb.set_epoch(1)
    pred, z = backward(model, rb, x, y)
    rb.rebalance_(z, pred.detach(), y, masks)
    for m in rb.modalities:
        assert rb.stats["delta"][m] == pytest.approx(rb.stats["metric"][m] - first[m], abs=1e-6)


def test_loss_metric_starts_without_change():
    model, rb, x, y, masks = setup(M=2, task="regression", metric="loss")
    pred, z = backward(model, rb, x, y, "regression")
    rb.rebalance_(z, pred.detach(), y, masks)
    assert set(rb.stats["delta"].values()) == {0.0}
    assert set(rb.stats["fallback"].values()) == {1.0}


# ---------------------------------------------------------------- training




@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_with_late_fusion_decreases_the_loss(task):
    dims = {"audio": 6, "text": 5, "visual": 4}
    torch.manual_seed(0)
    batch = make_batch(dims, task=task)
    out = 3 if task == "classification" else 1
    backbone = LateFusion(dims, out, hidden=16, embed_dim=8, fused_dim=8, dropout=0.0)
    v = build_method("cggm", dims=dims, encoders=backbone.encoders, embed_dims=backbone.embed_dims,
                       fusion_head=backbone.fusion_head, task=task, magnitude=1.3, lam=0.2, lr=1e-2)
    assert v.input_module is None
    opt = torch.optim.Adam(backbone.parameters(), lr=1e-2)
    y = batch.targets
    losses = []
    for _ in range(25):
        o = backbone(batch)
        task_loss = F.cross_entropy(o.prediction, y) if task == "classification" else F.mse_loss(o.prediction, y)
        opt.zero_grad(set_to_none=True)
        (task_loss + v.rebalancer.alignment_loss()).backward()
        v.rebalancer.rebalance_(o.embeddings, o.prediction.detach(), y, batch.flat_masks())
        torch.nn.utils.clip_grad_norm_(backbone.parameters(), 2.0)
        opt.step()
        losses.append(task_loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert set(v.rebalancer.stats) >= {"metric", "delta", "balance", "coeff", "cos", "grad_norm_before", "grad_norm_after"}
