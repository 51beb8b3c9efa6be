"""MMIN: both stages' forward on 2/3/4 modalities and both tasks, masked-junk invariance, the
visible-set sampler, imagination targets only where observed (against a loop), stage switching
and the teacher, training lowers the loss, the parameter count."""

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
from backbone_batches import learnable_split as _learnable_split, random_batch

from balm.backbones.base import Stage
from balm.backbones.mmin import MMIN, ResidualAutoencoder, sample_visible
from balm.backbones.registry import build_backbone
from balm.data.batch import collate

MODALITY_SETS = {
    2: {"audio": 6, "text": 5},
    3: {"audio": 6, "visual": 4, "text": 5},
    4: {"audio": 6, "visual": 4, "text": 5, "depth": 3},
}
SMALL = dict(embed_dim=4, ae_layers=[8, 6, 3], n_blocks=2, cls_layers=[5, 5])


def small(dims, out_dim, **kw):
    torch.manual_seed(0)
    return build_backbone("mmin", dims, out_dim, **{**SMALL, **kw})


def junk_batch(batch, seed=99):
    """Features replaced by large random junk wherever a modality is missing (and at padding)."""
    g = torch.Generator().manual_seed(seed)
    feats = {m: torch.where(batch.masks[m][..., None], x, 100 * torch.randn(x.shape, generator=g))
             for m, x in batch.features.items()}
    return replace(batch, features=feats)


def task_loss(pred, y, out_dim):
    return F.cross_entropy(pred, y) if out_dim > 1 else F.mse_loss(pred, y)


@pytest.mark.parametrize("stage", ["pretrain", "train"])
@pytest.mark.parametrize("task,out_dim", [("classification", 3), ("regression", 1)])
@pytest.mark.parametrize("M", sorted(MODALITY_SETS))
def test_forward_shapes_and_contract_in_each_stage(M, task, out_dim, stage):
    dims = MODALITY_SETS[M]
    model = small(dims, out_dim)
    model.set_stage(stage)
    batch = random_batch(dims, [4, 1, 6], seed=M, task=task, num_classes=3)
    N = 11
    model.train()
    out = model(batch)
    assert out.prediction.shape == ((N, 3) if out_dim > 1 else (N,))
    assert set(out.embeddings) == set(dims) and all(z.shape == (N, 4) for z in out.embeddings.values())
    assert out.fused.shape == (N, model.fusion_head.in_features) == (N, 5)
    if stage == "pretrain":
        assert out.aux_loss is None and model.fusion_head is model.pre_classifier.head
    else:
        assert out.aux_loss.shape == () and out.aux_loss > 0 and model.fusion_head is model.classifier.head
    # a missing modality's embedding is exactly zero; an observed one is the encoder's output
    flat = batch.flat_masks()
    model.eval()
    with torch.no_grad():
        out = model(batch)
        for m in dims:
            z = out.embeddings[m]
            assert (z[~flat[m]] == 0).all()
            torch.testing.assert_close(z[flat[m]], model.encoders[m](batch.features[m][batch.valid][flat[m]]))
        assert out.aux_loss is None
        head = model.fusion_head(out.fused)
    torch.testing.assert_close(out.prediction, head if out_dim > 1 else head.squeeze(-1))


@pytest.mark.parametrize("stage", ["pretrain", "train"])
@pytest.mark.parametrize("M", [2, 3, 4])
def test_junk_in_missing_features_changes_nothing(M, stage):
    """Outputs, aux loss, task loss and every gradient are identical with junk where masks are False."""
    dims = MODALITY_SETS[M]
    model = small(dims, 3, dropout=0.2, pretrain_dropout=0.2, encoder_dropout=0.1)
    model.set_stage(stage)
    batch = random_batch(dims, [5, 3, 7, 2], seed=10 + M, missing=0.5, num_classes=3)
    junk = junk_batch(batch)
    assert not torch.equal(junk.features["audio"], batch.features["audio"])
    for training in (True, False):
        model.train(training)
        results = []
        for b in (batch, junk):
            model.zero_grad()
            torch.manual_seed(5)
            out = model(b)
            loss = task_loss(out.prediction, b.targets, 3)
            if out.aux_loss is not None:
                loss = loss + out.aux_loss
            if training:
                loss.backward()
            grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
            results.append((out, loss.detach(), grads))
        (a, la, ga), (b_, lb, gb) = results
        assert torch.equal(a.prediction, b_.prediction) and torch.equal(a.fused, b_.fused)
        assert all(torch.equal(a.embeddings[m], b_.embeddings[m]) for m in dims)
        assert torch.equal(la, lb)
        assert (a.aux_loss is None) == (b_.aux_loss is None)
        if a.aux_loss is not None:
            assert torch.equal(a.aux_loss, b_.aux_loss)
        for x, y in zip(ga, gb):
            assert (x is None and y is None) or torch.equal(x, y)


