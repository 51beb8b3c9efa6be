"""Every file in configs/ loads and validates (train configs and sweeps), catching typos."""

import json
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
            from balm.experiments.prepare import check_config

            check_config(cfg)
    if path.relative_to(CONFIGS).parts[0] == "study":  # docs/study.md: several backbones in one sweep
        assert all(c.data.startswith("synthetic:") for c in cfgs)
        return
    for c in cfgs:
        if "synthetic" not in path.parts:
            assert c.data == f"data/{path.parent.name}"
        assert c.backbone in path.name


@pytest.mark.parametrize("name", ["iemocap", "mosei"])
def test_compare_sweeps_run_every_method_at_its_own_noise_setting(name):
    """configs/compare/README.md: 7 methods x 2 backbones x 6 IMR permutations x 5 seeds; OGM-GE and
    Ada2I keep their gradient noise, the BALM family runs at the library default (off)."""
    sweep = load_sweep(CONFIGS / "compare" / "synthetic" / f"{name}-late_fusion-mmgcn.yaml")
    cfgs = [r.config for r in sweep.runs]
    assert len(cfgs) == 420
    methods = {"none", "balm", "balm-d", "balm-s", "ogm-ge", "cggm", "ada2i"}
    assert {(c.backbone, c.method) for c in cfgs} == {(b, m) for b in ("late_fusion", "mmgcn") for m in methods}
    assert {c.seed for c in cfgs} == set(range(5)) and len({json.dumps(c.rates, sort_keys=True) for c in cfgs}) == 6
    for c in cfgs:
        assert c.noise is (c.method in ("ogm-ge", "ada2i", "none", "cggm"))
    assert {r.setting["cases"] for r in sweep.runs} == methods
