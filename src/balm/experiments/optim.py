"""The optimizer of backbone and input module (FCM), chosen by the config's ``optimizer`` key.

``adam``: Adam with L2 weight decay added to the gradient (the paper's and the public code's);
``adamw``: decoupled weight decay θ ← θ − lr·λ·θ beside the Adam step; ``sgd``: with momentum β,
b ← β b + g + λ θ, θ ← θ − lr·b (β = 0: θ ← θ − lr (g + λ θ)). Under SGD, scaling encoder m's
gradient by μ^m scales its step by μ^m (Eq. 22 = Eq. 34); under Adam a constant factor cancels
in m̂/√v̂ (docs/plugin.md, ``modulate``). ``adam-fused`` and ``adamw-fused``: the same rules in
torch's fused kernel (``fused=True``, CPU and CUDA): faster, deterministic for a seed on one
machine, but not bit-identical to the per-tensor ``adam``/``adamw`` (rounding differs by about
1e-7 per step, and training amplifies it), so results recorded under ``adam`` do not reproduce
under it. The rebalancers' unimodal heads keep their own (per-tensor) Adam.
"""

from __future__ import annotations

from typing import Iterable

import torch

from .config import Config, ConfigError


def make_optimizer(cfg: Config, params: Iterable[torch.nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over ``params`` with ``lr`` (default ``cfg.lr``), ``cfg.weight_decay`` (and
    ``cfg.momentum`` for sgd)."""
    lr = cfg.lr if lr is None else lr
    base = cfg.optimizer.removesuffix("-fused")
    if base in ("adam", "adamw"):
        kind = torch.optim.Adam if base == "adam" else torch.optim.AdamW
        if base == cfg.optimizer:
            return kind(params, lr=lr, weight_decay=cfg.weight_decay)
        try:
            return kind(params, lr=lr, weight_decay=cfg.weight_decay, fused=True)
        except RuntimeError as e:  # a device or dtype the fused kernel does not cover, or an older torch
            raise ConfigError(f"torch {torch.__version__} has no fused {kind.__name__} for these parameters "
                              f"({e}); use {base!r}", key="optimizer") from None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")  # Config validates the key first
