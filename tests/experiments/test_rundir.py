"""A sweep folder on disk, built by hand: finished runs, the plan, the summary rows and CSV."""

import csv
import json

from balm.experiments.config import Config
from balm.experiments.rundir import (
    is_finished,
    plan_cases,
    plan_run_dirs,
    plan_run_ids,
    read_plan,
    read_result,
    summary_rows,
    write_summary,
)


def _result(cfg: Config, wf1: float) -> dict:
    return {"schema": "balm-result/1", "status": "finished", "config": cfg.to_dict(), "test": {"acc": 0.5, "wf1": wf1},
            "dev": {"acc": 0.25, "wf1": 0.125}, "best_epoch": 1, "epochs_run": 2, "train_seconds": 1.23456,
            "requested_rates": {"audio": 0.5, "text": 0.3, "visual": 0.7}, "dataset": {"used_modalities": ["audio", "text"]},
            "realised_rates": {"train": {"audio": 0.4999999, "text": 0.3}}}


def _folder(tmp_path):
    cfg = Config.from_dict({"data": "synthetic:iemocap", "method": "balm", "seed": 1, "backbone_options": {"hidden": 8}})
    runs = tmp_path / "runs"
    for name in ("a-1", "b-2", "old-3", "broken-4"):
        (runs / name).mkdir(parents=True)
    for name in ("a-1", "old-3"):
        (runs / name / "result.json").write_text(json.dumps(_result(cfg, 0.75)))
    (runs / "broken-4" / "result.json").write_text('{"status": "finished", "te')
    plan = {"runs": [{"id": "a-1", "setting": {"cases": "balm-raw"}}, {"id": "b-2", "setting": {"cases": "none"}},
                     {"id": "broken-4", "setting": {"cases": "none"}}],
            "cases": {"balm-raw": {"method": "balm"}, "none": {}}}
    (tmp_path / "sweep.json").write_text(json.dumps(plan))
    return cfg


def test_finished_runs_and_the_plan(tmp_path):
    cfg = _folder(tmp_path)
    runs = tmp_path / "runs"
    assert read_result(runs / "a-1")["test"]["wf1"] == 0.75
    assert read_result(runs / "b-2") is None and read_result(runs / "broken-4") is None
    assert is_finished(runs / "a-1", cfg) and not is_finished(runs / "a-1", cfg.replace(seed=2))
    assert plan_run_ids(read_plan(tmp_path)) == ["a-1", "b-2", "broken-4"]
    assert plan_run_ids({"runs": [{"name": "x"}]}) is None
    planned, outside = plan_run_dirs(tmp_path)
    assert [d.name for d in planned] == ["a-1", "b-2", "broken-4"] and [d.name for d in outside] == ["old-3"]
    assert plan_cases(tmp_path)[0] == {"a-1": "balm-raw", "b-2": "none", "broken-4": "none"}
    (tmp_path / "sweep.json").write_text("not json")
    assert read_plan(tmp_path) is None and len(plan_run_dirs(tmp_path)[0]) == 4  # no plan: every folder counts


def test_summary_rows_and_csv(tmp_path):
    _folder(tmp_path)
    rows = summary_rows(tmp_path)
    assert len(rows) == 1  # a-1 alone: b-2 and broken-4 unfinished, old-3 outside the plan
    row = rows[0]
    assert row["run_id"] == "a-1" and row["case"] == "balm-raw"
    assert (row["rates"], row["modalities"], row["method"], row["seed"], row["tau"]) == ("0.5/0.3/0.7", "audio+text", "balm", "1", "0.3")
    assert row["train_seconds"] == 1.235 and row["train_missing_audio"] == 0.5 and row["backbone_options.hidden"] == 8
    path = write_summary(tmp_path)
    lines = path.read_text().splitlines()
    assert lines[0] == ("run_id,case,data,backbone,method,rates,modalities,seed,tau,rho,epochs,test_acc,test_wf1,"
                        "dev_acc,dev_wf1,best_epoch,epochs_run,train_seconds,train_missing_audio,train_missing_text,"
                        "backbone_options.hidden")
    assert next(csv.DictReader(open(path)))["test_wf1"] == "0.75"
