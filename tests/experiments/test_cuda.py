"""The same code on a CUDA device: the plug-in on CUDA tensors, every backbone's forward and
backward, and a short ``balm train --set device=cuda``. Each test also runs on the CPU (a copy of
the model on the same device), so the comparison logic is exercised where no GPU is present; the
``cuda`` cases skip without one."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from balm.backbones.registry import BACKBONES, build_backbone
from balm.methods import build_method

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backbones"))
from backbone_batches import random_batch  # noqa: E402
from exp_helpers import base_config, write_yaml  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine")])]
DIMS = {"audio": 6, "visual": 4, "text": 5}


def _backbone(name: str, task: str = "classification"):
    torch.manual_seed(0)
    return build_backbone(name, DIMS, 3 if task == "classification" else 1).eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_forward_and_backward_match_the_cpu(name, device):
    ref = _backbone(name)
    model = copy.deepcopy(ref).to(device)
    batch = random_batch(DIMS, [4, 2, 5], seed=1, num_classes=3)
    outs = {}
    for key, m, b in (("ref", ref, batch), ("dev", model, batch.to(device))):
        out = m(b)
        loss = F.cross_entropy(out.prediction, b.targets)
        m.zero_grad()
        loss.backward()
        outs[key] = (out.prediction.detach().cpu(), {n: p.grad.detach().cpu() for n, p in m.named_parameters()
                                                     if p.grad is not None})
    assert next(model.parameters()).device.type == device
    assert torch.allclose(outs["ref"][0], outs["dev"][0], rtol=1e-3, atol=1e-4)
    assert outs["ref"][1].keys() == outs["dev"][1].keys() and outs["ref"][1]
    for n, g in outs["ref"][1].items():
        assert torch.allclose(g, outs["dev"][1][n], rtol=1e-3, atol=1e-4), n


@pytest.mark.parametrize("device", DEVICES)
def test_the_plug_in_runs_on_the_device_of_its_modules(device):
    """BALM (FCM + GRM) on late fusion: one step on ``device`` equals the same step on the CPU."""
    results = {}
    for key, dev in (("ref", "cpu"), ("dev", device)):
        model = _backbone("late_fusion").train().to(dev)
        torch.manual_seed(3)
        parts = build_method("balm", dims=DIMS, encoders=model.encoders, embed_dims=model.embed_dims,
                             fusion_head=model.fusion_head, task="classification", num_classes=3)
        fcm, grm = parts.input_module.to(dev), parts.rebalancer.to(dev)
        model.eval()  # no dropout: the two devices see the same network
        batch = random_batch(DIMS, [4, 2, 5], seed=2, num_classes=3).to(dev)
        out = model(replace(batch, features=fcm(batch.features, batch.masks, batch.valid)))
        loss = F.cross_entropy(out.prediction, batch.targets) + grm.alignment_loss()
        loss.backward()
        grm.rebalance_(out.embeddings, out.prediction.detach(), batch.targets, batch.flat_masks())
        mu = grm.stats["mu"]
        grads = {m: torch.cat([p.grad.flatten() for p in enc.parameters()]).cpu() for m, enc in model.encoders.items()}
        results[key] = (mu, grads, {n: t.device.type for n, t in grm.state_dict().items() if torch.is_tensor(t)})
    mu_ref, g_ref, _ = results["ref"]
    mu_dev, g_dev, where = results["dev"]
    assert set(where.values()) <= {device}
    assert mu_ref.keys() == mu_dev.keys() and all(abs(mu_ref[m] - mu_dev[m]) < 1e-4 for m in mu_ref)
    assert all(torch.allclose(g_ref[m], g_dev[m], rtol=1e-3, atol=1e-5) for m in g_ref)


@pytest.mark.parametrize("device", DEVICES)
def test_balm_train_on_the_device(tiny_data, tmp_path, device):
    cfg = write_yaml(tmp_path / "c.yaml", base_config(tiny_data, backbone="mmgcn", backbone_options={},
                                                      method="balm", epochs=2, device=device, tsne_samples=0))
    done = subprocess.run([sys.executable, "-m", "balm.cli.main", "train", "--config", str(cfg), "--out",
                           str(tmp_path / "run"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["status"] == "finished" and res["device"].startswith(device)
    from balm.experiments.evaluation import evaluate_split
    from balm.experiments.model import load_checkpoint
    from balm.experiments.prepare import prepare_data

    # the weights trained on the device, loaded on the CPU, reproduce the run's test metrics
    model = load_checkpoint(tmp_path / "run" / "checkpoint.pt", device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    data = prepare_data(model.config)
    test = evaluate_split(model, data.dataset["test"], model.meta, 64, torch.device("cpu"))
    assert test["acc"] == pytest.approx(res["test"]["acc"], abs=0.0 if device == "cpu" else 0.02)
