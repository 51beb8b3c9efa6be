"""The training loop: determinism, model selection, outputs, modality subsets, early stopping, regression."""

import json

import numpy as np
import pytest
import torch

from balm.experiments import metrics as MX
from balm.experiments.config import Config
from balm.experiments.evaluation import predict
from balm.experiments.model import load_checkpoint
from balm.experiments.prepare import prepare_data
from balm.experiments.trainer import train
from exp_helpers import base_config


def _read_stats(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_same_seed_same_numbers_other_seed_differs(tiny_data, tmp_path, balm_run):
    cfg, out, first = balm_run
    second = train(cfg, tmp_path / "again", quiet=True)
    for key in ("test", "dev", "history", "best_epoch", "realised_rates"):
        assert second[key] == first[key], key
    steps_a = [r for r in _read_stats(out / "stats.jsonl") if r["kind"] == "step"]
    steps_b = [r for r in _read_stats(tmp_path / "again" / "stats.jsonl") if r["kind"] == "step"]
    assert [r["mu"] for r in steps_a] == [r["mu"] for r in steps_b]
    other = train(cfg.replace(seed=4), tmp_path / "other", quiet=True)
    assert other["history"] != first["history"]


def test_model_selection_uses_best_dev_wf1(balm_run):
    _, _, res = balm_run
    dev = [h["dev_wf1"] for h in res["history"]]
    assert res["best_epoch"] == int(np.argmax(dev))  # first maximum
    assert res["dev"]["wf1"] == pytest.approx(max(dev))
    assert len(res["epoch_seconds"]) == res["epochs_run"] == 3


def test_result_schema_and_files(balm_run):
    cfg, out, res = balm_run
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["test"] == res["test"] and on_disk["status"] == "finished"
    assert set(on_disk["versions"]) == {"balm", "torch", "numpy", "python"}
    assert on_disk["config"] == cfg.to_dict()
    rep = on_disk["test"]["report"]
    assert rep["weighted avg"]["f1"] == pytest.approx(on_disk["test"]["wf1"])
    assert sum(rep[c]["support"] for c in on_disk["dataset"]["label_names"]) == on_disk["test"]["n"]
    # realised rates: within the operator's bound of the requested ones on every split
    for split, rates in on_disk["realised_rates"].items():
        for m, r in rates.items():
            want = on_disk["requested_rates"][m]
            assert r <= want + 1e-9 and want - r <= 0.5 * 0.7 * 0.3 / 3 + 8 / on_disk["dataset"]["sizes"][split]["utterances"] + 1e-9
    stats = _read_stats(out / "stats.jsonl")
    steps = [r for r in stats if r["kind"] == "step"]
    epochs = [r for r in stats if r["kind"] == "epoch"]
    assert len(epochs) == 3 and [e["epoch"] for e in epochs] == [0, 1, 2]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    mods = {"audio", "text", "visual"}
    for s in steps:
        for stat in ("kl", "delta", "mu", "cos", "grad_norm_before", "grad_norm_after", "encoder_grad_norm"):
            assert set(s[stat]) == mods
    # the trainer's own encoder gradient norm is the rebalancer's norm before scaling
    for s in steps:
        for m in mods:
            assert s["encoder_grad_norm"][m] == pytest.approx(s["grad_norm_before"][m], rel=1e-5)
    # epoch means of the per-step norms
    for e in epochs:
        rows = [s for s in steps if s["epoch"] == e["epoch"]]
        for m in mods:
            assert e["encoder_grad_norm"][m] == pytest.approx(np.mean([s["encoder_grad_norm"][m] for s in rows]))
    sample = np.load(out / "tsne.npz")
    assert sample["fused"].shape[0] == sample["labels"].shape[0] == 30
    assert sample["input_audio"].shape == (30, 24) and sample["embed_text"].shape == (30, 16)
    # calibrated inputs stay exactly zero where a modality is missing
    for m in mods:
        missing = ~sample[f"mask_{m}"]
        assert missing.any() and np.all(sample[f"input_{m}"][missing] == 0)


def test_tensorboard_events_written(tiny_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = Config.from_dict(base_config(tiny_data, method="balm-d", epochs=2, tensorboard=True))
    res = train(cfg, tmp_path, quiet=True)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "epoch/dev_wf1" in tags and "train/mu/audio" in tags
    assert [e.value for e in acc.Scalars("epoch/dev_wf1")] == pytest.approx([h["dev_wf1"] for h in res["history"]])


def test_modality_subset_drops_other_modalities(tiny_data, tmp_path):
    cfg = Config.from_dict(base_config(tiny_data, method="balm", modalities="AL", epochs=1))
    res = train(cfg, tmp_path, quiet=True)
    assert res["dataset"]["used_modalities"] == ["audio", "text"]
    assert set(res["realised_rates"]["train"]) == {"audio", "text", "visual"}
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    assert set(model.backbone.encoders) == {"audio", "text"}
    step = json.loads(open(tmp_path / "stats.jsonl").readline())
    assert set(step["mu"]) == {"audio", "text"}


def test_early_stopping_stops(tiny_data, tmp_path):
    cfg = Config.from_dict(base_config(tiny_data, epochs=12, early_stopping=1, lr=1e-6))
    res = train(cfg, tmp_path, quiet=True)
    dev = [h["dev_wf1"] for h in res["history"]]
    # stopped at the first epoch that did not beat the best so far
    stop = next(i for i in range(1, len(dev) + 1) if i == len(dev) or dev[i] <= max(dev[:i]))
    assert res["epochs_run"] == min(stop + 1, 12) and res["stopped_early"] == (res["epochs_run"] < 12)


def test_regression_binary_protocol(tiny_regression, tmp_path):
    cfg = Config.from_dict(base_config(tiny_regression, method="balm", epochs=2, batch_size=8))
    res = train(cfg, tmp_path, quiet=True)
    model = load_checkpoint(tmp_path / "checkpoint.pt")
    data = prepare_data(model.config)
    y, scores = predict(model, data.dataset["test"], 16, torch.device("cpu"))
    assert scores.ndim == 1
    keep = y != 0
    t, p = (y[keep] > 0).astype(int), (scores[keep] > 0).astype(int)
    assert res["test"]["n"] == keep.sum()
    assert res["test"]["acc"] == pytest.approx(MX.accuracy(t, p))
    assert res["test"]["wf1"] == pytest.approx(MX.weighted_f1(t, p, 2))
    assert res["task"] == "regression"


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_backbone_aux_loss_is_added_to_the_task_loss(tiny_data, tmp_path, weight):
    opts = {"enc_dim": 8, "gat_hidden": 4, "reconstruction": weight}
    cfg = Config.from_dict(base_config(tiny_data, backbone="micga", backbone_options=opts, method="none", epochs=1,
                                       tsne_samples=0))
    train(cfg, tmp_path, quiet=True)
    steps = [s for s in _read_stats(tmp_path / "stats.jsonl") if s["kind"] == "step"]
    assert steps
    for s in steps:
        if weight == 0.0:
            assert s["loss"] == s["task_loss"]
        else:  # the reconstruction term of the observed entries is positive
            assert s["loss"] > s["task_loss"]
