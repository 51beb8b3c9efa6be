"""MCE (balm.backbones.mce): shapes, masked-junk invariance in every stage, the Shapley values
against plain loops, the auxiliary losses against a loop over subsets, training, and `balm train`."""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from backbone_batches import random_batch

from balm.backbones.mce import MCE, batch_modality_values, shapley_values, subset_rows
from balm.backbones.registry import build_backbone

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from exp_helpers import base_config, tiny_dir, write_yaml  # noqa: E402

DIMS = {
    2: {"audio": 6, "text": 5},
    3: {"audio": 6, "visual": 4, "text": 5},
    4: {"audio": 6, "visual": 4, "text": 5, "depth": 3},
}
SMALL = dict(embed_dim=16, cls_layers=[16], heads=2, ff_dim=32)
LENGTHS = [4, 2, 5, 3]


def _model(M=3, task="classification", **kw):
    torch.manual_seed(0)
    return build_backbone("mce", DIMS[M], 3 if task == "classification" else 1, **{**SMALL, **kw})


def _batch(M=3, task="classification", seed=0, missing=0.4):
    return random_batch(DIMS[M], LENGTHS, seed=seed, task=task, num_classes=3, missing=missing)


def _junk(batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.where(batch.masks[m][..., None], x, 100 * torch.randn(x.shape, generator=g))
             for m, x in batch.features.items()}
    return replace(batch, features=feats)


# -- shapes, stages ------------------------------------------------------------------------------


@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("stage", ["unimodal", "train"])
def test_forward_shapes(M, task, stage):
    model = _model(M, task)
    model.set_stage(stage)
    batch = _batch(M, task)
    N = sum(LENGTHS)
    for training in (True, False):
        model.train(training)
        out = model(batch)
        assert out.prediction.shape == ((N, 3) if task == "classification" else (N,))
        assert out.fused.shape == (N, model.fusion_head.in_features)
        assert {m: z.shape for m, z in out.embeddings.items()} == {m: (N, 16) for m in DIMS[M]}
        assert (out.aux_loss is not None) == training
        if training:
            assert out.aux_loss.ndim == 0 and torch.isfinite(out.aux_loss)
    if stage == "train":  # the stage's prediction is the fusion head's output
        torch.testing.assert_close(out.prediction, model.fusion_head(out.fused).squeeze(-1) if task == "regression"
                                   else model.fusion_head(out.fused))


def test_stages_freeze_what_they_do_not_train():
    model = _model(unimodal_epochs=7, train_epochs=3)
    assert [(s.name, s.epochs) for s in model.stages()] == [("unimodal", 7), ("train", 3)]
    ref = {id(p) for p in [*model.reference_encoders.parameters(), *model.reference_heads.parameters()]}
    model.set_stage("unimodal")
    assert {id(p) for p in model.parameters() if p.requires_grad} == ref
    model.set_stage("train")
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.parameters()} - ref
    model.train()
    assert model.encoders.training and not model.reference_encoders.training and not model.reference_heads.training
    assert [s.name for s in _model(unimodal_epochs=0, use_b=False).stages()] == ["train"]
    with pytest.raises(ValueError, match="use_b"):
        _model(unimodal_epochs=0)
    with pytest.raises(ValueError, match="stages"):
        model.set_stage("pretrain")
    with pytest.raises(ValueError, match="two modalities"):
        MCE({"audio": 3}, 2)


def test_unimodal_stage_trains_each_reference_on_its_observed_utterances_only():
    model = _model(dropout=0.0)
    model.set_stage("unimodal")
    model.train()
    batch = _batch()
    out = model(batch)
    assert not out.prediction.requires_grad  # selection only: the loss is the references' own
    obs = batch.flat_masks()
    x = {m: batch.features[m][batch.valid] for m in DIMS[3]}
    expected = sum(F.cross_entropy(model.reference_heads[m](model.reference_encoders[m](x[m][obs[m]]))[0],
                                   batch.targets[obs[m]]) for m in DIMS[3])
    torch.testing.assert_close(out.aux_loss, expected)
    # the prediction is the mean of the observed references' logits
    logits = {m: model.reference_heads[m](model.reference_encoders[m](x[m]))[0] for m in DIMS[3]}
    for i in range(len(batch.targets)):
        seen = [m for m in DIMS[3] if obs[m][i]]
        torch.testing.assert_close(out.prediction[i], torch.stack([logits[m][i] for m in seen]).mean(0))