def test_sample_visible_is_uniform_over_nonempty_observed_subsets():
    torch.manual_seed(0)
    observed = torch.tensor([[True, True, True, False], [False, True, False, False], [False] * 4,
                             [True, False, True, True], [True, True, False, False]])
    reps = 14000
    draws = sample_visible(observed.repeat(reps, 1)).view(reps, 5, 4)
    assert not (draws & ~observed).any()  # never a missing modality
    assert (draws[:, 1] == observed[1]).all() and not draws[:, 2].any()  # one observed: itself; none: empty
    for row in (0, 3, 4):
        obs = observed[row].nonzero().flatten().tolist()
        subsets = [s for r in range(1, len(obs) + 1) for s in itertools.combinations(obs, r)]
        counts = {s: 0 for s in subsets}
        for v in draws[:, row]:
            counts[tuple(v.nonzero().flatten().tolist())] += 1  # KeyError if empty or outside O
        p = 1 / len(subsets)
        sd = math.sqrt(reps * p * (1 - p))
        assert all(abs(c - reps * p) < 5 * sd for c in counts.values()), counts


def test_imagination_targets_and_aux_loss_use_observed_utterances_only():
    """Against a loop over utterances and modalities: targets are the teacher's encoding of the
    hidden (observed, not visible) modalities; the forward loss sums over observed slots only."""
    dims = MODALITY_SETS[3]
    model = small(dims, 3, mse_weight=1.5, cycle_weight=0.7)
    model.set_stage("pretrain")
    with torch.no_grad():  # the student drifts from the teacher, so the two differ
        for p in model.encoders.parameters():
            p.add_(0.3 * torch.randn_like(p))
    model.set_stage("train")
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = random_batch(dims, [6, 4, 5], seed=3, missing=0.45, num_classes=3)
    flat, valid = batch.flat_masks(), batch.valid
    x = {m: batch.features[m][valid] for m in dims}
    observed = torch.stack([flat[m] for m in dims], -1)
    model.train()
    torch.manual_seed(11)
    visible = sample_visible(observed)
    assert (observed & ~visible).any() and (~observed).any()
    torch.manual_seed(11)
    out = model(batch)

    mods = list(dims)
    with torch.no_grad():
        h = torch.cat([torch.where(visible[:, j:j + 1], model.encoders[m](x[m]), 0.0) for j, m in enumerate(mods)], -1)
        r, _ = model.cra(h)
        c, _ = model.cra_back(r)
        target = model.imagination_targets(x, observed, visible)
        fwd_sum, fwd_n = 0.0, 0
        for i in range(h.shape[0]):
            for j, m in enumerate(mods):
                sl = slice(4 * j, 4 * j + 4)
                if visible[i, j] or not observed[i, j]:
                    want = torch.zeros(4)
                else:
                    want = model.teacher[m](x[m][i])
                torch.testing.assert_close(target[i, sl], want)
                if observed[i, j]:
                    fwd_sum += float(((r[i, sl] - want) ** 2).sum())
                    fwd_n += 4
        cyc = float(((c - h) ** 2).sum()) / h.numel()
    expected = 1.5 * fwd_sum / fwd_n + 0.7 * cyc
    assert out.aux_loss.item() == pytest.approx(expected, rel=1e-5)
    # and it is not the loss over every slot (which would use the missing modalities' slots)
    with torch.no_grad():
        every = 1.5 * float(((r - target) ** 2).mean()) + 0.7 * cyc
    assert abs(every - expected) > 1e-3
    # a hidden observed modality's features are a target: changing them changes the loss
    hidden = observed & ~visible
    j = int(hidden.any(0).nonzero()[0])
    m = mods[j]
    feats = dict(batch.features)
    feats[m] = feats[m] + 1.0 * batch.masks[m][..., None]
    torch.manual_seed(11)
    assert model(replace(batch, features=feats)).aux_loss.item() != pytest.approx(expected, rel=1e-5)


