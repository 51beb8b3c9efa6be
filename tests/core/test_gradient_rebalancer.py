import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from balm.core import GradientRebalancer
from tiny_rebalance import backward, make_setup  # a model the rebalancer knows nothing about


def setup(M=3, task="classification", C=4, N=12, seed=0, **kw):
    return make_setup(GradientRebalancer, M=M, task=task, C=C, N=N, seed=seed, **kw)


def pretrain(model, x, y, steps=40):
    """Make the fused prediction informative, so heads learning the labels approach it."""
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x)[0], y).backward()
        opt.step()


forward_backward = backward


def grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def head_log(head, z, task):
    out = head(z)
    if task == "classification":
        return out.log_softmax(-1)
    s = out.squeeze(-1)
    return torch.stack([F.logsigmoid(-s), F.logsigmoid(s)], -1)


def fused_log(pred, task):
    if task == "classification":
        return pred.log_softmax(-1)
    return torch.stack([F.logsigmoid(-pred), F.logsigmoid(pred)], -1)


def kl_ref(p_log, q_log):
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean().detach())


@pytest.mark.parametrize("M", [2, 3, 4])
def test_encoder_grads_scaled_by_mu_others_bit_identical(M):
    model, grm, x, y, masks = setup(M=M)
    pred, z = forward_backward(model, grm, x, y)
    before = grads(model)
    grm.rebalance_(z, pred, y, masks)
    after = grads(model)
    mu = grm._last["mu"]
    for i, m in enumerate(grm.modalities):
        for n, p in model.encoders[m].named_parameters():
            key = f"encoders.{m}.{n}"
            assert torch.equal(after[key], before[key] * mu[i].to(torch.float32)), key
    others = [n for n in before if not n.startswith("encoders.")]
    assert others
    for n in others:
        assert torch.equal(after[n], before[n]), n
    assert set(grm.stats["mu"]) == set(grm.modalities)
    assert all(math.isfinite(v) and v >= 0 for v in grm.stats["mu"].values())


def test_heads_change_no_backbone_gradient():
    model, grm, x, y, masks = setup(scale_gradients=False)
    pred, z = forward_backward(model, grm, x, y)
    before = grads(model)
    heads_before = copy.deepcopy(grm.heads.state_dict())
    grm.rebalance_(z, pred, y, masks)
    after = grads(model)
    assert before.keys() == after.keys()
    for n in before:
        assert torch.equal(after[n], before[n])
    # the heads did learn
    assert any(not torch.equal(heads_before[k], v) for k, v in grm.heads.state_dict().items())
    # the heads are the only registered weights; the rest is the running state (for resuming)
    assert all(k.startswith("heads.") or k == "_extra_state" for k in grm.state_dict())


def test_same_batch_delta_and_mu_match_independent_computation():
    model, grm, x, y, masks = setup(M=3, lr=0.01)
    pretrain(model, x, y)
    pred, z = forward_backward(model, grm, x, y)
    heads0 = copy.deepcopy(grm.heads)
    grm.rebalance_(z, pred, y, masks)
    fl = fused_log(pred.detach(), "classification")
    deltas, kls = [], []
    for m in grm.modalities:
        sel = masks[m]
        zb = z[m].detach()[sel]
        kb = kl_ref(fl[sel], head_log(heads0[m], zb, "classification"))
        ka = kl_ref(fl[sel], head_log(grm.heads[m], zb, "classification").detach())
        deltas.append(kb - ka)
        kls.append(ka)
    s = grm.stats
    assert [s["delta"][m] for m in grm.modalities] == pytest.approx(deltas, rel=1e-4, abs=1e-7)
    assert [s["kl"][m] for m in grm.modalities] == pytest.approx(kls, rel=1e-5)
    pos = [max(d, 0.0) for d in deltas]
    want = [1.2 * (sum(pos) - d) / sum(pos) for d in pos]
    assert [s["mu"][m] for m in grm.modalities] == pytest.approx(want, rel=1e-3)
    assert s["guard"]["clamped"] == float(any(d < 0 for d in deltas))
    assert s["guard"]["fallback"] == 0.0 and len(set(round(v, 4) for v in want)) == 3  # the formula branch