# -- nothing reads a missing modality's features ------------------------------------------------------


@pytest.mark.parametrize("M", [2, 3, 4])
@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("stage", ["unimodal", "train"])
def test_masked_junk_gives_identical_outputs_losses_and_gradients(M, task, stage):
    batch = _batch(M, task, seed=M)
    junk = _junk(batch)
    assert any(not torch.equal(junk.features[m], batch.features[m]) for m in DIMS[M])
    results = []
    for b in (batch, junk):
        model = _model(M, task)
        model.set_stage(stage)
        for training in (True, False):
            model.train(training)
            torch.manual_seed(3)
            out = model(b)
            grads = None
            if training:
                loss = out.aux_loss + (F.mse_loss(out.prediction, b.targets) if task == "regression"
                                       else F.cross_entropy(out.prediction, b.targets))
                loss.backward()
                grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
                model.zero_grad()
            results.append((out, grads))
    for (a, ga), (b, gb) in zip(results[:2], results[2:]):
        assert torch.equal(a.prediction, b.prediction) and torch.equal(a.fused, b.fused)
        assert all(torch.equal(a.embeddings[m], b.embeddings[m]) for m in DIMS[M])
        assert (a.aux_loss is None and b.aux_loss is None) or torch.equal(a.aux_loss, b.aux_loss)
        if ga is not None:
            assert len(ga) == len(gb) > 0 and all(torch.equal(x, y) for x, y in zip(ga, gb))


# -- the modality values -----------------------------------------------------------------------------


def _shapley_by_permutations(players, value):
    """Average marginal contribution of each player over all orderings (a definition of the
    Shapley value independent of the subset formula)."""
    phi = {p: 0.0 for p in players}
    orders = list(itertools.permutations(players))
    for order in orders:
        coalition = frozenset()
        for p in order:
            phi[p] += value(coalition | {p}) - value(coalition)
            coalition = coalition | {p}
    return {p: v / len(orders) for p, v in phi.items()}


@pytest.mark.parametrize("M", [2, 3, 4, 5])
def test_shapley_values_equal_the_permutation_definition(M):
    rng = np.random.default_rng(M)
    games = rng.normal(size=(3, 2**M))
    games[:, 0] = 0.0
    phi = shapley_values(torch.tensor(games))
    for g in range(3):
        def value(S):
            return games[g, sum(2**k for k in S)]
        loop = _shapley_by_permutations(range(M), value)
        np.testing.assert_allclose(phi[g].numpy(), [loop[k] for k in range(M)], rtol=0, atol=1e-12)
        assert phi[g].sum().item() == pytest.approx(games[g, -1])  # efficiency


@pytest.mark.parametrize("M", [2, 3, 4])
def test_batch_values_are_per_utterance_shapley_over_the_observed_modalities(M):
    rng = np.random.default_rng(10 + M)
    observed = torch.tensor(rng.random((9, M)) > 0.4)
    observed[0] = False  # an utterance with nothing observed
    utt, code = subset_rows(observed)
    correct = torch.tensor(rng.integers(0, 2, len(utt)), dtype=torch.float64)
    phi = batch_modality_values(correct, utt, code, observed)
    lookup = {(int(i), int(c)): float(v) for i, c, v in zip(utt, code, correct)}
    expected = np.zeros(M)
    for i in range(9):
        obs = [k for k in range(M) if observed[i, k]]
        assert sorted(int(c) for u, c in zip(utt, code) if u == i) == (
            sorted(sum(2**k for k in T) for r in range(1, len(obs) + 1) for T in itertools.combinations(obs, r))
            or [0])
        if obs:
            loop = _shapley_by_permutations(obs, lambda S: lookup[(i, sum(2**k for k in S))] if S else 0.0)
            for k, v in loop.items():
                expected[k] += v
    np.testing.assert_allclose(phi.numpy(), expected, atol=1e-12)


