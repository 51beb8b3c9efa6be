"""The optimizer of backbone and input module (FCM), chosen by the config's ``optimizer`` key.

``adam``: Adam with L2 weight decay added to the gradient (the paper's and the public code's);
``adamw``: decoupled weight decay θ ← θ − lr·λ·θ beside the Adam step; ``sgd``: with momentum β,
b ← β b + g + λ θ, θ ← θ − lr·b (β = 0: θ ← θ − lr (g + λ θ)). Under SGD, scaling encoder m's
gradient by μ^m scales its step by μ^m (Eq. 22 = Eq. 34); under Adam a constant factor cancels
in m̂/√v̂ (docs/plugin.md, ``modulate``). The rebalancers' unimodal heads keep their own Adam.
"""

from __future__ import annotations

from typing import Iterable

import torch

from .config import Config


def make_optimizer(cfg: Config, params: Iterable[torch.nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params`` with ``lr`` (default ``cfg.lr``), ``cfg.weight_decay`` (and
    ``cfg.momentum`` for sgd)."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # Config validates the key first
