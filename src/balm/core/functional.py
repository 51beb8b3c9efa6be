"""The equations of BALM as small pure functions on tensors.

``FeatureCalibration`` and ``GradientRebalancer`` are thin stateful wrappers around these.
Every function works on any device and dtype, never synchronises with the host, and is
differentiable where an equation is (``gradcheck``-tested in float64).

Shapes: ``M`` modalities, ``N`` utterances, ``C`` classes (2 for the regression view).
Per-modality quantities are stacked along the first dimension in a fixed modality order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MEAN_EPS",
    "RAW_EPS",
    "masked_mean",
    "calibration_gate",
    "calibrate",
    "log_softmax",
    "log_distribution",
    "kl_to_fused",
    "mse_to_fused",
    "masked_sample_mean",
    "deltas",
    "coefficients",
    "history_delta",
    "ema_delta",
    "cosine_to_fused",
    "spatial_loss",
    "grad_norms",
    "as_sequences",
]

MEAN_EPS = 1e-8  # the ε of the masked mean (docs/method.md §2)
RAW_EPS = 1e-8  # the ε the public code adds to ΣΔ


def masked_mean(x: Tensor, mask: Tensor, eps: float = MEAN_EPS) -> Tensor:
    """Masked mean over steps (FCM, docs/method.md §2): ``s = Σ_t e_t x_t / (Σ_t e_t + eps)``.

    x: (B, T, d); mask: (B, T) bool (True = present and not padding). Returns (B, d).
    Entries where ``mask`` is False are ignored even if they hold non-finite values.
    """
    x_kept = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))
    count = mask.sum(dim=1, keepdim=True).to(x.dtype)
    return x_kept.sum(dim=1) / (count + eps)


def calibration_gate(logits: Tensor) -> Tensor:
    """FCM gate ``g = 2 · sigmoid(W_m z + c_m)``: in (0, 2), equal to 1 at logit 0."""
    return 2.0 * torch.sigmoid(logits)


def calibrate(x: Tensor, gate: Tensor, mask: Tensor) -> Tensor:
    """Calibrated input ``x̂_t = e_t · g ⊙ x_t`` (FCM, docs/method.md §2).

    x: (B, T, d); gate: (B, d), one gate per sequence; mask: (B, T) bool.
    The result is exactly zero where ``mask`` is False.
    """
    # masked_fill_ on the product: the values of torch.where(mask, g ⊙ x, 0), about twice as fast on CPU
    return (gate.unsqueeze(1) * x).masked_fill_(~mask.unsqueeze(-1), 0.0)


def log_softmax(x: Tensor) -> Tensor:
    """``log_softmax`` over the last dimension.

    On CPU, PyTorch's kernel is several times slower along a short last dimension (a handful of
    classes) than along a leading one, so there the classes are moved to dimension −2 first.
    """
    if x.device.type == "cpu" and x.dim() >= 2 and x.shape[-1] <= 16:
        return x.transpose(-1, -2).contiguous().log_softmax(-2).transpose(-1, -2)
    return x.log_softmax(-1)


def log_distribution(output: Tensor, task: str) -> Tensor:
    """Log of the predictive distribution δ(output) used by the distribution-driven term.

    Classification: ``log_softmax`` of logits (..., C). Regression: scores (...,) or (..., 1) are
    viewed as two-class probabilities ``[sigmoid(−s), sigmoid(s)]``; returns their logs (..., 2).
    """
    if task == "classification":
        return log_softmax(output)
    if task == "regression":
        s = output.squeeze(-1) if output.dim() > 1 and output.shape[-1] == 1 else output
        return torch.stack([F.logsigmoid(-s), F.logsigmoid(s)], dim=-1)
    raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")


def masked_sample_mean(values: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Mean of per-sample ``values`` (..., N) over samples where ``mask`` (..., N) is True.

    Returns ``(mean, count)``; where no sample is selected the mean is 0 and count 0.
    """
    if mask is None:
        count = torch.full(values.shape[:-1], values.shape[-1], dtype=values.dtype, device=values.device)
        return values.mean(dim=-1), count
    kept = torch.where(mask, values, values.new_zeros(()))
    count = mask.sum(dim=-1).to(values.dtype)
    return kept.sum(dim=-1) / count.clamp_min(1.0), count


