"""Balancing methods BALM builds on, as plug-ins with the same contract as ``GradientRebalancer``.

``ogm-ge`` (Peng et al., CVPR 2022), ``cggm`` (Guo et al., NeurIPS 2024) and ``ada2i`` (Nguyen et
al., ACM MM 2024); equations and deviations from the official code are in docs/baselines.md.
:func:`build_baseline` returns the same ``Variant`` as :func:`balm.core.build_variant`, so a runner
trains every method with one loop::

    loss = task_loss + rebalancer.alignment_loss()
    loss.backward()
    rebalancer.rebalance_(embeddings, prediction.detach(), targets, masks)
    optimizer.step()
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from . import functional as BF
from .contract import check_contract, encoder_parameters

BASELINES = ("ogm-ge", "cggm", "ada2i")


class BaselineRebalancer(nn.Module):
    """Shared machinery of the baseline rebalancers (not a method by itself).

    Holds references to the backbone's encoders and fusion head (not registered as sub-modules:
    the backbone owns them), the modulation window ``[start_epoch, end_epoch)``, the per-modality
    statistics of the last step, and the gradient scaling ``g ← k^m g`` of every trainable
    parameter of encoder m, optionally followed by Gaussian noise with the gradient's standard
    deviation (``noise="before"``: std of the unscaled gradient, as in OGM-GE; ``"after"``: std of
    the scaled gradient, as in Ada2I's code).
    """

    method = "baseline"

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        embed_dims: Mapping[str, int],
        fusion_head: nn.Linear,
        *,
        task: str = "classification",
        num_classes: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        start_epoch: int = 0,
        end_epoch: int | None = None,
        missing_aware: bool = True,
        track_stats: bool = True,
    ):
        super().__init__()
        encoders = dict(encoders.items())
        embed_dims = dict(embed_dims.items())
        out = check_contract(encoders, embed_dims, fusion_head, task, num_classes, self.method)
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if end_epoch is not None and end_epoch <= start_epoch:
            raise ValueError(f"end_epoch ({end_epoch}) must be greater than start_epoch ({start_epoch})")

        self.modalities = tuple(encoders)
        owned = encoder_parameters(encoders, fusion_head)
        self._params = {m: [p for _, p in owned[m]] for m in self.modalities}
        self._param_names = {m: [n for n, _ in owned[m]] for m in self.modalities}
        self.__dict__["_encoders"] = encoders
        self.__dict__["_fusion_head"] = fusion_head
        self.embed_dims = embed_dims
        self.task, self.out_features = task, out
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.start_epoch, self.end_epoch = int(start_epoch), end_epoch
        self.missing_aware, self.track_stats = bool(missing_aware), bool(track_stats)
        self.head_optimizer: torch.optim.Optimizer | None = None
        self._epoch = 0
        self._last: dict[str, Tensor] = {}

    # ------------------------------------------------------------------ window
    @property
    def active(self) -> bool:
        """Whether the current epoch lies in the modulation window ``[start_epoch, end_epoch)``."""
        return self._epoch >= self.start_epoch and (self.end_epoch is None or self._epoch < self.end_epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the current epoch; entering or leaving the window calls :meth:`_on_window_change`."""
        was = self.active
        self._epoch = int(epoch)
        if self.active != was:
            self._on_window_change()

    def _on_window_change(self) -> None:
        pass

    # ------------------------------------------------------------------ report
    def touched(self) -> dict[str, list[str]]:
        """Modality -> names (inside its encoder) of the parameters whose gradients it scales."""
        return {m: list(self._param_names[m]) for m in self.modalities}

    @property
    def stats(self) -> dict[str, dict[str, float]]:
        """Per-modality quantities of the last :meth:`rebalance_` as ``{stat: {modality: float}}``
        (one host sync, on access); empty before the first step."""
        if not self._last:
            return {}
        keys = list(self._last)
        dev = next(iter(self._last.values())).device
        table = torch.stack([self._last[k].to(dev, torch.float64) for k in keys]).cpu().tolist()
        return {k: dict(zip(self.modalities, row)) for k, row in zip(keys, table)}

    def alignment_loss(self) -> Tensor:
        """Extra term added to the task loss; zero for methods without one."""
        w = self._fusion_head.weight
        return torch.zeros((), device=w.device, dtype=w.dtype)

    # ------------------------------------------------------------------ helpers
    def _check(self, embeddings, fused_output: Tensor, targets: Tensor, masks) -> int:
        if set(embeddings) != set(self.modalities):
            raise ValueError(f"embeddings must have exactly the modalities {list(self.modalities)}, got {list(embeddings)}")
        n = fused_output.shape[0]
        for m in self.modalities:
            z = embeddings[m]
            if z.dim() != 2 or z.shape != (n, self.embed_dims[m]):
                raise ValueError(f"embeddings[{m!r}] must have shape ({n}, {self.embed_dims[m]}), got {tuple(z.shape)}")
        if targets.shape[0] != n:
            raise ValueError(f"targets must have {n} entries (one per row of fused_output), got {tuple(targets.shape)}")
        if masks is not None and self.missing_aware:
            for m in self.modalities:
                if m not in masks:
                    raise ValueError(f"masks is missing modality {m!r}")
                if masks[m].shape != (n,):
                    raise ValueError(f"masks[{m!r}] must have shape ({n},), got {tuple(masks[m].shape)}")
        return n

    def _present(self, masks, device) -> Tensor | None:
        """(M, N) bool availability, or None (every sample counts) without masks or missing-awareness."""
        if not self.missing_aware or masks is None:
            return None
        return torch.stack([masks[m].to(device=device, dtype=torch.bool) for m in self.modalities])

    def _head_losses(self, outs: Tensor, targets: Tensor, present: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-modality task loss of stacked head outputs (M, N, C): CE, or MSE for regression;
        masked mean over present samples. Returns ``(loss (M,), count (M,))``."""
        M, n = outs.shape[0], outs.shape[1]
        if self.task == "classification":
            logp = BF.log_softmax(outs)
            per = -logp.gather(-1, targets.long().expand(M, n).unsqueeze(-1)).squeeze(-1)
        else:
            per = (outs.reshape(M, n) - targets.to(outs.dtype).unsqueeze(0)).pow(2)
        return BF.masked_sample_mean(per, present)

    def _grads(self, m: str) -> list[Tensor]:
        return [p.grad for p in self._params[m] if p.grad is not None]

    def _grad_norms(self) -> Tensor:
        """L2 norm of each encoder's whole gradient, (M,) float64."""
        dev = self._fusion_head.weight.device
        norms = []
        for m in self.modalities:
            grads = self._grads(m)
            if grads:
                per = torch.stack([n.to(dev) for n in torch._foreach_norm(grads)]).double()
                norms.append(torch.linalg.vector_norm(per))
            else:
                norms.append(torch.zeros((), dtype=torch.float64, device=dev))
        return torch.stack(norms)

    def _scale_gradients(self, coeff: Tensor, noise: str | None = None) -> None:
        """``g ← k^m g`` for every gradient of encoder m; then ``+ N(0, (std + 1e-8)²)`` where
        ``noise`` is ``"before"`` (std of the unscaled g) or ``"after"`` (std of k^m g)."""
        for i, m in enumerate(self.modalities):
            grads = self._grads(m)
            if not grads:
                continue
            if noise == "before":
                stds = [_std(g) for g in grads]
            groups: dict[tuple, list[Tensor]] = {}
            for g in grads:
                groups.setdefault((g.device, g.dtype), []).append(g)
            for (device, dtype), gs in groups.items():
                torch._foreach_mul_(gs, coeff[i].to(device=device, dtype=dtype))
            if noise == "after":
                stds = [_std(g) for g in grads]
            if noise is not None:
                torch._foreach_add_(grads, [torch.randn_like(g) * s for g, s in zip(grads, stds)])


def _std(g: Tensor) -> Tensor:
    """Standard deviation of a gradient plus 1e-8 (0 for a single element, whose std is undefined)."""
    if g.numel() < 2:
        return g.new_zeros(())
    return g.std() + 1e-8


# --------------------------------------------------------------------------- factory

COMMON_OPTIONS = ("lr", "weight_decay", "start_epoch", "end_epoch", "missing_aware", "track_stats")
OPTIONS: dict[str, tuple[str, ...]] = {
    "ogm-ge": COMMON_OPTIONS + ("alpha", "scores", "form", "noise"),
    "cggm": COMMON_OPTIONS + ("rho", "lam", "metric", "coefficients", "eps"),
    "ada2i": COMMON_OPTIONS
    + ("alpha", "scores", "form", "noise", "afw", "rank", "beta", "n_layers", "dropout", "feature_weight", "feature_target"),
}
# options of BALM's own variants: accepted so one configuration drives every method, unused here
BALM_ONLY_OPTIONS = ("d_global", "tau", "distribution", "spatial", "delta_mode", "scale_gradients")


def build_baseline(
    name: str,
    *,
    dims: Mapping[str, int],
    encoders: Mapping[str, nn.Module],
    embed_dims: Mapping[str, int],
    fusion_head: nn.Linear,
    task: str = "classification",
    num_classes: int | None = None,
    **options: Any,
):
    """Build baseline ``name`` (one of :data:`BASELINES`) for a backbone; returns a ``Variant``.

    ``ogm-ge`` and ``cggm`` have no input module (``fcm=None``); ``ada2i`` puts its adaptive
    feature weighting in the ``fcm`` slot (``afw=False`` leaves it out). ``options``: the keywords
    of the method's class (see :data:`OPTIONS`); options of the other baselines and of BALM's
    variants are accepted and unused, so one configuration can drive every method; any other
    name raises ``TypeError``.
    """
    from .variants import Variant

    if name not in OPTIONS:
        raise ValueError(f"unknown baseline {name!r}; choose one of {list(BASELINES)}")
    known = set(BALM_ONLY_OPTIONS).union(*OPTIONS.values())
    from .variants import FCM_OPTIONS, GRM_OPTIONS

    known |= set(FCM_OPTIONS) | set(GRM_OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for baseline {name!r}; valid: {sorted(OPTIONS[name])}")
    kw = {k: v for k, v in options.items() if k in OPTIONS[name]}
    common = dict(task=task, num_classes=num_classes)
    if name == "ogm-ge":
        from .ogm_ge import OGMGE

        return Variant(fcm=None, rebalancer=OGMGE(encoders, embed_dims, fusion_head, **common, **kw), name=name)
    if name == "cggm":
        from .cggm import CGGM

        return Variant(fcm=None, rebalancer=CGGM(encoders, embed_dims, fusion_head, **common, **kw), name=name)
    from .ada2i import Ada2I, AdaptiveFeatureWeighting

    afw_kw = {k: kw.pop(k) for k in ("rank", "beta", "n_layers", "dropout", "feature_target") if k in kw}
    use_afw = kw.pop("afw", True)
    afw = AdaptiveFeatureWeighting(dims, **afw_kw) if use_afw else None
    rebalancer = Ada2I(encoders, embed_dims, fusion_head, feature_weighting=afw, **common, **kw)
    return Variant(fcm=afw, rebalancer=rebalancer, name=name)
