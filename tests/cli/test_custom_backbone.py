"""A backbone of one's own, named by import path: trains through `balm train` and `balm sweep`
(spawned workers included), and a class that misses part of the contract fails naming that part."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from balm.backbones import BackboneOutput
from balm.backbones.registry import BackboneContractError, build_backbone, check_backbone, check_output
from balm.cli.main import main
from balm.experiments.model import BalmModel, load_checkpoint
from exp_helpers import base_config, write_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
GATED = "my_backbone:GatedSum"


def _cli(args, pythonpath):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(str(p) for p in pythonpath))
    return subprocess.run([sys.executable, "-m", "balm.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def _config(tmp_path, tiny_data, name="c.yaml", **kw):
    cfg = base_config(tiny_data, backbone=GATED, backbone_options={"embed_dim": 8, "context": True}, method="balm",
                      **kw)
    return write_yaml(tmp_path / name, cfg)


def test_example_backbone_trains_through_balm_train(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data)
    out = tmp_path / "run"
    done = _cli(["train", "--config", str(cfg), "--out", str(out), "--quiet"], [ROOT / "src", EXAMPLES])
    assert done.returncode == 0, done.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["config"]["backbone"] == GATED and res["config"]["method"] == "balm"
    assert 0.0 <= res["test"]["wf1"] <= 1.0
    sys.path.insert(0, str(EXAMPLES))
    try:
        model = load_checkpoint(out / "checkpoint.pt")
    finally:
        sys.path.remove(str(EXAMPLES))
    assert type(model.backbone).__name__ == "GatedSum"
    # the fusion weights a were trained away from their zero initialisation
    assert model.backbone.weights.shape == (3,) and model.backbone.weights.abs().sum() > 0


def test_example_backbone_sweeps_in_spawned_workers(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data, "s.yaml", sweep={"method": ["none", "balm"]})
    out = tmp_path / "sweep"
    done = _cli(["sweep", "--config", str(cfg), "--out", str(out), "--workers", "2", "--quiet"],
                [ROOT / "src", EXAMPLES])
    assert done.returncode == 0, done.stderr
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    assert sorted(r["config"]["method"] for r in results) == ["balm", "none"]
    assert {r["config"]["backbone"] for r in results} == {GATED}


def test_unimportable_backbone_names_the_key_and_pythonpath(tmp_path, tiny_data):
    cfg = _config(tmp_path, tiny_data)
    done = _cli(["train", "--config", str(cfg), "--out", str(tmp_path / "run")], [ROOT / "src"])
    assert done.returncode == 2
    assert "key 'backbone'" in done.stderr and "my_backbone" in done.stderr and "PYTHONPATH" in done.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


BROKEN = '''
import torch
from torch import nn
from balm.backbones import BackboneOutput

class NoEncoders(nn.Module):
    def __init__(self, dims, out_dim, width=8):
        super().__init__()
        self.layers = nn.ModuleDict({m: nn.Linear(d, width) for m, d in dims.items()})
        self.fusion_head = nn.Linear(width, out_dim)

    @property
    def embed_dims(self):
        return {m: 8 for m in self.layers}

    def forward(self, batch):
        z = {m: self.layers[m](batch.features[m][batch.valid]) for m in self.layers}
        h = sum(z.values())
        return BackboneOutput(self.fusion_head(h), z, h)

class HeadNotLinear(NoEncoders):
    def __init__(self, dims, out_dim):
        super().__init__(dims, out_dim)
        self.encoders = self.layers
        self.fusion_head = nn.Sequential(nn.Linear(8, out_dim))

class NotAModule:
    def __init__(self, dims, out_dim):
        pass
'''


@pytest.fixture
def broken_module(tmp_path, monkeypatch):
    (tmp_path / "broken_backbones.py").write_text(BROKEN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "broken_backbones"
    sys.modules.pop("broken_backbones", None)


@pytest.mark.parametrize("cls, fragments", [
    ("NoEncoders", ["no attribute 'encoders'", "nn.ModuleDict keyed by modality"]),
    ("HeadNotLinear", ["'fusion_head' must be an nn.Linear, got Sequential"]),
    ("NotAModule", ["must be a torch.nn.Module subclass"]),
    ("Missing", ["has no attribute 'Missing'"]),
])
def test_broken_backbone_fails_before_any_work_naming_what_is_missing(capsys, tmp_path, tiny_data, broken_module,
                                                                       cls, fragments):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, backbone=f"{broken_module}:{cls}",
                                                       backbone_options={}))
    out = tmp_path / "out"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "key 'backbone'" in err and str(cfg) in err, err
    for f in fragments:
        assert f in err, (f, err)
    assert not out.exists() or not any(out.iterdir())


def test_unknown_backbone_option_of_an_import_path(capsys, tmp_path, tiny_data):
    sys.path.insert(0, str(EXAMPLES))
    try:
        cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, backbone=GATED, backbone_options={"embed": 8}))
        assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    finally:
        sys.path.remove(str(EXAMPLES))
    err = capsys.readouterr().err
    assert "backbone_options.embed" in err and "did you mean 'embed_dim'" in err, err


class _Tiny(nn.Module):
    def __init__(self, dims, out_dim):
        super().__init__()
        self.encoders = nn.ModuleDict({m: nn.Linear(d, 4) for m, d in dims.items()})
        self.fusion_head = nn.Linear(4, out_dim)

    @property
    def embed_dims(self):
        return {m: 4 for m in self.encoders}

    def forward(self, batch):
        return None


def test_check_backbone_lists_every_problem():
    dims = {"audio": 3, "text": 2}
    model = _Tiny(dims, 2)
    check_backbone(model, dims, 2)  # meets the static contract
    with pytest.raises(BackboneContractError) as e:
        check_backbone(model, {"audio": 3, "text": 2, "visual": 5}, 3)
    msg = str(e.value)
    assert "exactly the modalities ['audio', 'text', 'visual']" in msg and "out_features = 3, has 2" in msg
    assert "'embed_dims' must map each of ['audio', 'text', 'visual']" in msg


def test_output_checked_on_first_forward():
    sys.path.insert(0, str(ROOT / "tests" / "backbones"))
    from backbone_batches import random_batch

    dims = {"audio": 3, "text": 2}
    batch = random_batch(dims, [2, 3], seed=0, task="classification", num_classes=2)
    model = BalmModel(_Tiny(dims, 2))
    with pytest.raises(BackboneContractError, match="must return balm.backbones.BackboneOutput, got NoneType"):
        model(batch)
    enc = _Tiny(dims, 2)
    n = int(batch.valid.sum())
    bad = BackboneOutput(torch.zeros(n, 2), {"audio": torch.zeros(n, 4)}, torch.zeros(n, 5))
    with pytest.raises(BackboneContractError) as e:
        check_output(enc, bad, n)
    assert "embeddings must have the modalities ['audio', 'text']" in str(e.value)
    assert f"fused must have shape ({n}, 4)" in str(e.value)


def test_builtin_names_and_import_paths_build_the_same_class():
    a = build_backbone("late_fusion", {"audio": 3, "text": 2}, 2)
    b = build_backbone("balm.backbones.late_fusion:LateFusion", {"audio": 3, "text": 2}, 2)
    assert type(a) is type(b)


def test_backbone_without_options_rejects_any(capsys, tmp_path, tiny_data, broken_module):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, backbone=f"{broken_module}:NotAModule",
                                                       backbone_options={"width": 3}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert "must be a torch.nn.Module subclass" in capsys.readouterr().err
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, backbone=f"{broken_module}:HeadNotLinear",
                                                       backbone_options={"width": 3}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "key 'backbone_options.width'" in err and "takes no options" in err, err