def _masked(batch, keep):
    return replace(batch, masks={m: k & (m in keep) for m, k in batch.masks.items()})


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_model_values_and_factors_against_a_loop_over_subset_batches(task):
    """Φ^m from the model's subset rows equals the Shapley value computed from separate forward
    passes with the other modalities masked out; b^m = max(0, U^m − Φ^m)/n^m with U^m from the
    frozen references; a^m = N/N^m."""
    M, mods = 3, list(DIMS[3])
    model = _model(M, task, dropout=0.0, attn_dropout=0.0)
    batch = _batch(M, task, seed=4)
    y = batch.targets
    model.set_stage("train")
    model.train()
    model(batch)
    got = model.last_values
    model.eval()

    def right(pred):
        return (pred.argmax(-1) == y) if task == "classification" else ((pred > 0) == (y > 0))

    with torch.no_grad():
        correct = {frozenset(S): right(model(_masked(batch, S)).prediction).double()
                   for r in range(1, M + 1) for S in itertools.combinations(mods, r)}
        model.set_stage("unimodal")
        ref = {m: right(model(_masked(batch, {m})).prediction).double() for m in mods}
    obs = batch.flat_masks()
    phi = dict.fromkeys(mods, 0.0)
    for i in range(len(y)):
        players = [m for m in mods if obs[m][i]]
        if players:
            loop = _shapley_by_permutations(players, lambda S: float(correct[frozenset(S)][i]) if S else 0.0)
            for m, v in loop.items():
                phi[m] += v
    for m in mods:
        n = int(obs[m].sum())
        upper = float((ref[m] * obs[m]).sum())
        assert got["shapley"][m] == pytest.approx(phi[m] / n, abs=1e-9)
        assert got["reference"][m] == pytest.approx(upper / n, abs=1e-9)
        assert got["b"][m] == pytest.approx(max(0.0, upper - phi[m]) / n, abs=1e-6)
        assert got["a"][m] == pytest.approx(len(y) / n, rel=1e-6)


# -- the auxiliary losses against a loop over subsets ------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_aux_loss_equals_a_loop_over_subsets_with_completion_targets_only_where_observed(task):
    M, mods = 3, list(DIMS[3])
    model = _model(M, task, dropout=0.0, attn_dropout=0.0)
    batch = _batch(M, task, seed=7, missing=0.5)
    model.set_stage("train")
    model.train()
    out = model(batch)
    vals = model.last_values
    obs = batch.flat_masks()
    y = batch.targets
    x = {m: batch.features[m][batch.valid] for m in mods}

    def loss(pred, target):
        return F.mse_loss(pred.squeeze(-1), target) if task == "regression" else F.cross_entropy(pred, target)

    def tokens(i, keep):  # r_i(T) by a direct pass of utterance i with only the modalities in keep
        z = torch.stack([model.encoders[m](x[m][i:i + 1])[0] * (m in keep) for m in mods])
        return model.inter(z[None], model.pos)[0]

    factor = {m: vals["a"][m] * vals["b"][m] for m in mods}
    sub = rec = 0.0
    counted, targets = 0, []
    for i in range(len(y)):
        O = [m for m in mods if obs[m][i]]
        if not O:
            continue
        counted += 1
        full = tokens(i, O)
        for r in range(1, len(O)):
            for T in itertools.combinations(O, r):
                rT = tokens(i, T)
                sub = sub + loss(model.classifier(rT.reshape(1, -1))[0], y[i:i + 1]) / (2 ** len(O) - 1)
                for m in O:
                    if m not in T:  # hide an observed modality and complete it
                        targets.append((i, m))
                        j = mods.index(m)
                        rec = rec + factor[m] * (rT[j] - full[j]).abs().mean() / (2 ** len(O) - 1)
    assert targets and all(bool(obs[m][i]) for i, m in targets)
    full_tokens = {i: tokens(i, [m for m in mods if obs[m][i]]) for i in range(len(y))}
    sep = 0.0
    for j, m in enumerate(mods):
        rows = [i for i in range(len(y)) if obs[m][i]]
        r_m = torch.stack([full_tokens[i][j] for i in rows])
        sep = sep + factor[m] * loss(model.unimodal_heads[m](r_m)[0], y[rows])
    expected = 1.0 * rec / counted + 1.0 * sep / M + 2.0 * sub / counted
    torch.testing.assert_close(out.aux_loss, expected, rtol=1e-5, atol=1e-6)


