"""The task losses and class weights, against hand computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from balm.experiments.config import Config
from balm.experiments.losses import class_weight_tensor, make_loss


def test_losses_match_hand_computation():
    torch.manual_seed(0)
    logits, y = torch.randn(7, 4), torch.tensor([0, 1, 2, 3, 1, 1, 0])
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    cfg = Config.from_dict({"data": "x", "loss": "focal", "focal_gamma": 2.0})
    p = F.softmax(logits, -1)[torch.arange(7), y]
    want = (-(w[y]) * (1 - p) ** 2 * p.log()).mean()
    assert make_loss(cfg, "classification", w)(logits, y).item() == pytest.approx(want.item(), rel=1e-6)
    ce = make_loss(Config.from_dict({"data": "x", "loss": "nll"}), "classification", w)(logits, y)
    assert ce.item() == pytest.approx(((-(p.log()) * w[y]).sum() / w[y].sum()).item(), rel=1e-6)
    s, t = torch.randn(5), torch.randn(5)
    assert make_loss(Config.from_dict({"data": "x"}), "regression", None)(s, t).item() == pytest.approx(((s - t) ** 2).mean().item())


def test_class_weights(tiny_data):
    from balm.data import load

    train_split = load(tiny_data)["train"]
    counts = np.bincount(train_split.labels, minlength=6).astype(float)
    n = counts.sum()
    bal = class_weight_tensor(Config.from_dict({"data": "x", "class_weights": "balanced"}), train_split, 6).numpy()
    inv = class_weight_tensor(Config.from_dict({"data": "x", "class_weights": "inverse"}), train_split, 6).numpy()
    np.testing.assert_allclose(bal, np.where(counts > 0, n / (6 * np.maximum(counts, 1)), 0), rtol=1e-6)
    np.testing.assert_allclose(inv, np.where(counts > 0, n / np.maximum(counts, 1), 0), rtol=1e-6)
