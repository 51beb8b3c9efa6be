"""Gradient Rebalancing Module (GRM, DESIGN §4): unimodal heads, distribution-driven
scaling of encoder gradients and the spatial alignment loss."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from . import functional as BF
from .contract import check_contract, encoder_parameters

DISTRIBUTIONS = ("kl", "mse", None)
COEFFICIENT_MODES = ("guarded", "raw")
DELTA_MODES = ("same-batch", "history")
STAT_KEYS = ("kl", "delta", "mu", "head_loss", "n_present", "cos", "grad_norm_before", "grad_norm_after")


class GradientRebalancer(nn.Module):
    """Unimodal heads plus the two modulations of BALM's GRM (DESIGN §4).

    Per modality m a head ``ŷ^m = δ(W_2^m ReLU(W_1^m sg(z^m)))`` (Eq. 17) with hidden width
    ``fusion_head.in_features`` and output width ``fusion_head.out_features``, trained by
    ``head_optimizer`` (Adam, ``lr``, ``weight_decay``) on detached embeddings (Eq. 18).

    Distribution-driven modulation (Eq. 19–22): the discrepancy ``KL(ŷ ‖ ŷ^m)`` (or the MSE of
    probabilities for ``distribution="mse"``), its decrease ``Δ^m``, the coefficients
    ``μ^m = ρ Σ_{m'≠m} Δ^{m'} / Σ Δ`` (guarded, see :func:`balm.core.functional.coefficients`), and
    every gradient of encoder m's parameters multiplied by ``μ^m`` (plus optional Gaussian noise
    with the gradient's standard deviation, as OGM-GE does).

    Spatial modulation (Eq. 23–26): :meth:`alignment_loss` returns ``τ L_mod`` with
    ``L_mod = (1/M) Σ_m |μ̄^m cos(vec W_2^m, vec W_pred)|`` and ``μ̄ = μ/ρ`` of the last
    rebalance; its gradient reaches only the fusion head.

    Use per step: ``loss = task_loss + grm.alignment_loss()``; ``loss.backward()``;
    ``grm.rebalance_(embeddings, prediction, targets, masks)``; clip; ``optimizer.step()``.

    Options beyond the paper: ``missing_aware`` (heads and discrepancies only see utterances where
    the modality is present), ``delta_mode`` (``"same-batch"``: Δ^m is the decrease of the
    discrepancy on the current batch produced by this step's head update; ``"history"``: the public
    code's ``KL_{t−1} − KL_t`` across mini-batches), ``scale_gradients`` (False: coefficients are
    estimated and weight the spatial term but gradients are not scaled, BALM-S), ``track_stats``
    (cosines and gradient norms for the logs). ``noise`` accompanies the scaling: with
    ``scale_gradients=False`` no gradient is touched and no noise is added.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        embed_dims: Mapping[str, int],
        fusion_head: nn.Linear,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        rho: float = 1.2,
        tau: float = 0.4,
        distribution: str | None = "kl",
        spatial: bool = True,
        noise: bool = False,
        missing_aware: bool = True,
        coefficients: str = "guarded",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        start_epoch: int = 0,
        end_epoch: int | None = None,
        eps: float = 1e-5,
        delta_mode: str = "same-batch",
        scale_gradients: bool | None = None,
        track_stats: bool = True,
    ):
        super().__init__()
        encoders = dict(encoders.items())
        embed_dims = dict(embed_dims.items())
        out_features = check_contract(encoders, embed_dims, fusion_head, task, num_classes, "GRM")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
        if coefficients not in COEFFICIENT_MODES:
            raise ValueError(f"coefficients must be one of {COEFFICIENT_MODES}, got {coefficients!r}")
        if delta_mode not in DELTA_MODES:
            raise ValueError(f"delta_mode must be one of {DELTA_MODES}, got {delta_mode!r}")
        if not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"rho must be a positive number, got {rho!r}")
        if not (math.isfinite(tau) and tau >= 0):
            raise ValueError(f"tau must be a non-negative number, got {tau!r}")
        if not (eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if end_epoch is not None and end_epoch <= start_epoch:
            raise ValueError(f"end_epoch ({end_epoch}) must be greater than start_epoch ({start_epoch})")
        if scale_gradients is None:
            scale_gradients = distribution is not None
        if scale_gradients and distribution is None:
            raise ValueError("scale_gradients=True needs a distribution ('kl' or 'mse') to estimate μ")
        if distribution is None and not spatial:
            raise ValueError("distribution=None and spatial=False leave GRM nothing to do")

        self.modalities = tuple(encoders)
        owned = encoder_parameters(encoders, fusion_head)
        self._params = {m: [p for _, p in owned[m]] for m in self.modalities}
        self._param_names = {m: [n for n, _ in owned[m]] for m in self.modalities}
        # references only: the backbone owns these modules (not registered as sub-modules)
        self.__dict__["_encoders"] = encoders
        self.__dict__["_fusion_head"] = fusion_head

        self.task, self.rho, self.tau = task, float(rho), float(tau)
        self.distribution, self.spatial, self.noise = distribution, bool(spatial), bool(noise)
        self.missing_aware, self.coefficient_mode, self.delta_mode = bool(missing_aware), coefficients, delta_mode
        self.scale_gradients, self.track_stats, self.eps = bool(scale_gradients), bool(track_stats), float(eps)
        self.start_epoch, self.end_epoch = int(start_epoch), end_epoch
        self._epoch = 0

        w = fusion_head.weight
        hidden = fusion_head.in_features
        self.heads = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(embed_dims[m], hidden), nn.ReLU(), nn.Linear(hidden, out_features))
                for m in self.modalities
            }
        ).to(device=w.device, dtype=w.dtype)
        self.head_optimizer: torch.optim.Optimizer = torch.optim.Adam(
            self.heads.parameters(), lr=lr, weight_decay=weight_decay
        )
        self._mu_bar: Tensor | None = None
        self._kl_prev: Tensor | None = None
        self._has_prev: Tensor | None = None
        self._last: dict[str, Tensor] = {}
        self._counts: Tensor | None = None  # steps, clamped_steps, degenerate_steps
        self._flags: Tensor | None = None  # clamped, fallback of the last step

    # ------------------------------------------------------------------ window
    @property
    def active(self) -> bool:
        """Whether the current epoch lies in the modulation window ``[start_epoch, end_epoch)``."""
        return self._epoch >= self.start_epoch and (self.end_epoch is None or self._epoch < self.end_epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the current epoch. Entering or leaving the window drops the stored μ̄ (so no stale
        spatial term survives) and the KL history of ``delta_mode="history"``; within the window
        the history is kept across epochs, as in the public code."""
        was = self.active
        self._epoch = int(epoch)
        if self.active != was:
            self._mu_bar = None
            self.reset_history()

    def reset_history(self) -> None:
        """Forget ``KL_{t−1}`` (``delta_mode="history"``): the next step uses ``Δ = KL``."""
        self._kl_prev = None
        self._has_prev = None

    # ------------------------------------------------------------------ report
    def touched(self) -> dict[str, list[str]]:
        """Modality -> names (inside its encoder) of the parameters whose gradients it scales."""
        return {m: list(self._param_names[m]) for m in self.modalities}

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Quantities of the last :meth:`rebalance_`, converted to floats on access (one host sync).

        Per modality: ``kl`` (the discrepancy KL_t, or the MSE for BALM-M; in ``same-batch`` mode
        measured after the head step), ``delta``, ``mu``, ``head_loss``, ``n_present`` and, with
        ``track_stats``, ``cos`` (cosine of W_2^m and W_pred after the step), ``grad_norm_before`` /
        ``grad_norm_after`` (L2 norm of encoder m's gradient before / after scaling).
        ``stats["guard"]``: ``clamped`` / ``fallback`` (0 or 1, last step) and the counters
        ``steps``, ``clamped_steps``, ``degenerate_steps`` since construction.
        Empty before the first rebalance.
        """
        if not self._last:
            return {}
        keys = [k for k in STAT_KEYS if k in self._last]
        dev = self._last["mu"].device
        table = torch.stack([self._last[k].to(dev, torch.float64) for k in keys]).cpu().tolist()
        out = {k: dict(zip(self.modalities, row)) for k, row in zip(keys, table)}
        counts = self._counts.tolist()
        flags = self._flags.tolist()
        out["guard"] = {
            "clamped": float(flags[0]),
            "fallback": float(flags[1]),
            "steps": float(counts[0]),
            "clamped_steps": float(counts[1]),
            "degenerate_steps": float(counts[2]),
        }
        return out

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
            return torch.zeros((), device=w.device, dtype=w.dtype)
        cos = BF.cosine_to_fused(self._head_out_weights().to(w.device, w.dtype), w)
        return self.tau * BF.spatial_loss(self._mu_bar.to(w.device, w.dtype), cos)

    # ------------------------------------------------------------------ step
    def _check(self, embeddings, fused_output, targets, masks) -> int:
        if set(embeddings) != set(self.modalities):
            raise ValueError(f"embeddings must have exactly the modalities {list(self.modalities)}, got {list(embeddings)}")
        n = fused_output.shape[0]
        for m in self.modalities:
            z = embeddings[m]
            if z.dim() != 2 or z.shape[0] != n:
                raise ValueError(f"embeddings[{m!r}] must have shape ({n}, d_z), got {tuple(z.shape)}")
        if targets.shape[0] != n:
            raise ValueError(f"targets must have {n} entries (one per row of fused_output), got {tuple(targets.shape)}")
        if masks is not None and self.missing_aware:
            for m in self.modalities:
                if m not in masks:
                    raise ValueError(f"masks is missing modality {m!r}")
                if masks[m].shape != (n,):
                    raise ValueError(f"masks[{m!r}] must have shape ({n},), got {tuple(masks[m].shape)}")
        return n

    def _stacked_heads(self, zs: list[Tensor]) -> Tensor:
        return torch.stack([self.heads[m](z) for m, z in zip(self.modalities, zs)])

    def _head_losses(self, outs: Tensor, targets: Tensor, present: Tensor | None) -> tuple[Tensor, Tensor]:
        M, n = outs.shape[0], outs.shape[1]
        if self.task == "classification":
            logp = BF.log_softmax(outs)
            per = -logp.gather(-1, targets.long().expand(M, n).unsqueeze(-1)).squeeze(-1)
        else:
            per = (outs.squeeze(-1) - targets.to(outs.dtype).unsqueeze(0)).pow(2)
        return BF.masked_sample_mean(per, present)

    def rebalance_(
        self,
        embeddings: Mapping[str, Tensor],
        fused_output: Tensor,
        targets: Tensor,
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        """One GRM step, after ``loss.backward()`` and before ``optimizer.step()`` (Algorithm 1).

        embeddings[m]: (N, d_z^m) encoder outputs z^m; fused_output: the backbone's prediction,
        logits (N, C) or scores (N,); targets: (N,); masks[m]: (N,) bool, True where m is present.
        Trains the heads one step, computes Δ and μ, multiplies every gradient of encoder m's
        parameters by μ^m and stores μ̄ for the next :meth:`alignment_loss`. No-op outside the window.
        """
        if not self.active:
            return
        self._check(embeddings, fused_output, targets, masks)
        w = self._fusion_head.weight
        zs = [embeddings[m].detach().to(w.dtype) for m in self.modalities]
        present = None
        if self.missing_aware and masks is not None:
            present = torch.stack([masks[m].to(torch.bool) for m in self.modalities]).to(w.device)
        targets = targets.detach().to(w.device)

        with torch.enable_grad():
            outs = self._stacked_heads(zs)
            head_loss, counts = self._head_losses(outs, targets, present)
            self.head_optimizer.zero_grad(set_to_none=True)
            head_loss.sum().backward()
            self.head_optimizer.step()

        with torch.no_grad():
            M = len(self.modalities)
            if self.distribution is None:
                disc = delta = torch.zeros(M, device=w.device)
                mu = torch.full((M,), self.rho, device=w.device)
                clamped = fallback = torch.zeros((), dtype=torch.bool, device=w.device)
            else:
                measure = BF.kl_to_fused if self.distribution == "kl" else BF.mse_to_fused
                fused_log = BF.log_distribution(fused_output.detach().float(), self.task)
                before, _ = measure(fused_log, BF.log_distribution(outs.detach().float(), self.task), present)
                has = counts > 0
                if self.delta_mode == "same-batch":
                    after_out = self._stacked_heads(zs).float()
                    disc, _ = measure(fused_log, BF.log_distribution(after_out, self.task), present)
                    delta = torch.where(has, before - disc, torch.zeros_like(before))
                    scale = torch.where(has, before, torch.zeros_like(before)).sum()
                else:
                    disc = before
                    if self._kl_prev is None:
                        self._kl_prev = torch.zeros_like(before)
                        self._has_prev = torch.zeros_like(has)
                    prev, has_prev = self._kl_prev, self._has_prev
                    delta = torch.where(has, BF.deltas(prev, before, has_prev), torch.zeros_like(before))
                    scale = torch.where(has, torch.where(has_prev, prev, before), torch.zeros_like(before)).sum()
                    self._kl_prev = torch.where(has, before, prev)
                    self._has_prev = has_prev | has
                mu, clamped, fallback = BF.coefficients(delta, self.rho, self.coefficient_mode, self.eps, scale)

            last = {"kl": disc, "delta": delta, "mu": mu, "head_loss": head_loss.detach(), "n_present": counts}
            if self.track_stats:
                norms_before = self._grad_norms()
            if self.scale_gradients:
                self._scale_gradients(mu)
            if self.track_stats:
                last["grad_norm_before"] = norms_before
                if not self.scale_gradients:
                    last["grad_norm_after"] = norms_before
                elif self.noise:
                    last["grad_norm_after"] = self._grad_norms()
                else:
                    last["grad_norm_after"] = norms_before * mu.to(norms_before.dtype).abs()
                last["cos"] = BF.cosine_to_fused(self._head_out_weights(), w.detach())
            self._mu_bar = (mu / self.rho).detach()
            flags = torch.stack([clamped, fallback]).to(torch.float64)
            if self._counts is None:
                self._counts = torch.zeros(3, dtype=torch.float64, device=flags.device)
            self._counts += torch.cat([flags.new_ones(1), flags])
            self._flags = flags
            self._last = {k: v.detach() for k, v in last.items()}

    def _grads(self, m: str) -> list[Tensor]:
        return [p.grad for p in self._params[m] if p.grad is not None]

    def _grad_norms(self) -> Tensor:
        w = self._fusion_head.weight
        norms = []
        for m in self.modalities:
            grads = self._grads(m)
            if grads and all(g.device == w.device for g in grads):
                norms.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).double()))
            elif grads:
                norms.append(torch.linalg.vector_norm(torch.stack([n.to(w.device) for n in torch._foreach_norm(grads)]).double()))
            else:
                norms.append(torch.zeros((), dtype=torch.float64, device=w.device))
        return torch.stack(norms)

    def _scale_gradients(self, mu: Tensor) -> None:
        """Eq. 22: g ← μ^m g for every gradient of encoder m (+ N(0, std(g)²) with ``noise``)."""
        for i, m in enumerate(self.modalities):
            grads = self._grads(m)
            if not grads:
                continue
            if self.noise:
                noises = [
                    torch.randn_like(g) * g.std() if g.numel() > 1 else torch.zeros_like(g) for g in grads
                ]
            groups: dict[tuple, list[Tensor]] = {}
            for g in grads:
                groups.setdefault((g.device, g.dtype), []).append(g)
            for (device, dtype), gs in groups.items():
                torch._foreach_mul_(gs, mu[i].to(device=device, dtype=dtype))
            if self.noise:
                torch._foreach_add_(grads, noises)
