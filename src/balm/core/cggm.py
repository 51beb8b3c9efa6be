"""CGGM: classifier-guided gradient modulation (Guo et al., NeurIPS 2024)."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from . import functional as BF
from .baselines import BaselineRebalancer

METRICS = ("accuracy", "loss")
COEFFICIENT_MODES = ("guarded", "raw")


def head_metric(outputs: Tensor, targets: Tensor, task: str, metric: str, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The evaluation metric ``ε^m`` of each unimodal head on a batch (higher = better).

    outputs: (M, N, C) logits or (M, N) / (M, N, 1) scores; targets: (N,); present: (M, N) bool.
    ``metric="accuracy"``: share of correct argmax (classification) or of correct signs
    ``1[s > 0] = 1[y > 0]`` (regression, CGGM's binary accuracy); ``"loss"``: minus the task loss
    (cross-entropy, or squared error). Masked mean over present samples; returns ``(ε (M,), count (M,))``.
    """
    M, n = outputs.shape[0], outputs.shape[1]
    if metric == "accuracy":
        if task == "classification":
            per = (outputs.argmax(-1) == targets.long().unsqueeze(0)).to(torch.float32)
        else:
            per = ((outputs.reshape(M, n) > 0) == (targets > 0).unsqueeze(0)).to(torch.float32)
    elif metric == "loss":
        if task == "classification":
            logp = BF.log_softmax(outputs.float())
            per = logp.gather(-1, targets.long().expand(M, n).unsqueeze(-1)).squeeze(-1)
        else:
            per = -(outputs.reshape(M, n).float() - targets.float().unsqueeze(0)).pow(2)
    else:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return BF.masked_sample_mean(per, present)


