"""The task loss L_task (Eq. 14) of a run and its class weights."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from balm.data.dataset import Split

from .config import Config


def class_weight_tensor(cfg: Config, train: Split, num_classes: int | None) -> torch.Tensor | None:
    """none -> None; balanced -> N / (C n_c); inverse -> N / n_c (MM-DFN's 1/frequency); or the list."""
    if num_classes is None or cfg.class_weights == "none":
        return None
    if isinstance(cfg.class_weights, list):
        return torch.tensor(cfg.class_weights, dtype=torch.float32)
    counts = np.bincount(train.labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    n = counts.sum()
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, n / counts, 0.0)
    if cfg.class_weights == "balanced":
        w = w / num_classes
    return torch.tensor(w, dtype=torch.float32)


def make_loss(cfg: Config, task: str, weight: torch.Tensor | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task loss L_task (Eq. 14).

    nll / ce: cross-entropy of the logits (weighted mean with class weights);
    focal: ``mean_i(-w_{y_i} (1 - p_i)^γ log p_i)`` with ``p_i`` the (detached) probability of the
    true class, as MM-DFN computes it; mse: mean squared error of the scores.
    """
    kind = cfg.loss if cfg.loss != "auto" else ("mse" if task == "regression" else "nll")
    if kind == "mse":
        return lambda pred, y: F.mse_loss(pred, y.to(pred.dtype))
    if kind in ("nll", "ce"):
        def ce(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            w = None if weight is None else weight.to(pred.device)
            return F.cross_entropy(pred, y, weight=w)

        return ce
    gamma = cfg.focal_gamma

    def focal(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logpt = F.log_softmax(pred, dim=-1).gather(1, y[:, None]).squeeze(1)
        pt = logpt.detach().exp()
        if weight is not None:
            logpt = logpt * weight.to(pred.device)[y]
        return (-((1 - pt) ** gamma) * logpt).mean()

    return focal