def kl_to_fused(fused_log: Tensor, head_log: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``KL(ŷ ‖ ŷ^m) = Σ_c ŷ_c (log ŷ_c − log ŷ^m_c)``, batch-mean over the selected samples (Eq. 19).

    fused_log: (N, C) log-probabilities of the fused prediction ŷ; head_log: (M, N, C) of the
    unimodal predictions ŷ^m (or (N, C) for one modality); mask: (M, N) / (N,) bool of the samples
    that enter each modality's mean (None = all). Returns ``(kl, count)`` of shape (M,) (or ()).
    """
    p = fused_log.exp()
    per_sample = (p * (fused_log - head_log)).sum(dim=-1)
    return masked_sample_mean(per_sample, mask)


def mse_to_fused(fused_log: Tensor, head_log: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """BALM-M discrepancy: mean squared difference of the probabilities ŷ and ŷ^m.

    Per sample ``(1/C) Σ_c (ŷ_c − ŷ^m_c)²`` (``nn.MSELoss``'s mean), then the masked batch-mean;
    same shapes and return value as :func:`kl_to_fused`.
    """
    per_sample = (fused_log.exp() - head_log.exp()).pow(2).mean(dim=-1)
    return masked_sample_mean(per_sample, mask)


def deltas(previous: Tensor, current: Tensor, has_previous: Tensor | bool) -> Tensor:
    """``Δ_t = KL_{t−1} − KL_t``, and ``Δ = KL_t`` where there is no previous value (Eq. 20)."""
    if isinstance(has_previous, bool):
        return previous - current if has_previous else current.clone()
    return torch.where(has_previous, previous - current, current)


def history_delta(
    current: Tensor, present: Tensor, previous: Tensor | None, has_previous: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cross-iteration ``Δ_t = KL_{t−1} − KL_t`` per modality (Eq. 20, the public code's form).

    current: (M,) discrepancies of this step; present: (M,) bool, modalities seen in this batch;
    previous / has_previous: the state returned by the last call (None at the first). A modality
    absent from the batch has Δ = 0 and keeps its previous value; one never seen before has
    ``Δ = KL_t``. Returns ``(delta, scale, previous', has_previous')`` with ``scale = Σ`` of the
    reference discrepancies (the KL's own magnitude, for the guard of :func:`coefficients`).
    """
    if previous is None:
        previous = torch.zeros_like(current)
        has_previous = torch.zeros_like(present)
    zero = torch.zeros_like(current)
    delta = torch.where(present, deltas(previous, current, has_previous), zero)
    scale = torch.where(present, torch.where(has_previous, previous, current), zero).sum()
    return delta, scale, torch.where(present, current, previous), has_previous | present


def ema_delta(
    current: Tensor,
    present: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor] | None,
    beta: float,
) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Smoothed cross-iteration decrease ``Δ̂_t = EMA_β(KL_{t−1} − KL_t)``, bias-corrected.

    Each modality's raw decrease ``KL_{t−1} − KL_t`` (Eq. 20, measured where the modality is in
    both batches) enters ``a_t = β a_{t−1} + (1 − β)(KL_{t−1} − KL_t)``, and
    ``Δ̂_t = a_t / (1 − β^n)`` with n the number of decreases seen (as Adam corrects its moments).
    A modality absent from the batch keeps its estimate; one with no decrease yet has Δ̂ = 0.
    ``β = 0`` gives the paper's Δ from the second sighting on. current, present: (M,);
    state: the ``(previous, has_previous, a, n)`` returned by the last call, None at the first.
    Returns ``(delta, scale, state')``, ``scale`` = Σ of the last seen discrepancies.
    """
    if state is None:
        zeros = torch.zeros_like(current)
        state = (zeros, torch.zeros_like(present), zeros, zeros)
    previous, has_previous, avg, n = state
    update = present & has_previous
    avg = torch.where(update, beta * avg + (1.0 - beta) * (previous - current), avg)
    n = n + update.to(n.dtype)
    correction = 1.0 - torch.pow(torch.full_like(n, beta), n)
    delta = torch.where(n > 0, avg / torch.where(n > 0, correction, torch.ones_like(n)), torch.zeros_like(avg))
    previous = torch.where(present, current, previous)
    has_previous = has_previous | present
    scale = torch.where(has_previous, previous, torch.zeros_like(previous)).sum()
    return delta, scale, (previous, has_previous, avg, n)


def coefficients(
    delta: Tensor,
    rho: float,
    mode: str = "guarded",
    eps: float = 1e-5,
    scale: Tensor | float | None = None,
    floor: float = 0.2,
) -> tuple[Tensor, Tensor, Tensor]:
    """Modulation coefficients ``μ^m = ρ · Σ_{m'≠m} Δ^{m'} / Σ_{m'} Δ^{m'}`` (Eq. 21).

    delta: (M,). Returns ``(mu, clamped, fallback)``: ``mu`` (M,), and two 0-dim bool tensors saying
    whether the guarded rule clamped a negative Δ, and whether it fell back to the uniform value.

    ``mode="raw"``: the public formula ``ρ (ΣΔ − Δ^m) / (ΣΔ + 1e-8)`` with no guard (the flags then
    say what the guard *would* have done, so degenerate steps stay visible in logs).

    ``mode="guarded"``: Δ is replaced by its positive part ``Δ⁺ = max(Δ, 0)`` (a modality that moved
    away from the fused prediction has made no progress, not negative progress), so
    ``μ^m = ρ Σ_{m'≠m} Δ⁺^{m'} / Σ Δ⁺ ∈ [0, ρ]``, identical to the paper whenever every Δ ≥ 0.
    If ``ΣΔ⁺ ≤ eps · scale`` (no measurable progress relative to the KL's own magnitude ``scale``,
    default ``Σ|Δ|``) there is no evidence of imbalance and ``μ^m = ρ (M−1)/M`` for every m, the
    value the formula gives when all Δ are equal.

    ``mode="floored"``: the guarded rule, and on a step where some modality made no progress
    (some Δ ≤ 0) while another did, ``μ^m ← max(μ^m, floor · ρ)``. With two modalities the guarded
    rule gives ``μ^a = ρ Δ⁺_b / (Δ⁺_a + Δ⁺_b) = 0`` whenever ``Δ_b ≤ 0``, stopping encoder a; the
    floor keeps it learning. Identical to the paper's formula whenever every Δ > 0 (the floor then
    never applies); the price is a jump at ``Δ_b = 0``, where the formula itself tends to 0.
    """
    if delta.dim() != 1 or delta.shape[0] < 2:
        raise ValueError(f"delta must have shape (M,) with M >= 2, got {tuple(delta.shape)}")
    m = delta.shape[0]
    if scale is None:
        scale = delta.abs().sum()
    clamped = (delta < 0).any()
    positive = delta.clamp_min(0.0)
    total_pos = positive.sum()
    scale = torch.as_tensor(scale, dtype=delta.dtype, device=delta.device).abs()
    fallback = ~((total_pos > eps * scale) & (total_pos > 0))
    if mode == "raw":
        total = delta.sum()
        mu = rho * (total - delta) / (total + RAW_EPS)
        return mu, clamped, fallback
    if mode not in ("guarded", "floored"):
        raise ValueError(f"coefficients mode must be 'guarded', 'floored' or 'raw', got {mode!r}")
    safe_total = torch.where(fallback, torch.ones_like(total_pos), total_pos)
    mu = rho * (total_pos - positive) / safe_total
    if mode == "floored":
        stalled = (delta <= 0).any() & ~fallback
        mu = torch.where(stalled, mu.clamp_min(floor * rho), mu)
    uniform = torch.full_like(mu, rho * (m - 1) / m)
    return torch.where(fallback, uniform, mu), clamped & ~fallback, fallback


def cosine_to_fused(head_weights: Tensor, fused_weight: Tensor, eps: float = 1e-8) -> Tensor:
    """``cos^m = cos(vec W_2^m, vec W_pred)`` (Eq. 23–24).

    head_weights: (M, C, d_h) output weights of the unimodal heads; fused_weight: (C, d_h).
    Returns (M,).
    """
    a = head_weights.reshape(head_weights.shape[0], -1)
    b = fused_weight.reshape(1, -1)
    return F.cosine_similarity(a, b.expand_as(a), dim=-1, eps=eps)


def spatial_loss(mu_bar: Tensor, cos: Tensor) -> Tensor:
    """``L_mod = (1/M) Σ_m |μ̄^m · cos^m|`` with ``μ̄ = μ/ρ`` (Eq. 25–26); entry m pairs with entry m."""
    if mu_bar.shape != cos.shape:
        raise ValueError(f"mu_bar {tuple(mu_bar.shape)} and cos {tuple(cos.shape)} must pair one to one")
    return (mu_bar * cos).abs().mean()


def grad_norms(grads: list[list[Tensor]], device: torch.device | str, dtype: torch.dtype = torch.float64) -> Tensor:
    """L2 norm of each group's gradients taken together (one group per modality): (M,) in
    ``dtype`` on ``device`` (the per-tensor norms are combined in ``dtype``); 0 for an empty group."""
    out = []
    for gs in grads:
        if gs:
            per = torch._foreach_norm(gs)
            out.append(torch.linalg.vector_norm(torch.stack([n.to(device) for n in per]).to(dtype)))
        else:
            out.append(torch.zeros((), dtype=dtype, device=device))
    return torch.stack(out)


def as_sequences(
    features, masks, valid: Tensor | None, dims, who: str, *, mixed: bool = False
) -> tuple[list[Tensor], list[Tensor], bool]:
    """Features and availability of an input module as (B, T, d_m) / (B, T) bool lists in the
    order of ``dims`` (the shared input contract of FCM and Ada2I's AFW).

    features[m]: (B, T, d_m) sequences or (B, d_m) samples (each its own sequence of length 1);
    masks[m]: the same leading shape, True = present (a missing ``masks``, or a modality absent from
    it, means present); valid: the leading shape, True = not padding (ANDed into every mask).
    With ``mixed=True`` a flat (B, d_m) modality may stand next to (B, T, d) sequences: it is one
    vector per sequence b (a (B, 1, d_m) sequence of length 1; ``masks[m]`` (B,); ``valid`` does
    not apply to it). Returns ``(xs, es, sequential)`` (``sequential``: some modality has a time
    axis); raises ``ValueError`` naming the modality on a shape mismatch.
    """
    modalities = tuple(dims)
    if set(features) != set(modalities):
        raise ValueError(f"features must have exactly the modalities {list(modalities)}, got {list(features)}")
    for m in modalities:
        if features[m].dim() not in (2, 3):
            raise ValueError(f"features[{m!r}] must be (B, T, d) or (B, d), got shape {tuple(features[m].shape)}")
    seqs = [m for m in modalities if features[m].dim() == 3]
    first = features[seqs[0]] if (mixed and seqs) else features[modalities[0]]
    sequential = first.dim() == 3
    lead = first.shape[:-1]
    if valid is not None and valid.shape != lead:
        raise ValueError(f"valid must have shape {tuple(lead)}, got {tuple(valid.shape)}")
    xs, es = [], []
    for m in modalities:
        x = features[m]
        flat = x.dim() == 2
        own = lead[:1] if (mixed and flat) else lead
        if x.shape[:-1] != own or x.shape[-1] != dims[m]:
            hint = ""
            if x.dim() != first.dim() and not mixed:
                hint = (f" ({who} takes one layout for all modalities: pool a token sequence to (B, d) or give "
                        "every flat modality a time axis of length T, repeating it)")
            raise ValueError(f"features[{m!r}] must have shape {(*own, dims[m])}, got {tuple(x.shape)}{hint}")
        e = None if masks is None else masks.get(m)
        if e is not None and e.shape != own:
            raise ValueError(f"masks[{m!r}] must have shape {tuple(own)}, got {tuple(e.shape)}")
        if valid is not None and own == lead:
            e = valid if e is None else (e & valid)
        if e is None:
            e = torch.ones(own, dtype=torch.bool, device=x.device)
        e = e.to(torch.bool)
        if flat:
            x, e = x.unsqueeze(1), e.unsqueeze(1)
        xs.append(x)
        es.append(e)
    return xs, es, sequential
