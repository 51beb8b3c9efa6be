"""RedCore: the length-one attention block against nn.MultiheadAttention, the relative-advantage
update against a plain loop of the public code's rule, the loss by hand (reconstruction targets
only where observed), masked-junk invariance, 2/3/4 modalities, both tasks, training, balm train."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from balm.backbones.redcore import RedCore, UtteranceBlock
from balm.backbones.registry import build_backbone
from backbone_batches import random_batch
from tiny_rebalance import make_batch
from tiny_runs import balm_train, tiny_data, with_other_test_labels

DIMS3 = {"audio": 7, "text": 5, "visual": 4}
SMALL = dict(embed_dim=8, layers=1, heads=2, generator_layers=(6, 4), generator_blocks=2, classifier_layers=(6,))
QUIET = dict(attn_dropout=0.0, mlp_dropout=0.0, dropout=0.0)


def junk_batch(batch, seed=99):
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.where(batch.masks[m][..., None], x, torch.randn(x.shape, generator=g) * 1e3)
             for m, x in batch.features.items()}
    return replace(batch, features=feats)


def test_block_equals_multihead_attention_on_one_step():
    torch.manual_seed(0)
    block = UtteranceBlock(8, heads=2, attn_dropout=0.0, mlp_dropout=0.0).eval()
    mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight[16:].copy_(block.value.weight)
        mha.in_proj_bias[16:].copy_(block.value.bias)
        mha.out_proj.weight.copy_(block.out.weight)
        mha.out_proj.bias.copy_(block.out.bias)
        x = torch.randn(5, 1, 8)  # five utterances, one step each
        a = block.ln_1(x)
        ref = x + block.ln_12(mha(a, a, a, need_weights=False)[0])
        ref = ref + block.ln_22(block.mlp(block.ln_2(ref)))
        torch.testing.assert_close(block(x[:, 0]), ref[:, 0], atol=1e-6, rtol=1e-5)


def reference_beta(recs, presents, ema=0.7, eta=0.1, growth=1.5, every=500, update=3, floor=0.1):
    """The public code's update, written out: EMA of L_rec, η growth, β step, floor, unit norm."""
    M = len(recs[0])
    beta, avg, eta_t = np.ones(M), np.zeros(M), eta
    for it, (rec, pres) in enumerate(zip(recs, presents)):
        for m in range(M):
            new = rec[m] if pres[m] else avg[m]
            avg[m] = (1 - ema) * avg[m] + ema * new
        mean = avg.sum() / M
        ra = (mean - avg) / mean
        if it % every == 0:
            eta_t *= growth
        if it % update == 0:
            beta = beta - eta_t * ra
            beta = np.maximum(beta, floor)
            beta = beta / np.sqrt((beta ** 2).sum())
    return beta, avg, eta_t


def test_relative_advantage_update_equals_the_public_rule():
    model = RedCore(DIMS3, 3, **SMALL, eta_every=4, update_every=2, eta=0.5)
    rng = np.random.default_rng(0)
    recs = rng.uniform(0.1, 3.0, size=(11, 3))
    presents = rng.random((11, 3)) > 0.2
    presents[0] = True
    for rec, pres in zip(recs, presents):
        model._update_weights(torch.tensor(rec, dtype=torch.float32), torch.tensor(pres))
    beta, avg, eta = reference_beta(recs, presents, eta=0.5, every=4, update=2)
    np.testing.assert_allclose(model.beta.numpy(), beta, rtol=1e-5)
    np.testing.assert_allclose(model.rec_ema.numpy(), avg, rtol=1e-5)
    assert float(model.eta) == pytest.approx(eta) and int(model.step) == 11
    assert float(model.beta.norm()) == pytest.approx(1.0) and float(model.beta.min()) >= 0.1 / 1.8
    # a modality that is generated well (small L_rec) loses weight, a poorly generated one gains
    steady = RedCore(DIMS3, 3, **SMALL)
    for _ in range(4):
        steady._update_weights(torch.tensor([0.5, 1.0, 2.0]), torch.ones(3, dtype=torch.bool))
    assert float(steady.beta[0]) < float(steady.beta[1]) < float(steady.beta[2])
    state = model.state_dict()
    assert {"beta", "rec_ema", "eta", "step"} <= set(state)


