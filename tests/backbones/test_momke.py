"""MoMKE: masked attention against a loop, the router mixture against a per-(modality, expert)
loop, stage semantics, masked-junk invariance, 2/3/4 modalities, both tasks, training."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from balm.backbones.momke import ExpertLayer, MoMKE
from balm.backbones.registry import build_backbone
from backbone_batches import random_batch
from tiny_rebalance import make_batch
from tiny_runs import balm_train, stage_choices, tiny_data, with_other_test_labels

DIMS3 = {"audio": 7, "text": 5, "visual": 4}
SMALL = dict(hidden=8, depth=2, num_heads=2, dropout=0.0)


def junk_batch(batch, seed=99):
    """Features of every missing or padded entry replaced by large random junk."""
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for m, x in batch.features.items():
        junk = torch.randn(x.shape, generator=g) * 1e3
        feats[m] = torch.where(batch.masks[m][..., None], x, junk)
    return replace(batch, features=feats)


def test_expert_layer_equals_loop_over_observed_keys():
    torch.manual_seed(0)
    layer = ExpertLayer(6, heads=2, mlp_ratio=1.0, dropout=0.0, attn_dropout=0.0).eval()
    x = torch.randn(2, 5, 6)
    key = torch.tensor([[True, False, True, True, False], [False] * 5])
    with torch.no_grad():
        got = layer(x, key, key.any(-1))
        q, k, v = layer.q(x), layer.k(x), layer.v(x)
        for b in range(2):
            for t in range(5):
                heads = []
                for h in range(2):
                    sl = slice(3 * h, 3 * h + 3)
                    obs = [s for s in range(5) if key[b, s]]
                    if not obs:
                        heads.append(torch.zeros(3))
                        continue
                    scores = torch.stack([q[b, t, sl] @ k[b, s, sl] / 3 ** 0.5 for s in obs])
                    w = scores.softmax(0)
                    heads.append(sum(w[i] * v[b, s, sl] for i, s in enumerate(obs)))
                a = torch.cat(heads)
                ref = a + layer.mlp(a)
                torch.testing.assert_close(got[b, t], ref, atol=1e-5, rtol=1e-5)


def test_router_mixture_equals_per_pair_loop():
    torch.manual_seed(1)
    model = MoMKE(DIMS3, 3, **SMALL).eval()
    batch = random_batch(DIMS3, [4, 6, 2], seed=2, num_classes=3)
    with torch.no_grad():
        out = model(batch)
        keys = {m: batch.masks[m] & batch.valid for m in DIMS3}
        r = {}
        for m in DIMS3:
            p = model.encoders[m](batch.features[m] * keys[m][..., None])
            w = model.routers[m](p).softmax(-1)
            r[m] = sum(w[..., j:j + 1] * model.experts[k](p, keys[m]) for j, k in enumerate(DIMS3))
            r[m] = r[m] * keys[m][..., None]
            torch.testing.assert_close(out.embeddings[m], r[m][batch.valid], atol=1e-5, rtol=1e-5)
        u = torch.cat([r[m][batch.valid] for m in DIMS3], -1)
        h = F.relu(model.proj(u)) + u
        torch.testing.assert_close(out.fused, h, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.prediction, model.fusion_head(h), atol=1e-5, rtol=1e-5)
        assert out.aux_loss is None
        for m in DIMS3:  # missing entries carry nothing into the fusion
            assert float(out.embeddings[m][~keys[m][batch.valid]].abs().sum()) == 0.0


def test_experts_stage_prediction_and_loss_by_hand():
    torch.manual_seed(2)
    model = MoMKE(DIMS3, 4, **SMALL)
    model.set_stage("experts")
    batch = random_batch(DIMS3, [5, 3], seed=3, num_classes=4)
    seen = batch.flat_masks()
    model.eval()
    with torch.no_grad():
        out = model(batch)
        logits = {m: model.unimodal_heads[m](out.embeddings[m]) for m in DIMS3}
        for i in range(out.prediction.shape[0]):
            obs = [m for m in DIMS3 if seen[m][i]]
            torch.testing.assert_close(out.prediction[i], sum(logits[m][i] for m in obs) / len(obs))
        for m in DIMS3:  # stage 1: each modality through its own expert only
            keys = batch.masks[m] & batch.valid
            r = model.experts[m](model.encoders[m](batch.features[m] * keys[..., None]), keys) * keys[..., None]
            torch.testing.assert_close(out.embeddings[m], r[batch.valid], atol=1e-6, rtol=1e-5)
    model.train()
    out = model(batch)
    assert not out.prediction.requires_grad  # the trainer's task loss adds no gradient in this stage
    y = batch.targets
    ref = sum(F.cross_entropy(model.unimodal_heads[m](out.embeddings[m])[seen[m]], y[seen[m]]) for m in DIMS3)
    torch.testing.assert_close(out.aux_loss, ref)


def test_unimodal_loss_ignores_labels_of_unobserved_utterances():
    torch.manual_seed(3)
    model = MoMKE({"a": 3, "b": 4}, 1, **SMALL)
    model.set_stage("experts")
    model.train()
    batch = random_batch({"a": 3, "b": 4}, [6, 4], seed=4, task="regression")
    seen = batch.flat_masks()
    out = model(batch)
    per = {m: (model.unimodal_heads[m](out.embeddings[m]).squeeze(-1) - batch.targets) ** 2 for m in seen}
    ref = sum(per[m][seen[m]].mean() for m in seen)
    torch.testing.assert_close(out.aux_loss, ref)


@pytest.mark.parametrize("stage", ["experts", "router"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_masked_junk_gives_identical_outputs_losses_and_gradients(stage, task):
    dims = {"a": 5, "b": 3, "c": 4}
    model = MoMKE(dims, 3 if task == "classification" else 1, hidden=8, depth=2, num_heads=2, dropout=0.3)
    model.set_stage(stage)
    model.train()
    batch = random_batch(dims, [5, 2, 7], seed=5, task=task, num_classes=3, missing=0.5)
    results = []
    for b in (batch, junk_batch(batch)):
        torch.manual_seed(7)  # the same dropout draws
        model.zero_grad()
        out = model(b)
        loss = (F.cross_entropy(out.prediction, b.targets) if task == "classification"
                else F.mse_loss(out.prediction, b.targets))
        total = loss + (out.aux_loss if out.aux_loss is not None else 0.0)
        total.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((out, total.detach(), grads))
    (o1, l1, g1), (o2, l2, g2) = results
    assert torch.equal(o1.prediction, o2.prediction) and torch.equal(o1.fused, o2.fused)
    assert all(torch.equal(o1.embeddings[m], o2.embeddings[m]) for m in dims)
    assert torch.equal(l1, l2) and len(g1) == len(g2) and all(torch.equal(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("stage", ["experts", "router"])
def test_dialogue_outputs_do_not_depend_on_the_batch(stage):
    torch.manual_seed(4)
    model = MoMKE(DIMS3, 3, **SMALL).eval()
    model.set_stage(stage)
    batch = random_batch(DIMS3, [4, 7, 2], seed=6)
    with torch.no_grad():
        full = model(batch)
        alone = model(random_batch(DIMS3, [4, 7, 2], seed=6)).prediction  # same batch: deterministic
        torch.testing.assert_close(full.prediction, alone)
        starts = [0, 4, 11, 13]
        for b in range(3):
            idx = torch.tensor([b])
            T = int(batch.lengths[b])
            cut = lambda t: t[idx][:, :T]  # noqa: E731
            one = replace(batch, features={m: cut(x) for m, x in batch.features.items()},
                          masks={m: cut(x) for m, x in batch.masks.items()}, valid=cut(batch.valid),
                          speakers=cut(batch.speakers), labels=cut(batch.labels), lengths=batch.lengths[idx])
            torch.testing.assert_close(full.prediction[starts[b]:starts[b + 1]], model(one).prediction,
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dims", [{"x": 3, "y": 6}, DIMS3, {"a": 3, "b": 4, "c": 2, "d": 5}])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_two_three_four_modalities_both_tasks(dims, task):
    torch.manual_seed(5)
    out_dim = 3 if task == "classification" else 1
    model = build_backbone("momke", dims, out_dim, **SMALL)
    assert isinstance(model, MoMKE) and [s.name for s in model.stages()] == ["experts", "router"]
    batch = random_batch(dims, [5, 3], seed=7, task=task, num_classes=3)
    for stage in ("experts", "router"):
        model.set_stage(stage)
        model.train()
        out = model(batch)
        shape = (8, 3) if task == "classification" else (8,)
        assert out.prediction.shape == shape and out.fused.shape == (8, 8 * len(dims))
        assert model.routers[next(iter(dims))].fc2.out_features == len(dims)
        assert set(out.embeddings) == set(dims) and all(z.shape == (8, 8) for z in out.embeddings.values())
        assert (out.aux_loss is not None) == (stage == "experts")


def test_stages_freeze_what_they_do_not_train():
    model = MoMKE(DIMS3, 3, **SMALL, experts_epochs=7, router_epochs=3)
    assert [(s.name, s.epochs) for s in model.stages()] == [("experts", 7), ("router", 3)]
    assert model.stage == "router"  # a model built without set_stage is the full model
    batch = random_batch(DIMS3, [5, 3], seed=8, num_classes=3)
    model.set_stage("experts")
    model.train()
    model(batch).aux_loss.backward()
    for name, p in model.named_parameters():
        first = name.split(".")[0] in ("encoders", "experts", "unimodal_heads")
        assert p.requires_grad == first, name
        assert (p.grad is not None) == first, name
    model.zero_grad(set_to_none=True)
    model.set_stage("router")
    out = model(batch)
    F.cross_entropy(out.prediction, batch.targets).backward()
    for name, p in model.named_parameters():
        assert p.requires_grad == (not name.startswith("unimodal_heads")), name
    frozen = MoMKE(DIMS3, 3, **SMALL, freeze_experts=True)
    frozen.set_stage("router")
    assert not any(p.requires_grad for p in frozen.experts.parameters())
    assert all(p.requires_grad for p in frozen.routers.parameters())
    with pytest.raises(ValueError, match="stages"):
        model.set_stage("pretrain")
    with pytest.raises(ValueError, match="two modalities"):
        MoMKE({"a": 3}, 2)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_both_stages_lower_the_loss(task):
    """The trainer's rules: per stage set_stage, a fresh optimizer over the trainable parameters,
    loss = task loss of the prediction + aux_loss."""
    torch.manual_seed(6)
    dims = {"audio": 5, "text": 7, "visual": 3}
    out_dim = 3 if task == "classification" else 1
    model = MoMKE(dims, out_dim, hidden=16, depth=1, num_heads=2, dropout=0.0)
    batches = [make_batch(dims, task=task, seed=s) for s in range(3)]
    loss_fn = F.cross_entropy if task == "classification" else F.mse_loss
    for stage in ("experts", "router"):
        model.set_stage(stage)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        losses = []
        for step in range(60):
            b = batches[step % 3]
            model.train()
            out = model(b)
            loss = loss_fn(out.prediction, b.targets) + (out.aux_loss if out.aux_loss is not None else 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert sum(losses[-6:]) / 6 < 0.6 * sum(losses[:6]) / 6, (stage, losses[:6], losses[-6:])


RUN = dict(hidden=8, depth=1, num_heads=2, experts_epochs=2)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_balm_train_records_both_stages(tmp_path, task):
    data = tiny_data(tmp_path, task)
    res = balm_train(tmp_path, "run", data, "momke", RUN, **({} if task == "classification" else {"rates": None}))
    st = res["stages"]
    assert [s["name"] for s in st] == ["experts", "router"] and [s["epochs"] for s in st] == [2, 2]
    assert [h["stage"] for h in res["history"]] == ["experts"] * 2 + ["router"] * 2
    for s, lo in ((st[0], 0), (st[1], 2)):  # each stage keeps its best dev epoch
        wf1 = [h["dev_wf1"] for h in res["history"][lo:lo + 2]]
        assert s["best_epoch"] == lo + wf1.index(max(wf1))
    assert res["best_epoch"] == st[1]["best_epoch"] and res["status"] == "finished"


def test_balm_train_stage_choices_use_dev_only(tmp_path):
    data = tiny_data(tmp_path)
    other = with_other_test_labels(data, tmp_path / "other")
    a = balm_train(tmp_path, "a", data, "momke", RUN, epochs=3)
    b = balm_train(tmp_path, "b", other, "momke", RUN, epochs=3)
    assert stage_choices(a) == stage_choices(b) and a["history"] == b["history"]
    assert a["test"]["wf1"] != b["test"]["wf1"]