def test_stages_freezing_and_the_teacher():
    dims = MODALITY_SETS[2]
    model = small(dims, 3)
    assert model.stages() == (Stage("pretrain", 20, 2e-4), Stage("train", None, 2e-4))
    assert small(dims, 3, pretrain_epochs=0, train_lr=None).stages() == (Stage("train", None, None),)
    assert model.stage == "train"  # a fresh model (and a reloaded checkpoint) predicts as after training

    def trainable(part):
        return {p.requires_grad for p in part.parameters()}

    model.set_stage("pretrain")
    assert trainable(model.encoders) == {True} and trainable(model.pre_classifier) == {True}
    assert trainable(model.cra) == trainable(model.cra_back) == trainable(model.classifier) == {False}
    assert trainable(model.teacher) == {False} and not bool(model.teacher_ready)
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(1.0)
    model.set_stage("train")
    assert trainable(model.encoders) == trainable(model.cra) == trainable(model.classifier) == {True}
    assert trainable(model.pre_classifier) == {False} and trainable(model.teacher) == {False}
    for m in dims:  # the teacher is the encoders as pretrained
        for a, b in zip(model.teacher[m].parameters(), model.encoders[m].parameters()):
            assert torch.equal(a, b) and a is not b
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.encoders.parameters():
            p.add_(1.0)
    model.set_stage("train")  # again, as after a resume: the teacher is not replaced
    for m in dims:
        for a, b in zip(model.teacher[m].parameters(), model.encoders[m].parameters()):
            assert not torch.equal(a, b)
    fresh = small(dims, 3)
    fresh.load_state_dict(state)
    fresh.set_stage("train")
    for k in state:
        if k.startswith("teacher."):
            assert torch.equal(fresh.state_dict()[k], state[k])
    with pytest.raises(ValueError, match="stages"):
        model.set_stage("experts")


@pytest.mark.parametrize("bad,match", [
    (dict(ae_layers="256,x"), "ae_layers"), (dict(cls_layers=[]), "cls_layers"),
    (dict(pretrain_epochs=-1), "pretrain_epochs"),
    (dict(dropout=1.0), "dropout"), (dict(pretrain_lr=0.0), "pretrain_lr"), (dict(mse_weight=-1.0), "mse_weight"),
])
def test_bad_options_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        MMIN(MODALITY_SETS[2], 3, **bad)
    with pytest.raises(ValueError, match="two modalities"):
        MMIN({"audio": 3}, 3)


def test_string_layers_as_in_the_public_scripts():
    model = MMIN(MODALITY_SETS[2], 3, ae_layers="256,128,64", n_blocks=5, cls_layers="128,128")
    assert model.cra.latent_dim == 320 and model.classifier.head.in_features == 128


def test_residual_autoencoder_matches_its_equations():
    torch.manual_seed(1)
    ae = ResidualAutoencoder(6, [5, 3], 3)
    h = torch.randn(4, 6)
    s, delta, latents = h, torch.zeros(4, 6), []
    for k in range(3):
        s = s + delta
        e1, _, e2 = ae.enc[k]
        d1, _, d2 = ae.dec[k]
        latent = e2(F.leaky_relu(e1(s)))
        delta = d2(F.relu(d1(latent)))
        latents.append(latent)
    t1, _, t2 = ae.transition
    r, lat = ae(h)
    torch.testing.assert_close(r, t2(F.relu(t1(s + delta))))
    torch.testing.assert_close(lat, torch.cat(latents, -1))


def learnable_split(task, seed=0):
    return _learnable_split(MODALITY_SETS[3], task, seed)