def test_loss_by_hand_reconstruction_only_where_observed():
    torch.manual_seed(1)
    model = RedCore(DIMS3, 3, **SMALL, **QUIET, kl_weight=0.01, rec_weight=0.5, unimodal_weight=0.7).train()
    batch = random_batch(DIMS3, [5, 4], seed=2, num_classes=3, missing=0.5)
    seen, y, valid = batch.flat_masks(), batch.targets, batch.valid
    torch.manual_seed(3)
    out = model(batch)
    beta = model.beta.clone()  # after this step's update
    torch.manual_seed(3)  # the same reparameterisation draws, in modality order
    z, mu, lv = {}, {}, {}
    for m in DIMS3:
        x = batch.features[m][valid] * seen[m][:, None]
        z[m], mu[m], lv[m] = model.encoders[m](x)
    mods = list(DIMS3)
    n = y.shape[0]
    kl = rec = uni = 0.0
    for j, m in enumerate(mods):
        g = model.generators[m](torch.cat([z[k] for k in mods if k != m], -1))
        r = torch.where(seen[m][:, None], z[m], g)
        torch.testing.assert_close(out.embeddings[m], r)
        obs = [i for i in range(n) if seen[m][i]]
        kl = kl - sum((1 + lv[m][i] - mu[m][i] ** 2 - lv[m][i].exp()).sum() for i in obs) / n
        rec = rec + beta[j] * sum(((g[i] - z[m][i]) ** 2).sum() for i in obs) / len(obs)
        uni = uni + F.cross_entropy(model.unimodal[m](r)[0], y)
    ref = 0.01 * kl + 0.7 * uni + 0.5 * rec
    torch.testing.assert_close(out.aux_loss, ref, rtol=1e-5, atol=1e-5)
    h = model.fusion(torch.cat([out.embeddings[m] for m in mods], -1))
    torch.testing.assert_close(out.prediction, model.fusion_head(h))


def test_evaluation_is_deterministic_and_leaves_the_weights_alone():
    torch.manual_seed(4)
    model = RedCore(DIMS3, 3, **SMALL).eval()
    batch = random_batch(DIMS3, [5, 4], seed=5, num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = model(batch), model(batch)
    assert torch.equal(a.prediction, b.prediction) and a.aux_loss is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.train()
    model(batch)
    assert int(model.step) == 1 and not torch.equal(model.rec_ema, before["rec_ema"])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_masked_junk_gives_identical_outputs_losses_and_gradients(task):
    dims = {"a": 5, "b": 3, "c": 4}
    model = RedCore(dims, 3 if task == "classification" else 1, **SMALL).train()
    batch = random_batch(dims, [5, 2, 7], seed=6, task=task, num_classes=3, missing=0.5)
    results = []
    for b in (batch, junk_batch(batch)):
        torch.manual_seed(7)
        model.zero_grad()
        out = model(b)
        loss = (F.cross_entropy(out.prediction, b.targets) if task == "classification"
                else F.mse_loss(out.prediction, b.targets)) + out.aux_loss
        loss.backward()
        results.append((out, loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None],
                        model.beta.clone()))
    (o1, l1, g1, b1), (o2, l2, g2, b2) = results
    assert torch.equal(o1.prediction, o2.prediction) and torch.equal(o1.fused, o2.fused)
    assert all(torch.equal(o1.embeddings[m], o2.embeddings[m]) for m in dims)
    assert torch.equal(l1, l2) and len(g1) == len(g2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
    model.eval()
    assert torch.equal(model(batch).prediction, model(junk_batch(batch, seed=5)).prediction)


@pytest.mark.parametrize("dims", [{"x": 3, "y": 6}, DIMS3, {"a": 3, "b": 4, "c": 2, "d": 5}])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_two_three_four_modalities_both_tasks(dims, task):
    torch.manual_seed(8)
    out_dim = 3 if task == "classification" else 1
    model = build_backbone("redcore", dims, out_dim, **SMALL)
    assert isinstance(model, RedCore) and [s.name for s in model.stages()] == ["train"]
    batch = random_batch(dims, [5, 3], seed=9, task=task, num_classes=3)
    out = model.train()(batch)
    assert out.prediction.shape == ((8, 3) if task == "classification" else (8,))
    assert out.fused.shape == (8, 6) and set(out.embeddings) == set(dims)
    assert model.generators[next(iter(dims))].encoders[0][0].in_features == 8 * (len(dims) - 1)
    assert model.beta.shape == (len(dims),)
    out.aux_loss.backward()
    for m in dims:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoders[m].parameters())


