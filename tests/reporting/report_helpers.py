"""Hand-made finished runs for the report tests: a result.json with the given metrics and config."""

import json
from pathlib import Path

from balm.experiments.config import Config


def write_run(root: Path, run_id: str, cfg: dict, acc: float, wf1: float) -> None:
    config = Config.from_dict({"data": "synthetic:iemocap", **cfg}).to_dict()
    res = {
        "schema": "balm-result/1", "status": "finished", "task": "classification",
        "test": {"acc": acc, "wf1": wf1, "n": 100}, "dev": {"acc": acc, "wf1": wf1, "n": 10},
        "best_epoch": 0, "epochs_run": 1, "train_seconds": 1.0,
        "dataset": {"used_modalities": ["audio", "text", "visual"], "label_names": ["a", "b"]},
        "requested_rates": config["rates"], "realised_rates": {"train": dict(config["rates"])},
        "config": config,
    }
    d = root / "runs" / run_id
    d.mkdir(parents=True)
    (d / "result.json").write_text(json.dumps(res))
