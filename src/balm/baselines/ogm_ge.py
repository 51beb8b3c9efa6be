"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., CVPR 2022),
generalised to M modalities by the ratio against the weakest modality (as Ada2I does)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from balm.core import functional as BF
from balm.core.rebalancer import Rebalancer, RebalancerOptions, _non_negative, _one_of

SCORE_SOURCES = ("heads", "split")
FORMS = ("published", "continuous")


def true_class_confidence(outputs: Tensor, targets: Tensor, task: str) -> Tensor:
    """``p^m_i = δ(out^m_i)[y_i]``: each modality's probability of the true class.

    outputs: (M, N, C) logits, or (M, N) / (M, N, 1) scores for regression, seen as the two classes
    ``[sigmoid(−s), sigmoid(s)]`` with true class ``1[y > 0]``. Returns (M, N).
    """
    if task == "regression":
        outputs = outputs.reshape(outputs.shape[0], outputs.shape[1])
        cls = (targets > 0).long()
    else:
        cls = targets.long()
    logp = BF.log_distribution(outputs, task)
    index = cls.expand(outputs.shape[0], -1).unsqueeze(-1).to(logp.device)
    return logp.gather(-1, index).squeeze(-1).exp()


def confidence_scores(confidence: Tensor, present: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``s^m = mean_i p^m_i`` over the samples where m is present (OGM-GE's Σ_i, divided by the
    count so modalities with different missing rates compare fairly). Returns ``(s (M,), count (M,))``."""
    return BF.masked_sample_mean(confidence, present)


def disparity_ratios(scores: Tensor, valid: Tensor | None = None) -> Tensor:
    """``ρ^m = s^m / min_{m'} s^{m'}`` over modalities with ``valid`` (some present sample);
    ``ρ = 1`` for the others (and for all if none is valid). scores: (M,). Returns (M,)."""
    if valid is None:
        valid = torch.ones_like(scores, dtype=torch.bool)
    big = torch.full_like(scores, math.inf)
    smallest = torch.where(valid, scores, big).min()
    ok = valid & torch.isfinite(smallest) & (smallest > 0)
    return torch.where(ok, scores / torch.where(ok.any(), smallest, torch.ones_like(smallest)), torch.ones_like(scores))


def ogm_coefficients(ratio: Tensor, alpha: float, form: str = "published") -> Tensor:
    """OGM-GE's Eq. 10 applied to every modality: ``k^m = 1 − tanh(α ρ^m)`` if ``ρ^m > 1``, else 1.

    ``form="continuous"``: ``k^m = 1 − tanh(α relu(ρ^m − 1))``, which is 1 at ρ = 1 instead of
    jumping from 1 to ``1 − tanh(α)``.
    """
    if form == "published":
        value = 1.0 - torch.tanh(alpha * F.relu(ratio))
    elif form == "continuous":
        value = 1.0 - torch.tanh(alpha * F.relu(ratio - 1.0))
    else:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    return torch.where(ratio > 1, value, torch.ones_like(ratio))


def split_logits(embeddings: list[Tensor], fusion_head: nn.Linear) -> Tensor:
    """OGM-GE's unimodal outputs for concatenation fusion: ``out^m = z^m W_mᵀ + b/M``, where
    ``W_m`` is the column block of ``W_pred`` that multiplies z^m in ``[z^1; …; z^M]``.
    embeddings: M tensors (N, d_m) in concatenation order. Returns (M, N, C), detached."""
    w, b = fusion_head.weight.detach(), fusion_head.bias
    blocks = w.split([z.shape[1] for z in embeddings], dim=1)
    bias = b.detach() / len(embeddings) if b is not None else None
    return torch.stack([F.linear(z.to(w.dtype), wm, bias) for z, wm in zip(embeddings, blocks)])


@dataclass
class OGMGEOptions(RebalancerOptions):
    """Options of :class:`OGMGE`: ``alpha`` (α of Eq. 10), ``scores`` (where the unimodal outputs
    come from: ``"heads"`` or ``"split"``), ``form`` (``"published"`` or ``"continuous"``, see
    :func:`ogm_coefficients`) and ``noise`` (the GE part: Gaussian noise of the gradient's std)."""

    alpha: float = 0.1
    scores: str = "heads"
    form: str = "published"
    noise: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.alpha = _non_negative("alpha", self.alpha)
        _one_of("scores", self.scores, SCORE_SOURCES)
        _one_of("form", self.form, FORMS)
        self.noise = bool(self.noise)


class OGMGE(Rebalancer):
    """OGM-GE for any backbone and M ≥ 2 modalities (docs/baselines.md).

    Per step, after ``loss.backward()``:
    ``s^m = mean_i δ(out^m_i)[y_i]``, ``ρ^m = s^m / min_{m'} s^{m'}``,
    ``k^m = 1 − tanh(α ρ^m)`` for ``ρ^m > 1`` else 1, and every gradient of encoder m becomes
    ``k^m g`` (+ ``N(0, std(g)²)`` with ``noise``, the GE part); with ``modulate="update"`` the
    coefficient scales encoder m's update instead.

    ``scores="heads"`` (default): ``out^m`` comes from a linear head per modality on the detached
    z^m, trained by ``head_optimizer`` (Adam) on the task loss; scores use the heads before this
    step's update. ``scores="split"``: OGM-GE's own view for a fusion head applied directly to
    ``[z^1; …; z^M]`` (concatenation in the order of ``encoders``): ``out^m = z^m W_mᵀ + b/M``;
    valid only for such backbones (checked by width only). Regression uses the two-class view
    ``[sigmoid(−s), sigmoid(s)]`` with true class ``1[y > 0]``.
    """

    Options = OGMGEOptions
    method = "OGM-GE"
    noise_reference = "before"

    def setup(self) -> None:
        fusion_head = self._fusion_head
        total = sum(self.embed_dims.values())
        if self.scores == "split" and fusion_head.in_features != total:
            raise ValueError(
                f"scores='split' needs a fusion head applied to the concatenated embeddings "
                f"(in_features = Σ embed_dims = {total}), got in_features={fusion_head.in_features}; "
                "use scores='heads' for this backbone"
            )
        w = fusion_head.weight
        self.heads: nn.ModuleDict | None = None
        if self.scores == "heads":
            self.add_heads(nn.ModuleDict(
                {m: nn.Linear(self.embed_dims[m], self.out_features) for m in self.modalities}
            ).to(device=w.device, dtype=w.dtype))

    def _unimodal_outputs(self, zs: list[Tensor]) -> Tensor:
        if self.heads is None:
            return split_logits(zs, self._fusion_head)
        return torch.stack([self.heads[m](z) for m, z in zip(self.modalities, zs)])

    @torch.no_grad()
    def coefficients(self, outputs: Tensor, targets: Tensor, present: Tensor | None = None) -> dict[str, Tensor]:
        """Confidence, score, ratio and coefficient (each (M,)) from unimodal outputs (M, N, C)."""
        conf = true_class_confidence(outputs.float(), targets, self.task)
        score, count = confidence_scores(conf, present)
        ratio = disparity_ratios(score, count > 0)
        return {"confidence": score, "ratio": ratio, "coeff": ogm_coefficients(ratio, self.alpha, self.form), "n_present": count}

    def rebalance_(self, embeddings: Mapping[str, Tensor], fused_output: Tensor, targets: Tensor, masks=None) -> None:
        """One step after ``loss.backward()``, before :meth:`step`.

        embeddings[m]: (N, d_z^m); fused_output: (N, C) logits or (N,) scores (unused by OGM-GE
        beyond its length); targets: (N,); masks[m]: (N,) bool, True where m is present.
        Trains the heads one step (at every step, also outside the window, so that they are ready
        when it opens) and, inside the window, applies ``k^m`` to encoder m.
        """
        zs, present, targets = self.prepare(embeddings, fused_output, targets, masks)
        with torch.enable_grad():
            outs = self._unimodal_outputs(zs)
            if self.heads is not None:
                head_loss, _ = self._train_heads(outs, targets, present)
        with torch.no_grad():
            last = self.coefficients(outs.detach(), targets, present)
            if self.heads is not None:
                last["head_loss"] = head_loss
            self._apply_coefficients(last)
            self._last = last

    def _apply_coefficients(self, last: dict[str, Tensor]) -> None:
        """Apply ``last["coeff"]`` inside the window and record the gradient norms."""
        coeff = last["coeff"] if self.active else torch.ones_like(last["coeff"])
        last["coeff"] = coeff
        if self.track_stats:
            before = self.grad_norms()
        if self.active:
            self.scale_(coeff, self.noise_reference if self.noise else None)
        if self.track_stats:
            last["grad_norm_before"] = before
            if self.active and self.noise:
                last["grad_norm_after"] = self.grad_norms()
            elif self.modulate == "update":
                last["grad_norm_after"] = before
            else:
                last["grad_norm_after"] = before * coeff.to(before.dtype)