@pytest.mark.parametrize("task,out_dim", [("classification", 3), ("regression", 1)])
def test_both_stages_lower_their_loss(task, out_dim):
    """The trainer's rules: per stage a fresh Adam over what requires grad, loss = task + aux."""
    dims = MODALITY_SETS[3]
    model = small(dims, out_dim, embed_dim=12, cls_layers=[16, 16], dropout=0.0, pretrain_dropout=0.0)
    split = learnable_split(task)
    batches = [collate(split, idx) for idx in ([0, 1, 2, 3], [4, 5, 6, 7])]

    def losses(with_aux):
        torch.manual_seed(3)
        model.train(with_aux)  # the aux loss exists in training mode only
        total = 0.0
        with torch.no_grad():
            for b in batches:
                out = model(b)
                total += float(task_loss(out.prediction, b.targets, out_dim))
                total += 0.0 if out.aux_loss is None else float(out.aux_loss)
        return total / 2

    for stage in ("pretrain", "train"):
        model.set_stage(stage)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
        start_task, start_all = losses(False), losses(True)
        for step in range(40):
            model.train()
            b = batches[step % 2]
            out = model(b)
            loss = task_loss(out.prediction, b.targets, out_dim)
            if out.aux_loss is not None:
                loss = loss + out.aux_loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        end_task = losses(False)
        assert end_task < 0.8 * start_task, stage
        if stage == "train":
            assert losses(True) < 0.8 * start_all
        for n, p in model.named_parameters():  # what the stage froze did not move
            if n in frozen:
                assert torch.equal(p, frozen[n]), n


def _count(*shapes):
    return sum(i * o + o for i, o in shapes)


def test_parameter_count_with_iemocap_dims():
    """Published configuration (CAP_mmin.sh), IEMOCAP features audio 1582, text 1024, visual 342, 6 classes."""
    dims = {"audio": 1582, "text": 1024, "visual": 342}
    model = MMIN(dims, 6)
    D = 3 * 128
    enc = _count((1582, 128), (1024, 128), (342, 128))
    block = _count((D, 256), (256, 128), (128, 64), (64, 128), (128, 256), (256, D))
    cra = 5 * block + _count((D, D), (D, D))
    cls = _count((320, 128), (128, 128), (128, 6))
    pre = _count((D, 128), (128, 128), (128, 6))

    def n(part):
        return sum(p.numel() for p in part.parameters())

    assert n(model.encoders) == enc == 377_728
    assert n(model.cra) == n(model.cra_back) == cra
    assert n(model.classifier) == cls and n(model.pre_classifier) == pre and n(model.teacher) == enc
    assert n(model) == 2 * enc + 2 * cra + cls + pre
    model.set_stage("train")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == enc + 2 * cra + cls
    shared = MMIN(dims, 6, share_weight=True)
    assert n(shared) == 2 * enc + cra + cls + pre


# ----- through the trainer (balm train) -----------------------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from exp_helpers import base_config, tiny_dir, write_yaml  # noqa: E402

TRAIN_OPTIONS = {"embed_dim": 8, "ae_layers": [16, 8], "n_blocks": 2, "cls_layers": [16, 16], "pretrain_epochs": 3,
                 "pretrain_lr": 0.01, "train_lr": 0.003}


def mmin_config(data, **kw):
    return base_config(data, backbone="mmin", backbone_options=TRAIN_OPTIONS, epochs=2, early_stopping=0, seed=3, **kw)


