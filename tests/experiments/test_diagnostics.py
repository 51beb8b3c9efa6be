"""Diagnostics of a trained model: Shapley values (against hand-computed games and a plain loop
over orderings), masked evaluation, per-utterance predictions, unimodal head accuracy."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from balm.data.batch import collate
from balm.experiments import diagnostics as DG


def _game(weights, pair_bonus, grand_bonus, players):
    """v(S) = Σ_{i∈S} w_i + pair_bonus·[a, b ∈ S] + grand_bonus·[S = N]."""
    v = {}
    for s in DG.subsets(players):
        s = frozenset(s)
        v[s] = sum(weights[p] for p in s) + pair_bonus * ({"a", "b"} <= s) + grand_bonus * (len(s) == len(players))
    return v


def test_shapley_values_of_a_hand_computed_three_player_game():
    players = ["a", "b", "c"]
    v = _game({"a": 1.0, "b": 2.0, "c": 0.0}, 2.0, 3.0, players)
    # by hand: own weight + half the pair bonus (a, b) + a third of the grand bonus
    phi = DG.shapley_values(players, v)
    assert phi == pytest.approx({"a": 1 + 1 + 1, "b": 2 + 1 + 1, "c": 0 + 0 + 1})
    assert sum(phi.values()) == pytest.approx(v[frozenset(players)] - v[frozenset()])  # efficiency: 8


def test_shapley_values_equal_the_mean_marginal_contribution_over_orderings():
    players = ["audio", "text", "visual", "extra"]
    rng = np.random.default_rng(0)
    v = {frozenset(s): float(rng.normal()) for s in DG.subsets(players)}
    v[frozenset()] = 0.25
    phi = DG.shapley_values(players, v)
    loop = {p: 0.0 for p in players}
    orders = list(itertools.permutations(players))
    for order in orders:
        seen = frozenset()
        for p in order:
            loop[p] += (v[seen | {p}] - v[seen]) / len(orders)
            seen = seen | {p}
    assert phi == pytest.approx(loop, abs=1e-12)
    assert sum(phi.values()) == pytest.approx(v[frozenset(players)] - 0.25)
    with pytest.raises(ValueError, match="undefined"):
        DG.shapley_values(players, {k: x for k, x in v.items() if len(k) != 2})


def test_subsets_and_patterns():
    assert DG.subsets(["a", "b"]) == [(), ("a",), ("b",), ("a", "b")]
    assert len(DG.subsets(list("abcde"))) == 2 ** 5
    pat = DG.pattern_of({"audio": np.array([1, 0, 1, 0], bool), "text": np.array([1, 1, 0, 0], bool)})
    assert pat.tolist() == ["audio+text", "text", "audio", "∅"]
    # scores per pattern: utterances 0 and 2 right, 1 and 3 wrong (classification, logits arg-maxed)
    y = np.array([0, 1, 1, 0])
    logits = np.array([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    sc = DG.pattern_scores("classification", y, logits, np.array(["p", "p", "q", "q"], dtype=object), 2)
    assert sc["p"]["n"] == 2 and sc["p"]["acc"] == 0.5 and sc["q"]["acc"] == 0.5


def test_absent_zeroes_features_and_masks_of_the_named_modalities_only(tiny_data):
    from balm.data.native import load_dataset

    split = load_dataset(tiny_data)["test"]
    batch = collate(split, [0, 1, 2])
    out = DG.absent(batch, ["text"])
    assert not out.masks["text"].any() and float(out.features["text"].abs().sum()) == 0.0
    for m in ("audio", "visual"):
        assert torch.equal(out.masks[m], batch.masks[m]) and torch.equal(out.features[m], batch.features[m])
    assert torch.equal(out.valid, batch.valid) and DG.absent(batch, []) is batch


def test_trained_run_writes_predictions_and_efficient_shapley_values(balm_run):
    cfg, out, result = balm_run
    sh = result["shapley"]
    mods = result["dataset"]["used_modalities"]
    assert sh["metric"] == "wf1" and set(sh["values"]) == set(mods) and len(sh["subsets"]) == 2 ** len(mods)
    # v(all) is the test W-F1 of the selected model; efficiency: Σ φ = v(all) − v(∅)
    full = "+".join(mods)
    assert sh["subsets"][full] == pytest.approx(result["test"]["wf1"], abs=1e-12)
    assert sum(sh["values"].values()) == pytest.approx(sh["subsets"][full] - sh["subsets"]["∅"], abs=1e-12)
    # the values follow from the stored subset values by the Shapley formula
    v = {frozenset(k.split("+")) if k != "∅" else frozenset(): x for k, x in sh["subsets"].items()}
    assert sh["values"] == pytest.approx(DG.shapley_values(mods, v))
    assert json.loads((out / "result.json").read_text())["files"]["predictions"] == "predictions.npz"
    with np.load(out / "predictions.npz") as z:
        y, pred = z["targets"], z["predictions"]
        masks = {m: z[f"mask_{m}"] for m in mods}
    assert y.shape[0] == pred.shape[0] == result["dataset"]["sizes"]["test"]["utterances"]
    assert float((pred.argmax(1) == y).mean()) == pytest.approx(result["test"]["acc"], abs=1e-12)
    # the masks are the test split's availability after masking (realised rates)
    for m in mods:
        assert 1 - masks[m].mean() == pytest.approx(result["realised_rates"]["test"][m], abs=1e-9)


def test_head_accuracy_is_logged_per_epoch_for_methods_with_heads(balm_run):
    _, out, result = balm_run
    mods = result["dataset"]["used_modalities"]
    epochs = [json.loads(l) for l in open(out / "stats.jsonl") if '"kind":"epoch"' in l]
    assert len(epochs) == len(result["history"]) == 3
    for e, h in zip(epochs, result["history"]):
        assert set(e["dev_head_acc"]) == set(mods) and e["dev_head_acc"] == h["dev_head_acc"]
        assert all(0.0 <= a <= 1.0 for a in e["dev_head_acc"].values())


class _Identity(nn.Module):
    """A 'backbone' whose encoder output z^m is the utterance's features of m."""

    def forward(self, batch):
        from types import SimpleNamespace

        return SimpleNamespace(embeddings={m: x[batch.valid] for m, x in batch.features.items()})


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Identity()

    def calibrate(self, batch):
        return batch