def balancing_terms(delta: Tensor, mode: str = "guarded", eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """CGGM's ``B^m = (Σ_{m'} Δε^{m'} − Δε^m) / Σ_{m'} Δε^{m'}`` (M,), with the same guard as BALM
    (``mode="guarded"``: Δ⁺ = max(Δ, 0); the uniform ``(M−1)/M`` when ΣΔ⁺ is not safely positive;
    ``"raw"``: the official ``/(ΣΔ + 1e-8)``). Returns ``(B, clamped, fallback)``."""
    return BF.coefficients(delta, 1.0, mode, eps)


def direction_loss(balance: Tensor, cos: Tensor) -> Tensor:
    """``L_gm = (1/M) Σ_m (|B^m| − B^m cos^m)``, cos^m = cos(vec W^m, vec W_pred)."""
    if balance.shape != cos.shape:
        raise ValueError(f"balance {tuple(balance.shape)} and cos {tuple(cos.shape)} must pair one to one")
    return (balance.abs() - balance * cos).mean()


class CGGM(BaselineRebalancer):
    """Classifier-guided gradient modulation for any backbone and M ≥ 2 modalities.

    Per modality a classifier ``f^m(z) = W^m ReLU(W_1^m sg(z^m))`` (hidden width
    ``fusion_head.in_features``, so ``W^m`` has the shape of ``W_pred``), trained by
    ``head_optimizer`` on the task loss. Per step t, with ``ε^m_t`` the head's metric on the batch
    (before its update; see :func:`head_metric`):

    - ``Δε^m_t = ε^m_t − ε^m_{t−1}`` across mini-batches, as in the official code (``ε_{−1} = 0``,
      i.e. ``Δε = ε`` at the first step; ``Δε = 0`` there for ``metric="loss"``),
    - ``B^m_t = (Σ_{m'} Δε^{m'}_t − Δε^m_t) / Σ_{m'} Δε^{m'}_t`` (:func:`balancing_terms`),
    - every gradient of encoder m is multiplied by ``ρ B^m_t`` (magnitude modulation),
    - :meth:`alignment_loss` returns ``λ L_gm`` with
      ``L_gm = (1/M) Σ_m (|B^m_t| − B^m_t cos(vec W^m, vec W_pred))`` (direction modulation),
      used in step t+1's loss; its gradient reaches only ``W_pred``.
    """

    method = "CGGM"

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        embed_dims: Mapping[str, int],
        fusion_head: nn.Linear,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        rho: float = 1.3,
        lam: float = 0.2,
        metric: str | None = None,
        coefficients: str = "guarded",
        eps: float = 1e-5,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        start_epoch: int = 0,
        end_epoch: int | None = None,
        missing_aware: bool = True,
        track_stats: bool = True,
    ):
        super().__init__(
            encoders, embed_dims, fusion_head, task=task, num_classes=num_classes, lr=lr,
            weight_decay=weight_decay, start_epoch=start_epoch, end_epoch=end_epoch,
            missing_aware=missing_aware, track_stats=track_stats,
        )
        if not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho must be a positive number, got {rho!r}")
        if not (math.isfinite(lam) and lam >= 0):
            raise ValueError(f"lam must be a non-negative number, got {lam!r}")
        metric = "accuracy" if metric is None else metric
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if coefficients not in COEFFICIENT_MODES:
            raise ValueError(f"coefficients must be one of {COEFFICIENT_MODES}, got {coefficients!r}")
        if not eps >= 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        self.rho, self.lam, self.metric = float(rho), float(lam), metric
        self.coefficient_mode, self.eps = coefficients, float(eps)
        w = fusion_head.weight
        hidden = fusion_head.in_features
        self.heads = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(self.embed_dims[m], hidden), nn.ReLU(), nn.Linear(hidden, self.out_features))
                for m in self.modalities
            }
        ).to(device=w.device, dtype=w.dtype)
        self.head_optimizer = torch.optim.Adam(self.heads.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self._prev: Tensor | None = None  # ε_{t−1}
        self._has_prev: Tensor | None = None
        self._balance: Tensor | None = None  # B_t for the next alignment_loss

    def _on_window_change(self) -> None:
        self._balance = None

    @property
    def balance(self) -> Tensor | None:
        """``B`` of the last step (M,), or None."""
        return self._balance

    def _head_weights(self) -> Tensor:
        return torch.stack([self.heads[m][-1].weight.detach() for m in self.modalities])

    def alignment_loss(self) -> Tensor:
        """``λ L_gm`` from the B of the last :meth:`rebalance_` and the current weights; the heads'
        weights are constants, so only ``W_pred`` receives gradient. Zero before the first step and
        outside the window."""
        w = self._fusion_head.weight
        if self._balance is None or not self.active or self.lam == 0:
            return torch.zeros((), device=w.device, dtype=w.dtype)
        cos = BF.cosine_to_fused(self._head_weights().to(w.device, w.dtype), w)
        return self.lam * direction_loss(self._balance.to(w.device, w.dtype), cos)

    def rebalance_(
        self,
        embeddings: Mapping[str, Tensor],
        fused_output: Tensor,
        targets: Tensor,
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        """One CGGM step after ``loss.backward()``, before ``optimizer.step()``.

        embeddings[m]: (N, d_z^m); fused_output: (N, C) logits or (N,) scores; targets: (N,);
        masks[m]: (N,) bool. Heads and the metric history are updated at every step; the
        gradients are scaled and B stored for the direction loss only inside the window.
        """
        self._check(embeddings, fused_output, targets, masks)
        w = self._fusion_head.weight
        zs = [embeddings[m].detach().to(w.dtype) for m in self.modalities]
        present = self._present(masks, w.device)
        targets = targets.detach().to(w.device)
        with torch.enable_grad():
            outs = torch.stack([self.heads[m](z) for m, z in zip(self.modalities, zs)])
            head_loss, count = self._head_losses(outs, targets, present)
            self.head_optimizer.zero_grad(set_to_none=True)
            head_loss.sum().backward()
            self.head_optimizer.step()
        with torch.no_grad():
            eps_t, _ = head_metric(outs.detach(), targets, self.task, self.metric, present)
            eps_t = eps_t.to(torch.float32)
            has = count > 0
            if self._prev is None:
                self._prev = torch.zeros_like(eps_t)
                self._has_prev = torch.zeros_like(has)
            # first sighting: ε_{−1} = 0 for accuracy (the official Δε = ε); no change for "loss"
            first = eps_t if self.metric == "loss" else torch.zeros_like(eps_t)
            prev = torch.where(self._has_prev, self._prev, first)
            delta = torch.where(has, eps_t - prev, torch.zeros_like(eps_t))
            self._prev = torch.where(has, eps_t, self._prev)
            self._has_prev = self._has_prev | has
            balance, clamped, fallback = balancing_terms(delta, self.coefficient_mode, self.eps)
            coeff = self.rho * balance if self.active else torch.ones_like(balance)
            last = {"metric": eps_t, "delta": delta, "balance": balance, "coeff": coeff,
                    "head_loss": head_loss.detach(), "n_present": count}
            if self.track_stats:
                before = self._grad_norms()
            if self.active:
                self._scale_gradients(coeff)
                self._balance = balance.detach()
            if self.track_stats:
                last["grad_norm_before"] = before
                last["grad_norm_after"] = before * coeff.to(before.dtype).abs()
                last["cos"] = BF.cosine_to_fused(self._head_weights(), w.detach())
            flags = torch.stack([clamped, fallback]).to(torch.float32)
            last["clamped"] = flags[0].expand(len(self.modalities))
            last["fallback"] = flags[1].expand(len(self.modalities))
            self._last = last
