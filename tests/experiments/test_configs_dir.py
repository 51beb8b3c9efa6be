"""Every file in configs/ loads and validates (train configs and sweeps), catching typos."""

from pathlib import Path

import pytest

from balm.experiments.config import load_config, read_mapping
from balm.experiments.sweep import check_runs, load_sweep

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(p for p in CONFIGS.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))


def test_there_are_configs_for_both_datasets_and_synthetic():
    rel = {p.relative_to(CONFIGS).as_posix() for p in FILES}
    for ds in ("iemocap", "mosei"):
        for name in ("mmgcn.yaml", "mmdfn.yaml", "gcnet.yaml", "mmgcn-variants.yaml", "mmgcn-smr.yaml",
                     "mmgcn-modalities.yaml", "mmgcn-unimodal.yaml", "mmgcn-tau-rho.yaml", "mmgcn-fcm.yaml"):
            assert f"{ds}/{name}" in rel and f"synthetic/{ds}/{name}" in rel


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_config_file_is_valid(path):
    if "sweep" in read_mapping(path):
        sweep = load_sweep(path)
        assert sweep.runs
        cfgs = [r.config for r in sweep.runs]
        if cfgs[0].data.startswith("synthetic:"):  # dataset-dependent checks need the data
            check_runs(sweep.runs, source=str(path))
    else:
        cfg = load_config(path)
        cfgs = [cfg]
        if cfg.data.startswith("synthetic:"):
            from balm.experiments.trainer import check_config

            check_config(cfg)
    if path.relative_to(CONFIGS).parts[0] == "study":  # docs/study.md: several backbones in one sweep
        assert all(c.data.startswith("synthetic:") for c in cfgs)
        return
    for c in cfgs:
        if "synthetic" not in path.parts:
            assert c.data == f"data/{path.parent.name}"
        assert c.backbone in path.name