def test_history_mode_mu_equals_formula_first_step_included():
    model, grm, x, y, masks = setup(M=3, delta_mode="history", missing_aware=False, lr=0.05)
    history = []
    for step in range(3):
        xb = {m: v + 0.1 * step for m, v in x.items()}  # different batches
        pred, z = forward_backward(model, grm, xb, y)
        heads0 = copy.deepcopy(grm.heads)
        grm.rebalance_(z, pred, y, masks)
        fl = fused_log(pred.detach(), "classification")
        kl = [kl_ref(fl, head_log(heads0[m], z[m].detach(), "classification")) for m in grm.modalities]
        s = grm.stats
        assert [s["kl"][m] for m in grm.modalities] == pytest.approx(kl, rel=1e-5)
        delta = kl if not history else [p - c for p, c in zip(history[-1], kl)]
        assert [s["delta"][m] for m in grm.modalities] == pytest.approx(delta, rel=1e-4, abs=1e-7)
        pos = [max(d, 0.0) for d in delta]
        if sum(pos) > 1e-5 * sum(history[-1] if history else kl):
            want = [1.2 * (sum(pos) - d) / sum(pos) for d in pos]
        else:
            want = [0.8] * 3
        assert [s["mu"][m] for m in grm.modalities] == pytest.approx(want, rel=1e-3, abs=1e-6)
        history.append(kl)
    assert grm.stats["guard"]["steps"] == 3.0


def force_history(grm, prev):
    grm._kl_prev = torch.tensor(prev)
    grm._has_prev = torch.ones(len(prev), dtype=torch.bool)


@pytest.mark.parametrize("offset", [0.0, -0.05])
def test_degenerate_sums_guarded_finite_nonnegative_and_raw_public(offset):
    """ΣΔ = 0 (offset 0) and ΣΔ < 0 through the module, via a chosen KL history."""
    results = {}
    for mode in ("guarded", "raw"):
        model, grm, x, y, masks = setup(M=3, delta_mode="history", coefficients=mode, missing_aware=False, seed=3)
        pred, z = forward_backward(model, grm, x, y)
        fl = fused_log(pred.detach(), "classification")
        kl = [kl_ref(fl, head_log(grm.heads[m], z[m].detach(), "classification")) for m in grm.modalities]
        # Δ = prev − KL = (0.02, −0.02, 0) + offset
        prev = [kl[0] + 0.02 + offset, kl[1] - 0.02 + offset, kl[2] + offset]
        force_history(grm, prev)
        before = grads(model)
        grm.rebalance_(z, pred, y, masks)
        after = grads(model)
        mu = [grm.stats["mu"][m] for m in grm.modalities]
        delta = [grm.stats["delta"][m] for m in grm.modalities]
        results[mode] = (mu, delta)
        a_key = "encoders.audio.0.weight"
        assert torch.allclose(after[a_key], before[a_key] * mu[0], rtol=1e-5, atol=0)
    mu, delta = results["guarded"]
    assert all(math.isfinite(v) and v >= 0 for v in mu)
    total = sum(delta)
    if offset == 0.0:
        assert total == pytest.approx(0.0, abs=1e-6)
        # Δ⁺ = (0.02, 0, 0): μ = ρ(0, 1, 1)
        assert mu == pytest.approx([0.0, 1.2, 1.2], abs=1e-4)
    else:
        assert total < 0
        assert mu == pytest.approx([0.8, 0.8, 0.8])
    raw_mu, raw_delta = results["raw"]
    t = sum(raw_delta)
    assert raw_mu == pytest.approx([1.2 * (t - d) / (t + 1e-8) for d in raw_delta], rel=1e-3)


def test_degenerate_step_counted_in_stats():
    model, grm, x, y, masks = setup(M=2, delta_mode="history", missing_aware=False)
    pred, z = forward_backward(model, grm, x, y)
    force_history(grm, [0.0, 0.0])  # Δ = −KL < 0 for both
    grm.rebalance_(z, pred, y, masks)
    assert grm.stats["guard"]["fallback"] == 1.0
    assert grm.degenerate_steps == 1
    assert grm.stats["mu"] == pytest.approx({"audio": 0.6, "text": 0.6})


