"""Gradient Rebalancing Module (GRM, docs/method.md §4): unimodal heads, distribution-driven
scaling of encoder gradients and the spatial alignment loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from . import functional as BF
from .rebalancer import Rebalancer, RebalancerOptions, _non_negative, _one_of, _positive, mlp_heads

DISTRIBUTIONS = ("kl", "mse", None)
COEFFICIENT_MODES = ("guarded", "raw", "floored")
DELTA_MODES = ("same-batch", "history", "ema")
STAT_KEYS = ("kl", "delta", "mu", "head_loss", "n_present", "cos", "grad_norm_before", "grad_norm_after", "mu_std")


@dataclass
class GRMOptions(RebalancerOptions):
    """Options of :class:`GradientRebalancer` (beyond :class:`~balm.core.rebalancer.RebalancerOptions`).

    ``rho``: modulation intensity ρ (Eq. 21); ``tau``: weight τ of the spatial loss (Eq. 26);
    ``distribution``: the discrepancy, ``"kl"`` (Eq. 19), ``"mse"`` (BALM-M) or None (no μ);
    ``spatial``: the spatial alignment loss; ``noise``: Gaussian noise with the gradient's std on
    modulated gradients (OGM-GE's GE); ``coefficients``: ``"guarded"``, ``"floored"`` or ``"raw"``
    (:func:`balm.core.functional.coefficients`), with ``eps`` its threshold and ``mu_floor`` the
    floor of ``"floored"`` (a fraction of ρ); ``delta_mode``: how Δ is measured (class docstring),
    with ``delta_beta`` the smoothing of ``"ema"``; ``scale_gradients``: apply μ to the encoders
    (None = whenever a distribution is given; False = BALM-S).
    """

    rho: float = 1.2
    tau: float = 0.4
    distribution: str | None = "kl"
    spatial: bool = True
    noise: bool = False
    coefficients: str = "guarded"
    eps: float = 1e-5
    delta_mode: str = "same-batch"
    delta_beta: float = 0.9
    mu_floor: float = 0.2
    scale_gradients: bool | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of("distribution", self.distribution, DISTRIBUTIONS)
        _one_of("coefficients", self.coefficients, COEFFICIENT_MODES)
        _one_of("delta_mode", self.delta_mode, DELTA_MODES)
        self.rho = _positive("rho", self.rho)
        self.tau = _non_negative("tau", self.tau)
        self.eps = _non_negative("eps", self.eps)
        self.delta_beta = _non_negative("delta_beta", self.delta_beta)
        if self.delta_beta >= 1:
            raise ValueError(f"delta_beta must lie in [0, 1), got {self.delta_beta!r}")
        self.mu_floor = _non_negative("mu_floor", self.mu_floor)
        if self.mu_floor > 1:
            raise ValueError(f"mu_floor is a fraction of rho and must lie in [0, 1], got {self.mu_floor!r}")
        self.spatial, self.noise = bool(self.spatial), bool(self.noise)
        if self.scale_gradients is None:
            self.scale_gradients = self.distribution is not None
        self.scale_gradients = bool(self.scale_gradients)
        if self.scale_gradients and self.distribution is None:
            raise ValueError("scale_gradients=True needs a distribution ('kl' or 'mse') to estimate μ")
        if self.distribution is None and not self.spatial:
            raise ValueError("distribution=None and spatial=False leave GRM nothing to do")


class GradientRebalancer(Rebalancer):
    """Unimodal heads plus the two modulations of BALM's GRM (docs/method.md §4).

    Per modality m a head ``ŷ^m = δ(W_2^m ReLU(W_1^m sg(z^m)))`` (Eq. 17) with hidden width
    ``fusion_head.in_features`` and output width ``fusion_head.out_features``, trained by
    ``head_optimizer`` (Adam, ``lr``, ``weight_decay``) on detached embeddings (Eq. 18).

    Distribution-driven modulation (Eq. 19–22): the discrepancy ``KL(ŷ ‖ ŷ^m)`` (or the MSE of
    probabilities for ``distribution="mse"``), its decrease ``Δ^m``, the coefficients
    ``μ^m = ρ Σ_{m'≠m} Δ^{m'} / Σ Δ`` (guarded, see :func:`balm.core.functional.coefficients`),
    applied to encoder m's gradients (Eq. 22) or, with ``modulate="update"``, to its parameter
    update (Eq. 34; see :meth:`~balm.core.rebalancer.Rebalancer.step`), with optional Gaussian
    noise of the gradient's standard deviation (as OGM-GE).

    Spatial modulation (Eq. 23–26): :meth:`alignment_loss` returns ``τ L_mod`` with
    ``L_mod = (1/M) Σ_m |μ̄^m cos(vec W_2^m, vec W_pred)|`` and ``μ̄ = μ/ρ`` of the last
    rebalance; its gradient reaches only the fusion head.

    Use per step: ``loss = task_loss + grm.alignment_loss()``; ``loss.backward()``;
    ``grm.rebalance_(embeddings, prediction, targets, masks)``; clip; ``grm.step(optimizer)``.

    Options (:class:`GRMOptions`) beyond the paper: ``missing_aware`` (heads and discrepancies only
    see utterances where the modality is present), ``delta_mode`` (``"same-batch"``: Δ^m is the
    decrease of the discrepancy on the current batch produced by this step's head update;
    ``"history"``: the public code's ``KL_{t−1} − KL_t`` across mini-batches; ``"ema"``: that
    decrease smoothed over steps, :func:`balm.core.functional.ema_delta`), ``scale_gradients``
    (False: coefficients are estimated and weight the spatial term but no encoder is scaled,
    BALM-S), ``track_stats`` (cosines and gradient norms for the logs). ``noise`` accompanies the
    scaling: with ``scale_gradients=False`` no gradient is touched and no noise is added.
    """

    Options = GRMOptions
    method = "GRM"
    state_attributes = ("_mu_bar", "_kl_prev", "_has_prev", "_ema_state", "_mu_moments", "_counts", "_flags")

    def setup(self) -> None:
        head = self._fusion_head
        self.add_heads(mlp_heads(self.embed_dims, head.in_features, self.out_features, head.weight))
        self._mu_bar: Tensor | None = None
        self._kl_prev: Tensor | None = None
        self._has_prev: Tensor | None = None
        self._ema_state: tuple | None = None
        self._mu_moments: Tensor | None = None  # Σμ, Σμ² per modality since construction
        self._counts: Tensor | None = None  # steps, clamped_steps, degenerate_steps
        self._flags: Tensor | None = None  # clamped, fallback of the last step

    # ------------------------------------------------------------------ window
    def _on_window_change(self) -> None:
        """Entering or leaving the window drops the stored μ̄ (so no stale spatial term survives)
        and the KL history of ``delta_mode="history"``; within the window the history is kept
        across epochs, as in the public code."""
        self._mu_bar = None
        self.reset_history()

    def reset_history(self) -> None:
        """Forget ``KL_{t−1}`` (``delta_mode="history"``: the next step uses ``Δ = KL``) and the
        smoothed decrease of ``"ema"``."""
        self._kl_prev = None
        self._has_prev = None
        self._ema_state = None

    # ------------------------------------------------------------------ report
    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Quantities of the last :meth:`rebalance_`, converted to floats on access (one host sync).

        Per modality: ``kl`` (the discrepancy KL_t, or the MSE for BALM-M; in ``same-batch`` mode
        measured after the head step), ``delta``, ``mu``, ``head_loss``, ``n_present`` and, with
        ``track_stats``, ``cos`` (cosine of W_2^m and W_pred after the step), ``grad_norm_before`` /
        ``grad_norm_after`` (L2 norm of encoder m's gradient before / after scaling), ``mu_std``
        (standard deviation of μ^m over every step since construction: its step-to-step jitter).
        ``stats["guard"]``: ``clamped`` / ``fallback`` (0 or 1, last step) and the counters
        ``steps``, ``clamped_steps``, ``degenerate_steps`` since construction.
        Empty before the first rebalance.
        """
        return super().stats

    def _extra_stats(self) -> dict[str, dict[str, float]]:
        counts, flags = self._counts.tolist(), self._flags.tolist()
        return {"guard": {"clamped": float(flags[0]), "fallback": float(flags[1]), "steps": float(counts[0]),
                          "clamped_steps": float(counts[1]), "degenerate_steps": float(counts[2])}}

    @property
    def degenerate_steps(self) -> int:
        """Steps whose coefficients needed the fallback rule (ΣΔ⁺ not safely positive)."""
        return 0 if self._counts is None else int(self._counts[2].item())

    @property
    def mu_bar(self) -> Tensor | None:
        """μ̄ = μ/ρ of the last rebalance (M,), or None."""
        return self._mu_bar

    # ------------------------------------------------------------------ spatial
    def _head_out_weights(self) -> Tensor:
        return torch.stack([self.heads[m][-1].weight.detach() for m in self.modalities])

    def alignment_loss(self) -> Tensor:
        """``τ · L_mod`` (Eq. 26) from the μ̄ stored by the last :meth:`rebalance_`, recomputed
        now (no graph kept across steps). Gradient flows only into the fusion head's weight.
        Exactly 0 before the first rebalance, outside the window and when ``spatial=False``."""
        w = self._fusion_head.weight
        if not (self.spatial and self.active) or self._mu_bar is None:
            return self.zero_loss()
        cos = BF.cosine_to_fused(self._head_out_weights().to(w.device, w.dtype), w)
        return self.tau * BF.spatial_loss(self._mu_bar.to(w.device, w.dtype), cos)

    # ------------------------------------------------------------------ step
    def _stacked_heads(self, zs: list[Tensor]) -> Tensor:
        return torch.stack([self.heads[m](z) for m, z in zip(self.modalities, zs)])

    def _discrepancy(self, fused_log: Tensor, outs: Tensor, present: Tensor | None) -> Tensor:
        measure = BF.kl_to_fused if self.distribution == "kl" else BF.mse_to_fused
        return measure(fused_log, BF.log_distribution(outs.float(), self.task), present)[0]

    def _deltas(self, zs: list[Tensor], outs: Tensor, fused_output: Tensor, counts: Tensor, present) -> tuple:
        """(discrepancy, Δ, scale) of this step under ``delta_mode`` (Eq. 19–20)."""
        fused_log = BF.log_distribution(fused_output.detach().float(), self.task)
        before = self._discrepancy(fused_log, outs.detach(), present)
        has = counts > 0
        if self.delta_mode == "same-batch":
            disc = self._discrepancy(fused_log, self._stacked_heads(zs), present)
            zero = torch.zeros_like(before)
            return disc, torch.where(has, before - disc, zero), torch.where(has, before, zero).sum()
        if self.delta_mode == "ema":
            delta, scale, self._ema_state = BF.ema_delta(before, has, self._ema_state, self.delta_beta)
            return before, delta, scale
        delta, scale, self._kl_prev, self._has_prev = BF.history_delta(before, has, self._kl_prev, self._has_prev)
        return before, delta, scale

    def rebalance_(self, embeddings: Mapping[str, Tensor], fused_output: Tensor, targets: Tensor, masks=None) -> None:
        """One GRM step, after ``loss.backward()`` and before :meth:`step` (Algorithm 1).

        embeddings[m]: (N, d_z^m) encoder outputs z^m; fused_output: the backbone's prediction,
        logits (N, C) or scores (N,); targets: (N,); masks[m]: (N,) bool, True where m is present.
        Trains the heads one step, computes Δ and μ, applies μ^m to encoder m and stores μ̄ for
        the next :meth:`alignment_loss`. No-op outside the window.
        """
        if not self.active:
            return
        zs, present, targets = self.prepare(embeddings, fused_output, targets, masks)
        w = self._fusion_head.weight
        with torch.enable_grad():
            outs = self._stacked_heads(zs)
            head_loss, counts = self._train_heads(outs, targets, present)

        with torch.no_grad():
            if self.distribution is None:
                M = len(self.modalities)
                disc = delta = torch.zeros(M, device=w.device)
                mu = torch.full((M,), self.rho, device=w.device)
                clamped = fallback = torch.zeros((), dtype=torch.bool, device=w.device)
            else:
                disc, delta, scale = self._deltas(zs, outs, fused_output, counts, present)
                mu, clamped, fallback = BF.coefficients(delta, self.rho, self.coefficients, self.eps, scale,
                                                        self.mu_floor)

            last = {"kl": disc, "delta": delta, "mu": mu, "head_loss": head_loss, "n_present": counts}
            if self.track_stats:
                norms_before = self.grad_norms()
            if self.scale_gradients:
                self.scale_(mu, "before" if self.noise else None)
            if self.track_stats:
                last["cos"] = BF.cosine_to_fused(self._head_out_weights(), w.detach())
                last["grad_norm_before"] = norms_before
                if self.scale_gradients and self.noise:
                    last["grad_norm_after"] = self.grad_norms()
                elif self.scale_gradients and self.modulate == "gradient":
                    last["grad_norm_after"] = norms_before * mu.to(norms_before.dtype).abs()
                else:
                    last["grad_norm_after"] = norms_before
            moments = torch.stack([mu, mu * mu]).to(torch.float64)
            self._mu_moments = moments if self._mu_moments is None else self._mu_moments + moments
            if self.track_stats:
                steps = (self._counts[0] + 1) if self._counts is not None else moments.new_ones(())
                mean = self._mu_moments[0] / steps
                last["mu_std"] = (self._mu_moments[1] / steps - mean * mean).clamp_min(0).sqrt()
            self._mu_bar = (mu / self.rho).detach()
            flags = torch.stack([clamped, fallback]).to(torch.float64)
            if self._counts is None:
                self._counts = torch.zeros(3, dtype=torch.float64, device=flags.device)
            self._counts += torch.cat([flags.new_ones(1), flags])
            self._flags = flags
            self._last = {k: v.detach() for k, v in last.items()}