def test_published_size_parameter_count():
    """IEMOCAP dims, 4 classes, the defaults (RedCore's IEMOCAP script), counted by hand."""
    dims = {"audio": 130, "visual": 342, "text": 1024}
    model = RedCore(dims, 4)
    lin = lambda a, b: a * b + b  # noqa: E731
    E = 128
    block = 4 * 2 * E + 2 * lin(E, E) + lin(E, 4 * E) + lin(4 * E, E)
    enc = sum(lin(d, E) for d in dims.values()) + 3 * (3 * block + lin(E, 2 * E))
    gin = 2 * E
    one_block = lin(gin, 256) + lin(256, 128) + lin(128, 64) + lin(64, 128) + lin(128, 256) + lin(256, gin)
    gen = 3 * (5 * one_block + lin(gin, gin) + lin(gin, E))
    cls = lin(3 * E, 128) + lin(128, 128) + lin(128, 4) + 3 * (lin(E, 128) + lin(128, 128) + lin(128, 4))
    assert sum(p.numel() for p in model.parameters()) == enc + gen + cls


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="two modalities"):
        RedCore({"a": 3}, 2)
    with pytest.raises(ValueError, match="multiple of heads"):
        RedCore(DIMS3, 2, embed_dim=10, heads=4)
    with pytest.raises(ValueError, match="ema"):
        RedCore(DIMS3, 2, ema=0.0)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_lowers_the_loss(task):
    torch.manual_seed(9)
    dims = {"audio": 5, "text": 7, "visual": 3}
    model = RedCore(dims, 3 if task == "classification" else 1, embed_dim=16, layers=1, heads=2,
                    generator_layers=(16, 8), generator_blocks=2, classifier_layers=(16,), **QUIET)
    batches = [make_batch(dims, task=task, seed=s) for s in range(3)]
    loss_fn = F.cross_entropy if task == "classification" else F.mse_loss
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        b = batches[step % 3]
        out = model.train()(b)
        loss = loss_fn(out.prediction, b.targets) + out.aux_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-6:]) / 6 < 0.6 * sum(losses[:6]) / 6, (losses[:6], losses[-6:])


RUN = dict(embed_dim=8, layers=1, heads=2, generator_layers=[8, 4], generator_blocks=2, classifier_layers=[8])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_balm_train_selects_on_dev(tmp_path, task):
    data = tiny_data(tmp_path, task)
    res = balm_train(tmp_path, "run", data, "redcore", RUN, epochs=3,
                     **({} if task == "classification" else {"rates": None}))
    wf1 = [h["dev_wf1"] for h in res["history"]]
    assert res["status"] == "finished" and len(wf1) == 3 and res["best_epoch"] == wf1.index(max(wf1))
    assert "stages" not in res  # one stage


def test_balm_train_choice_uses_dev_only(tmp_path):
    data = tiny_data(tmp_path)
    other = with_other_test_labels(data, tmp_path / "other")
    a = balm_train(tmp_path, "a", data, "redcore", RUN, epochs=3)
    b = balm_train(tmp_path, "b", other, "redcore", RUN, epochs=3)
    assert a["best_epoch"] == b["best_epoch"] and a["history"] == b["history"]
    assert a["test"]["wf1"] != b["test"]["wf1"]