def test_missing_aware_excludes_exactly_masked_utterances():
    model, grm, x, y, masks = setup(M=3, lr=0.05, N=16)
    masks["visual"] = torch.zeros(16, dtype=torch.bool)  # visual absent in the whole batch
    pred, z = forward_backward(model, grm, x, y)
    heads0 = copy.deepcopy(grm.heads)
    grm.rebalance_(z, pred, y, masks)
    s = grm.stats
    for m in ("audio", "text"):
        sel = masks[m]
        assert s["n_present"][m] == float(sel.sum())
        # the head's step equals an Adam step on the subset alone
        ref = copy.deepcopy(heads0[m])
        opt = torch.optim.Adam(ref.parameters(), lr=0.05)
        loss = F.cross_entropy(ref(z[m].detach()[sel]), y[sel])
        assert s["head_loss"][m] == pytest.approx(loss.item(), rel=1e-5)
        loss.backward()
        opt.step()
        for (n, p), q in zip(ref.named_parameters(), grm.heads[m].parameters()):
            assert torch.allclose(p, q, atol=1e-7), (m, n)
        fl = fused_log(pred.detach(), "classification")[sel]
        assert s["kl"][m] == pytest.approx(kl_ref(fl, head_log(ref, z[m].detach()[sel], "classification").detach()), rel=1e-5)
    # a modality present nowhere: no head update, Δ = 0, finite μ
    assert s["n_present"]["visual"] == 0.0 and s["delta"]["visual"] == 0.0 and s["head_loss"]["visual"] == 0.0
    for p, q in zip(heads0["visual"].parameters(), grm.heads["visual"].parameters()):
        assert torch.equal(p, q)
    assert all(math.isfinite(v) for v in s["mu"].values())


def test_missing_aware_false_uses_every_utterance():
    model, grm, x, y, masks = setup(M=2, missing_aware=False)
    pred, z = forward_backward(model, grm, x, y)
    heads0 = copy.deepcopy(grm.heads)
    grm.rebalance_(z, pred, y, masks)
    for m in grm.modalities:
        assert grm.stats["n_present"][m] == 12.0
        assert grm.stats["head_loss"][m] == pytest.approx(F.cross_entropy(heads0[m](z[m].detach()), y).item(), rel=1e-5)


def test_spatial_pairs_each_head_with_its_own_coefficient():
    model, grm, x, y, masks = setup(M=3, tau=0.7, lr=0.05)
    assert grm.alignment_loss().item() == 0.0  # before the first rebalance
    pred, z = forward_backward(model, grm, x, y)
    grm.rebalance_(z, pred, y, masks)
    # distinct coefficients, so that any mis-pairing changes the value
    grm._mu_bar = torch.tensor([0.2, 0.9, 1.6])
    mu_bar = dict(zip(grm.modalities, [0.2, 0.9, 1.6]))
    wp = model.fusion_head.weight.detach().flatten()

    def cos(m):
        return F.cosine_similarity(grm.heads[m][-1].weight.detach().flatten(), wp, dim=0).item()

    want = 0.7 * sum(abs(mu_bar[m] * cos(m)) for m in grm.modalities) / 3
    got = grm.alignment_loss()
    assert got.item() == pytest.approx(want, rel=1e-5)
    mods = list(grm.modalities)
    rolled = 0.7 * sum(abs(mu_bar[mods[i]] * cos(mods[(i + 1) % 3])) for i in range(3)) / 3
    assert abs(rolled - want) > 1e-4 * want  # a mis-pairing would be detected
    assert [grm.stats["cos"][m] for m in mods] == pytest.approx([cos(m) for m in mods], rel=1e-5)
    assert len(set(round(cos(m), 4) for m in mods)) == 3


