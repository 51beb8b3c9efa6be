"""`balm train` runs of a staged backbone on a tiny synthetic dataset (for the baselines' run tests)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from balm.cli.main import main
from balm.data.native import load_dataset, save_dataset
from balm.data.synthetic import IEMOCAP_SPEC, MOSEI_SPEC, SplitShape, make_synthetic

DIMS = (("audio", 24), ("text", 20), ("visual", 16))


def tiny_data(root: Path, task: str = "classification") -> Path:
    """A saved tiny dataset: 20 + 6 dialogues (classification) or 60 / 15 / 20 clips (regression)."""
    path = root / f"tiny-{task}"
    if task == "classification":
        spec = dataclasses.replace(IEMOCAP_SPEC, name="tiny-iemocap", dims=DIMS,
                                   splits=(SplitShape("train", 20, 200), SplitShape("test", 6, 60)),
                                   length_range=(5, 15))
        ds = make_synthetic("iemocap", seed=0, spec=spec)
    else:
        spec = dataclasses.replace(MOSEI_SPEC, name="tiny-mosei", dims=DIMS,
                                   splits=(SplitShape("train", 60, 240), SplitShape("dev", 15, 60),
                                           SplitShape("test", 20, 80)), length_range=(1, 8))
        ds = make_synthetic("mosei", seed=0, spec=spec)
    save_dataset(ds, path)
    return path


def with_other_test_labels(data: Path, out: Path) -> Path:
    """A copy of dataset ``data`` whose test labels are all changed (classification: shifted by one)."""
    ds = load_dataset(data)
    test = ds["test"]
    if ds.num_classes:
        test.labels[:] = (test.labels + 1) % ds.num_classes
    else:
        test.labels[:] = -test.labels + 1.0
    save_dataset(ds, out)
    return out


def balm_train(tmp: Path, name: str, data: Path, backbone: str, options: dict, **keys) -> dict:
    """``balm train --config`` of one run (exit status 0 asserted); its result.json."""
    cfg = {"data": str(data), "backbone": backbone, "backbone_options": options, "method": "none", "epochs": 2,
           "batch_size": 4, "lr": 0.003, "rates": [0.5, 0.7, 0.3], "tensorboard": False, "threads": 1,
           "tsne_samples": 0, "seed": 1, **keys}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp / name
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "result.json").read_text())


def stage_choices(result: dict) -> list[dict]:
    """Each stage's record without its wall time."""
    return [{k: v for k, v in s.items() if k != "seconds"} for s in result["stages"]]