def test_head_accuracy_against_a_plain_loop(tiny_data):
    from balm.data.native import load_dataset

    ds = load_dataset(tiny_data)
    split = ds["test"]
    c = ds.num_classes
    torch.manual_seed(0)
    reb = nn.Module()
    reb.heads = nn.ModuleDict({m: nn.Linear(x.shape[1], c) for m, x in split.features.items()})
    meta = {"task": "classification", "num_classes": c}
    acc = DG.head_accuracy(_Model(), reb, split, meta, 4, torch.device("cpu"))
    mask = split.mask if split.mask is not None else np.ones((split.labels.size, len(split.features)), bool)
    for j, (m, x) in enumerate(split.features.items()):
        keep = mask[:, j]
        with torch.no_grad():
            pred = reb.heads[m](torch.from_numpy(x[keep]).float()).argmax(1).numpy()
        assert acc[m] == pytest.approx(float((pred == split.labels[keep]).mean()), abs=1e-12)
    assert DG.head_accuracy(_Model(), None, split, meta, 4, torch.device("cpu")) is None
    assert DG.head_accuracy(_Model(), nn.Module(), split, meta, 4, torch.device("cpu")) is None


@pytest.mark.parametrize("method,task", [("balm", "classification"), ("balm", "regression"), ("none", "classification")])
def test_one_pass_dev_evaluation_equals_the_two_separate_passes(tmp_path, method, task):
    """evaluate_with_heads (the trainer's per-epoch dev evaluation) gives exactly the metrics of
    evaluate_split and the head accuracies of head_accuracy, on a model whose heads have been trained."""
    from balm.experiments.config import Config
    from balm.experiments.evaluation import evaluate_split
    from balm.experiments.model import build_model, model_meta
    from balm.experiments.prepare import prepare_data
    from exp_helpers import base_config, tiny_dir

    cfg = Config.from_dict(base_config(tiny_dir(tmp_path, task), method=method, epochs=1, seed=2))
    data = prepare_data(cfg)
    meta, dev, cpu = model_meta(data), data.dataset["dev"], torch.device("cpu")
    torch.manual_seed(0)
    model, reb = build_model(cfg, meta, cpu)
    if reb is not None:  # one head step so that the heads are not at their initialisation
        batch = collate(data.dataset["train"], np.arange(4))
        out = model(batch)
        out.prediction.float().square().mean().backward()
        reb.rebalance_(out.embeddings, out.prediction.detach(), batch.targets, batch.flat_masks())
    model.train()
    metrics, heads = DG.evaluate_with_heads(model, reb, dev, meta, 3, cpu)
    assert model.training is False and (reb is None or reb.training)
    assert metrics == evaluate_split(model, dev, meta, 3, cpu)
    assert heads == DG.head_accuracy(model, reb, dev, meta, 3, cpu)
    assert (heads is None) == (method == "none")
    if heads is not None:
        assert set(heads) == set(data.modalities) and all(0.0 <= a <= 1.0 for a in heads.values())
