"""Tiny synthetic datasets for the experiment-runner tests (built here, a few hundred utterances)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from balm.data.native import save_dataset
from balm.data.synthetic import IEMOCAP_SPEC, MOSEI_SPEC, SplitShape, make_synthetic

DIMS = (("audio", 24), ("text", 20), ("visual", 16))


def tiny_dataset(task: str = "classification", seed: int = 0):
    if task == "classification":
        spec = dataclasses.replace(IEMOCAP_SPEC, name="tiny-iemocap", dims=DIMS,
                                   splits=(SplitShape("train", 20, 200), SplitShape("test", 6, 60)), length_range=(5, 15))
        return make_synthetic("iemocap", seed=seed, spec=spec)
    spec = dataclasses.replace(MOSEI_SPEC, name="tiny-mosei", dims=DIMS,
                               splits=(SplitShape("train", 60, 240), SplitShape("dev", 15, 60), SplitShape("test", 20, 80)),
                               length_range=(1, 8))
    return make_synthetic("mosei", seed=seed, spec=spec)


def tiny_dir(root: Path, task: str = "classification") -> str:
    path = root / f"tiny-{task}"
    if not path.exists():
        save_dataset(tiny_dataset(task), path)
    return str(path)


def base_config(data: str, **kw) -> dict:
    cfg = {"data": data, "backbone": "late_fusion", "backbone_options": {"hidden": 32, "embed_dim": 16, "fused_dim": 16},
           "epochs": 2, "batch_size": 4, "lr": 0.003, "rates": [0.5, 0.7, 0.3], "tsne_samples": 30,
           "tensorboard": False, "threads": 1}
    cfg.update(kw)
    return cfg


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