def test_a_modality_seen_only_alone_gets_no_completion_target():
    """Utterances with one observed modality have no proper subset: no subset or completion term."""
    model = _model(2, dropout=0.0, attn_dropout=0.0, sep_weight=0.0)
    batch = _batch(2, seed=2)
    one = {m: k & ~batch.masks["text"] if m == "audio" else k for m, k in batch.masks.items()}
    model.train()
    out = model(replace(batch, masks=one))
    assert out.aux_loss.item() == 0.0


# -- training ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_training_lowers_the_loss_in_both_stages(task):
    model = _model(3, task, dropout=0.0)
    batches = [_batch(3, task, seed=s, missing=0.3) for s in range(3)]
    for stage in ("unimodal", "train"):
        model.set_stage(stage)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        losses = []
        for step in range(90):
            b = batches[step % 3]
            out = model(b)
            task_loss = F.mse_loss(out.prediction, b.targets) if task == "regression" else F.cross_entropy(out.prediction, b.targets)
            total = task_loss + out.aux_loss
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(total.item())
        assert np.mean(losses[-6:]) < 0.6 * np.mean(losses[:6]), (stage, losses[:6], losses[-6:])


# -- balm train ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_dir(tmp_path_factory.mktemp("data"), "classification")


def _mce_config(data, **kw):
    opts = {**SMALL, "unimodal_epochs": 2}
    return base_config(data, backbone="mce", backbone_options=opts, epochs=2, early_stopping=0, seed=2,
                       tsne_samples=0, **kw)


def test_balm_train_records_the_stages(tiny, tmp_path):
    from balm.cli.main import main

    cfg = write_yaml(tmp_path / "mce.yaml", _mce_config(tiny))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [(s["name"], s["epochs"]) for s in res["stages"]] == [("unimodal", 2), ("train", 2)]
    assert [h["stage"] for h in res["history"]] == ["unimodal"] * 2 + ["train"] * 2
    for s, lo in zip(res["stages"], (0, 2)):
        wf1 = [h["dev_wf1"] for h in res["history"][lo:lo + 2]]
        assert s["best_epoch"] == lo + int(np.argmax(wf1))
    assert res["config"]["backbone"] == "mce"
    # the checkpoint rebuilds the model in its final stage: the same test scores
    from balm.experiments.evaluation import evaluate_split
    from balm.experiments.model import load_checkpoint
    from balm.experiments.prepare import prepare_data

    model = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert model.backbone.stage == "train"
    data = prepare_data(model.config)
    again = evaluate_split(model, data.dataset["test"], model.meta, 64, torch.device("cpu"))
    assert again["wf1"] == pytest.approx(res["test"]["wf1"]) and again["acc"] == pytest.approx(res["test"]["acc"])


def test_stage_selection_uses_dev_only(tiny, tmp_path):
    from balm.data.native import load_dataset
    from balm.experiments.config import Config
    from balm.experiments.trainer import train

    cfg = Config.from_dict(_mce_config(tiny))
    a = train(cfg, tmp_path / "a", quiet=True)
    ds = load_dataset(tiny)
    ds["test"].labels[:] = (ds["test"].labels + 1) % ds.num_classes
    b = train(cfg, tmp_path / "b", dataset=ds, quiet=True)
    strip = lambda r: [{k: v for k, v in s.items() if k != "seconds"} for s in r["stages"]]  # noqa: E731
    assert strip(a) == strip(b) and a["history"] == b["history"]
    assert a["test"]["wf1"] != b["test"]["wf1"]
    assert math.isfinite(a["test"]["wf1"])