def test_balm_train_runs_both_stages_and_selects_each_on_dev(tmp_path):
    from balm.cli.main import main

    data = tiny_dir(tmp_path, "classification")
    cfg = write_yaml(tmp_path / "mmin.yaml", mmin_config(data))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    st = res["stages"]
    assert [s["name"] for s in st] == ["pretrain", "train"] and [s["epochs"] for s in st] == [3, 2]
    assert [h["stage"] for h in res["history"]] == ["pretrain"] * 3 + ["train"] * 2
    for s, lo, hi in ((st[0], 0, 3), (st[1], 3, 5)):
        wf1 = [h["dev_wf1"] for h in res["history"][lo:hi]]
        assert s["best_epoch"] == lo + int(np.argmax(wf1)) and s["dev"]["wf1"] == pytest.approx(max(wf1))
    assert res["best_epoch"] == st[1]["best_epoch"]
    lines = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [x["stage"] for x in lines if x["kind"] == "epoch"] == ["pretrain"] * 3 + ["train"] * 2
    # the checkpoint, loaded into a fresh model (stage "train"), reproduces the run's test metrics
    from balm.experiments.evaluation import evaluate_split
    from balm.experiments.model import load_checkpoint
    from balm.experiments.prepare import prepare_data

    model = load_checkpoint(tmp_path / "run" / "checkpoint.pt", device="cpu")
    assert model.backbone.stage == "train" and bool(model.backbone.teacher_ready)
    test = evaluate_split(model, prepare_data(model.config).dataset["test"], model.meta, 64, torch.device("cpu"))
    assert test["acc"] == res["test"]["acc"] and test["wf1"] == res["test"]["wf1"]


def test_stage_choices_do_not_depend_on_test_labels(tmp_path):
    from balm.data.native import load_dataset
    from balm.experiments.config import Config
    from balm.experiments.trainer import train

    data = tiny_dir(tmp_path, "classification")
    cfg = Config.from_dict(mmin_config(data))
    a = train(cfg, tmp_path / "a", quiet=True)
    ds = load_dataset(data)
    ds["test"].labels[:] = (ds["test"].labels + 1) % ds.num_classes
    b = train(cfg, tmp_path / "b", dataset=ds, quiet=True)
    strip = lambda r: [{k: v for k, v in s.items() if k != "seconds"} for s in r["stages"]]  # noqa: E731
    assert strip(a) == strip(b) and a["history"] == b["history"]
    assert a["test"]["wf1"] != b["test"]["wf1"]


def test_balm_train_regression_and_method_must_be_none(tmp_path):
    from balm.experiments.config import Config, ConfigError
    from balm.experiments.trainer import train

    data = tiny_dir(tmp_path, "regression")
    res = train(Config.from_dict(mmin_config(data, rates=None)), tmp_path / "run", quiet=True)
    assert [s["name"] for s in res["stages"]] == ["pretrain", "train"] and res["task"] == "regression"
    with pytest.raises(ConfigError) as err:
        train(Config.from_dict(mmin_config(data, rates=None, method="balm")), tmp_path / "bad", quiet=True)
    assert err.value.key == "method"


def test_the_teacher_is_the_best_pretrain_state_and_survives_a_resume(tmp_path, monkeypatch):
    from balm.experiments import trainer as trainer_mod
    from balm.experiments.config import Config

    seen, states = {}, {}
    real = trainer_mod.build_model

    def build(*a, **kw):
        seen["model"], rb = real(*a, **kw)
        return seen["model"], rb

    monkeypatch.setattr(trainer_mod, "build_model", build)

    def keep(epoch):
        states[epoch] = {k: v.clone() for k, v in seen["model"].backbone.encoders.state_dict().items()}

    data = tiny_dir(tmp_path, "classification")
    cfg = Config.from_dict(mmin_config(data))
    whole = trainer_mod.train(cfg, tmp_path / "whole", quiet=True, after_epoch=keep)
    best = states[whole["stages"][0]["best_epoch"]]
    teacher = seen["model"].backbone.teacher.state_dict()
    assert set(teacher) == set(best) and all(torch.equal(teacher[k], best[k]) for k in best)
    assert not all(torch.equal(states[4][k], best[k]) for k in best)  # the student moved on

    class Stop(Exception):
        pass

    def kill(epoch):
        if epoch == 3:  # the first epoch of stage "train"
            raise Stop

    monkeypatch.setattr(trainer_mod, "CHECKPOINT_RATIO", 0.0)  # a resume checkpoint after every epoch
    with pytest.raises(Stop):
        trainer_mod.train(cfg, tmp_path / "cut", quiet=True, after_epoch=kill)
    resumed = trainer_mod.train(cfg, tmp_path / "cut", quiet=True, resume=True)
    assert resumed["test"] == whole["test"] and resumed["history"] == whole["history"]
    teacher_after = seen["model"].backbone.teacher.state_dict()
    assert all(torch.equal(teacher_after[k], best[k]) for k in best)
