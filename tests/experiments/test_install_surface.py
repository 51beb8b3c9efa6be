"""What a fresh install relies on: configs shipped in the package, JSON without pyyaml, LICENSE."""

import json
from pathlib import Path

import pytest

from balm.experiments import config as C

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_config_resolves_like_the_repository_file():
    for name in ("iemocap/mmgcn.yaml", "compare/synthetic/iemocap-late_fusion-mmgcn.yaml"):
        assert C.read_mapping(f"balm:{name}") == C.read_mapping(ROOT / "configs" / name)
    assert C.load_config("balm:mosei/mmgcn.yaml").mask_strategy == "paper"


def test_unknown_shipped_config_suggests_the_closest():
    with pytest.raises(C.ConfigError, match=r"did you mean balm:iemocap/mmgcn.yaml\?"):
        C.read_mapping("balm:iemocap/mmgnc.yaml")


def test_json_and_set_values_without_pyyaml(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "_yaml", lambda: None)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": "synthetic:iemocap", "epochs": 2}))
    cfg = C.load_config(path, ["rates=[0.5, 0.7, 0.3]", "lr=1e-3", "method=balm", 'backbone_options={"hidden": 8}'])
    assert cfg.rates == [0.5, 0.7, 0.3] and cfg.lr == 0.001 and cfg.method == "balm" and cfg.backbone_options == {"hidden": 8}
    with pytest.raises(C.ConfigError, match=r"without YAML .*\.\[experiments\]"):
        C.parse_value("{audio: 0.5}")
    yml = tmp_path / "c.yaml"
    yml.write_text("epochs: 2\n")
    with pytest.raises(C.ConfigError, match=r"needs pyyaml.*or write the config as JSON"):
        C.read_mapping(yml)


def test_license_is_mit_and_python_claim_matches_the_pin():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    text = (ROOT / "pyproject.toml").read_text()
    assert 'requires-python = ">=3.10"' in text  # torch==2.13.0 (the Makefile's pin) has no wheel for 3.9
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()
