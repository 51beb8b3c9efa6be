"""The trainer's multi-stage schedules (balm.backbones.Stage): fresh optimizer per stage over what
the stage trains, best-on-dev state carried into the next stage, stages in result.json and the
logs, selection on dev only, resume across a stage boundary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from balm.backbones import Stage, backbone_stages
from balm.data.native import load_dataset
from balm.experiments import trainer as trainer_mod
from balm.experiments.config import Config, ConfigError
from balm.experiments.trainer import train
from exp_helpers import base_config

TOY = "staged_toy:TwoStage"


def _cfg(data, **kw):
    kw.setdefault("backbone_options", {"hidden": 8, "pretrain_epochs": 3})
    return Config.from_dict(base_config(data, backbone=TOY, epochs=2, early_stopping=0, seed=5, **kw))


def _capture(monkeypatch):
    seen = {"states": {}}
    real = trainer_mod.build_model

    def build(*a, **kw):
        seen["model"], rb = real(*a, **kw)
        return seen["model"], rb

    monkeypatch.setattr(trainer_mod, "build_model", build)
    return seen


def test_stages_run_in_order_and_carry_the_best_dev_state(tiny_data, tmp_path, monkeypatch):
    seen = _capture(monkeypatch)
    states = {}
    res = train(_cfg(tiny_data), tmp_path / "run", quiet=True,
                after_epoch=lambda e: states.__setitem__(e, {k: v.detach().clone()
                                                             for k, v in seen["model"].backbone.state_dict().items()}))
    st = res["stages"]
    assert [s["name"] for s in st] == ["pretrain", "train"] and [s["epochs"] for s in st] == [3, 2]
    assert res["epochs_run"] == 5 and [h["stage"] for h in res["history"]] == ["pretrain"] * 3 + ["train"] * 2
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2, 3, 4]
    # each stage's best epoch is the argmax of its own dev W-F1 (first on ties)
    for s, lo, hi in ((st[0], 0, 3), (st[1], 3, 5)):
        wf1 = [h["dev_wf1"] for h in res["history"][lo:hi]]
        assert s["best_epoch"] == lo + int(np.argmax(wf1)) and s["dev"]["wf1"] == pytest.approx(max(wf1))
    assert res["best_epoch"] == st[1]["best_epoch"]
    # stage "train" started from the state after stage "pretrain"'s best epoch, not its last one
    entered = seen["model"].backbone.entered["train"]
    best0 = states[st[0]["best_epoch"]]
    assert all(torch.equal(entered[k], best0[k]) for k in best0)
    # the encoders were frozen in stage "train": unchanged from that state to the end
    final = seen["model"].backbone.state_dict()
    assert all(torch.equal(final[k], best0[k]) for k in final if k.startswith(("encoders.", "unimodal.")))
    assert not torch.equal(final["fusion_head.weight"], best0["fusion_head.weight"])
    lines = [json.loads(x) for x in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert [x["stage"] for x in lines if x["kind"] == "epoch"] == ["pretrain"] * 3 + ["train"] * 2


def test_each_stage_gets_a_fresh_optimizer_with_its_own_lr_over_what_it_trains(tiny_data, tmp_path, monkeypatch):
    made = []
    real = trainer_mod.make_optimizer

    def record(cfg, params, lr=None):
        params = list(params)
        opt = real(cfg, params, lr=lr)
        made.append((opt, {id(p) for p in params}))
        return opt

    seen = _capture(monkeypatch)
    monkeypatch.setattr(trainer_mod, "make_optimizer", record)
    train(_cfg(tiny_data, backbone_options={"hidden": 8, "pretrain_epochs": 2, "pretrain_lr": 0.01}),
          tmp_path / "run", quiet=True)
    bb = seen["model"].backbone
    assert [o.param_groups[0]["lr"] for o, _ in made] == [0.01, 0.003]
    assert made[0][1] == {id(p) for p in [*bb.encoders.parameters(), *bb.unimodal.parameters()]}
    assert made[1][1] == {id(p) for p in bb.fusion_head.parameters()}


def test_stage_selection_reads_dev_only(tiny_data, tmp_path):
    """Other test labels: the same stage choices, dev scores and weights; other test scores."""
    a = train(_cfg(tiny_data), tmp_path / "a", quiet=True)
    ds = load_dataset(tiny_data)
    test = ds["test"]
    test.labels[:] = (test.labels + 1) % ds.num_classes
    b = train(_cfg(tiny_data), tmp_path / "b", dataset=ds, quiet=True)
    strip = lambda r: [{k: v for k, v in s.items() if k != "seconds"} for s in r["stages"]]  # noqa: E731
    assert strip(a) == strip(b) and a["history"] == b["history"]
    assert a["test"]["wf1"] != b["test"]["wf1"]


def test_resume_across_a_stage_boundary_is_bit_identical(tiny_data, tmp_path):
    cfg = _cfg(tiny_data)
    whole = train(cfg, tmp_path / "whole", quiet=True)

    class Stop(Exception):
        pass

    def kill(epoch):
        if epoch == 3:  # the first epoch of stage "train"
            raise Stop

    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", quiet=True, after_epoch=kill)
    resumed = train(cfg, tmp_path / "cut", quiet=True, resume=True)
    assert resumed["test"] == whole["test"] and resumed["history"] == whole["history"]
    assert [s["best_epoch"] for s in resumed["stages"]] == [s["best_epoch"] for s in whole["stages"]]


def test_regression_stages(tiny_regression, tmp_path):
    res = train(_cfg(tiny_regression, rates=None), tmp_path / "run", quiet=True)
    assert [s["name"] for s in res["stages"]] == ["pretrain", "train"] and res["task"] == "regression"


def test_a_staged_backbone_takes_method_none_only(tiny_data, tmp_path):
    with pytest.raises(ConfigError) as err:
        train(_cfg(tiny_data, method="balm"), tmp_path / "run", quiet=True)
    assert err.value.key == "method" and "pretrain, train" in str(err.value)
    assert not (tmp_path / "run").exists()


def test_a_one_stage_backbone_writes_no_stages(balm_run):
    _, _, res = balm_run
    assert "stages" not in res and all("stage" not in h for h in res["history"])


def test_stage_definitions_are_checked():
    class Bad(torch.nn.Module):
        def __init__(self, stages):
            super().__init__()
            self._s = stages

        def stages(self):
            return self._s

    assert backbone_stages(torch.nn.Linear(1, 1)) == (Stage("train"),)
    for stages, words in (((), "no stage"), ((Stage("a"), Stage("a")), "repeated"), ((Stage("a", epochs=0),), "epochs"),
                          ((Stage("a", lr=-1.0),), "lr"), (("a",), "Stage objects")):
        with pytest.raises((ValueError, TypeError), match=words):
            backbone_stages(Bad(stages))