def test_spatial_gradient_reaches_only_fusion_head_weight():
    model, grm, x, y, masks = setup(M=3)
    pred, z = forward_backward(model, grm, x, y)
    grm.rebalance_(z, pred, y, masks)
    model.zero_grad(set_to_none=True)
    grm.heads.zero_grad(set_to_none=True)
    loss = grm.alignment_loss()
    assert loss.requires_grad
    loss.backward()
    assert model.fusion_head.weight.grad is not None and model.fusion_head.weight.grad.abs().sum() > 0
    assert model.fusion_head.bias.grad is None
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fusion_head.weight")
    assert all(p.grad is None for p in grm.heads.parameters())
    # and matches the analytic gradient of τ/M Σ|μ̄ cos| wrt W_pred from an independent autograd graph
    w = model.fusion_head.weight.detach().clone().requires_grad_()
    mu_bar = torch.tensor([grm.stats["mu"][m] / 1.2 for m in grm.modalities])
    c = torch.stack([F.cosine_similarity(grm.heads[m][-1].weight.detach().flatten(), w.flatten(), dim=0) for m in grm.modalities])
    (0.4 * (mu_bar * c).abs().mean()).backward()
    assert torch.allclose(model.fusion_head.weight.grad, w.grad, rtol=1e-4, atol=1e-8)


def test_regression_two_class_view():
    model, grm, x, y, masks = setup(M=3, task="regression", lr=0.05)
    pred, z = forward_backward(model, grm, x, y, task="regression")
    assert pred.dim() == 1
    heads0 = copy.deepcopy(grm.heads)
    before = grads(model)
    grm.rebalance_(z, pred, y, masks)
    fl = fused_log(pred.detach(), "regression")
    for m in grm.modalities:
        sel = masks[m]
        kb = kl_ref(fl[sel], head_log(heads0[m], z[m].detach()[sel], "regression"))
        ka = kl_ref(fl[sel], head_log(grm.heads[m], z[m].detach()[sel], "regression").detach())
        assert grm.stats["delta"][m] == pytest.approx(kb - ka, rel=1e-3, abs=1e-7)
        mse = F.mse_loss(heads0[m](z[m].detach()[sel]).squeeze(-1), y[sel]).item()
        assert grm.stats["head_loss"][m] == pytest.approx(mse, rel=1e-5)
    after = grads(model)
    i = list(grm.modalities).index("text")
    assert torch.equal(after["encoders.text.0.weight"], before["encoders.text.0.weight"] * grm._last["mu"][i].float())
    assert grm.alignment_loss().item() > 0


def test_mse_distribution_variant():
    model, grm, x, y, masks = setup(M=2, distribution="mse", lr=0.05)
    pred, z = forward_backward(model, grm, x, y)
    grm.rebalance_(z, pred, y, masks)
    p = pred.detach().softmax(-1)
    for m in grm.modalities:
        sel = masks[m]
        q = grm.heads[m](z[m].detach()[sel]).detach().softmax(-1)
        assert grm.stats["kl"][m] == pytest.approx(F.mse_loss(q, p[sel]).item(), rel=1e-5)


def test_window_no_stale_term():
    model, grm, x, y, masks = setup(M=3, start_epoch=1, end_epoch=2)
    assert not grm.active
    pred, z = forward_backward(model, grm, x, y)
    before = grads(model)
    grm.rebalance_(z, pred, y, masks)  # epoch 0: outside the window
    assert grm.stats == {}
    assert all(torch.equal(v, grads(model)[k]) for k, v in before.items())
    grm.set_epoch(1)
    assert grm.active
    for _ in range(2):
        pred, z = forward_backward(model, grm, x, y)
        grm.rebalance_(z, pred, y, masks)
    assert grm.alignment_loss().item() > 0
    grm.set_epoch(2)
    assert not grm.active
    loss = grm.alignment_loss()
    assert loss.item() == 0.0 and not loss.requires_grad and loss.device == model.fusion_head.weight.device
    pred, z = forward_backward(model, grm, x, y)  # a full step after the window
    before = grads(model)
    grm.rebalance_(z, pred, y, masks)
    assert all(torch.equal(v, grads(model)[k]) for k, v in before.items())
    grm.set_epoch(1)  # re-entering starts fresh
    assert grm.alignment_loss().item() == 0.0


