"""The model: checkpoint round trip, method options reaching the built rebalancer."""

import pytest
import torch

from balm.experiments.config import Config
from balm.experiments.evaluation import evaluate_split
from balm.experiments.model import build_model, load_checkpoint, model_meta
from balm.experiments.prepare import prepare_data
from balm.experiments.trainer import train
from exp_helpers import base_config


def test_checkpoint_reloads_and_reproduces_test_metrics(balm_run):
    cfg, out, res = balm_run
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["config"] == cfg.to_dict()
    model = load_checkpoint(out / "checkpoint.pt")
    data = prepare_data(model.config)
    again = evaluate_split(model, data.dataset["test"], model.meta, 8, torch.device("cpu"))
    assert again["acc"] == res["test"]["acc"] and again["wf1"] == res["test"]["wf1"]
    assert again["report"] == res["test"]["report"]


@pytest.mark.parametrize("variant, options, stat", [("ogm-ge", {"alpha": 0.3}, "alpha"), ("cggm", {"lam": 0.5}, "lam")])
def test_baselines_train_with_their_own_options(tmp_path, tiny_data, variant, options, stat):
    cfg = Config.from_dict(base_config(tiny_data, method=variant, method_options=options, epochs=1))
    _, rebalancer = build_model(cfg, model_meta(prepare_data(cfg)), torch.device("cpu"))
    assert getattr(rebalancer, stat) == next(iter(options.values()))
    result = train(cfg, tmp_path / variant)
    assert result["config"]["method"] == variant and 0.0 <= result["test"]["wf1"] <= 1.0
