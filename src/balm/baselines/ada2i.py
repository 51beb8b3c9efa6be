"""Ada2I (Nguyen et al., ACM MM 2024): adaptive feature weighting (AFW) on the inputs and adaptive
modality weighting (AMW) of the encoders' gradients from the disparity ratio."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from balm.core import functional as BF
from balm.core.rebalancer import _non_negative, _one_of, build_options

from .ogm_ge import OGMGE, OGMGEOptions

FEATURE_TARGETS = ("weights", "features")


def interaction_factors(proj: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """Factors of AFW's Khatri–Rao interaction ``G = (q_1 ⊗ q_2) ⊙ (k_1 ⊗ k_2) = u ⊗ v`` with
    ``u = q_1 ⊙ k_1`` and ``v = q_2 ⊙ k_2``. proj: (..., 4R) = [q_1, q_2, k_1, k_2]. Returns u, v (..., R)."""
    q1, q2, k1, k2 = proj.split(rank, dim=-1)
    return q1 * k1, q2 * k2


def summary_matrix(u: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """``M_b = mean_t G_{b,t}`` over present steps, (B, R, R); the identity (neutral in the
    contraction) for a sequence where the modality is never present. u, v: (B, T, R); mask: (B, T)."""
    kept = torch.where(mask.unsqueeze(-1), u, u.new_zeros(()))
    count = mask.sum(dim=1).to(u.dtype)
    mean = torch.einsum("btr,bts->brs", kept, v) / count.clamp_min(1.0)[:, None, None]
    eye = torch.eye(u.shape[-1], dtype=u.dtype, device=u.device).expand_as(mean)
    return torch.where((count > 0)[:, None, None], mean, eye)


def contract(u: Tensor, v: Tensor, others: list[Tensor]) -> Tensor:
    """``vec(G · M^{l_1} · M^{l_2} ⋯)`` for ``G_{b,t} = u_{b,t} ⊗ v_{b,t}``: (B, T, R·R).
    others: the summaries (B, R, R) of the other modalities, in modality order."""
    w = v
    for mat in others:
        w = torch.einsum("btr,brs->bts", w, mat)
    return (u.unsqueeze(-1) * w.unsqueeze(-2)).flatten(-2)


class AFWLayer(nn.Module):
    """One AFW layer: per modality j, ``A^j = W_o^j vec(G^j Π_{l≠j} M^l) + b_o^j`` and
    ``x'^j = (A^j + β) ⊙ x^j`` (zero where j is missing), with the intra-modal mapping loss
    ``mean |W_map^j x^j + b − A^j|`` over present steps (``target="features"``: against x'^j)."""

    def __init__(self, dims: Mapping[str, int], rank: int, beta: float, dropout: float, target: str):
        super().__init__()
        self.modalities, self.rank, self.beta, self.target = tuple(dims), rank, beta, target
        self.proj = nn.ModuleDict({m: nn.Linear(d, 4 * rank) for m, d in dims.items()})
        self.out = nn.ModuleDict({m: nn.Linear(rank * rank, d) for m, d in dims.items()})
        self.mapping = nn.ModuleDict({m: nn.Linear(d, d) for m, d in dims.items()})
        self.dropout = nn.Dropout(dropout)

    def forward(self, xs: list[Tensor], es: list[Tensor]) -> tuple[list[Tensor], Tensor]:
        factors = [interaction_factors(self.proj[m](x), self.rank) for m, x in zip(self.modalities, xs)]
        summaries = [summary_matrix(u, v, e) for (u, v), e in zip(factors, es)]
        ys, losses = [], []
        for j, (m, x, e) in enumerate(zip(self.modalities, xs, es)):
            u, v = factors[j]
            att = self.out[m](contract(u, v, [s for i, s in enumerate(summaries) if i != j]))
            y = torch.where(e.unsqueeze(-1), (att + self.beta) * x, x.new_zeros(()))
            target = att if self.target == "weights" else y
            err = (self.mapping[m](x) - target).abs().sum(-1)
            n = e.sum().to(x.dtype) * x.shape[-1]
            losses.append(torch.where(e, err, err.new_zeros(())).sum() / n.clamp_min(1.0))
            ys.append(self.dropout(y))
        return ys, torch.stack(losses).mean()


@dataclass
class AFWOptions:
    """Options of :class:`AdaptiveFeatureWeighting`: the Khatri–Rao ``rank`` R, the offset ``beta``
    of ``(A + β) ⊙ x``, ``n_layers`` stacked layers, ``dropout`` on their outputs and the target of
    the mapping loss, ``feature_target`` (``"weights"``: A, ``"features"``: the weighted x')."""

    rank: int = 11
    beta: float = 1.0
    n_layers: int = 1
    dropout: float = 0.1
    feature_target: str = "weights"

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank must be a positive int, got {self.rank!r}")
        if isinstance(self.n_layers, bool) or not isinstance(self.n_layers, int) or self.n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {self.n_layers!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta):
            raise ValueError(f"beta must be a finite number, got {self.beta!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        _one_of("feature_target", self.feature_target, FEATURE_TARGETS)
        self.beta, self.dropout = float(self.beta), float(self.dropout)


class AdaptiveFeatureWeighting(nn.Module):
    """Ada2I's AFW as an input module (the slot FCM takes in BALM): ``n_layers`` stacked :class:`AFWLayer`.

    ``forward(features, masks, valid)`` has FeatureCalibration's signature and shapes ((B, T, d_m)
    or (B, d_m)) and returns the weighted features, exactly zero where a modality is missing or at
    padding. In training mode with gradients enabled, the summed mapping loss of the layers
    (L_feature) is kept in :attr:`feature_loss` for :class:`Ada2I` to add to the task loss.

    Defaults ``beta=1``, ``n_layers=1`` make each layer start near the identity on raw inputs; the
    official IEMOCAP values (``beta=0.012``, two layers, tuned for encoder outputs) shrink raw
    inputs about 300-fold at initialisation (docs/baselines.md).
    """

    def __init__(self, dims: Mapping[str, int], **options):
        super().__init__()
        dims = dict(dims)
        if len(dims) < 2:
            raise ValueError(f"AdaptiveFeatureWeighting needs at least two modalities, got {list(dims)}")
        for m, d in dims.items():
            if not isinstance(d, int) or isinstance(d, bool) or d < 1:
                raise ValueError(f"dims[{m!r}] must be a positive int, got {d!r}")
        self.options = build_options(AFWOptions, options, "AdaptiveFeatureWeighting")
        o = self.options
        self.dims, self.modalities = dims, tuple(dims)
        self.layers = nn.ModuleList(AFWLayer(dims, o.rank, o.beta, o.dropout, o.feature_target) for _ in range(o.n_layers))
        self.feature_loss: Tensor | None = None

    def pop_feature_loss(self) -> Tensor | None:
        """L_feature of the last training forward (then forgotten), or None."""
        loss, self.feature_loss = self.feature_loss, None
        return loss

    def forward(
        self,
        features: Mapping[str, Tensor],
        masks: Mapping[str, Tensor] | None = None,
        valid: Tensor | None = None,
    ) -> dict[str, Tensor]:
        xs, es, sequential = BF.as_sequences(features, masks, valid, self.dims, "AdaptiveFeatureWeighting")
        total = None
        for layer in self.layers:
            xs, loss = layer(xs, es)
            total = loss if total is None else total + loss
        self.feature_loss = total if (self.training and torch.is_grad_enabled()) else None
        return {m: (x if sequential else x.squeeze(1)) for m, x in zip(self.modalities, xs)}


@dataclass
class Ada2IOptions(OGMGEOptions):
    """Options of :class:`Ada2I`: OGM-GE's (with Ada2I's ``alpha`` default) plus
    ``feature_weight``, the weight of AFW's mapping loss L_feature."""

    alpha: float = 0.037
    feature_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.feature_weight = _non_negative("feature_weight", self.feature_weight)


class Ada2I(OGMGE):
    """Ada2I's adaptive modality weighting (AMW) plus the feature loss of its AFW.

    Unimodal outputs out^m (linear heads on detached z^m, or the fusion-head split, as in
    :class:`OGMGE`), scores ``s^m = mean_i δ(out^m_i)[y_i]``, the disparity ratio
    ``ρ^m = s^m / min_{m'} s^{m'}`` and ``k^m = 1 − tanh(α ρ^m)`` for ``ρ^m > 1`` else 1; encoder m's
    gradients become ``k^m g`` plus, with ``noise``, ``N(0, std(k^m g)²)`` (std of the scaled
    gradient, as in Ada2I's code). :meth:`alignment_loss` returns ``feature_weight · L_feature`` of
    ``feature_weighting``'s last training forward (at every epoch, not only in the window).
    """

    Options = Ada2IOptions
    method = "Ada2I"
    noise_reference = "after"

    def __init__(self, *args, feature_weighting: AdaptiveFeatureWeighting | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if feature_weighting is not None and not isinstance(feature_weighting, AdaptiveFeatureWeighting):
            raise TypeError(f"feature_weighting must be an AdaptiveFeatureWeighting, got {type(feature_weighting).__name__}")
        self.__dict__["_afw"] = feature_weighting  # a reference: the model owns it (the input-module slot)

    def alignment_loss(self) -> Tensor:
        """``feature_weight · L_feature`` of the AFW's last training forward, or zero."""
        loss = self._afw.pop_feature_loss() if self._afw is not None else None
        if loss is None or self.feature_weight == 0:
            return self.zero_loss()
        return self.feature_weight * loss.to(self._fusion_head.weight.dtype)