def test_spatial_off_alignment_zero_and_no_scaling_without_distribution():
    model, grm, x, y, masks = setup(M=2, spatial=False)
    pred, z = forward_backward(model, grm, x, y)
    grm.rebalance_(z, pred, y, masks)
    assert grm.alignment_loss().item() == 0.0
    model, grm, x, y, masks = setup(M=2, distribution=None)
    assert not grm.scale_gradients
    pred, z = forward_backward(model, grm, x, y)
    before = grads(model)
    grm.rebalance_(z, pred, y, masks)
    assert all(torch.equal(v, grads(model)[k]) for k, v in before.items())
    assert torch.equal(grm.mu_bar, torch.ones(2))


def test_noise_has_gradient_std():
    torch.manual_seed(0)
    enc = {"a": nn.Linear(400, 50), "b": nn.Linear(30, 50)}
    head = nn.Linear(100, 3)
    grm = GradientRebalancer(enc, {"a": 50, "b": 50}, head, noise=True)
    x = {"a": torch.randn(64, 400), "b": torch.randn(64, 30)}
    z = {m: enc[m](x[m]) for m in enc}
    pred = head(torch.cat([z["a"], z["b"]], -1))
    y = torch.randint(0, 3, (64,))
    F.cross_entropy(pred, y).backward()
    g0 = enc["a"].weight.grad.clone()
    grm.rebalance_(z, pred, y)
    mu = grm._last["mu"][0].float()
    noise = enc["a"].weight.grad - g0 * mu
    assert noise.std().item() == pytest.approx(g0.std().item(), rel=0.05)
    assert abs(noise.mean().item()) < 0.05 * g0.std().item()


def test_touched_and_validation_errors():
    model, grm, *_ = setup(M=2)
    assert grm.touched() == {"audio": ["0.weight", "0.bias", "2.weight", "2.bias"], "text": ["0.weight", "0.bias", "2.weight", "2.bias"]}
    shared = nn.Linear(3, 4)
    head = nn.Linear(8, 2)
    with pytest.raises(ValueError, match="shared with encoder 'a'"):
        GradientRebalancer({"a": shared, "b": nn.Sequential(shared)}, {"a": 4, "b": 4}, head)
    with pytest.raises(ValueError, match="shared with the fusion head"):
        GradientRebalancer({"a": nn.Linear(3, 4), "b": nn.Sequential(nn.Linear(3, 4), head)}, {"a": 4, "b": 4}, head)
    with pytest.raises(ValueError, match="at least two"):
        GradientRebalancer({"a": nn.Linear(3, 4)}, {"a": 4}, head)
    with pytest.raises(ValueError, match="1 output"):
        GradientRebalancer({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)}, {"a": 4, "b": 4}, head, task="regression")
    with pytest.raises(TypeError, match="nn.Linear"):
        GradientRebalancer({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)}, {"a": 4, "b": 4}, nn.Sequential(head))
    with pytest.raises(ValueError, match="coefficients"):
        GradientRebalancer({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)}, {"a": 4, "b": 4}, head, coefficients="clip")
    with pytest.raises(TypeError):
        GradientRebalancer({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)}, {"a": 4, "b": 4}, head, rhoo=1.2)
    grm = GradientRebalancer({"a": nn.Linear(3, 4), "b": nn.Linear(3, 4)}, {"a": 4, "b": 4}, head)
    assert grm.heads["a"][0].in_features == 4 and grm.heads["a"][0].out_features == 8
    assert grm.heads["a"][-1].weight.shape == head.weight.shape
    with pytest.raises(ValueError, match="exactly the modalities"):
        grm.rebalance_({"a": torch.zeros(2, 4)}, torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


def test_rebalance_inside_no_grad_context():
    model, grm, x, y, masks = setup(M=2)
    pred, z = forward_backward(model, grm, x, y)
    with torch.no_grad():
        grm.rebalance_(z, pred, y, masks)
    assert grm.stats["guard"]["steps"] == 1.0
