"""CGGM: classifier-guided gradient modulation (Guo et al., NeurIPS 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from balm.core import functional as BF
from balm.core.rebalancer import Rebalancer, RebalancerOptions, _non_negative, _one_of, _positive, mlp_heads

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


@dataclass
class CGGMOptions(RebalancerOptions):
    """Options of :class:`CGGM`: ``magnitude`` (CGGM's ρ, the strength of the magnitude
    modulation; named apart from BALM's ρ), ``lam`` (λ of the direction loss), ``metric``
    (``"accuracy"`` or ``"loss"``, see :func:`head_metric`), ``coefficients`` (``"guarded"`` or
    ``"raw"``, see :func:`balancing_terms`) with ``eps`` its threshold."""

    magnitude: float = 1.3
    lam: float = 0.2
    metric: str = "accuracy"
    coefficients: str = "guarded"
    eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        self.magnitude = _positive("magnitude", self.magnitude)
        self.lam = _non_negative("lam", self.lam)
        if self.metric is None:
            self.metric = "accuracy"
        _one_of("metric", self.metric, METRICS)
        _one_of("coefficients", self.coefficients, COEFFICIENT_MODES)
        self.eps = _non_negative("eps", self.eps)


class CGGM(Rebalancer):
    """Classifier-guided gradient modulation for any backbone and M ≥ 2 modalities.

    Per modality a classifier ``f^m(z) = W^m ReLU(W_1^m sg(z^m))`` (hidden width
    ``fusion_head.in_features``, so ``W^m`` has the shape of ``W_pred``), trained by
    ``head_optimizer`` on the task loss. Per step t, with ``ε^m_t`` the head's metric on the batch
    (before its update; see :func:`head_metric`):

    - ``Δε^m_t = ε^m_t − ε^m_{t−1}`` across mini-batches, as in the official code (``ε_{−1} = 0``,
      i.e. ``Δε = ε`` at the first step; ``Δε = 0`` there for ``metric="loss"``),
    - ``B^m_t = (Σ_{m'} Δε^{m'}_t − Δε^m_t) / Σ_{m'} Δε^{m'}_t`` (:func:`balancing_terms`),
    - every gradient of encoder m is multiplied by ``ρ B^m_t`` with ``ρ`` = ``magnitude``
      (magnitude modulation; or its update, with ``modulate="update"``),
    - :meth:`alignment_loss` returns ``λ L_gm`` with
      ``L_gm = (1/M) Σ_m (|B^m_t| − B^m_t cos(vec W^m, vec W_pred))`` (direction modulation),
      used in step t+1's loss; its gradient reaches only ``W_pred``.
    """

    Options = CGGMOptions
    method = "CGGM"
    state_attributes = ("_prev", "_has_prev", "_balance")

    def setup(self) -> None:
        head = self._fusion_head
        self.add_heads(mlp_heads(self.embed_dims, head.in_features, self.out_features, head.weight))
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
            return self.zero_loss()
        cos = BF.cosine_to_fused(self._head_weights().to(w.device, w.dtype), w)
        return self.lam * direction_loss(self._balance.to(w.device, w.dtype), cos)

    def rebalance_(self, embeddings: Mapping[str, Tensor], fused_output: Tensor, targets: Tensor, masks=None) -> None:
        """One CGGM step after ``loss.backward()``, before ``optimizer.step()``.

        embeddings[m]: (N, d_z^m); fused_output: (N, C) logits or (N,) scores; targets: (N,);
        masks[m]: (N,) bool. Heads and the metric history are updated at every step; the
        gradients are scaled and B stored for the direction loss only inside the window.
        """
        zs, present, targets = self.prepare(embeddings, fused_output, targets, masks)
        w = self._fusion_head.weight
        with torch.enable_grad():
            outs = torch.stack([self.heads[m](z) for m, z in zip(self.modalities, zs)])
            head_loss, count = self._train_heads(outs, targets, present)
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
            balance, clamped, fallback = balancing_terms(delta, self.coefficients, self.eps)
            coeff = self.magnitude * balance if self.active else torch.ones_like(balance)
            last = {"metric": eps_t, "delta": delta, "balance": balance, "coeff": coeff,
                    "head_loss": head_loss, "n_present": count}
            if self.track_stats:
                before = self.grad_norms()
            if self.active:
                self.scale_(coeff)
                self._balance = balance.detach()
            if self.track_stats:
                last["grad_norm_before"] = before
                scaled = self.active and self.modulate == "gradient"
                last["grad_norm_after"] = before * coeff.to(before.dtype).abs() if scaled else before
                last["cos"] = BF.cosine_to_fused(self._head_weights(), w.detach())
            flags = torch.stack([clamped, fallback]).to(torch.float32)
            last["clamped"] = flags[0].expand(len(self.modalities))
            last["fallback"] = flags[1].expand(len(self.modalities))
            self._last = last
