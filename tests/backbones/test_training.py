"""Every backbone trains with every BALM variant: the training loss falls on a small learnable set."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from backbone_batches import learnable_split as _learnable_split
from torch import nn

from balm.backbones.registry import build_backbone
from balm.core import VARIANTS
from balm.methods import build_method, names
from balm.data.batch import collate

DIMS = {"audio": 10, "visual": 6, "text": 8}
SMALL = {
    "late_fusion": dict(hidden=16, embed_dim=8, fused_dim=8, dropout=0.0),
    "mmgcn": dict(node_dim=12, lstm_hidden=6, graph_hidden=8, dropout=0.0),
    "sdrgnn": dict(proj_dim=8, hidden=6, graph_hidden=4, dropout=0.0, num_speakers=3),
    "micga": dict(enc_dim=8, encoder_dropout=0.0, gat_hidden=8, gat_dropout=0.0),
}


def learnable_split(task, seed=0):
    return _learnable_split(DIMS, task, seed)


def task_loss(pred, y, task):
    return nn.functional.cross_entropy(pred, y) if task == "classification" else nn.functional.mse_loss(pred, y)


def run(backbone, variant_name, task, steps=30, options=None):
    torch.manual_seed(0)
    split = learnable_split(task)
    out_dim = 3 if task == "classification" else 1
    model = build_backbone(backbone, DIMS, out_dim, **(SMALL[backbone] if options is None else options))
    variant = build_method(
        variant_name,
        dims=DIMS,
        encoders=model.encoders,
        embed_dims=model.embed_dims,
        fusion_head=model.fusion_head,
        task=task,
        num_classes=out_dim if task == "classification" else None,
        shared={"lr": 3e-3},
    )
    params = list(model.parameters()) + (list(variant.input_module.parameters()) if variant.input_module else [])
    opt = torch.optim.Adam(params, lr=3e-3)
    batches = [collate(split, idx) for idx in ([0, 1, 2, 3], [4, 5, 6, 7])]

    def forward(batch):
        if variant.input_module is not None:
            batch = replace(batch, features=variant.input_module(batch.features, batch.masks, batch.valid))
        return model(batch)

    def full_loss():
        model.eval()
        with torch.no_grad():
            losses = [task_loss(forward(b).prediction, b.targets, task) for b in batches]
        model.train()
        return float(sum(losses) / len(losses))

    start = full_loss()
    for step in range(steps):
        batch = batches[step % 2]
        out = forward(batch)
        loss = task_loss(out.prediction, batch.targets, task)
        if out.aux_loss is not None:
            loss = loss + out.aux_loss
        if variant.rebalancer is not None:
            loss = loss + variant.rebalancer.alignment_loss()
        opt.zero_grad()
        loss.backward()
        if variant.rebalancer is not None:
            variant.rebalancer.rebalance_(out.embeddings, out.prediction, batch.targets, batch.flat_masks())
        nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
    return start, full_loss(), variant


@pytest.mark.parametrize("variant_name", VARIANTS)
@pytest.mark.parametrize("backbone", sorted(SMALL))
def test_loss_decreases_with_every_variant(backbone, variant_name):
    start, end, variant = run(backbone, variant_name, "classification")
    assert np.isfinite(end)
    assert end < 0.8 * start, (start, end)
    if variant.rebalancer is not None:
        mu = variant.rebalancer.mu_bar
        assert mu is not None and torch.isfinite(mu).all()


@pytest.mark.parametrize("backbone", sorted(SMALL))
def test_regression_loss_decreases_with_balm(backbone):
    start, end, _ = run(backbone, "balm", "regression")
    assert end < 0.8 * start, (start, end)


BASELINES = [name for name in names() if name not in VARIANTS]
CONVERSATIONAL = ["sdrgnn", "micga"]


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.parametrize("backbone", CONVERSATIONAL)
def test_loss_decreases_with_every_baseline_method(backbone, method):
    start, end, _ = run(backbone, method, "classification")
    assert np.isfinite(end)
    assert end < 0.8 * start, (start, end)


@pytest.mark.parametrize("backbone", ["gcnet", "sdrgnn", "micga"])
def test_loss_decreases_with_reconstruction_on(backbone):
    small = {**SMALL.get(backbone, {}), "reconstruction": 0.1}
    if backbone == "gcnet":
        small = dict(proj_dim=8, hidden=6, graph_hidden=4, dropout=0.0, num_speakers=3, reconstruction=0.1)
    start, end, _ = run(backbone, "balm", "classification", steps=60, options=small)
    assert end < 0.8 * start, (start, end)
